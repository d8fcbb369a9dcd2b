"""What kbimg puts into a root tree, in the reference order (§7.3 install_misc, custom steps,
set_in_chroot), done in Python on the tree instead of by a generated script in a chroot.

Only ``[chroot_script]`` runs code from the image (and so needs root); everything else is file
editing that cannot be steered by the values in kbimg.toml beyond the file contents.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import kubeos
from kubeos.kbimg import grub, units
from kubeos.kbimg.config import Config, FromDockerImg
from kubeos.kbimg.errors import BuildError
from kubeos.kbimg.inroot import copy_into, makedirs, resolve, write_file
from kubeos.kbimg.sandbox import run_sandboxed
from kubeos.kbimg.users import add_users, set_root_password
from kubeos.kbimg.wheels import agent_wheels, launcher, unpack_wheel

AGENT_UNIT_SRC = Path(kubeos.__file__).parent / "agent" / "systemd"
AGENT_PYTHON_DIR = "/usr/lib/kubeos/python"
PERSIST_DIRS = ("var", "etc", "etcwork", "opt", "optwork", "etc/KubeOS/certs")
ESP_IN_ROOT = "/boot/efi"

# Used only when the agent's own unit directory does not provide os-agent.service.
DEFAULT_AGENT_UNIT = """[Unit]
Description=KubeOS os-agent
After=network-online.target persist.mount
Wants=network-online.target

[Service]
ExecStart=/usr/bin/os-agent
Restart=always
RestartSec=3

[Install]
WantedBy=multi-user.target
"""

UNIT_SUFFIXES = (".service", ".socket", ".timer", ".mount", ".target", ".path")

Step = Callable[[str], None]


def _noop(_: str) -> None:
    return None


def install_agent(root: Path, wheels: list[Path] | None = None) -> None:
    """The agent as its wheel plus the wheels of its pure-Python dependencies (ruamel.yaml,
    tomlkit; ruamel.yaml runs without its optional C extension, so any Python 3.11+ does),
    unpacked into AGENT_PYTHON_DIR, and /usr/bin/os-agent (root, 0500 as the user guide asks).

    The directory is kbimg's own: it is replaced, so a root that had an older agent gets
    exactly the new wheels' files. ``wheels`` default: ``wheels.agent_wheels()``.
    """
    chosen = wheels if wheels is not None else agent_wheels()
    base = resolve(root, AGENT_PYTHON_DIR, follow_last=False)
    if base.is_symlink() or base.is_file():
        base.unlink()
    elif base.is_dir():
        shutil.rmtree(base)
    base = makedirs(root, AGENT_PYTHON_DIR)
    scripts: dict[str, str] = {}
    for wheel in chosen:
        scripts.update(unpack_wheel(wheel, base))
    if "os-agent" not in scripts:
        raise BuildError("the kubeos wheel has no os-agent console script")
    write_file(root, "/usr/bin/os-agent", launcher(scripts["os-agent"], path=AGENT_PYTHON_DIR),
               0o500)


def install_units(root: Path) -> list[str]:
    """Mount units and the agent's units; returns the units to enable."""
    for name, text in units.MOUNT_UNITS.items():
        units.write_unit(root, name, text)
    enable = list(units.ENABLED_MOUNTS)
    agent_units = sorted(AGENT_UNIT_SRC.glob("*")) if AGENT_UNIT_SRC.is_dir() else []
    names = {p.name for p in agent_units}
    if "os-agent.service" not in names:
        units.write_unit(root, "os-agent.service", DEFAULT_AGENT_UNIT)
        enable.append("os-agent.service")
    for src in agent_units:
        if not src.is_file() or src.name.startswith(("_", ".")) or src.suffix not in UNIT_SUFFIXES:
            continue
        text = src.read_text()
        units.write_unit(root, src.name, text)
        if units.has_install_section(text) and not src.name.split(".")[0].endswith("@"):
            enable.append(src.name)
    return enable


def write_os_release(root: Path, version: str) -> None:
    """/usr/lib/os-release with PRETTY_NAME="KubeOS <version>"; /etc/os-release removed (the
    /etc overlay would otherwise keep a stale copy across upgrades)."""
    etc = resolve(root, "/etc/os-release", follow_last=False)
    if etc.is_symlink() or etc.exists():
        etc.unlink()
    write_file(root, "/usr/lib/os-release",
               f'NAME="KubeOS"\nID=kubeos\nPRETTY_NAME="KubeOS {version}"\n'
               f'VERSION_ID="{version}"\n')


def normalize_kernel(root: Path, *, required: bool) -> None:
    """Name the kernel /boot/vmlinuz and the initramfs /boot/initramfs.img, as grub.cfg expects."""
    boot = resolve(root, "/boot")
    if not boot.is_dir():
        if required:
            raise BuildError("the root has no /boot with a kernel (vmlinuz-*)")
        return
    pairs = (("vmlinuz", ("vmlinuz-*",)),
             ("initramfs.img", ("initramfs-*.img", "initrd.img-*", "initrd-*")))
    for final, patterns in pairs:
        dest = boot / final
        if dest.is_file() and not dest.is_symlink():
            continue
        found = sorted({p for pat in patterns for p in boot.glob(pat)
                        if p.is_file() and not p.is_symlink() and "rescue" not in p.name})
        if len(found) > 1:
            raise BuildError(f"the root has several kernels/initramfs in /boot: "
                             f"{', '.join(p.name for p in found)}; keep exactly one")
        if not found:
            if required:
                raise BuildError(f"the root has no /boot/{patterns[0]}: the image could not boot")
            continue
        if dest.is_symlink():
            dest.unlink()
        found[0].rename(dest)
    for link in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
        host = resolve(root, f"/{link}", follow_last=False)
        if host.is_symlink():
            host.unlink()


