"""A build killed with SIGKILL at random points leaves no mounts, no loop devices, no running
children and no partial artifact under a final name; the next build succeeds."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubeos.kbimg.build import VM_ARTIFACTS
from kubeos.kbimg.checksums import sha256_file
from kubeos.kbimg.sandbox import sandboxed_argv
from tests.kbimg import support

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="builds root-owned trees (needs root)"),
    pytest.mark.skipif(not support.have("sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy",
                                        "grub-mkimage", "qemu-img", "unshare"),
                       reason="kbimg tools missing (hack/setup.sh)"),
]

KILLS = 8


def _kbimg(toml: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "kubeos.kbimg.cli", "create", "-f", str(toml), "vm-img",
            "--output", str(out)]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        children = [c for c, p in parents.items() if p == current]
        found += children
        frontier += children
    return found


def _artifacts(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if not p.name.startswith(".")} if out.is_dir() else set()


def _assert_consistent(out: Path) -> None:
    """Whatever is under a final name is complete and belongs to one build."""
    if not out.is_dir():
        return
    present = _artifacts(out)
    assert present <= set(VM_ARTIFACTS)
    if {"kubeos.tar", "kubeos.tar.sha256"} <= present:
        digest = (out / "kubeos.tar.sha256").read_text().split()[0]
        assert digest == sha256_file(out / "kubeos.tar")
    if "system.img" in present:
        assert os.path.getsize(out / "system.img") == 3 << 30
        assert len(support.partition_table(out / "system.img")["partitions"]) == 4
    if "system.qcow2" in present:
        subprocess.run(["qemu-img", "check", str(out / "system.qcow2")], check=True,
                       capture_output=True)


def test_sigkill_at_random_points(tmp_path: Path) -> None:
    root = support.make_tiny_root(tmp_path / "root")
    bulk = root / "usr/share/bulk"
    bulk.mkdir(parents=True)
    rng = random.Random(1234)
    for i in range(4):  # some data so each step takes measurable time
        (bulk / f"blob{i}").write_bytes(rng.randbytes(12 << 20))
    toml = support.write_toml(tmp_path / "kbimg.toml", support.tiny_doc(root))
    out = tmp_path / "out"
    before = support.mounts_and_loops(tmp_path)

    # Measure one build: when its first artifact appears (publishing) and when it ends.
    measure = tmp_path / "measure"
    began = time.monotonic()
    proc = subprocess.Popen(_kbimg(toml, measure), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first_artifact = None
    while proc.poll() is None:
        if first_artifact is None and measure.is_dir() and _artifacts(measure):
            first_artifact = time.monotonic() - began
        time.sleep(0.005)
    assert proc.returncode == 0
    duration = time.monotonic() - began
    publish_at = first_artifact if first_artifact is not None else duration

    outs = []
    for n in range(KILLS):
        out = tmp_path / f"out{n}"
        outs.append(out)
        delay = rng.uniform(0.05, duration)
        proc = subprocess.Popen(_kbimg(toml, out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while _processes_mentioning(str(out)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_mentioning(str(out)) == [], f"children survived kill {n}"
        assert support.mounts_and_loops(tmp_path) == before, f"mounts or loops changed by kill {n}"
        if delay < 0.5 * publish_at:  # killed well before publishing: nothing may show
            assert _artifacts(out) == set(), f"kill {n} at {delay:.2f}s left {_artifacts(out)}"
        _assert_consistent(out)

    for out in (outs[0], outs[-1]):  # the next build in a killed build's directory succeeds
        result = subprocess.run(_kbimg(toml, out), capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert {p.name for p in out.iterdir()} == {".kbimg.lock", *VM_ARTIFACTS}
        _assert_consistent(out)
    assert support.mounts_and_loops(tmp_path) == before


def test_killed_sandbox_leaves_no_mounts(tmp_path: Path) -> None:
    """The steps that do mount (chroot_script, dnf) mount only in a private namespace that
    dies with the step."""
    root = tmp_path / "root"
    root.mkdir()
    before = support.mounts_and_loops(tmp_path)
    proc = subprocess.Popen(sandboxed_argv(root, ["sleep", "60"], chroot=False))
    try:
        deadline = time.monotonic() + 10
        inner: list[int] = []
        while time.monotonic() < deadline:
            inner = [p for p in _descendants(proc.pid) if _comm(p) == "sleep"]
            if inner:
                break
            time.sleep(0.05)
        assert inner, "sandboxed command did not start"
        inside = Path(f"/proc/{inner[0]}/mounts").read_text()
        assert f"{root}/proc" in inside and f"{root}/dev" in inside
        assert f"{root}/proc" not in Path("/proc/mounts").read_text()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in inner) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in inner)
    assert support.mounts_and_loops(tmp_path) == before


def test_second_build_waits_for_none_and_fails_fast_on_lock(tmp_path: Path) -> None:
    from kubeos.kbimg import workspace
    from kubeos.kbimg.errors import BuildError

    out = tmp_path / "out"
    held = workspace.locked_output(out)
    held.__enter__()
    try:
        with pytest.raises(BuildError, match="another kbimg build"), \
                workspace.locked_output(out):
            pass
    finally:
        held.__exit__(None, None, None)
    with workspace.locked_output(out):  # released on close, never stale
        pass


@pytest.mark.skipif(not support.have("mmdebstrap"), reason="needs mmdebstrap")
def test_sigkill_during_mmdebstrap(tmp_path: Path) -> None:
    """mmdebstrap --mode=root mounts /proc, /sys and /dev in its target; killed mid-way, none
    of it may stay mounted and none of its processes may keep running."""
    doc = {"from_debian": {"suite": "bookworm", "version": "1"},
           "disk_partition": {"root": 700, "img_size": 4}}
    toml = support.write_toml(tmp_path / "kbimg.toml", doc)
    out = tmp_path / "out"
    proc = subprocess.Popen(_kbimg(toml, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    # wait until mmdebstrap has mounted inside its target (seen from its own namespace)
    mounted = False
    while time.monotonic() < deadline and not mounted:
        for pid in _descendants(proc.pid):
            try:
                mounted = f"{out}/" in Path(f"/proc/{pid}/mounts").read_text() and (
                    "/proc " in Path(f"/proc/{pid}/mounts").read_text())
            except OSError:
                continue
            if mounted:
                break
        time.sleep(0.2)
    children = _descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{p}").exists() for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mounted, "mmdebstrap never mounted in its target within 60 s"
    assert not [p for p in children if Path(f"/proc/{p}").exists()]
    assert support.mounts_and_loops(tmp_path) == ([], [])
    assert not [p for p in out.iterdir() if not p.name.startswith(".")]
