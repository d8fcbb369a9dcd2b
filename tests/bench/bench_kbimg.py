"""Benchmark of ``kbimg create vm-img`` from a prepared root, against the raw limit.

Run: ``.venv/bin/python tests/bench/bench_kbimg.py [--runs N]`` (as root), or through pytest:
``pytest -m bench -s tests/bench/bench_kbimg.py``.

The raw limit is measured in the same run on the same tree: create the disk file and write
the root filesystem into it with ``mkfs.ext4 -d`` at the ROOT-A offset (then fsync), which is
the least any builder of this disk has to do. kbimg does more on top (copy of the source tree,
agent and units, kubeos.tar, ESP with GRUB, ROOT-B, PERSIST, qcow2, fsync before publishing);
the per-step times show where it goes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import tomlkit

from kubeos.kbimg import build, config


def prepare_root(root: Path) -> Path:
    """A root of realistic shape: a Python stdlib (thousands of small files) plus a kernel."""
    for d in ("etc", "boot", "var/lib", "usr/lib"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "boot/vmlinuz-6.1.0").write_bytes(os.urandom(8 << 20))
    (root / "boot/initramfs-6.1.0.img").write_bytes(os.urandom(16 << 20))
    stdlib = Path(os.__file__).parent
    shutil.copytree(stdlib, root / "usr/lib" / stdlib.name, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "test", "site-packages"))
    return root


def tree_size(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                files += 1
                size += p.stat().st_size
    return files, size


def raw_limit(root: Path, work: Path, cfg: config.Config) -> float:
    """truncate + mkfs.ext4 -d at the ROOT-A offset + fsync of the disk file."""
    disk = work / "raw.img"
    began = time.monotonic()
    with disk.open("wb") as f:
        f.truncate(cfg.disk_partition.img_size_gib << 30)
    subprocess.run(["mkfs.ext4", "-F", "-q", "-L", "ROOT-A", "-E", f"offset={60 << 20}",
                    "-d", str(root), str(disk), f"{cfg.disk_partition.root_mib}M"], check=True)
    with disk.open("rb") as f:
        os.fsync(f.fileno())
    elapsed = time.monotonic() - began
    disk.unlink()
    return elapsed


def kbimg_build(toml: Path, out: Path) -> tuple[float, dict[str, float]]:
    steps: list[tuple[str, float]] = []
    began = time.monotonic()
    build.build(config.load(toml), "vm-img", out,
                lambda text: steps.append((text, time.monotonic())))
    end = time.monotonic()
    durations: dict[str, float] = {}
    marks = [*steps, ("end", end)]
    for (name, t0), (_, t1) in itertools.pairwise(marks):
        durations[name] = t1 - t0
    return end - began, durations


def bench(runs: int = 3, prepared: Path | None = None, root_mib: int = 512) -> dict[str, float]:
    """``prepared``: an existing root tree (e.g. a Debian root) instead of the synthetic one."""
    with tempfile.TemporaryDirectory(prefix="bench-kbimg-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        root = prepared if prepared is not None else prepare_root(base / "root")
        files, size = tree_size(root)
        img_gib = -(-(60 + 2 * root_mib + 2100) // 1024)
        doc = {"from_rootfs": {"path": str(root), "version": "1.0.0"},
               "disk_partition": {"root": root_mib, "img_size": img_gib}}
        toml = base / "kbimg.toml"
        toml.write_text(tomlkit.dumps(doc))
        cfg = config.load(toml)
        kb: list[float] = []
        raw: list[float] = []
        last_steps: dict[str, float] = {}
        for i in range(runs):
            raw.append(raw_limit(root, base, cfg))
            elapsed, last_steps = kbimg_build(toml, base / f"out{i}")
            kb.append(elapsed)
            shutil.rmtree(base / f"out{i}")
        result = {"files": files, "mib": size / (1 << 20), "kbimg_s": statistics.median(kb),
                  "raw_s": statistics.median(raw)}
        result["ratio"] = result["kbimg_s"] / result["raw_s"]
        print(f"\nprepared root: {files} files, {result['mib']:.0f} MiB; "
              f"disk {cfg.disk_partition.img_size_gib} GiB, ROOT {cfg.disk_partition.root_mib} MiB")
        print(f"raw limit (truncate + mkfs.ext4 -d + fsync), median of {runs}: "
              f"{result['raw_s']:.2f} s  {[round(x, 2) for x in raw]}")
        print(f"kbimg create vm-img, median of {runs}:                  "
              f"{result['kbimg_s']:.2f} s  {[round(x, 2) for x in kb]}")
        print(f"ratio kbimg / raw limit: {result['ratio']:.1f}x")
        print("kbimg steps of the last run:")
        for name, seconds in last_steps.items():
            print(f"  {seconds:6.2f} s  {name}")
        return result


@pytest.mark.bench
@pytest.mark.skipif(os.geteuid() != 0, reason="builds root-owned trees (needs root)")
def test_bench_kbimg_vm_img() -> None:
    result = bench(runs=3)
    assert result["kbimg_s"] > 0 and result["raw_s"] > 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--root", type=Path, help="a prepared root tree to use instead")
    parser.add_argument("--root-mib", type=int, default=512, help="ROOT-A size")
    args = parser.parse_args()
    bench(args.runs, args.root, args.root_mib)
    sys.exit(0)
