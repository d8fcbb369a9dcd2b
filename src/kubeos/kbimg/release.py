"""``kbimg release``: the artifacts users deploy, built into one folder without a Docker daemon.

- ``wheels/``: the project's wheel and the wheels of its ``cluster`` dependencies, pinned to
  the versions of the environment the build runs in (the ones the tests ran with);
- ``os-operator.tar`` and ``os-proxy.tar``: OCI archives (also ``docker load``-able) of a
  Debian root made by mmdebstrap (essential packages + python3 + tzdata) with those wheels
  unpacked into ``/usr/local/lib/python3.X/dist-packages``;
- ``admin-container.tar``: the image of deploy/admin-container (admin.py);
- ``release.json``: image references, manifest digests, sizes and build times.

The operator and proxy images share their first two layers (Debian, then the Python
packages), so a node that runs both stores them once. The third layer holds only the
entrypoint, with the owners and modes the user guide asks for: ``/usr/local/bin/os-operator``
owned by the user the operator runs as (6552:6552, also the config's User), and
``/usr/local/bin/os-proxy`` owned by root, both mode 0500. All mtimes are the source date
(SOURCE_DATE_EPOCH or the checkout's commit time), so the same wheels and the same Debian
packages give the same image digests.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import kubeos
from kubeos.kbimg import admin, oci, wheels, workspace
from kubeos.kbimg.commands import require, run
from kubeos.kbimg.config import AdminContainer
from kubeos.kbimg.errors import BuildError
from kubeos.kbimg.rootfs import DEBIAN_MIRROR

SUITE = "bookworm"  # its python3 is 3.11, the project's minimum and the dev environment's
OPERATOR_UID = 6552  # config/manager/operator.yaml runAsUser/runAsGroup
BASE_PACKAGES = ("python3", "tzdata")  # tzdata: the IANA zones of timewindow.timezone
MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")  # no usrmerge, hence no perl
# Kept out of the image by dpkg itself (the copyright files stay, for license compliance).
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                 "/usr/share/locale/*", "/usr/share/lintian/*", "/usr/share/linda/*",
                 "/usr/share/bash-completion/*")
# Removed after bootstrap: caches, logs and runtime-provided directories, and bytecode (the
# images' root is read-only in the manifests, and .pyc files would pin build-time mtimes).
EMPTIED = ("var/lib/apt/lists", "var/cache", "var/log", "dev", "proc", "sys", "run", "tmp")
REMOVED = ("etc/resolv.conf", "etc/hostname", "etc/machine-id", "var/lib/dpkg/status-old",
           "var/lib/dpkg/available-old", "etc/ld.so.cache~")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ADMIN = "admin-container"
METADATA = "release.json"
WHEELS_DIR = "wheels"

Step = Callable[[str], None]


@dataclass(frozen=True)
class PythonImage:
    """An image whose entrypoint is one console script of the kubeos wheel."""

    name: str
    uid: int
    gid: int

    @property
    def entrypoint(self) -> str:
        return f"/usr/local/bin/{self.name}"


OPERATOR = PythonImage("os-operator", OPERATOR_UID, OPERATOR_UID)  # non-root, as deployed
PROXY = PythonImage("os-proxy", 0, 0)  # root: the agent's socket is root-owned, 0600
PYTHON_IMAGES = {image.name: image for image in (OPERATOR, PROXY)}
IMAGES = (OPERATOR.name, PROXY.name, ADMIN)


@dataclass
class Result:
    """What a release build produced: paths, image facts and how long each part took."""

    output: Path
    artifacts: list[Path] = field(default_factory=list)
    images: dict[str, dict[str, object]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _noop(_: str) -> None:
    return None


def _empty(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        return
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _clamp_mtimes(tree: Path, epoch: int) -> None:
    """Every entry's mtime set to the source date: the layer tars keep mtimes."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [*dirnames, *filenames]:
            os.utime(Path(dirpath) / name, (epoch, epoch), follow_symlinks=False)
    os.utime(tree, (epoch, epoch))


def _strip_docs(doc: Path) -> None:
    """What dpkg's path-exclude leaves of /usr/share/doc besides the copyright files: empty
    directories and symlinks into them."""
    if doc.is_symlink() or not doc.is_dir():
        return
    for package in doc.iterdir():
        if package.is_symlink() or not package.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(package, topdown=False):
            here = Path(dirpath)
            for name in filenames:
                if not (here == package and name == "copyright"):
                    (here / name).unlink()
            for name in dirnames:
                sub = here / name
                if sub.is_symlink():
                    sub.unlink()
                else:
                    sub.rmdir()


