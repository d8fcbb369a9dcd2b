"""Benchmark of the settings engine: a 1,000-key request applied to each model's file.

Run: ``.venv/bin/python -m pytest -m bench -s tests/bench/bench_settings.py``
(or ``.venv/bin/python tests/bench/bench_settings.py [--keys N] [--runs R]``).

For each model a file (or, for ``kernel.sysctl``, a /proc/sys tree) holding N keys is built
under a temporary root, and one request updating all N keys is applied (parse, edit, atomic
write with fsync). The baseline, measured in the same run on the same file, is a plain read and
write of that file's bytes (of every proc file, for ``kernel.sysctl``), so the ratio says what
the engine costs on top of touching the data at all. For the YAML and TOML models a second
baseline is a bare round trip (load and dump, no edits) through the same library, which shows
how much of the time is the library's. Times are the best of R runs.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import tomlkit
from ruamel.yaml import YAML

from kubeos.agent.settings import apply_settings, parse_config

GRUB_CFG = "boot/efi/EFI/openEuler/grub.cfg"


def _sysctl(root: Path, n: int) -> tuple[list[Path], dict[str, object]]:
    files = []
    for i in range(n):
        path = root / f"proc/sys/bench/k{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("0\n")
        files.append(path)
    contents = [{"key": f"bench.k{i}", "value": i + 1} for i in range(n)]
    return files, {"model": "kernel.sysctl", "contents": contents}


def _persist(root: Path, n: int) -> tuple[list[Path], dict[str, object]]:
    path = root / "etc/sysctl.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# bench\n" + "".join(f"net.bench.k{i} = {i}\n" for i in range(n)))
    contents = [{"key": f"net.bench.k{i}", "value": i + 1} for i in range(n)]
    return [path], {"model": "kernel.sysctl.persist", "contents": contents}


def _grub(root: Path, n: int) -> tuple[list[Path], dict[str, object]]:
    path = root / GRUB_CFG
    path.parent.mkdir(parents=True, exist_ok=True)
    params = " ".join(f"p{i}={i}" for i in range(n))
    path.write_text(
        f"menuentry 'A' --id A {{\n  linux /boot/vmlinuz root=x {params}\n}}\n"
        f"menuentry 'B' --id B {{\n  linux /boot/vmlinuz root=y {params}\n}}\n")
    contents = [{"key": f"p{i}", "value": str(i + 1)} for i in range(n)]
    return [path], {"model": "grub.cmdline.current", "contents": contents}


def _kubelet(root: Path, n: int) -> tuple[list[Path], dict[str, object]]:
    path = root / "var/lib/kubelet/config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"  # key {i}\n  k{i}: {i}\n" for i in range(n))
    path.write_text(f"# bench\nkind: KubeletConfiguration\nbench:\n{body}")
    contents = [{"key": f"bench.k{i}", "value": i + 1} for i in range(n)]
    return [path], {"model": "kubernetes.kubelet", "contents": contents}


def _containerd(root: Path, n: int) -> tuple[list[Path], dict[str, object]]:
    path = root / "etc/containerd/config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tables = "".join(
        f'\n[plugins."bench.t{t}"]\n' + "".join(f"  k{i} = {i}  # c\n" for i in range(100))
        for t in range(n // 100))
    path.write_text(f"version = 2\n[plugins]\n{tables}")
    contents = [{"key": f'plugins."bench.t{t}".k{i}', "value": i + 1}
                for t in range(n // 100) for i in range(100)]
    return [path], {"model": "container.containerd", "contents": contents}


def _pam(root: Path, n: int) -> tuple[list[Path], dict[str, object]]:
    path = root / "etc/security/limits.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# bench\n" + "".join(f"user{i}\tsoft\tnofile\t{i}\n" for i in range(n)))
    contents = [{"key": f"user{i}", "value": f"soft.nofile.{i + 1}"} for i in range(n)]
    return [path], {"model": "pam.limits", "contents": contents}


SETUPS: dict[str, Callable[[Path, int], tuple[list[Path], dict[str, object]]]] = {
    "kernel.sysctl": _sysctl,
    "kernel.sysctl.persist": _persist,
    "grub.cmdline.current": _grub,
    "kubernetes.kubelet": _kubelet,
    "container.containerd": _containerd,
    "pam.limits": _pam,
}


def _best(runs: int, setup: Callable[[Path], object], action: Callable[[Path, object], None]
          ) -> float:
    best = float("inf")
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            prepared = setup(root)
            start = time.perf_counter()
            action(root, prepared)
            best = min(best, time.perf_counter() - start)
    return best


def _yaml_round_trip(path: Path) -> None:
    yaml = YAML(typ="rt")
    buffer = io.StringIO()
    yaml.dump(yaml.load(path.read_text()), buffer)


def _toml_round_trip(path: Path) -> None:
    tomlkit.dumps(tomlkit.parse(path.read_text()))


ROUND_TRIPS: dict[str, Callable[[Path], None]] = {
    "kubernetes.kubelet": _yaml_round_trip,
    "container.containerd": _toml_round_trip,
}


def bench(keys: int = 1000, runs: int = 3) -> dict[str, tuple[float, float, float, float]]:
    """``{model: (apply_s, dry_run_s, baseline_s, library_round_trip_s or nan)}``."""
    out = {}
    for model, build in SETUPS.items():
        def setup(root: Path, build: Callable[..., tuple[list[Path], dict[str, object]]] = build
                  ) -> tuple[list[Path], dict[str, object]]:
            return build(root, keys)

        def run(root: Path, prepared: object, dry_run: bool = False) -> None:
            _, request = prepared  # type: ignore[misc]
            result = apply_settings([parse_config(request)], root=root, booted_slot="A",
                                    dry_run=dry_run)
            assert result.changed and not result.warnings

        def baseline(root: Path, prepared: object) -> None:
            files, _ = prepared  # type: ignore[misc]
            for path in files:
                data = path.read_bytes()
                path.write_bytes(data)

        round_trip = ROUND_TRIPS.get(model)
        library = float("nan")
        if round_trip is not None:
            library = _best(runs, setup,
                            lambda root, p, rt=round_trip: rt(p[0][0]))  # type: ignore[index]
        out[model] = (
            _best(runs, setup, run),
            _best(runs, setup, lambda root, p: run(root, p, dry_run=True)),
            _best(runs, setup, baseline),
            library,
        )
    return out


def report(results: dict[str, tuple[float, float, float, float]], keys: int) -> None:
    print(f"\nsettings engine: one request updating {keys} keys, best of runs")
    print(f"{'model':24} {'apply ms':>9} {'dry-run ms':>11} {'read+write ms':>14} "
          f"{'ratio':>7} {'lib load+dump ms':>17} {'ratio':>6}")
    for model, (applied, dry, base, library) in results.items():
        lib = (f"{library * 1e3:17.1f} {applied / library:5.1f}x" if library == library
               else f"{'-':>17} {'-':>6}")
        print(f"{model:24} {applied * 1e3:9.1f} {dry * 1e3:11.1f} {base * 1e3:14.2f} "
              f"{applied / base:6.0f}x {lib}")


@pytest.mark.bench
def test_bench_settings() -> None:
    report(bench(), 1000)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    report(bench(args.keys, args.runs), args.keys)
