"""JSON-RPC 2.0 message framing, wire-compatible with the reference agent and client.

The reference server (jsonrpc-ipc-server, ``StreamCodec::stream_incoming``) splits incoming bytes
into messages by balancing braces, so a request needs no terminator; it writes each response
followed by ``\\n``. The reference client writes one request and reads one JSON value back. We do
the same in both directions: requests and responses are whole JSON values, each written with a
trailing newline, and readers split on balanced braces, never on newlines.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from kubeos.agent.errors import (
    INVALID_REQUEST,
    PARSE_ERROR,
    AgentError,
    ProtocolError,
)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""Upper bound of one message; larger input is a parse error (a request is a few KiB)."""

MAX_DEPTH = 64
"""Deepest nesting of one message. A real request nests five levels; without a bound, a
deeply nested value made ``json.loads`` raise RecursionError, which escaped the framing and
left the client without an answer."""


class FrameScanner:
    """Incremental splitter of a byte stream into complete top-level JSON values.

    It tracks string and escape state so that braces inside strings do not count. Input that
    does not start with ``{`` or ``[`` cannot become a JSON-RPC message and is reported at once,
    instead of waiting for a timeout.
    """

    def __init__(self, limit: int = MAX_MESSAGE_BYTES) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._limit = limit

    def pending(self) -> bool:
        """Whether part of a message is buffered (whitespace between messages does not count)."""
        return bool(self._buf.strip())

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the messages completed by them."""
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        i = self._pos
        while i < len(buf):
            c = buf[i]
            if self._depth == 0:
                if c in b" \t\r\n":
                    i += 1
                    continue
                if c not in b"{[":
                    raise ProtocolError(
                        "Parse error: a message must be a JSON object", code=PARSE_ERROR
                    )
                del buf[:i]  # a message always starts at offset 0
                i = 0
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == 0x5C:  # backslash
                    self._escape = True
                elif c == 0x22:  # quote
                    self._in_string = False
            elif c == 0x22:
                self._in_string = True
            elif c in b"{[":
                self._depth += 1
                if self._depth > MAX_DEPTH:
                    raise ProtocolError(
                        f"Parse error: nested deeper than {MAX_DEPTH} levels", code=PARSE_ERROR
                    )
            elif c in b"}]":
                self._depth -= 1
                if self._depth == 0:
                    frames.append(bytes(buf[: i + 1]))
                    del buf[: i + 1]
                    i = 0
                    continue
            i += 1
        self._pos = i
        if len(buf) > self._limit:
            raise ProtocolError("Parse error: message too large", code=PARSE_ERROR)
        return frames


@dataclass(frozen=True)
class Request:
    """A parsed JSON-RPC request; ``id`` is None for notifications."""

    method: str
    params: list[Any]
    id: Any
    is_notification: bool


def parse_request(frame: bytes) -> Request:
    """Decode one frame; raises :class:`ProtocolError` with the standard code."""
    try:
        obj = json.loads(frame)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"Parse error: {exc}", code=PARSE_ERROR) from None
    if isinstance(obj, list):
        raise ProtocolError(
            "Invalid request: batch requests are not supported", code=INVALID_REQUEST
        )
    if not isinstance(obj, dict):
        raise ProtocolError("Invalid request: not an object", code=INVALID_REQUEST)
    method = obj.get("method")
    if not isinstance(method, str):
        raise ProtocolError("Invalid request: method must be a string", code=INVALID_REQUEST)
    params = obj.get("params", [])
    if params is None:
        params = []
    if isinstance(params, dict):
        # Named params are valid JSON-RPC; the protocol is positional, so pass them as one object.
        params = [params]
    if not isinstance(params, list):
        raise ProtocolError("Invalid request: params must be an array", code=INVALID_REQUEST)
    request_id = obj.get("id")
    if not valid_id(request_id):
        raise ProtocolError(
            "Invalid request: id must be a string, a finite number or null", code=INVALID_REQUEST
        )
    return Request(method=method, params=params, id=request_id, is_notification="id" not in obj)


def valid_id(value: Any) -> bool:
    """JSON-RPC 2.0 ids: string, number or null. NaN and infinities are not JSON at all."""
    if value is None or isinstance(value, str):
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def request_id_of(frame: bytes) -> Any:
    """Best-effort id of a frame that failed validation, so the error can name it."""
    try:
        obj = json.loads(frame)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    found = obj.get("id") if isinstance(obj, dict) else None
    return found if valid_id(found) else None


def encode(obj: Any) -> bytes:
    # allow_nan=False: never emit NaN/Infinity, which no JSON parser on the other end accepts
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def result_message(request_id: Any, result: Any) -> bytes:
    return encode({"jsonrpc": "2.0", "result": result, "id": request_id})


def error_message(request_id: Any, error: AgentError) -> bytes:
    return encode(
        {
            "jsonrpc": "2.0",
            "error": {"code": error.code, "message": error.message},
            "id": request_id,
        }
    )


def request_message(method: str, params: list[Any], request_id: int) -> bytes:
    return encode({"jsonrpc": "2.0", "method": method, "params": params, "id": request_id})
