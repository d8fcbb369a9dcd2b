"""Fixtures of the release tests: one release build per session, one private containerd.

The build (wheels, one Debian base for the operator and proxy images, the admin container)
takes about a minute and a half, so every test of the session reads the same output.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubeos.kbimg import release
from tests.agent.container.support import run_containerd


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
def ctr() -> Iterator[list[str]]:
    """A containerd of its own (root, state and socket under a short temp dir)."""
    if os.geteuid() != 0:
        pytest.skip("containerd needs root")
    if _missing("containerd", "ctr", "runc"):
        pytest.skip("containerd not installed (hack/setup.sh)")
    with run_containerd() as containerd:
        yield containerd.argv("kubeos-release-test")
