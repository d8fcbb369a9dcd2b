"""JSON-RPC server and client over a real unix socket: framing, errors, permissions, timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from kubeos.agent.client import AgentClient, AsyncAgentClient
from kubeos.agent.errors import (
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    AgentConnectionError,
    AgentRpcError,
    AgentTimeoutError,
    InvalidRequestError,
)
from kubeos.agent.rpc.server import RpcServer

Methods = dict[str, Callable[[list[Any]], Any]]


@contextmanager
def running(methods: Methods, sock: Path, **kwargs: Any) -> Iterator[RpcServer]:
    """Serve ``methods`` in a background event loop."""
    loop = asyncio.new_event_loop()
    server = RpcServer(methods, sock, **kwargs)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(5)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def echo_methods() -> Methods:
    def slow(params: list[Any]) -> Any:
        time.sleep(float(params[0]))
        return {"status": "Slept"}

    def bad(params: list[Any]) -> Any:
        raise InvalidRequestError("UpgradeRequest.version must be a string")

    return {
        "status": lambda params: {"status": "ok", "params": params},
        "slow": slow,
        "bad": bad,
        "crash": lambda params: 1 / 0,
    }


def raw_exchange(sock: Path, payload: bytes, timeout: float = 5.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "run" / "os-agent" / "os-agent.sock"


def test_socket_and_directory_permissions(sock: Path) -> None:
    with running(echo_methods(), sock):
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o750
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert not sock.exists()


def test_reference_wire_format(sock: Path) -> None:
    """Positional params; no terminator needed; two requests in one write; newline replies."""
    with running(echo_methods(), sock):
        reply = raw_exchange(
            sock, b'{"jsonrpc":"2.0","method":"status","params":[{"a":"}{"}],"id":7}'
        )
        assert reply.endswith(b"\n")
        assert json.loads(reply) == {
            "jsonrpc": "2.0",
            "result": {"status": "ok", "params": [{"a": "}{"}]},
            "id": 7,
        }
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(sock))
            s.sendall(
                b'{"jsonrpc":"2.0","method":"status","params":[],"id":1}\n'
                b'{"jsonrpc":"2.0","method":"status","params":[],"id":2}'
            )
            data = b""
            while data.count(b"\n") < 2:
                data += s.recv(65536)
        assert [json.loads(line)["id"] for line in data.splitlines()] == [1, 2]


def test_unknown_method(sock: Path) -> None:
    with running(echo_methods(), sock):
        reply = json.loads(raw_exchange(sock, b'{"jsonrpc":"2.0","method":"nope","id":1}'))
        assert reply["error"]["code"] == METHOD_NOT_FOUND
        with pytest.raises(AgentRpcError) as err:
            AgentClient(sock).call("nope", [])
        assert err.value.is_method_not_found


def test_malformed_json(sock: Path) -> None:
    with running(echo_methods(), sock):
        reply = json.loads(raw_exchange(sock, b'{"jsonrpc":"2.0","method":}'))
        assert reply["error"]["code"] == PARSE_ERROR
        reply = json.loads(raw_exchange(sock, b"hello\n"))
        assert reply["error"]["code"] == PARSE_ERROR
        # the server is still serving
        assert AgentClient(sock).call("status", [])["status"] == "ok"


def test_errors_are_json_rpc_error_objects(sock: Path) -> None:
    with running(echo_methods(), sock):
        client = AgentClient(sock)
        with pytest.raises(AgentRpcError, match=r"UpgradeRequest\.version must be a string") as e:
            client.call("bad", [])
        assert e.value.code == -1
        with pytest.raises(AgentRpcError, match="ZeroDivisionError"):
            client.call("crash", [])


def test_silent_client_does_not_block_others(sock: Path) -> None:
    with running(echo_methods(), sock, read_timeout=0.5):
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        idle.connect(str(sock))
        half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        half.connect(str(sock))
        half.sendall(b'{"jsonrpc":"2.0","method":"sta')
        try:
            assert AgentClient(sock).call("status", [])["status"] == "ok"
            idle.settimeout(5)
            assert idle.recv(10) == b""  # dropped after the read timeout
            half.settimeout(5)
            assert half.recv(10) == b""
        finally:
            idle.close()
            half.close()


def test_long_call_does_not_block_status(sock: Path) -> None:
    with running(echo_methods(), sock):
        client = AgentClient(sock)
        t = threading.Thread(target=client.call, args=("slow", [3]))
        t.start()
        time.sleep(0.2)
        assert client.call("status", [])["status"] == "ok"
        assert t.is_alive()  # answered while the long call was still running
        t.join()


def test_peer_uid_is_checked(sock: Path) -> None:
    with (
        running(echo_methods(), sock, allowed_uids=frozenset({4242})),
        pytest.raises(AgentRpcError, match="permission denied"),
    ):
        AgentClient(sock).call("status", [])


def test_client_timeouts(sock: Path, tmp_path: Path) -> None:
    with pytest.raises(AgentConnectionError, match="Cannot connect"):
        AgentClient(tmp_path / "missing.sock").call("status", [])
    with running(echo_methods(), sock), pytest.raises(AgentTimeoutError):
        AgentClient(sock, call_timeout=0.3).call("slow", [2])


async def test_async_client(sock: Path, tmp_path: Path) -> None:
    with running(echo_methods(), sock):
        client = AsyncAgentClient(sock)
        assert (await client.call("status", [1]))["params"] == [1]
        with pytest.raises(AgentTimeoutError):
            await AsyncAgentClient(sock, call_timeout=0.3).call("slow", [2])
    with pytest.raises(AgentConnectionError):
        await AsyncAgentClient(tmp_path / "missing.sock").call("status", [])


def test_client_module_imports_no_server_code() -> None:
    """The proxy imports only the client: it must not pull in boot/upgrade/server/settings."""
    code = (
        "import sys, kubeos.agent.client; "
        "bad=[m for m in sys.modules if m.startswith(('kubeos.agent.boot','kubeos.agent.upgrade',"
        "'kubeos.agent.server','kubeos.agent.settings','kubeos.agent.rpc.server',"
        "'kubeos.agent.service'))]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
