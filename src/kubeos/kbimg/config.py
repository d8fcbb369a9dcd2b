"""kbimg.toml: the reference schema (plus ``[from_rootfs]`` and ``[from_debian]``) as typed data.

Parsing validates everything before a build starts, so a bad value never reaches a half-built
image. Errors name ``table.key`` (``users[1].name`` for arrays of tables). As in the reference,
unknown keys are ignored and relative paths are relative to the current directory. Unlike the
reference, fields that end up in files or commands are checked against what they may contain,
and everything else is used literally: nothing here is ever handed to a shell.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kubeos.kbimg.errors import ConfigError

ImageKind = Literal["vm-img", "pxe-img", "upgrade-img", "admin-container"]
IMAGE_KINDS: tuple[ImageKind, ...] = ("vm-img", "pxe-img", "upgrade-img", "admin-container")

# The reference rejects these in repo_path, version, agent_path and upgrade_img; keeping the
# same check means a file accepted here is accepted there.
_REFERENCE_FORBIDDEN = set("|;&><,#!$")
# Characters that would break os-release quoting or a single-line file format.
_LINE_BREAKERS = re.compile(r"[\x00-\x1f\x7f\"'`\\]")
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.@\\-]+\.(service|socket|timer|mount|target|path)$")
_IMAGE_REF = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
_DEBIAN_SUITE = re.compile(r"^[a-z][a-z0-9.-]*$")
_DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9]+)?$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_DISK = re.compile(r"^/dev/[A-Za-z0-9/_.:-]+$")
_NET_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_CRYPT_HASH = re.compile(r"^(\$(1|5|6|y|gy|7|2[abxy])\$[./A-Za-z0-9$=,-]+|[!*]+)$")

BOOT_MIB = 60
DEFAULT_ROOT_MIB = 2560
DEFAULT_IMG_GIB = 20
PERSIST_MIN_MIB = 2100
MAX_ROOT_MIB = 1024 * 1024
MAX_IMG_GIB = 16 * 1024


# ---------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class FromRepo:
    """``[from_repo]``: dnf/yum ``--installroot`` with a .repo file and a package list."""

    version: str
    repo_path: Path
    agent_path: Path
    root_passwd: str
    rpmlist: tuple[str, ...]
    legacy_bios: bool
    upgrade_img: str | None


@dataclass(frozen=True)
class FromDockerImg:
    """``[from_dockerimg]``: the os.tar of an earlier upgrade image (local image or archive)."""

    upgrade_img: str
    legacy_bios: bool


@dataclass(frozen=True)
class FromRootfs:
    """``[from_rootfs]`` (additive): a prepared root directory or tarball."""

    path: Path
    version: str
    root_passwd: str | None
    upgrade_img: str | None


@dataclass(frozen=True)
class FromDebian:
    """``[from_debian]`` (additive): mmdebstrap of a Debian suite with extra packages."""

    suite: str
    mirror: str | None
    packages: tuple[str, ...]
    version: str
    root_passwd: str | None
    upgrade_img: str | None


Source = FromRepo | FromDockerImg | FromRootfs | FromDebian


@dataclass(frozen=True)
class AdminContainer:
    img_name: str
    hostshell: Path


@dataclass(frozen=True)
class PxeConfig:
    rootfs_name: str
    disk: str
    server_ip: str
    route_ip: str
    dhcp: bool
    local_ip: str | None
    netmask: str | None
    net_name: str | None


@dataclass(frozen=True)
class User:
    name: str
    passwd: str = field(repr=False)
    primary_group: str | None
    groups: tuple[str, ...]


@dataclass(frozen=True)
class CopyFile:
    src: Path
    dst: str
    create_dir: str | None


@dataclass(frozen=True)
class ChrootScript:
    path: Path
    rm: bool


@dataclass(frozen=True)
class DiskPartition:
    root_mib: int = DEFAULT_ROOT_MIB
    img_size_gib: int = DEFAULT_IMG_GIB


@dataclass(frozen=True)
class Config:
    """A validated kbimg.toml. ``grub_passwd`` stays in memory only; it is hashed when used."""

    source: Source | None
    admin_container: AdminContainer | None = None
    pxe_config: PxeConfig | None = None
    users: tuple[User, ...] = ()
    copy_files: tuple[CopyFile, ...] = ()
    grub_passwd: str | None = field(default=None, repr=False)
    systemd_services: tuple[str, ...] = ()
    chroot_script: ChrootScript | None = None
    disk_partition: DiskPartition = DiskPartition()
    persist_mkdir: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def version(self) -> str:
        """The OS version for PRETTY_NAME; from_dockerimg keeps the one inside its os.tar."""
        if isinstance(self.source, FromDockerImg) or self.source is None:
            return ""
        return self.source.version

    @property
    def root_passwd(self) -> str | None:
        if isinstance(self.source, FromDockerImg) or self.source is None:
            return None
        return self.source.root_passwd

    @property
    def upgrade_img(self) -> str | None:
        return None if self.source is None else self.source.upgrade_img


# ---------------------------------------------------------------------------- field readers


class _Table:
    """One TOML table with its dotted name, so every error can say which key is wrong."""

    def __init__(self, name: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: must be a table")
        self.name = name
        self.data: dict[str, Any] = data

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.name}.{key}: {msg}")

    def has(self, key: str) -> bool:
        return key in self.data

    def string(self, key: str, *, required: bool = True, non_empty: bool = True) -> str | None:
        if key not in self.data:
            if required:
                raise self.err(key, "is required")
            return None
        value = self.data[key]
        if not isinstance(value, str):
            raise self.err(key, f"must be a string, not {type(value).__name__}")
        if non_empty and not value.strip():
            raise self.err(key, "must not be empty")
        if "\x00" in value:
            raise self.err(key, "must not contain NUL")
        return value

    def req_string(self, key: str, *, non_empty: bool = True) -> str:
        value = self.string(key, required=True, non_empty=non_empty)
        assert value is not None
        return value

    def boolean(self, key: str, *, required: bool, default: bool = False) -> bool:
        if key not in self.data:
            if required:
                raise self.err(key, "is required")
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            raise self.err(key, f"must be true or false, not {value!r}")
        return value

    def integer(self, key: str, default: int) -> int:
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.err(key, f"must be an integer, not {value!r}")
        if not 0 < value <= 0xFFFFFFFF:
            raise self.err(key, f"must be between 1 and {0xFFFFFFFF}, not {value}")
        return value

    def strings(self, key: str, *, required: bool, non_empty_items: bool = True) -> tuple[str, ...]:
        if key not in self.data:
            if required:
                raise self.err(key, "is required")
            return ()
        value = self.data[key]
        if not isinstance(value, list):
            raise self.err(key, "must be an array of strings")
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.err(f"{key}[{i}]", f"must be a string, not {type(item).__name__}")
            if non_empty_items and not item.strip():
                raise self.err(f"{key}[{i}]", "must not be empty")
            if "\x00" in item:
                raise self.err(f"{key}[{i}]", "must not contain NUL")
            out.append(item)
        return tuple(out)

    def path(self, key: str, *, required: bool = True, must_be: str = "file") -> Path | None:
        raw = self.string(key, required=required)
        if raw is None:
            return None
        p = Path(raw).expanduser()
        if must_be == "file" and not p.is_file():
            raise self.err(key, f"{raw!r} does not exist or is not a regular file")
        if must_be == "dir" and not p.is_dir():
            raise self.err(key, f"{raw!r} does not exist or is not a directory")
        if must_be == "exists" and not p.exists():
            raise self.err(key, f"{raw!r} does not exist")
        return p.absolute()

    def req_path(self, key: str, *, must_be: str = "file") -> Path:
        p = self.path(key, required=True, must_be=must_be)
        assert p is not None
        return p


def _no_reference_forbidden(t: _Table, key: str, value: str) -> None:
    bad = sorted(set(value) & _REFERENCE_FORBIDDEN)
    if bad:
        raise t.err(key, f"must not contain any of | ; & > < , # ! $ (found {''.join(bad)!r})")


def _check_version(t: _Table, key: str, value: str) -> str:
    _no_reference_forbidden(t, key, value)
    if _LINE_BREAKERS.search(value):
        raise t.err(key, "must not contain quotes, backslashes, backticks or control characters")
    return value


def _check_image_ref(t: _Table, key: str, value: str) -> str:
    _no_reference_forbidden(t, key, value)
    if not _IMAGE_REF.match(value):
        raise t.err(key, f"{value!r} is not a valid image reference (name[:tag])")
    return value


def _check_crypt_hash(t: _Table, key: str, value: str) -> str:
    if not _CRYPT_HASH.match(value):
        raise t.err(key, "must be a crypt(3) hash such as $6$salt$hash, never plaintext")
    return value


def _check_ipv4(t: _Table, key: str, value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise t.err(key, f"{value!r} is not a dotted IPv4 address") from None
    return value


def _in_image_path(t: _Table, key: str, value: str) -> str:
    """Absolute path inside the image; ``..`` is refused so nothing escapes the root tree."""
    if not value.startswith("/"):
        raise t.err(key, f"{value!r} must be an absolute path inside the image")
    if any(part == ".." for part in value.split("/")):
        raise t.err(key, f"{value!r} must not contain '..'")
    if _LINE_BREAKERS.search(value.replace("'", "").replace('"', "")):
        raise t.err(key, "must not contain control characters or backslashes")
    return value


# ---------------------------------------------------------------------------- sections


def _from_repo(t: _Table) -> FromRepo:
    repo_path = t.req_path("repo_path")
    agent_path = t.req_path("agent_path")
    _no_reference_forbidden(t, "repo_path", str(t.data["repo_path"]))
    _no_reference_forbidden(t, "agent_path", str(t.data["agent_path"]))
    upgrade = t.string("upgrade_img", required=False)
    rpms = t.strings("rpmlist", required=True)
    for i, rpm in enumerate(rpms):
        if rpm.startswith("-") or any(c.isspace() for c in rpm):
            raise t.err(f"rpmlist[{i}]", f"{rpm!r} is not a package name")
    return FromRepo(
        version=_check_version(t, "version", t.req_string("version")),
        repo_path=repo_path,
        agent_path=agent_path,
        root_passwd=_check_crypt_hash(t, "root_passwd", t.req_string("root_passwd")),
        rpmlist=rpms,
        legacy_bios=_uefi_only(t),
        upgrade_img=None if upgrade is None else _check_image_ref(t, "upgrade_img", upgrade),
    )


def _uefi_only(t: _Table) -> bool:
    legacy = t.boolean("legacy_bios", required=True)
    if legacy:
        raise t.err("legacy_bios", "legacy BIOS images are not supported; use UEFI (false)")
    return legacy


def _from_dockerimg(t: _Table) -> FromDockerImg:
    ref = t.req_string("upgrade_img")
    if Path(ref).is_file():  # an archive written by `kbimg create upgrade-img`
        _no_reference_forbidden(t, "upgrade_img", ref)
        return FromDockerImg(upgrade_img=str(Path(ref).absolute()), legacy_bios=_uefi_only(t))
    return FromDockerImg(upgrade_img=_check_image_ref(t, "upgrade_img", ref),
                         legacy_bios=_uefi_only(t))


def _optional_root_passwd(t: _Table) -> str | None:
    value = t.string("root_passwd", required=False)
    return None if value is None else _check_crypt_hash(t, "root_passwd", value)


def _optional_upgrade_img(t: _Table) -> str | None:
    value = t.string("upgrade_img", required=False)
    return None if value is None else _check_image_ref(t, "upgrade_img", value)


def _from_rootfs(t: _Table) -> FromRootfs:
    return FromRootfs(
        path=t.req_path("path", must_be="exists"),
        version=_check_version(t, "version", t.req_string("version")),
        root_passwd=_optional_root_passwd(t),
        upgrade_img=_optional_upgrade_img(t),
    )


def _from_debian(t: _Table) -> FromDebian:
    suite = t.req_string("suite")
    if not _DEBIAN_SUITE.match(suite):
        raise t.err("suite", f"{suite!r} is not a Debian suite name (e.g. bookworm)")
    mirror = t.string("mirror", required=False)
    if mirror is not None and not re.match(r"^(https?|file)://[^\s\"'`\\]+$", mirror):
        raise t.err("mirror", f"{mirror!r} must be an http(s):// or file:// URL")
    packages = t.strings("packages", required=False)
    for i, pkg in enumerate(packages):
        if not _DEBIAN_PACKAGE.match(pkg):
            raise t.err(f"packages[{i}]", f"{pkg!r} is not a Debian package name")
    return FromDebian(
        suite=suite,
        mirror=mirror,
        packages=packages,
        version=_check_version(t, "version", t.req_string("version")),
        root_passwd=_optional_root_passwd(t),
        upgrade_img=_optional_upgrade_img(t),
    )


def _admin(t: _Table) -> AdminContainer:
    name = t.req_string("img_name")
    _no_reference_forbidden(t, "hostshell", str(t.data.get("hostshell", "")))
    return AdminContainer(img_name=_check_image_ref(t, "img_name", name),
                          hostshell=t.req_path("hostshell"))


def _pxe(t: _Table) -> PxeConfig:
    rootfs_name = t.req_string("rootfs_name")
    if not _FILE_NAME.match(rootfs_name):
        raise t.err("rootfs_name", f"{rootfs_name!r} must be a plain file name")
    disk = t.req_string("disk")
    if not _DISK.match(disk) or any(part in (".", "..") for part in disk.split("/")):
        raise t.err("disk", f"{disk!r} must be a device path such as /dev/sda")
    dhcp = t.boolean("dhcp", required=False)
    static = {k: t.string(k, required=False) for k in ("local_ip", "net_name", "netmask")}
    if dhcp:
        for key, value in static.items():
            if value is not None:
                raise t.err(key, "must not be set when dhcp = true")
    else:
        for key, value in static.items():
            if value is None:
                raise t.err(key, "is required when dhcp is false")
        _check_ipv4(t, "local_ip", static["local_ip"] or "")
        _check_ipv4(t, "netmask", static["netmask"] or "")
        if not _NET_NAME.match(static["net_name"] or ""):
            raise t.err("net_name", f"{static['net_name']!r} is not a network interface name")
    return PxeConfig(
        rootfs_name=rootfs_name,
        disk=disk,
        server_ip=_check_ipv4(t, "server_ip", t.req_string("server_ip")),
        route_ip=_check_ipv4(t, "route_ip", t.req_string("route_ip")),
        dhcp=dhcp,
        local_ip=static["local_ip"],
        netmask=static["netmask"],
        net_name=static["net_name"],
    )


def _user(t: _Table) -> User:
    name = t.req_string("name")
    if not _USER_NAME.match(name):
        raise t.err("name", f"{name!r} is not a valid user name ([a-z_][a-z0-9_-]*, ≤32)")
    passwd = t.req_string("passwd")
    if "\n" in passwd:
        raise t.err("passwd", "must be a single line")
    primary = t.string("primary_group", required=False)
    if primary is not None and not _USER_NAME.match(primary):
        raise t.err("primary_group", f"{primary!r} is not a valid group name")
    groups = t.strings("groups", required=False)
    if "groups" in t.data and not groups:
        raise t.err("groups", "must not be empty when given")
    for i, g in enumerate(groups):
        if not _USER_NAME.match(g):
            raise t.err(f"groups[{i}]", f"{g!r} is not a valid group name")
    return User(name=name, passwd=passwd, primary_group=primary, groups=groups)


def _copy_file(t: _Table) -> CopyFile:
    src = t.req_path("src", must_be="exists")
    dst = _in_image_path(t, "dst", t.req_string("dst"))
    create_dir = t.string("create_dir", required=False)
    if create_dir is not None:
        create_dir = _in_image_path(t, "create_dir", create_dir)
    return CopyFile(src=src, dst=dst, create_dir=create_dir)


def _persist_dir(t: _Table, i: int, name: str) -> str:
    parts = name.strip("/").split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise t.err(f"name[{i}]", f"{name!r} must be a relative path without '.' or '..'")
    if _LINE_BREAKERS.search(name):
        raise t.err(f"name[{i}]", "must not contain quotes, backslashes or control characters")
    return name


def _disk(t: _Table) -> DiskPartition:
    if "root" not in t.data:
        raise t.err("root", "is required")
    root = t.integer("root", DEFAULT_ROOT_MIB)
    size = t.integer("img_size", DEFAULT_IMG_GIB)
    # bounds that fail at parse time what would otherwise fail late, in sfdisk or truncate
    if root > MAX_ROOT_MIB:
        raise t.err("root", f"{root} MiB is more than the {MAX_ROOT_MIB} MiB (1 TiB) a root "
                            "slot may have")
    if size > MAX_IMG_GIB:
        raise t.err("img_size", f"{size} GiB is more than the {MAX_IMG_GIB} GiB (16 TiB) an "
                                "image may have")
    need = BOOT_MIB + 2 * root + PERSIST_MIN_MIB
    if need > size * 1024:
        raise t.err("img_size", f"Image size({size}G) is not enough for partitions "
                                f"(needs {need} MiB for root = {root} MiB)")
    return DiskPartition(root_mib=root, img_size_gib=size)


def _array_of_tables(raw: dict[str, Any], key: str) -> list[_Table]:
    value = raw.get(key, [])
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{key}: must be an array of tables ([[{key}]])")
    return [_Table(f"{key}[{i}]", item) for i, item in enumerate(value)]


_KNOWN = {
    "from_repo", "from_dockerimg", "from_rootfs", "from_debian", "admin_container", "pxe_config",
    "users", "copy_files", "grub", "systemd_service", "chroot_script", "disk_partition",
    "persist_mkdir", "dm_verity",
}


def parse(raw: dict[str, Any]) -> Config:
    """Validate a decoded TOML document (every table; the build kind is checked later)."""
    if "dm_verity" in raw:
        raise ConfigError("dm_verity: dm-verity images are not supported by this kbimg yet")
    sources: list[Source] = []
    readers: dict[str, Callable[[_Table], Source]] = {
        "from_repo": _from_repo, "from_dockerimg": _from_dockerimg,
        "from_rootfs": _from_rootfs, "from_debian": _from_debian}
    for key, reader in readers.items():
        if key in raw:
            sources.append(reader(_Table(key, raw[key])))
    if len(sources) > 1:
        names = ", ".join(f"[{k}]" for k in readers if k in raw)
        raise ConfigError(f"{names}: give exactly one root filesystem source, not several")
    grub_passwd = None
    if "grub" in raw:
        grub_passwd = _Table("grub", raw["grub"]).string("passwd", required=False)
    services: tuple[str, ...] = ()
    if "systemd_service" in raw:
        st = _Table("systemd_service", raw["systemd_service"])
        services = st.strings("name", required=False)
        for i, svc in enumerate(services):
            if not _UNIT_NAME.match(svc) and not _UNIT_NAME.match(svc + ".service"):
                raise st.err(f"name[{i}]", f"{svc!r} is not a systemd unit name")
    chroot = None
    if "chroot_script" in raw:
        ct = _Table("chroot_script", raw["chroot_script"])
        chroot = ChrootScript(path=ct.req_path("path"), rm=ct.boolean("rm", required=False))
    persist: tuple[str, ...] = ()
    if "persist_mkdir" in raw:
        pt = _Table("persist_mkdir", raw["persist_mkdir"])
        persist = tuple(_persist_dir(pt, i, n) for i, n in
                        enumerate(pt.strings("name", required=False)))
    warnings = tuple(f"{k}: unknown table, ignored" for k in sorted(set(raw) - _KNOWN))
    return Config(
        source=sources[0] if sources else None,
        admin_container=(_admin(_Table("admin_container", raw["admin_container"]))
                         if "admin_container" in raw else None),
        pxe_config=_pxe(_Table("pxe_config", raw["pxe_config"])) if "pxe_config" in raw else None,
        users=tuple(_user(t) for t in _array_of_tables(raw, "users")),
        copy_files=tuple(_copy_file(t) for t in _array_of_tables(raw, "copy_files")),
        grub_passwd=grub_passwd,
        systemd_services=services,
        chroot_script=chroot,
        disk_partition=(_disk(_Table("disk_partition", raw["disk_partition"]))
                        if "disk_partition" in raw else DiskPartition()),
        persist_mkdir=persist,
        warnings=warnings,
    )


def load(path: Path) -> Config:
    """Read and validate a kbimg.toml; a syntax error is a ConfigError with the line number."""
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse(raw)


def check_for(cfg: Config, kind: ImageKind) -> None:
    """What each build kind needs, as the reference's dispatch and ``prepare`` checks."""
    if kind == "admin-container":
        if cfg.admin_container is None:
            raise ConfigError("admin_container: [admin_container] is required for admin-container")
        return
    if cfg.source is None:
        raise ConfigError("Missing required fields: one of [from_repo], [from_dockerimg], "
                          "[from_rootfs] or [from_debian] is required for " + kind)
    if kind == "upgrade-img":
        if isinstance(cfg.source, FromDockerImg):
            raise ConfigError("from_dockerimg: upgrade-img needs a root source to build from "
                              "([from_repo], [from_rootfs] or [from_debian])")
        if cfg.upgrade_img is None:
            table = _source_table(cfg.source)
            raise ConfigError(f"{table}.upgrade_img: is required for upgrade-img")
    if kind == "pxe-img" and cfg.pxe_config is None:
        raise ConfigError("pxe_config: [pxe_config] is required for pxe-img")


def _source_table(source: Source) -> str:
    return {FromRepo: "from_repo", FromDockerImg: "from_dockerimg", FromRootfs: "from_rootfs",
            FromDebian: "from_debian"}[type(source)]
