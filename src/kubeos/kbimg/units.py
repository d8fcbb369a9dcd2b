"""systemd units of the image: the persist/etc/var mounts, and enabling units without a chroot.

``systemctl enable`` only creates symlinks named by the unit's ``[Install]`` section, so doing
that in Python needs neither a chroot nor root, and cannot run code from the image.
"""

from __future__ import annotations

from pathlib import Path

from kubeos.kbimg.errors import BuildError
from kubeos.kbimg.inroot import makedirs, resolve, write_file

UNIT_DIR = "/usr/lib/systemd/system"
_SEARCH = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")


def _mount(description: str, what: str, where: str, fstype: str, options: str,
           deps: str = "") -> str:
    return f"""[Unit]
Description={description}
DefaultDependencies=no
Conflicts=umount.target
Before=local-fs.target umount.target
{deps}
[Mount]
What={what}
Where={where}
Type={fstype}
Options={options}

[Install]
WantedBy=local-fs.target
"""


_PERSIST_DEPS = "Wants=persist.mount\nAfter=persist.mount\n"

# Layout of reference §6.1: /etc and /opt/cni are overlays with their upper dirs on /persist,
# /var is a bind mount of /persist/var (an overlay there breaks containerd's snapshotter).
MOUNT_UNITS: dict[str, str] = {
    "persist.mount": _mount("KubeOS persistent partition", "/dev/disk/by-label/PERSIST",
                            "/persist", "ext4", "defaults"),
    "boot-efi.mount": _mount("KubeOS EFI system partition", "/dev/disk/by-label/BOOT",
                             "/boot/efi", "vfat", "defaults,umask=0077"),
    # Before=systemd-sysctl: it runs early (no local-fs.target dependency) and would otherwise
    # read the image's /etc/sysctl.d, not the overlay that holds kernel.sysctl.persist settings.
    "etc.mount": _mount("KubeOS /etc overlay on /persist", "overlay", "/etc", "overlay",
                        "upperdir=/persist/etc,workdir=/persist/etcwork,lowerdir=/etc",
                        _PERSIST_DEPS + "Before=systemd-sysctl.service\n"),
    "opt-cni.mount": _mount("KubeOS /opt/cni overlay on /persist", "overlay", "/opt/cni",
                            "overlay",
                            "upperdir=/persist/opt,workdir=/persist/optwork,lowerdir=/opt/cni",
                            _PERSIST_DEPS),
    "var.mount": _mount("KubeOS /var bind mount of /persist/var", "/persist/var", "/var",
                        "none", "bind", "Requires=persist.mount\nAfter=persist.mount\n"),
}
ENABLED_MOUNTS = ("boot-efi.mount", "etc.mount", "opt-cni.mount", "var.mount")


def write_unit(root: Path, name: str, text: str) -> None:
    write_file(root, f"{UNIT_DIR}/{name}", text)


def find_unit(root: Path, name: str) -> tuple[str, Path] | None:
    template = None
    if "@" in name:
        prefix, rest = name.split("@", 1)
        template = f"{prefix}@.{rest.rsplit('.', 1)[-1]}"
    for directory in _SEARCH:
        for candidate in (name, template):
            if candidate is None:
                continue
            host = resolve(root, f"{directory}/{candidate}")
            if host.is_file():
                return f"{directory}/{candidate}", host
    return None


def _install_section(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section == "Install" and "=" in line:
            key, value = (s.strip() for s in line.split("=", 1))
            out.setdefault(key, []).extend(value.split())
    return out


def _link(root: Path, directory: str, name: str, target: str) -> None:
    host_dir = makedirs(root, directory)
    link = host_dir / name
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def enable(root: Path, name: str, *, where: str = "systemd_service.name",
           _seen: set[str] | None = None) -> None:
    """``systemctl enable NAME`` in the image: the [Install] symlinks under /etc/systemd/system."""
    if "." not in name:
        name += ".service"
    seen = _seen if _seen is not None else set()
    if name in seen:
        return
    seen.add(name)
    found = find_unit(root, name)
    if found is None:
        raise BuildError(f"{where}: unit {name!r} not found in the image")
    image_path, host_path = found
    install = _install_section(host_path.read_text(errors="replace"))
    if not install:
        raise BuildError(f"{where}: unit {name!r} has no [Install] section, cannot be enabled")
    for target in install.get("WantedBy", []):
        _link(root, f"/etc/systemd/system/{target}.wants", name, image_path)
    for target in install.get("RequiredBy", []):
        _link(root, f"/etc/systemd/system/{target}.requires", name, image_path)
    for alias in install.get("Alias", []):
        _link(root, "/etc/systemd/system", alias, image_path)
    for also in install.get("Also", []):
        enable(root, also, where=where, _seen=seen)


def has_install_section(text: str) -> bool:
    return bool(_install_section(text))
