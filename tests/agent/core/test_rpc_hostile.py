"""A broken or hostile client on the agent socket: every request gets an answer or a close,
nothing hangs, and nothing it sends can forge a log line."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import pytest

from kubeos.agent.client import AgentClient
from kubeos.agent.errors import INVALID_REQUEST, PARSE_ERROR

from .test_rpc import echo_methods, raw_exchange, running


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "run" / "os-agent" / "os-agent.sock"


@pytest.mark.parametrize("depth", [200, 5000, 100_000])
def test_a_deeply_nested_request_gets_a_parse_error(sock: Path, depth: int) -> None:
    payload = b'{"jsonrpc":"2.0","id":1,"method":"status","params":' + b"[" * depth \
        + b"]" * depth + b"}"
    with running(echo_methods(), sock):
        answer = json.loads(raw_exchange(sock, payload))
        assert answer["error"]["code"] == PARSE_ERROR and "nested" in answer["error"]["message"]
        assert AgentClient(sock).call("status", [])["status"] == "ok"


@pytest.mark.parametrize("raw_id", ["NaN", "Infinity", "-Infinity", "true", "[1]", "{}"])
def test_an_id_that_is_not_a_json_rpc_id_is_refused_with_valid_json(
    sock: Path, raw_id: str
) -> None:
    payload = f'{{"jsonrpc":"2.0","id":{raw_id},"method":"status"}}'.encode()
    with running(echo_methods(), sock):
        text = raw_exchange(sock, payload).decode()
        answer = json.loads(text, parse_constant=lambda c: pytest.fail(f"emitted {c}"))
        assert answer["error"]["code"] == INVALID_REQUEST and answer["id"] is None


def test_a_trickling_client_is_dropped_after_the_read_timeout(sock: Path) -> None:
    """The timeout bounds a whole message: one byte every 0.2 s does not keep it open."""
    with running(echo_methods(), sock, read_timeout=1.0):
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.connect(str(sock))
        slow.settimeout(0.05)
        start = time.monotonic()
        closed_after = None
        try:
            for byte in b'{"jsonrpc":"2.0","id":1,"method":"status","params":[' + b" " * 100:
                try:
                    slow.sendall(bytes([byte]))
                    if slow.recv(10) == b"":
                        closed_after = time.monotonic() - start
                        break
                except TimeoutError:
                    pass
                except OSError:
                    closed_after = time.monotonic() - start
                    break
                time.sleep(0.2)
        finally:
            slow.close()
        assert closed_after is not None and closed_after < 3.0


def test_connections_are_capped(sock: Path) -> None:
    with running(echo_methods(), sock, max_connections=3):
        held = []
        try:
            for _ in range(3):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(sock))
                held.append(s)
            time.sleep(0.2)
            answer = json.loads(raw_exchange(sock, b'{"jsonrpc":"2.0","id":1,"method":"status"}'))
            assert "too many connections" in answer["error"]["message"]
        finally:
            for s in held:
                s.close()
        time.sleep(0.2)
        assert AgentClient(sock).call("status", [])["status"] == "ok"


def test_a_method_name_cannot_forge_a_log_line(
    sock: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kubeos.agent.rpc.server")
    with running(echo_methods(), sock):
        raw_exchange(sock, json.dumps({"jsonrpc": "2.0", "id": 1,
                                       "method": "bad\nERROR forged line"}).encode())
        raw_exchange(sock, b'{"jsonrpc":"2.0","id":2,"method":"bad","params":[]}')
    ours = [r for r in caplog.records if r.name.startswith("kubeos")]
    assert any("bad" in r.getMessage() for r in ours)
    for record in ours:
        assert "\n" not in record.getMessage()
