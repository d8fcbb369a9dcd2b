"""The upgrade image as a container runtime sees it: ``ctr images import`` into a private
containerd, then ``ctr images mount`` shows ``/os.tar`` (the agent's containerd path)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeos.kbimg import build, config
from tests.agent.container.support import run_containerd
from tests.kbimg import support

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root"),
    pytest.mark.skipif(not support.have("containerd", "ctr"), reason="containerd not installed"),
]


@pytest.fixture
def ctr() -> Iterator[list[str]]:
    """A containerd of its own (socket, root and state under a short temp dir)."""
    with run_containerd() as containerd:
        yield containerd.argv("kbimg-test")


def test_upgrade_img_imports_and_mounts_with_ctr(tmp_path: Path, ctr: list[str]) -> None:
    root = support.make_tiny_root(tmp_path / "root")
    doc = support.tiny_doc(root)
    doc["from_rootfs"]["upgrade_img"] = "registry.example.com/kubeos/os:9.9"
    out = tmp_path / "out"
    build.build(config.load(support.write_toml(tmp_path / "k.toml", doc)), "upgrade-img", out)
    subprocess.run([*ctr, "images", "import", str(out / "upgrade-img.tar")], check=True,
                   capture_output=True)
    names = subprocess.run([*ctr, "images", "ls", "-q"], check=True, capture_output=True,
                           text=True).stdout.split()
    assert "registry.example.com/kubeos/os:9.9" in names
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run([*ctr, "images", "mount", "registry.example.com/kubeos/os:9.9", str(mnt)],
                   check=True, capture_output=True)
    try:
        assert (mnt / "os.tar").read_bytes() == (out / "kubeos.tar").read_bytes()
    finally:
        subprocess.run([*ctr, "images", "unmount", str(mnt)], check=True, capture_output=True)
    assert support.mounts_and_loops(tmp_path)[0] == []
