"""Real parts for the agent tests: a CA with server/client certificates, an HTTPS (or HTTP)
file server on loopback, GPT disk images on loop devices, and a sandbox root.

Also used by ``tests/bench/bench_disk_upgrade.py``.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import os
import shutil
import socketserver
import ssl
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

MiB = 1 << 20


# --- PKI ---------------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Issued:
    cert: bytes
    key: bytes


@dataclass
class CA:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str) -> CA:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(name, key, cert)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


@dataclass
class PKI:
    """A CA, its server and client certificates, and an unrelated CA (for "wrong CA")."""

    ca: CA
    other_ca: CA
    server: Issued
    client: Issued
    foreign_client: Issued

    @classmethod
    def create(cls) -> PKI:
        ca = CA.create("kubeos-test-ca")
        other = CA.create("kubeos-other-ca")
        return cls(
            ca=ca,
            other_ca=other,
            server=ca.issue("localhost", server=True),
            client=ca.issue("node-1", server=False),
            foreign_client=other.issue("intruder", server=False),
        )

    def install(self, certs_dir: Path) -> None:
        """Write the files a node has in /etc/KubeOS/certs."""
        certs_dir.mkdir(parents=True, exist_ok=True)
        (certs_dir / "ca.crt").write_bytes(self.ca.pem)
        (certs_dir / "other-ca.crt").write_bytes(self.other_ca.pem)
        (certs_dir / "client.crt").write_bytes(self.client.cert)
        (certs_dir / "client.key").write_bytes(self.client.key)
        (certs_dir / "client.key").chmod(0o600)
        (certs_dir / "foreign.crt").write_bytes(self.foreign_client.cert)
        (certs_dir / "foreign.key").write_bytes(self.foreign_client.key)


# --- file server -------------------------------------------------------------------------------


@dataclass
class Route:
    """What the server answers for one path: a file, or a deliberate failure."""

    file: Path | None = None
    status: int = 200
    truncate_at: int | None = None  # send only this many bytes, then close
    delay_per_mib: float = 0.0  # slow the body down (for kill-mid-write tests)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        route = self.server.routes.get(self.path)
        self.server.requests.append(self.path)
        if route is None or route.status != 200 or route.file is None:
            status = route.status if route is not None and route.status != 200 else 404
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = route.file.stat().st_size
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        limit = route.truncate_at if route.truncate_at is not None else size
        sent = 0
        with open(route.file, "rb") as f:
            while sent < limit:
                chunk = f.read(min(4 * MiB, limit - sent))
                if not chunk:
                    break
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    return
                sent += len(chunk)
                if route.delay_per_mib:
                    time.sleep(route.delay_per_mib * len(chunk) / MiB)
        if route.truncate_at is not None:
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2) if hasattr(self.connection, "shutdown") else None


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    routes: dict[str, Route]
    requests: list[str]


@dataclass
class FileServer:
    base_url: str
    routes: dict[str, Route]
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base_url + path


@contextmanager
def serve_files(
    pki: PKI | None, work: Path, *, require_client_cert: bool = False
) -> Iterator[FileServer]:
    """An HTTPS server (HTTP when ``pki`` is None) on 127.0.0.1 in a thread."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.routes = {}
    server.requests = []
    scheme = "http"
    if pki is not None:
        work.mkdir(parents=True, exist_ok=True)
        (work / "server.crt").write_bytes(pki.server.cert + pki.ca.pem)
        (work / "server.key").write_bytes(pki.server.key)
        (work / "ca.crt").write_bytes(pki.ca.pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(work / "server.crt", work / "server.key")
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(work / "ca.crt")
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        fs = FileServer(f"{scheme}://127.0.0.1:{server.server_address[1]}", server.routes)
        fs.requests = server.requests
        yield fs
    finally:
        server.shutdown()
        server.server_close()


# --- root filesystems and payloads ---------------------------------------------------------------


def make_root_tree(path: Path, version: str, *, extra_mib: int = 0) -> Path:
    """A minimal bootable-looking KubeOS root: kernel, initrd, os-release, a few files."""
    (path / "boot").mkdir(parents=True, exist_ok=True)
    (path / "boot" / "vmlinuz").write_bytes(b"kernel " + version.encode())
    (path / "boot" / "initramfs.img").write_bytes(b"initrd " + version.encode())
    (path / "usr" / "lib").mkdir(parents=True, exist_ok=True)
    (path / "usr" / "lib" / "os-release").write_text(
        f'NAME="KubeOS"\nID=kubeos\nPRETTY_NAME="KubeOS {version}"\nVERSION_ID={version}\n'
    )
    (path / "etc").mkdir(exist_ok=True)
    (path / "etc" / "hostname").write_text("node\n")
    (path / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    tool = path / "usr" / "bin" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o4755)
    (path / "bin").symlink_to("usr/bin") if not (path / "bin").exists() else None
    if extra_mib:
        with open(path / "usr" / "lib" / "blob", "wb") as f:
            for i in range(extra_mib):
                f.write(os.urandom(MiB) if i < 4 else bytes([i % 251]) * MiB)
    return path


def make_rootfs_tar(tree: Path, out: Path) -> Path:
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(tree, arcname=".")
    return out


def make_fs_image(tree: Path, out: Path, size_mib: int, label: str = "ROOT-A") -> Path:
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", label, "-d", str(tree), str(out), f"{size_mib}M"],
        check=True,
    )
    return out


