"""Finding the binaries; a missing one is an error that names `make setup` (never a skip)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubeos.sim.envtest_assets import BINARIES, MissingBinariesError, find_assets


def _fake_dir(directory: Path, names: tuple[str, ...] = BINARIES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return directory


def test_missing_binaries_name_make_setup(tmp_path: Path) -> None:
    with pytest.raises(MissingBinariesError, match="make setup"):
        find_assets({"PATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")})


def test_kubebuilder_assets_wins(tmp_path: Path) -> None:
    assets_dir = _fake_dir(tmp_path / "assets")
    _fake_dir(tmp_path / "cache" / "kubeos" / "envtest" / "v1.34.4")
    found = find_assets({"KUBEBUILDER_ASSETS": str(assets_dir),
                         "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert found.kube_apiserver == assets_dir / "kube-apiserver"


def test_incomplete_explicit_dir_is_an_error(tmp_path: Path) -> None:
    partial = _fake_dir(tmp_path / "partial", ("etcd",))
    with pytest.raises(MissingBinariesError, match="kube-apiserver"):
        find_assets({"KUBEBUILDER_ASSETS": str(partial)})


def test_newest_cached_version_is_used(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "kubeos" / "envtest"
    _fake_dir(cache / "v1.34.2")
    newest = _fake_dir(cache / "v1.34.10")
    _fake_dir(cache / "v1.35.0", ("etcd",))  # incomplete: ignored
    found = find_assets({"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": os.defpath})
    assert found.etcd == newest / "etcd"