def install_grub_config(root: Path, grub_passwd: str | None) -> None:
    """grub.cfg (root by LABEL, for payloads; disks get a PARTUUID one) and the hashed password."""
    esp = f"{ESP_IN_ROOT}/{grub.ESP_DIR}"
    write_file(root, f"{esp}/grub.cfg", grub.grub_cfg(grub.RootRef.by_label()))
    if grub_passwd:
        write_file(root, f"{esp}/user.cfg", grub.user_cfg(grub_passwd), 0o600)


def copy_files(root: Path, cfg: Config) -> None:
    """``[[copy_files]]``: ``cp -r src <root>/dst`` after an optional ``mkdir -p create_dir``,
    with chroot semantics (an absolute symlink in the image never leads onto the host)."""
    for i, item in enumerate(cfg.copy_files):
        if item.create_dir:
            makedirs(root, item.create_dir)
        dst = item.dst.rstrip("/") or "/"
        parent = dst.rpartition("/")[0] or "/"
        if resolve(root, dst).is_dir():
            dst = f"{dst.rstrip('/')}/{item.src.name}"
        elif not resolve(root, parent).is_dir():
            raise BuildError(f"copy_files[{i}].dst: directory {parent!r} does not exist in the "
                             "image (use create_dir)")
        copy_into(root, item.src, dst)


def run_chroot_script(root: Path, cfg: Config) -> None:
    """``[chroot_script]``: the only step that executes image code; sandboxed, needs root."""
    script = cfg.chroot_script
    if script is None:
        return
    name = script.path.name
    dest = write_file(root, f"/{name}", script.path.read_bytes(), 0o700)
    shell = "/bin/bash" if resolve(root, "/bin/bash").exists() else "/bin/sh"
    try:
        run_sandboxed(root, [shell, f"/{name}"], chroot=True)
    finally:
        if script.rm and dest.exists():
            dest.unlink()


def _tmpfiles_escape(path: str) -> str:
    return "".join(c if c.isalnum() or c in "/._-+@" else f"\\x{ord(c):02x}" for c in path)


def write_var_tmpfiles(root: Path) -> None:
    """/persist/var starts empty: record /var in tmpfiles.d (+ factory copies) so systemd
    repopulates it on first boot, as the reference does."""
    var = resolve(root, "/var")
    if not var.is_dir():
        return
    lines = ["# Written by kbimg: recreates /var on the empty /persist/var."]
    for dirpath, dirnames, filenames in os.walk(var):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(var)
        for entry in [*sorted(dirnames), *sorted(filenames)]:
            host = Path(dirpath) / entry
            rel = rel_dir / entry
            image = _tmpfiles_escape(f"/var/{rel}")
            st = host.lstat()
            if stat.S_ISLNK(st.st_mode):
                lines.append(f"L {image} - - - - {_tmpfiles_escape(os.readlink(host))}")
            elif stat.S_ISDIR(st.st_mode):
                lines.append(f"d {image} {stat.S_IMODE(st.st_mode):04o} {st.st_uid} "
                             f"{st.st_gid} -")
            elif stat.S_ISREG(st.st_mode):
                copy_into(root, host, f"/usr/share/factory/var/{rel}")
                lines.append(f"C {image} - - - - /usr/share/factory/var/"
                             f"{_tmpfiles_escape(str(rel))}")
    write_file(root, "/usr/lib/tmpfiles.d/kubeos-var.conf", "\n".join(lines) + "\n")


def enable_services(root: Path, cfg: Config, own_units: list[str]) -> None:
    for name in own_units:
        units.enable(root, name, where="kbimg units")
    if units.find_unit(root, "kubelet.service") is not None:
        units.enable(root, "kubelet.service", where="kubelet")
    for name in cfg.systemd_services:
        units.enable(root, name)


def customize(root: Path, cfg: Config, *, kernel_required: bool, step: Step = _noop) -> None:
    """All content steps on a root tree that a source has produced."""
    step("installing the agent and units")
    install_agent(root)
    own_units = install_units(root)
    if not isinstance(cfg.source, FromDockerImg):
        write_os_release(root, cfg.version)
    normalize_kernel(root, required=kernel_required)
    install_grub_config(root, cfg.grub_passwd)
    for directory in ("/persist", "/opt/cni", ESP_IN_ROOT):
        makedirs(root, directory)
    step("applying copy_files")
    copy_files(root, cfg)
    if cfg.chroot_script is not None:
        step("running chroot_script")
        run_chroot_script(root, cfg)
    step("users, services and /var")
    if cfg.root_passwd:
        set_root_password(root, cfg.root_passwd)
    add_users(root, cfg.users)
    enable_services(root, cfg, own_units)
    write_var_tmpfiles(root)


def make_persist_tree(path: Path, extra: tuple[str, ...]) -> None:
    """Content of the PERSIST partition: overlay upper/work dirs, /var, certs, persist_mkdir."""
    path.mkdir(parents=True, exist_ok=True)
    for name in (*PERSIST_DIRS, *extra):
        (path / name).mkdir(parents=True, exist_ok=True)
    os.chmod(path / "etc/KubeOS/certs", 0o700)
