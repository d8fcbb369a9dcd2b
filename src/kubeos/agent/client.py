"""Typed client of the os-agent, for the proxy (synchronous and asyncio flavours).

Unlike the reference client, every call has a connect timeout and a call timeout, so a hung
agent cannot block the proxy's reconcile loop forever. One connection per call, as the
reference does. This module imports only the stdlib and the agent's ``errors``/``messages``/
``rpc.framing`` modules: importing it pulls in no server, boot or upgrade code.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubeos.agent.errors import (
    AgentConnectionError,
    AgentError,
    AgentResponseError,
    AgentRpcError,
    AgentTimeoutError,
    ProtocolError,
)
from kubeos.agent.messages import (
    Certs,
    ConfigureRequest,
    KeyInfo,
    OperationResult,
    StatusResult,
    Sysconfig,
    TargetRequest,
    UpgradeRequest,
)
from kubeos.agent.rpc.framing import FrameScanner, request_message

__all__ = [
    "DEFAULT_SOCKET",
    "AgentClient",
    "AsyncAgentClient",
    "Certs",
    "ConfigureRequest",
    "KeyInfo",
    "OperationResult",
    "StatusResult",
    "Sysconfig",
    "UpgradeRequest",
]

DEFAULT_SOCKET = Path("/run/os-agent/os-agent.sock")
# Operations that download or write partitions get the long timeout.
_LONG_METHODS = frozenset({"prepare_upgrade", "configure"})
_ids = itertools.count(1)


def _decode_response(frame: bytes, request_id: int) -> Any:
    try:
        obj = json.loads(frame)
    except ValueError:
        raise AgentResponseError("Failed to parse response") from None
    if not isinstance(obj, dict) or obj.get("id") not in (request_id, None):
        raise AgentResponseError("Response is invalid")
    if "error" in obj:
        err = obj["error"]
        if not isinstance(err, dict):
            raise AgentResponseError("Response is invalid")
        code = err.get("code")
        raise AgentRpcError(
            str(err.get("message", "")), code=code if isinstance(code, int) else None
        )
    if "result" not in obj:
        raise AgentResponseError("Response is invalid")
    return obj["result"]


def _target_params(version: str | None) -> list[Any]:
    return [] if not version else [TargetRequest(version).to_json()]


@contextlib.contextmanager
def _connecting() -> Iterator[None]:
    """Connection failures as the documented errors (same words as the reference client)."""
    try:
        yield
    except TimeoutError:
        raise AgentTimeoutError(
            "Cannot connect to KubeOS os-agent unix socket, Connection timeout"
        ) from None
    except OSError as exc:
        raise AgentConnectionError(
            f"Cannot connect to KubeOS os-agent unix socket, {exc}"
        ) from None


@contextlib.contextmanager
def _exchanging(method: str, budget: float) -> Iterator[None]:
    """Failures after the connection was made, as the documented errors."""
    try:
        yield
    except TimeoutError:
        raise AgentTimeoutError(f"{method}: no answer within {budget:g} s") from None
    except ProtocolError:
        raise AgentResponseError("Failed to parse response") from None
    except AgentError:
        raise
    except OSError as exc:
        raise AgentConnectionError(f"{method}: connection to os-agent lost: {exc}") from None


class _Core:
    """What both flavours share: where the agent is, the timeouts, and reading one answer.

    Only the transport differs between :class:`AgentClient` and :class:`AsyncAgentClient`
    (blocking socket or asyncio stream); requests, decoding and errors are the same code.
    """

    def __init__(
        self,
        socket_path: Path | str = DEFAULT_SOCKET,
        *,
        connect_timeout: float = 5.0,
        call_timeout: float = 60.0,
        operation_timeout: float = 3600.0,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.operation_timeout = operation_timeout

    def _budget(self, method: str, timeout: float | None) -> float:
        if timeout:
            return timeout
        return self.operation_timeout if method in _LONG_METHODS else self.call_timeout

    @staticmethod
    def _answer(scanner: FrameScanner, data: bytes, request_id: int) -> tuple[bool, Any]:
        """Feed received bytes; ``(True, result)`` once the first whole frame is in."""
        if not data:
            raise AgentResponseError("Response is invalid: connection closed")
        frames = scanner.feed(data)
        if frames:
            return True, _decode_response(frames[0], request_id)
        return False, None


class AgentClient(_Core):
    """Blocking client; each method returns a typed result or raises an ``AgentClientError``."""

    def call(self, method: str, params: list[Any], *, timeout: float | None = None) -> Any:
        """Send one request and return its ``result``."""
        budget = self._budget(method, timeout)
        request_id = next(_ids)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout)
            with _connecting():
                sock.connect(str(self.socket_path))
            deadline = time.monotonic() + budget
            with _exchanging(method, budget):
                sock.settimeout(budget)
                sock.sendall(request_message(method, params, request_id))
                scanner = FrameScanner()
                while True:
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    done, result = self._answer(scanner, sock.recv(65536), request_id)
                    if done:
                        return result
        finally:
            sock.close()

    def prepare_upgrade(self, request: UpgradeRequest) -> OperationResult:
        return OperationResult.from_json(self.call("prepare_upgrade", [request.to_json()]))

    def upgrade(self, version: str | None = None) -> OperationResult:
        return OperationResult.from_json(self.call("upgrade", _target_params(version)))

    def rollback(self, version: str | None = None) -> OperationResult:
        return OperationResult.from_json(self.call("rollback", _target_params(version)))

    def configure(self, request: ConfigureRequest) -> OperationResult:
        return OperationResult.from_json(self.call("configure", [request.to_json()]))

    def commit(self) -> OperationResult:
        return OperationResult.from_json(self.call("commit", []))

    def status(self) -> StatusResult:
        return StatusResult.from_json(self.call("status", []))


class AsyncAgentClient(_Core):
    """asyncio flavour of :class:`AgentClient` with the same methods and errors."""

    async def call(self, method: str, params: list[Any], *, timeout: float | None = None) -> Any:
        budget = self._budget(method, timeout)
        request_id = next(_ids)
        with _connecting():
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        try:
            with _exchanging(method, budget):
                async with asyncio.timeout(budget):
                    return await self._exchange(reader, writer, method, params, request_id)
        finally:
            writer.close()

    @classmethod
    async def _exchange(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        params: list[Any],
        request_id: int,
    ) -> Any:
        writer.write(request_message(method, params, request_id))
        await writer.drain()
        scanner = FrameScanner()
        while True:
            done, result = cls._answer(scanner, await reader.read(65536), request_id)
            if done:
                return result

    async def prepare_upgrade(self, request: UpgradeRequest) -> OperationResult:
        return OperationResult.from_json(await self.call("prepare_upgrade", [request.to_json()]))

    async def upgrade(self, version: str | None = None) -> OperationResult:
        return OperationResult.from_json(await self.call("upgrade", _target_params(version)))

    async def rollback(self, version: str | None = None) -> OperationResult:
        return OperationResult.from_json(await self.call("rollback", _target_params(version)))

    async def configure(self, request: ConfigureRequest) -> OperationResult:
        return OperationResult.from_json(await self.call("configure", [request.to_json()]))

    async def commit(self) -> OperationResult:
        return OperationResult.from_json(await self.call("commit", []))

    async def status(self) -> StatusResult:
        return StatusResult.from_json(await self.call("status", []))
