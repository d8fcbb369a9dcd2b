"""Fixtures of the release tests: one release build per session, one private containerd.

The build (wheels, one Debian base for the operator and proxy images, the admin container)
takes about a minute and a half, so every test of the session reads the same output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubeos.kbimg import release


@dataclass(frozen=True)
class Built:
    output: Path
    result: release.Result
    seconds: float


def _missing(*programs: str) -> list[str]:
    return [p for p in programs if shutil.which(p) is None]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    if os.geteuid() != 0:
        pytest.skip("kbimg release needs root (mmdebstrap --mode=root)")
    if _missing("mmdebstrap", "unshare"):
        pytest.skip("mmdebstrap not installed (hack/setup.sh)")
    output = tmp_path_factory.mktemp("release") / "out"
    started = time.monotonic()
    result = release.build_release(output)
    seconds = time.monotonic() - started
    print(f"\nkbimg release: {seconds:.1f}s in all; " + ", ".join(
        f"{k} {v:.1f}s" for k, v in result.seconds.items()))
    for name, facts in result.images.items():
        size = int(str(facts["bytes"])) / 2**20
        unpacked = facts.get("root_bytes")
        extra = f", {int(str(unpacked)) / 2**20:.1f} MiB unpacked" if unpacked else ""
        print(f"  {name}: {size:.1f} MiB archive{extra}")
    return Built(output, result, seconds)


@pytest.fixture(scope="session")
def ctr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A containerd of its own (root, state, socket under a temp dir), stopped by its PID."""
    if os.geteuid() != 0:
        pytest.skip("containerd needs root")
    if _missing("containerd", "ctr", "runc"):
        pytest.skip("containerd not installed (hack/setup.sh)")
    base = tmp_path_factory.mktemp("containerd")
    sock = base / "containerd.sock"
    (base / "config.toml").write_text(
        f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
        f'[grpc]\n  address = "{sock}"\n'
        '[plugins."io.containerd.grpc.v1.cri"]\n  disable_cgroup = true\n')
    log = (base / "log").open("wb")
    proc = subprocess.Popen(["containerd", "--config", str(base / "config.toml")],
                            stdout=log, stderr=log)
    argv = ["ctr", "-a", str(sock), "-n", "kubeos-release-test"]
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([*argv, "version"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.skip("private containerd did not start")
            time.sleep(0.2)
        yield argv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
