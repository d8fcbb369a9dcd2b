"""Serve upgrade images over HTTPS on 127.0.0.1 with a throwaway CA of their own.

Why HTTPS and a CA: the agent refuses plain http unless ``flagSafe`` is set, and the demo should
take the path production takes (https, the CA in each node's ``/etc/KubeOS/certs``). The CA is
separate from the control plane's so nothing about the API server's trust leaks into nodes.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from kubeos.sim.pki import create_pki

CA_FILE = "sim-image-ca.crt"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class _Shared:
    files: dict[str, Path] = field(default_factory=dict)
    downloads: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        shared = self.server.shared
        path = shared.files.get(self.path)
        if path is None:
            self.send_error(404)
            return
        with shared.lock:
            shared.downloads[self.path] = shared.downloads.get(self.path, 0) + 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with path.open("rb") as f:
            shutil.copyfileobj(f, self.wfile)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: hundreds of nodes download


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    shared: _Shared


class ImageServer:
    """``with ImageServer(work) as srv: url = srv.publish(tar)``; nodes trust ``srv.ca_pem``."""

    def __init__(self, work: Path) -> None:
        self._work = work
        self._shared = _Shared()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.ca_pem = b""

    def __enter__(self) -> ImageServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        pki = create_pki(self._work / "pki")
        self.ca_pem = pki.ca.cert.read_bytes()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.shared = self._shared
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.apiserver.cert, pki.apiserver.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True,
                                        name="sim-image-server")
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def publish(self, tar: Path, name: str = "kubeos.tar") -> str:
        """Serve *tar* at ``/<name>``; returns its URL."""
        if self._server is None:
            raise RuntimeError("the image server is not running")
        self._shared.files[f"/{name}"] = tar
        return f"https://127.0.0.1:{self._server.server_address[1]}/{name}"

    def downloads(self, name: str = "kubeos.tar") -> int:
        return self._shared.downloads.get(f"/{name}", 0)
