"""The four ``kbimg create`` commands as functions: source -> root tree -> content -> artifacts.

Each command runs under the output directory's lock in a private work directory and publishes
its artifacts only at the end (workspace.py), so the CLI, the tests and the benchmark all get
the same guarantees.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from kubeos.kbimg import admin, content, disk, oci, pxe, rootfs, workspace
from kubeos.kbimg.checksums import write_sha256
from kubeos.kbimg.commands import run
from kubeos.kbimg.config import Config, ImageKind, check_for

Step = Callable[[str], None]

VM_ARTIFACTS = ["kubeos.tar", "kubeos.tar.sha256", "system.img", "system.qcow2"]


def _noop(_: str) -> None:
    return None


def tar_root(root: Path, out: Path) -> None:
    """The root as ``os.tar`` / ``kubeos.tar`` (the ``disk`` upgrade payload): numeric owners,
    sorted entries, xattrs kept; mtimes clamped to SOURCE_DATE_EPOCH when it is set."""
    reproducible = []
    if "SOURCE_DATE_EPOCH" in os.environ:
        reproducible = [f"--mtime=@{int(os.environ['SOURCE_DATE_EPOCH'])}", "--clamp-mtime"]
    run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--sort=name",
         *reproducible, "-C", root, "-cf", out, "."])


def _prepared_root(cfg: Config, work: Path, kernel_required: bool, step: Step) -> Path:
    assert cfg.source is not None
    root = work / "rootfs"
    rootfs.build_root(cfg.source, root, work, step)
    content.customize(root, cfg, kernel_required=kernel_required, step=step)
    return root


def build(cfg: Config, kind: ImageKind, output: Path, step: Step = _noop) -> list[Path]:
    """Run one ``kbimg create`` command; returns the published artifacts."""
    check_for(cfg, kind)
    output = output.absolute()
    with workspace.locked_output(output):
        workspace.remove_stale_work(output)
        with workspace.work_dir(output) as work:
            os.chmod(work, 0o700)
            names = _build_in(cfg, kind, work, step)
            step("publishing " + ", ".join(names))
            return workspace.publish(work, output, names)


def _build_in(cfg: Config, kind: ImageKind, work: Path, step: Step) -> list[str]:
    if kind == "admin-container":
        assert cfg.admin_container is not None
        return [admin.build_admin(cfg.admin_container, work, step)]
    root = _prepared_root(cfg, work, kernel_required=kind in ("vm-img", "pxe-img"), step=step)
    if kind == "upgrade-img":
        step("writing os.tar")
        os_tar = work / "os.tar"
        tar_root(root, os_tar)
        step("writing the OCI image")
        assert cfg.upgrade_img is not None
        name = "upgrade-img.tar"
        oci.write_image(work / name, cfg.upgrade_img,
                        [oci.Layer(files=[oci.LayerFile("os.tar", os_tar, 0o644)])],
                        workdir=work / "oci", cmd=["/bin/sh"])
        os.replace(os_tar, work / "kubeos.tar")
        write_sha256(work / "kubeos.tar")
        return [name, "kubeos.tar", "kubeos.tar.sha256"]
    if kind == "pxe-img":
        assert cfg.pxe_config is not None
        return pxe.build_pxe(root, cfg, work, tar_root, step)
    step("writing kubeos.tar")
    tar_root(root, work / "kubeos.tar")
    write_sha256(work / "kubeos.tar")
    raw = work / "system.img"
    disk.build_disk(root, cfg, work, raw, step)
    step("converting to qcow2")
    disk.to_qcow2(raw, work / "system.qcow2")
    return VM_ARTIFACTS
