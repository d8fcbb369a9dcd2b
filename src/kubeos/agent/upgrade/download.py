"""Open an image URL as a byte stream: http only with flagSafe, https with the request's CA,
mTLS with the request's client certificate and key.

Uses ``http.client`` directly: it streams with ``readinto`` into one reused buffer, has
explicit connect/read timeouts (the reference's 30 s overall timeout broke large downloads),
and adds no dependency to the host image. The CA given in the request is the only trust anchor
(the reference also trusted the system roots); a redirect is followed only under the same rules.
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from kubeos.agent.errors import CertificateError, DownloadError, InsecureSourceError
from kubeos.agent.messages import UpgradeRequest
from kubeos.agent.upgrade.certs import resolve_cert

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class TransportOptions:
    """How to reach the image server; built from an :class:`UpgradeRequest`."""

    flag_safe: bool
    mtls: bool
    ca_cert: str
    client_cert: str
    client_key: str
    certs_dir: Path
    timeout: float = 60.0

    @classmethod
    def from_request(cls, request: UpgradeRequest, certs_dir: Path) -> TransportOptions:
        return cls(
            flag_safe=request.flag_safe,
            mtls=request.mtls,
            ca_cert=request.certs.ca_cert,
            client_cert=request.certs.client_cert,
            client_key=request.certs.client_key,
            certs_dir=certs_dir,
        )


def tls_context(opts: TransportOptions) -> ssl.SSLContext:
    """TLS client context trusting only the request's CA, with the client identity for mTLS."""
    ca = resolve_cert(opts.certs_dir, opts.ca_cert, "certs.ca_cert")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError(f"cannot load CA certificate {opts.ca_cert}: {exc}") from None
    if opts.mtls:
        cert = resolve_cert(opts.certs_dir, opts.client_cert, "certs.client_cert")
        key = resolve_cert(opts.certs_dir, opts.client_key, "certs.client_key")
        try:
            ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
        except (ssl.SSLError, OSError) as exc:
            raise CertificateError(
                f"cannot load client certificate {opts.client_cert} / key {opts.client_key}: {exc}"
            ) from None
    return ctx


def check_url(url: str, opts: TransportOptions) -> None:
    """Refuse URLs the request does not allow, before any connection is made."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        if not parts.hostname:
            raise InsecureSourceError(f"image_url {url!r} has no host")
        return
    if parts.scheme == "http":
        if not opts.flag_safe:
            raise InsecureSourceError(
                "The upgrade image url is not safe: http is allowed only with flagSafe"
            )
        if not parts.hostname:
            raise InsecureSourceError(f"image_url {url!r} has no host")
        return
    raise InsecureSourceError(f"image_url must be an http(s) URL, got {url!r}")


class Download:
    """An open HTTP response body; ``length`` is the Content-Length when the server sent one."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse):
        self._conn = conn
        self._response = response
        length = response.getheader("Content-Length")
        self.length: int | None = int(length) if length and length.isdigit() else None

    def readinto(self, buffer: memoryview) -> int:
        try:
            return self._response.readinto(buffer)
        except http.client.IncompleteRead as exc:
            raise DownloadError(
                f"download truncated: connection closed {exc.expected} bytes early"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"download failed: {exc}") from None

    def close(self) -> None:
        self._response.close()
        self._conn.close()

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_download(url: str, opts: TransportOptions) -> Download:
    """Connect and return the body stream of a 200 response; errors say what went wrong."""
    context: ssl.SSLContext | None = None
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, opts)
        parts = urlsplit(url)
        host = parts.hostname or ""
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            context = context or tls_context(opts)
            conn = http.client.HTTPSConnection(
                host, parts.port, timeout=opts.timeout, context=context
            )
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=opts.timeout)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            conn.request("GET", path, headers={"User-Agent": "kubeos-os-agent"})
            response = conn.getresponse()
        except ssl.SSLError as exc:
            conn.close()
            raise DownloadError(f"TLS handshake with {host} failed: {exc.reason or exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise DownloadError(f"cannot download {url}: {exc}") from None
        if response.status in (301, 302, 303, 307, 308):
            location = response.getheader("Location")
            conn.close()
            if not location:
                raise DownloadError(f"{url}: redirect without Location")
            url = urljoin(url, location)
            continue
        if response.status != 200:
            conn.close()
            raise DownloadError(f"{url}: HTTP {response.status} {response.reason}")
        return Download(conn, response)
    raise DownloadError(f"{url}: too many redirects")
