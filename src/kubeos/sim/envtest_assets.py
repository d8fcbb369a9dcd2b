"""Find the etcd, kube-apiserver and kube-controller-manager binaries the control plane runs.

The binaries are never part of the repository: ``make setup`` (``hack/envtest-build.sh``) builds
them from Go modules into a per-user cache. We look for them in the places the Kubernetes test
ecosystem uses, in this order, so a developer who already has envtest assets can reuse them:

1. ``KUBEBUILDER_ASSETS`` (the controller-runtime envtest convention);
2. ``KUBEOS_ENVTEST_DIR`` (where ``hack/envtest-build.sh`` was told to build);
3. the build cache ``~/.cache/kubeos/envtest/<version>/`` (newest complete version first);
4. ``PATH``.

All three binaries must come from one directory, except for the ``PATH`` fallback: mixing an
apiserver from one release with a controller-manager from another is a skew we do not want to
debug in a test failure.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")

SETUP_HINT = (
    "run `make setup` (it builds them with hack/envtest-build.sh into ~/.cache/kubeos/envtest/), "
    "or point KUBEBUILDER_ASSETS at a directory holding etcd, kube-apiserver and "
    "kube-controller-manager"
)


class MissingBinariesError(RuntimeError):
    """The control-plane binaries are not installed; the message says how to get them."""


@dataclass(frozen=True)
class EnvtestAssets:
    """Absolute paths of the three binaries, and where they were found (for error messages)."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    source: str


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """The directory ``hack/envtest-build.sh`` builds into by default (one subdir per version)."""
    environ = os.environ if env is None else env
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubeos" / "envtest"


def _complete(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in BINARIES)


def _from_dir(directory: Path, source: str) -> EnvtestAssets:
    return EnvtestAssets(
        etcd=directory / "etcd",
        kube_apiserver=directory / "kube-apiserver",
        kube_controller_manager=directory / "kube-controller-manager",
        source=source,
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def find_assets(env: Mapping[str, str] | None = None) -> EnvtestAssets:
    """Locate the binaries, or raise :class:`MissingBinariesError` naming ``make setup``.

    An explicitly configured directory that is incomplete is an error rather than a reason to
    keep searching: silently falling back to other binaries would hide a broken setup.
    """
    environ = os.environ if env is None else env
    for variable in ("KUBEBUILDER_ASSETS", "KUBEOS_ENVTEST_DIR"):
        value = environ.get(variable)
        if value:
            directory = Path(value).expanduser()
            if _complete(directory):
                return _from_dir(directory.resolve(), f"${variable}={value}")
            missing = [n for n in BINARIES if not os.access(directory / n, os.X_OK)]
            raise MissingBinariesError(
                f"{variable}={value} lacks {', '.join(missing)}: {SETUP_HINT}"
            )

    root = cache_root(environ)
    if root.is_dir():
        versions = sorted(
            (d for d in root.iterdir() if d.is_dir() and _complete(d)),
            key=lambda d: _version_key(d.name),
            reverse=True,
        )
        if versions:
            return _from_dir(versions[0], f"build cache {versions[0]}")

    search_path = environ.get("PATH", os.defpath)
    found = {name: shutil.which(name, path=search_path) for name in BINARIES}
    if all(found.values()):
        return EnvtestAssets(
            etcd=Path(str(found["etcd"])),
            kube_apiserver=Path(str(found["kube-apiserver"])),
            kube_controller_manager=Path(str(found["kube-controller-manager"])),
            source="PATH",
        )
    missing = [name for name, where in found.items() if where is None]
    raise MissingBinariesError(
        f"control-plane binaries not found ({', '.join(missing)} missing; looked in "
        f"KUBEBUILDER_ASSETS, KUBEOS_ENVTEST_DIR, {root} and PATH): {SETUP_HINT}"
    )
