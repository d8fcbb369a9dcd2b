"""Real parts for the container-image upgrade tests: a containerd and a dockerd of their own
(own root, state and socket under a temp dir, never the host's), a TLS registry on loopback
(Debian's ``docker-registry``, i.e. distribution), a ``certs.d`` that makes containerd trust the
test CA, and OCI images built with kbimg's writer and pushed with ``ctr images push``."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kubeos.kbimg.oci import Layer, write_image

BUILD_NS = "kubeos-test-build"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(cond: object, what: str, timeout: float = 30.0) -> None:
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come up")
        time.sleep(0.1)


def _unmount_under(base: Path) -> None:
    """Lazily unmount every mount below ``base`` (deepest first)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == str(base) or point.startswith(str(base) + "/"):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def mounts_under(base: Path) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(str(base) + "/"):
            out.append(point)
    return out


@contextlib.contextmanager
def short_tmpdir(prefix: str) -> Iterator[Path]:
    """A directory with a short path (unix socket paths are limited to 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        _unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- containerd ----------------------------------------------------------------------------------


@dataclass
class Containerd:
    base: Path
    address: str

    def argv(self, ns: str = "k8s.io") -> list[str]:
        """The ``ctr`` command line that talks to this containerd in namespace ``ns``."""
        return ["ctr", "--address", self.address, "-n", ns]

    def ctr(self, *args: str, ns: str = "k8s.io", check: bool = True) -> str:
        proc = subprocess.run(
            [*self.argv(ns), *args],
            capture_output=True, text=True, check=False, timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def store(self, ns: str = "k8s.io") -> dict[str, list[str]]:
        """What containerd holds in ``ns``: image refs, snapshot keys, leases, content."""

        def rows(*args: str) -> list[str]:
            lines = self.ctr(*args, ns=ns).splitlines()[1:]
            return sorted(line.split()[0] for line in lines if line.strip())

        return {
            "images": rows("images", "ls"),
            "snapshots": rows("snapshots", "ls"),
            "leases": rows("leases", "ls"),
            "content": rows("content", "ls"),
        }


@contextlib.contextmanager
def run_containerd() -> Iterator[Containerd]:
    with short_tmpdir("kctd-") as base:
        sock = base / "c.sock"
        (base / "config.toml").write_text(
            "version = 2\n"
            f'root = "{base}/root"\n'
            f'state = "{base}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{sock}"\n'
            f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
        )
        argv = ["containerd", "--config", str(base / "config.toml")]
        with _process(argv, base / "containerd.log"):
            ctd = Containerd(base=base, address=str(sock))
            _wait(lambda: ctd.ctr("version", ns="default") != "", "containerd")
            yield ctd


# --- registry ------------------------------------------------------------------------------------


@dataclass
class Registry:
    host: str  # 127.0.0.1:<port>
    hosts_dir: Path  # containerd certs.d trusting the test CA


def write_hosts_toml(hosts_dir: Path, host: str, ca: Path) -> None:
    d = hosts_dir / host
    d.mkdir(parents=True, exist_ok=True)
    (d / "hosts.toml").write_text(
        f'server = "https://{host}"\n'
        f'ca = "{ca}"\n'
        f'[host."https://{host}"]\n'
        '  capabilities = ["pull", "resolve", "push"]\n'
        f'  ca = "{ca}"\n'
    )


@contextlib.contextmanager
def run_registry(base: Path, ca_pem: bytes, cert: bytes, key: bytes) -> Iterator[Registry]:
    base.mkdir(parents=True, exist_ok=True)
    (base / "ca.crt").write_bytes(ca_pem)
    (base / "server.crt").write_bytes(cert)
    (base / "server.key").write_bytes(key)
    (base / "server.key").chmod(0o600)
    port = free_port()
    host = f"127.0.0.1:{port}"
    (base / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base}/data\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {host}\n"
        f"  tls:\n    certificate: {base}/server.crt\n    key: {base}/server.key\n"
    )
    hosts_dir = base / "certs.d"
    write_hosts_toml(hosts_dir, host, base / "ca.crt")
    ctx = ssl.create_default_context(cafile=str(base / "ca.crt"))
    with _process(["docker-registry", "serve", str(base / "config.yml")], base / "registry.log"):
        _wait(
            lambda: urllib.request.urlopen(f"https://{host}/v2/", context=ctx, timeout=2),
            "registry",
        )
        yield Registry(host=host, hosts_dir=hosts_dir)


def push_image(ctd: Containerd, reg: Registry, ref: str, layers: list[Layer],
               workdir: Path) -> str:
    """Build an OCI archive with kbimg's writer, import it into a build namespace, push it,
    and drop it again; returns the manifest digest (hex) the registry serves."""
    workdir.mkdir(parents=True, exist_ok=True)
    archive = workdir / "image.tar"
    digest = write_image(archive, ref, layers, workdir=workdir, cmd=["/bin/sh"])
    ctd.ctr("images", "import", "--no-unpack", str(archive), ns=BUILD_NS)
    ctd.ctr("images", "push", "--hosts-dir", str(reg.hosts_dir), ref, ns=BUILD_NS)
    ctd.ctr("images", "rm", "--sync", ref, ns=BUILD_NS)
    return digest.split(":", 1)[1]


# --- dockerd -------------------------------------------------------------------------------------


@dataclass
class Dockerd:
    host: str  # unix:///...

    def docker(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["docker", "--host", self.host, *args],
            capture_output=True, text=True, check=False, timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def store(self) -> dict[str, list[str]]:
        return {
            "images": sorted(self.docker("images", "-q").split()),
            "containers": sorted(self.docker("ps", "-aq").split()),
        }


def dockerd_usable() -> bool:
    return bool(shutil.which("dockerd") and shutil.which("docker")) and os.geteuid() == 0


@contextlib.contextmanager
def run_dockerd(insecure_registry: str) -> Iterator[Dockerd]:
    """A dockerd of its own (no iptables, no bridge: it never runs a container here). It reaches
    the test registry as an "insecure registry" (TLS without verification): dockerd reads
    registry CAs only from the host-wide /etc/docker/certs.d, which a test must not write."""
    with short_tmpdir("kdkr-") as base:
        sock = f"unix://{base}/d.sock"
        argv = [
            "dockerd", "--data-root", f"{base}/data", "--exec-root", f"{base}/exec",
            "--pidfile", f"{base}/d.pid", "--host", sock, "--iptables=false",
            "--ip6tables=false", "--bridge=none", "--insecure-registry", insecure_registry,
        ]
        with _process(argv, base / "dockerd.log"):
            d = Dockerd(host=sock)
            _wait(lambda: d.docker("version") != "", "dockerd", timeout=60)
            yield d