def _strip(root: Path) -> None:
    _strip_docs(root / "usr/share/doc")
    for rel in EMPTIED:
        _empty(root / rel)
    for rel in REMOVED:
        path = root / rel
        if path.is_symlink() or path.is_file():
            path.unlink()
    for cache in sorted(root.rglob("__pycache__"), reverse=True):
        if cache.is_dir() and not cache.is_symlink():
            shutil.rmtree(cache)


def bootstrap_base(root: Path, *, suite: str = SUITE, mirror: str = DEBIAN_MIRROR,
                   epoch: int | None = None) -> None:
    """The shared Debian layer: ``--variant=essential`` (no apt, nothing to update in a
    container) plus python3 and tzdata, with docs, man pages and locales never unpacked."""
    require("mmdebstrap")
    hook = [f"--hook-dir={MERGED_USR_HOOK}"] if MERGED_USR_HOOK.is_dir() else []
    argv = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            "mmdebstrap", "--quiet", "--variant=essential", "--mode=root", *hook,
            f"--include={','.join(BASE_PACKAGES)}",
            *(f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES),
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--", suite, str(root), mirror]
    run(argv, env={"SOURCE_DATE_EPOCH": str(epoch)} if epoch is not None else None)
    _strip(root)


def python_dir(root: Path) -> str:
    """``python3.X`` of the Debian root; it must be the builder's, whose wheels we install."""
    want = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not (root / "usr/lib" / want / "os.py").is_file():
        have = sorted(p.parent.name for p in (root / "usr/lib").glob("python3.*/os.py"))
        raise BuildError(f"the Debian root has {', '.join(have) or 'no python3'}, but kbimg runs "
                         f"on {want}: the binary wheels would not load; run kbimg release with "
                         f"the python3 of Debian {SUITE}")
    return want


def _mirror_dirs(base: Path, tree: Path, rel: str) -> Path:
    """Create ``tree/rel`` with each level's owner and mode as in ``base``, so that the layer's
    directory entries do not change the ones of the layer below."""
    current_base, current = base, tree
    for part in Path(rel).parts:
        current_base, current = current_base / part, current / part
        current.mkdir(exist_ok=True)
        if current_base.is_dir():
            st = current_base.stat()
            os.chown(current, st.st_uid, st.st_gid)
            os.chmod(current, st.st_mode & 0o7777)
        else:
            os.chmod(current, 0o755)
    return current


def python_layer(base: Path, tree: Path, wheel_files: Sequence[Path]) -> dict[str, str]:
    """The second layer: every wheel unpacked into /usr/local/lib/python3.X/dist-packages
    (on Debian's python3 path, outside the dpkg-owned /usr/lib/python3); returns the console
    scripts of all wheels."""
    site = _mirror_dirs(base, tree, f"usr/local/lib/{python_dir(base)}/dist-packages")
    scripts: dict[str, str] = {}
    for wheel in sorted(wheel_files):
        scripts.update(wheels.unpack_wheel(wheel, site))
    return scripts


def entry_layer(base: Path, tree: Path, image: PythonImage, target: str) -> None:
    """The third layer: the entrypoint alone, with its owner and mode 0500."""
    bindir = _mirror_dirs(base, tree, "usr/local/bin")
    script = bindir / image.name
    script.write_text(wheels.launcher(target))
    os.chown(script, image.uid, image.gid)
    os.chmod(script, 0o500)


def _labels(name: str, tag: str) -> dict[str, str]:
    return {"org.opencontainers.image.title": name,
            "org.opencontainers.image.version": tag,
            "org.opencontainers.image.licenses": "Apache-2.0",
            "org.opencontainers.image.description": f"KubeOS {name}"}


def build_wheels(dest: Path, work: Path) -> list[Path]:
    """The project's wheel and its cluster dependencies' wheels (all of them: the images are
    installed from here, offline)."""
    dest.mkdir()
    constraints = wheels.pinned_constraints(work / "constraints.txt")
    wheels.pip_wheel(dest, [f"{wheels.project_dir()}[cluster]"], deps=True,
                     constraints=constraints)
    return sorted(dest.glob("*.whl"))


