"""JSON-RPC 2.0 server on an asyncio unix stream socket.

Safety properties, each tested:

* the socket directory is created 0750 and the socket 0600 (bound under a restrictive umask, so
  there is no window in which it is wider), and every connection's uid is checked with
  ``SO_PEERCRED`` — filesystem permissions alone are not trusted;
* handlers run in worker threads, so a long operation never blocks the event loop: ``status``
  is answered while an upgrade streams (mutual exclusion of operations is the service's job);
* a connection that sends nothing, or half a message, is dropped after ``read_timeout`` without
  affecting other clients — the timeout bounds the whole message, not each read, so a client
  trickling a byte at a time cannot hold a connection; at most ``max_connections`` are served at
  once (more are answered with an error and closed); oversized, too deeply nested or malformed
  input gets a JSON-RPC error and a close;
* names and texts from the client are logged with ``repr``, so a ``\\n`` cannot forge a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubeos.agent.errors import (
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    AgentError,
    ProtocolError,
)
from kubeos.agent.rpc.framing import (
    FrameScanner,
    error_message,
    parse_request,
    request_id_of,
    result_message,
)

log = logging.getLogger(__name__)

Handler = Callable[[list[Any]], Any]
"""A method: takes the positional params, returns a JSON-serialisable result, raises AgentError."""

PERMISSION_DENIED = -32001
SERVER_BUSY = -32002
MAX_CONNECTIONS = 32
_PEERCRED = struct.Struct("3i")


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process on the other end of a unix stream socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    return int(uid)


def bind_private_socket(path: Path) -> socket.socket:
    """Create the socket directory (0750) and bind ``path`` as a 0600 unix socket.

    A stale socket file from a crashed agent is removed; a live one (something answers) is
    not, because two agents writing the same partitions would be the worst possible outcome.
    """
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o750)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise AgentError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(path))
        except OSError:
            path.unlink()
        else:
            raise AgentError(f"another os-agent is already serving on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return sock


class RpcServer:
    """Serves ``methods`` on ``socket_path`` until :meth:`close`."""

    def __init__(
        self,
        methods: Mapping[str, Handler],
        socket_path: Path,
        *,
        allowed_uids: frozenset[int] | None = None,
        read_timeout: float = 30.0,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._methods = dict(methods)
        self.socket_path = socket_path
        self._allowed = allowed_uids if allowed_uids is not None else frozenset({0, os.geteuid()})
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        sock = bind_private_socket(self.socket_path)
        self._server = await asyncio.start_unix_server(self._serve_connection, sock=sock)
        log.info("os-agent listening on %s", self.socket_path)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= self._max_connections:
            log.warning("refusing a connection: %d already open", len(self._connections))
            busy = AgentError("too many connections", code=SERVER_BUSY)
            with contextlib.suppress(Exception):
                writer.write(error_message(None, busy))
                await writer.drain()
            writer.close()
            return
        if task is not None:
            self._connections.add(task)
        try:
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock)
            allowed = uid in self._allowed
            if not allowed:
                log.warning("refusing requests from uid %d", uid)
            await self._read_loop(reader, writer, allowed=allowed)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_loop(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, allowed: bool
    ) -> None:
        scanner = FrameScanner()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._read_timeout  # for the whole next message
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(65536)
            except TimeoutError:
                log.info("closing connection: no whole message within %.0f s",
                         self._read_timeout)
                return
            if not data:
                return
            try:
                frames = scanner.feed(data)
            except ProtocolError as exc:
                writer.write(error_message(None, exc))
                await writer.drain()
                return
            for frame in frames:
                if not allowed:
                    # answer (so the caller learns why) but run nothing, then hang up
                    denied = AgentError("permission denied", code=PERMISSION_DENIED)
                    writer.write(error_message(request_id_of(frame), denied))
                    await writer.drain()
                    return
                response = await self._handle_frame(frame)
                if response is not None:
                    writer.write(response)
                    await writer.drain()
            if frames and not scanner.pending():
                deadline = loop.time() + self._read_timeout

    async def _handle_frame(self, frame: bytes) -> bytes | None:
        try:
            request = parse_request(frame)
        except ProtocolError as exc:
            return error_message(request_id_of(frame), exc)
        handler = self._methods.get(request.method)
        try:
            if handler is None:
                raise ProtocolError("Method not found", code=METHOD_NOT_FOUND)
            result = await asyncio.to_thread(handler, request.params)
        except AgentError as exc:
            log.info("%r failed: %r", request.method, str(exc))
            response = error_message(request.id, exc)
        except Exception as exc:
            log.exception("%r crashed", request.method)
            response = error_message(
                request.id, AgentError(f"internal error: {exc!r}", code=INTERNAL_ERROR)
            )
        else:
            response = result_message(request.id, result)
        return None if request.is_notification else response
