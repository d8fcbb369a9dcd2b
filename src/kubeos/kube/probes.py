"""A tiny asyncio HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``.

Why not a web framework: three GET endpoints do not justify a dependency inside every
controller; prometheus-client renders the metrics and asyncio streams serve them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

Check = Callable[[], bool]


class ProbeServer:
    """Serve metrics from *registry* and the two probes from the given checks."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        healthy: Check = lambda: True,
        ready: Check = lambda: True,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.host = host
        self.port = port
        self._healthy = healthy
        self._ready = ready
        self._registry = registry
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request_line = await reader.readline()
                while True:  # discard headers
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            status, ctype, body = self._route(parts[0] if parts else "", path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _route(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path in ("/healthz", "/livez"):
            ok = _safe(self._healthy)
            return ("200 OK" if ok else "503 Service Unavailable"), "text/plain", (
                b"ok\n" if ok else b"unhealthy\n")
        if path == "/readyz":
            ok = _safe(self._ready)
            return ("200 OK" if ok else "503 Service Unavailable"), "text/plain", (
                b"ok\n" if ok else b"not ready\n")
        return "404 Not Found", "text/plain", b"not found\n"


def _safe(check: Check) -> bool:
    try:
        return bool(check())
    except Exception:
        return False