# --- GPT disks on loop devices -------------------------------------------------------------------


@dataclass
class LoopDisk:
    """A GPT disk image attached to a loop device, with its partition devices."""

    image: Path
    device: Path
    parts: dict[str, Path]  # by partition name

    def partition_devno(self, name: str) -> str:
        st = os.stat(self.parts[name])
        return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def _wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.05)


def _unmount_users(device: Path) -> None:
    st = os.stat(device)
    devno = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[2] == devno:
            subprocess.run(["umount", "-l", fields[4]], check=False)


@contextmanager
def loop_disk(
    image: Path,
    layout: list[tuple[str, int]],
    *,
    partlabels: bool = True,
) -> Iterator[LoopDisk]:
    """Create a sparse GPT image with ``layout`` = [(name, MiB)], attach it (``losetup -P`` +
    ``partx -u``), and always detach exactly this loop device afterwards."""
    total = 2 + sum(size for _, size in layout)
    with open(image, "wb") as f:
        f.truncate(total * MiB)
    script = ["label: gpt", "unit: sectors"]
    start = 2048
    for name, size in layout:
        sectors = size * MiB // 512
        entry = f"start={start}, size={sectors}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        if partlabels:
            entry += f', name="{name}"'
        script.append(entry)
        start += sectors
    subprocess.run(
        ["sfdisk", "-q", str(image)], input="\n".join(script) + "\n", text=True, check=True
    )
    device = Path(
        subprocess.run(
            ["losetup", "-f", "--show", "-P", str(image)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    try:
        subprocess.run(["partx", "-u", str(device)], check=False, capture_output=True)
        parts = {}
        for i, (name, _) in enumerate(layout, start=1):
            part = Path(f"{device}p{i}")
            _wait_for(part)
            parts[name] = part
        yield LoopDisk(image=image, device=device, parts=parts)
    finally:
        for part in Path("/dev").glob(device.name + "p*"):
            _unmount_users(part)
        subprocess.run(["losetup", "-d", str(device)], check=False)


def mkfs_ext4(device: Path, label: str, tree: Path | None = None) -> None:
    argv = ["mkfs.ext4", "-q", "-F", "-L", label]
    if tree is not None:
        argv += ["-d", str(tree)]
    subprocess.run([*argv, str(device)], check=True)


def mkfs_vfat(device: Path, label: str) -> None:
    subprocess.run(["mkfs.vfat", "-n", label, str(device)], check=True, capture_output=True)


def have_tools(*names: str) -> bool:
    return all(shutil.which(n) for n in names)


def loop_devices_work() -> bool:
    return (
        os.geteuid() == 0
        and Path("/dev/loop-control").exists()
        and have_tools("losetup", "sfdisk", "partx", "mkfs.ext4")
    )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()
