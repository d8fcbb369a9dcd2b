"""kbimg.toml validation: the reference schema's rules, clear ``table.key`` errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubeos.kbimg import config
from kubeos.kbimg.config import ConfigError
from tests.kbimg import support


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    repo = tmp_path / "x.repo"
    repo.write_text("[x]\n")
    agent = tmp_path / "os-agent"
    agent.write_text("bin")
    root = support.make_tiny_root(tmp_path / "root")
    return {"repo": repo, "agent": agent, "root": root, "dir": tmp_path}


def repo_doc(files: dict[str, Path], **over: Any) -> dict[str, Any]:
    table = {"version": "v1", "repo_path": str(files["repo"]), "agent_path": str(files["agent"]),
             "root_passwd": "$6$salt$hash", "rpmlist": ["kernel", "systemd"],
             "legacy_bios": False}
    table.update(over)
    return {"from_repo": table}


def error_of(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        config.parse(doc)
    return str(exc.value)


def test_from_repo_valid(files: dict[str, Path]) -> None:
    cfg = config.parse(repo_doc(files, upgrade_img="kubeos/os:v1"))
    assert isinstance(cfg.source, config.FromRepo)
    assert cfg.version == "v1" and cfg.source.rpmlist == ("kernel", "systemd")
    assert cfg.disk_partition == config.DiskPartition(2560, 20)


@pytest.mark.parametrize(("key", "value", "expect"), [
    ("version", "", "from_repo.version: must not be empty"),
    ("version", "   ", "from_repo.version: must not be empty"),
    ("version", 3, "from_repo.version: must be a string"),
    ("version", "1;rm", "from_repo.version: must not contain any of"),
    ("version", "1$x", "from_repo.version: must not contain any of"),
    ("version", 'a"b', "from_repo.version: must not contain quotes"),
    ("repo_path", "/nonexistent.repo", "from_repo.repo_path: '/nonexistent.repo' does not exist"),
    ("agent_path", "/nonexistent", "from_repo.agent_path:"),
    ("root_passwd", "plaintext", "from_repo.root_passwd: must be a crypt(3) hash"),
    ("rpmlist", "kernel", "from_repo.rpmlist: must be an array"),
    ("rpmlist", ["-x"], "from_repo.rpmlist[0]:"),
    ("rpmlist", ["ok", ""], "from_repo.rpmlist[1]: must not be empty"),
    ("legacy_bios", "no", "from_repo.legacy_bios: must be true or false"),
    ("legacy_bios", True, "from_repo.legacy_bios: legacy BIOS images are not supported"),
    ("upgrade_img", "bad name!", "from_repo.upgrade_img: must not contain any of"),
    ("upgrade_img", "UPPER/case", "from_repo.upgrade_img: 'UPPER/case' is not a valid image"),
])
def test_from_repo_errors(files: dict[str, Path], key: str, value: Any, expect: str) -> None:
    assert error_of(repo_doc(files, **{key: value})).startswith(expect)


@pytest.mark.parametrize("key", ["version", "repo_path", "agent_path", "root_passwd",
                                 "rpmlist", "legacy_bios"])
def test_from_repo_required(files: dict[str, Path], key: str) -> None:
    doc = repo_doc(files)
    del doc["from_repo"][key]
    assert error_of(doc) == f"from_repo.{key}: is required"


def test_unknown_keys_ignored_unknown_tables_warned(files: dict[str, Path]) -> None:
    doc = repo_doc(files, surprise=1)
    doc["whatever"] = {"a": 1}
    assert config.parse(doc).warnings == ("whatever: unknown table, ignored",)


def test_two_sources_rejected(files: dict[str, Path]) -> None:
    doc = repo_doc(files)
    doc["from_rootfs"] = {"path": str(files["root"]), "version": "1"}
    assert "give exactly one root filesystem source" in error_of(doc)


def test_dispatch_per_kind(files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="Missing required fields"):
        config.check_for(config.parse({}), "vm-img")
    with pytest.raises(ConfigError, match=r"from_repo\.upgrade_img: is required"):
        config.check_for(config.parse(repo_doc(files)), "upgrade-img")
    with pytest.raises(ConfigError, match=r"pxe_config: \[pxe_config\] is required"):
        config.check_for(config.parse(repo_doc(files)), "pxe-img")
    with pytest.raises(ConfigError, match=r"admin_container: \[admin_container\] is required"):
        config.check_for(config.parse(repo_doc(files)), "admin-container")
    with pytest.raises(ConfigError, match="upgrade-img needs a root source"):
        config.check_for(config.parse({"from_dockerimg": {"upgrade_img": "a:b",
                                                          "legacy_bios": False}}),
                         "upgrade-img")


@pytest.mark.parametrize(("root", "size", "ok"), [
    (2560, 20, True), (456, 3, True), (457, 3, False), (128, 2, False),
])
def test_disk_partition_sizes(files: dict[str, Path], root: int, size: int, ok: bool) -> None:
    doc = repo_doc(files)
    doc["disk_partition"] = {"root": root, "img_size": size}
    if ok:
        assert config.parse(doc).disk_partition == config.DiskPartition(root, size)
    else:
        assert error_of(doc).startswith(f"disk_partition.img_size: Image size({size}G) is not "
                                         "enough for partitions")


def test_disk_partition_types(files: dict[str, Path]) -> None:
    doc = repo_doc(files)
    doc["disk_partition"] = {"img_size": 30}
    assert error_of(doc) == "disk_partition.root: is required"
    doc["disk_partition"] = {"root": -5}
    assert error_of(doc).startswith("disk_partition.root: must be between 1")
    doc["disk_partition"] = {"root": "big"}
    assert error_of(doc).startswith("disk_partition.root: must be an integer")


def pxe(**over: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"rootfs_name": "kubeos.tar", "disk": "/dev/sda",
                             "server_ip": "192.168.1.50", "route_ip": "192.168.1.1",
                             "local_ip": "192.168.1.100", "netmask": "255.255.255.0",
                             "net_name": "eth0"}
    table.update(over)
    return {"pxe_config": table}


def test_pxe_valid_and_dhcp() -> None:
    cfg = config.parse(pxe())
    assert cfg.pxe_config is not None and cfg.pxe_config.net_name == "eth0"
    dhcp = {"rootfs_name": "r.tar", "disk": "/dev/nvme0n1", "server_ip": "1.2.3.4",
            "route_ip": "1.2.3.1", "dhcp": True}
    assert config.parse({"pxe_config": dhcp}).pxe_config is not None


@pytest.mark.parametrize(("over", "expect"), [
    ({"server_ip": "256.1.1.1"}, "pxe_config.server_ip: '256.1.1.1' is not a dotted IPv4"),
    ({"route_ip": "1.2.3"}, "pxe_config.route_ip:"),
    ({"local_ip": "x"}, "pxe_config.local_ip:"),
    ({"netmask": "255.255.255.0; reboot"}, "pxe_config.netmask:"),
    ({"net_name": None}, "pxe_config.net_name: is required when dhcp is false"),
    ({"dhcp": True}, "pxe_config.local_ip: must not be set when dhcp = true"),
    ({"disk": "sda"}, "pxe_config.disk: 'sda' must be a device path"),
    ({"rootfs_name": "../x"}, "pxe_config.rootfs_name: '../x' must be a plain file name"),
])
def test_pxe_errors(over: dict[str, Any], expect: str) -> None:
    doc = pxe(**over)
    for key, value in over.items():
        if value is None:
            del doc["pxe_config"][key]
    assert error_of(doc).startswith(expect)


@pytest.mark.parametrize(("user", "expect"), [
    ({"name": "", "passwd": "x"}, "users[0].name: must not be empty"),
    ({"name": "Bad Name", "passwd": "x"}, "users[0].name: 'Bad Name' is not a valid user name"),
    ({"name": "$(id)", "passwd": "x"}, "users[0].name: '$(id)' is not a valid user name"),
    ({"name": "bob"}, "users[0].passwd: is required"),
    ({"name": "bob", "passwd": "a\nb"}, "users[0].passwd: must be a single line"),
    ({"name": "bob", "passwd": "x", "groups": []}, "users[0].groups: must not be empty"),
    ({"name": "bob", "passwd": "x", "groups": ["ok", "no;"]}, "users[0].groups[1]:"),
    ({"name": "bob", "passwd": "x", "primary_group": "a b"}, "users[0].primary_group:"),
])
def test_user_errors(user: dict[str, Any], expect: str) -> None:
    assert error_of({"users": [user]}).startswith(expect)


def test_user_password_not_in_repr() -> None:
    cfg = config.parse({"users": [{"name": "bob", "passwd": "hunter2"}],
                        "grub": {"passwd": "grubpw"}})
    assert "hunter2" not in repr(cfg) and "grubpw" not in repr(cfg)


def test_copy_files_and_persist_errors(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_text("x")
    assert error_of({"copy_files": [{"src": str(src), "dst": "rel"}]}).startswith(
        "copy_files[0].dst: 'rel' must be an absolute path")
    assert error_of({"copy_files": [{"src": str(src), "dst": "/a/../../etc"}]}).startswith(
        "copy_files[0].dst: '/a/../../etc' must not contain '..'")
    assert error_of({"copy_files": [{"src": str(tmp_path / "nope"), "dst": "/x"}]}).startswith(
        "copy_files[0].src:")
    assert error_of({"persist_mkdir": {"name": ["../escape"]}}).startswith(
        "persist_mkdir.name[0]: '../escape' must be a relative path")
    assert error_of({"systemd_service": {"name": ["a b.service"]}}).startswith(
        "systemd_service.name[0]:")
    assert error_of({"chroot_script": {"path": str(tmp_path / "none.sh")}}).startswith(
        "chroot_script.path:")
    assert error_of({"dm_verity": {"efi_key": "a", "grub_key": "b"}}).startswith("dm_verity:")


def test_from_debian(tmp_path: Path) -> None:
    cfg = config.parse({"from_debian": {"suite": "bookworm", "packages": ["curl", "libc6:amd64"],
                                        "version": "2.0"}})
    assert isinstance(cfg.source, config.FromDebian) and cfg.source.mirror is None
    assert error_of({"from_debian": {"suite": "bookworm;x", "version": "1"}}).startswith(
        "from_debian.suite:")
    assert error_of({"from_debian": {"suite": "bookworm", "version": "1",
                                     "packages": ["--allow-x"]}}).startswith(
        "from_debian.packages[0]:")
    assert error_of({"from_debian": {"suite": "bookworm", "version": "1",
                                     "mirror": "ftp://x"}}).startswith("from_debian.mirror:")


def test_toml_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "k.toml"
    bad.write_text("[from_repo\nversion=")
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.load(bad)
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "missing.toml")


@pytest.mark.parametrize("disk", ["/dev/../etc/passwd", "/dev/./sda", "/dev/sda/.."])
def test_pxe_disk_with_dot_components_is_refused(disk: str) -> None:
    assert error_of(pxe(disk=disk)).startswith("pxe_config.disk:")


@pytest.mark.parametrize(("root", "size", "field"), [
    (2560, 0xFFFFFFFF, "img_size"), (1024 * 1024 + 1, 20000, "root"), (2560, 16 * 1024 + 1,
                                                                        "img_size"),
])
def test_absurd_disk_partition_sizes_fail_at_parse_time(
    files: dict[str, Path], root: int, size: int, field: str
) -> None:
    doc = repo_doc(files)
    doc["disk_partition"] = {"root": root, "img_size": size}
    assert error_of(doc).startswith(f"disk_partition.{field}: ")