def build_release(output: Path, *, tag: str | None = None, repository: str = "kubeos",
                  images: Sequence[str] = IMAGES, suite: str = SUITE,
                  mirror: str = DEBIAN_MIRROR, step: Step = _noop) -> Result:
    """Build the release into ``output`` (under its lock; artifacts appear when complete)."""
    unknown = sorted(set(images) - set(IMAGES))
    if unknown:
        raise BuildError(f"unknown image(s) {', '.join(unknown)}; choose from {', '.join(IMAGES)}")
    if os.geteuid() != 0:
        raise BuildError("kbimg release needs root (mmdebstrap --mode=root, file owners)")
    tag = tag or kubeos.__version__
    epoch = wheels.source_date_epoch()
    result = Result(output)
    with workspace.locked_output(output):
        workspace.remove_stale_work(output)
        with workspace.work_dir(output) as work:
            started = time.monotonic()
            step("building wheels (pip wheel .[cluster])")
            wheel_files = build_wheels(work / WHEELS_DIR, work)
            result.seconds["wheels"] = time.monotonic() - started
            names: list[str] = []
            wanted = [PYTHON_IMAGES[n] for n in images if n in PYTHON_IMAGES]
            if wanted:
                _python_images(work, wanted, wheel_files, result, tag=tag,
                               repository=repository, suite=suite, mirror=mirror,
                               epoch=epoch or 0, step=step)
                names += [f"{image.name}.tar" for image in wanted]
            if ADMIN in images:
                started = time.monotonic()
                ref = f"{repository}/{ADMIN}:{tag}"
                context = admin.context_dir()
                admin.build_admin(AdminContainer(ref, context / "hostshell"), work, step)
                result.seconds[ADMIN] = time.monotonic() - started
                result.images[ADMIN] = {"ref": ref, "bytes": (work / admin.ARTIFACT).stat().st_size}
                names.append(admin.ARTIFACT)
            (work / METADATA).write_text(json.dumps({
                "version": kubeos.__version__, "tag": tag, "source_date_epoch": epoch,
                "wheels": [p.name for p in wheel_files], "images": result.images,
                "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
            }, indent=2, sort_keys=True) + "\n")
            names.append(METADATA)
            step("publishing " + ", ".join([WHEELS_DIR, *names]))
            result.artifacts = [_publish_dir(work / WHEELS_DIR, output),
                                *workspace.publish(work, output, names)]
    return result


def _python_images(work: Path, wanted: list[PythonImage], wheel_files: list[Path],
                   result: Result, *, tag: str, repository: str, suite: str, mirror: str,
                   epoch: int, step: Step) -> None:
    started = time.monotonic()
    base = work / "base"
    base.mkdir()
    step(f"bootstrapping Debian {suite} with python3 (mmdebstrap --variant=essential)")
    bootstrap_base(base, suite=suite, mirror=mirror, epoch=epoch or None)
    _clamp_mtimes(base, epoch)
    result.seconds["debian-base"] = time.monotonic() - started
    started = time.monotonic()
    step("unpacking the wheels into /usr/local/lib")
    pylayer = work / "python-layer"
    pylayer.mkdir()
    scripts = python_layer(base, pylayer, wheel_files)
    _clamp_mtimes(pylayer, epoch)
    for image in wanted:
        if image.name not in scripts:
            raise BuildError(f"the kubeos wheel has no {image.name} console script")
        entry = work / f"{image.name}-entry"
        entry.mkdir()
        entry_layer(base, entry, image, scripts[image.name])
        _clamp_mtimes(entry, epoch)
        ref = f"{repository}/{image.name}:{tag}"
        step(f"writing {image.name}.tar ({ref})")
        one = time.monotonic()
        digest = oci.write_image(
            work / f"{image.name}.tar", ref,
            [oci.Layer(tree=base), oci.Layer(tree=pylayer), oci.Layer(tree=entry)],
            workdir=work / f"oci-{image.name}", entrypoint=[image.entrypoint],
            env=[PATH_ENV, "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1"],
            user=f"{image.uid}:{image.gid}", working_dir="/", labels=_labels(image.name, tag))
        shutil.rmtree(work / f"oci-{image.name}")
        result.seconds[image.name] = time.monotonic() - one
        result.images[image.name] = {
            "ref": ref, "digest": digest, "bytes": (work / f"{image.name}.tar").stat().st_size,
            "entrypoint": image.entrypoint, "user": f"{image.uid}:{image.gid}",
            "root_bytes": _tree_bytes(base) + _tree_bytes(pylayer) + _tree_bytes(entry)}
    result.seconds["python-layer"] = time.monotonic() - started - sum(
        result.seconds[i.name] for i in wanted)


def _publish_dir(src: Path, output: Path) -> Path:
    """workspace.publish for a directory: files synced, the old directory replaced by rename."""
    for path in src.iterdir():
        os.chmod(path, 0o644)
        with path.open("rb") as f:
            os.fsync(f.fileno())
    os.chmod(src, 0o755)
    dest = output / src.name
    if dest.exists() or dest.is_symlink():
        old = output / f"{workspace.WORK_PREFIX}old-{src.name}"
        os.replace(dest, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(src, dest)
    return dest


def _tree_bytes(tree: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(tree):
        for name in filenames:
            st = (Path(dirpath) / name).lstat()
            total += st.st_size
    return total
