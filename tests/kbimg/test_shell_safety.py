"""Shell metacharacters in every string field of kbimg.toml: a clear ``table.key`` error, or the
value is used literally. Nothing is ever run by a shell, so the canary file never appears."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kubeos.kbimg import build, config
from kubeos.kbimg.errors import KbimgError
from tests.kbimg import support

PAYLOADS = ["$(touch {c})", "`touch {c}`", "; touch {c};", "| touch {c}", "&& touch {c}",
            "'\"; touch {c}; echo \"'", "x\ntouch {c}"]

# (table, key, index in an array of tables or None, is a list field). Fields in BUILD_FIELDS
# are also built into a vm-img when accepted; the rest are checked at parse time.
FIELDS = [
    ("from_rootfs", "version", None, False),
    ("from_rootfs", "root_passwd", None, False),
    ("from_rootfs", "upgrade_img", None, False),
    ("from_rootfs", "path", None, False),
    ("users", "name", 0, False),
    ("users", "passwd", 0, False),
    ("users", "primary_group", 0, False),
    ("users", "groups", 0, True),
    ("copy_files", "src", 0, False),
    ("copy_files", "dst", 0, False),
    ("copy_files", "create_dir", 0, False),
    ("grub", "passwd", None, False),
    ("systemd_service", "name", None, True),
    ("persist_mkdir", "name", None, True),
    ("pxe_config", "rootfs_name", None, False),
    ("pxe_config", "disk", None, False),
    ("pxe_config", "server_ip", None, False),
    ("pxe_config", "route_ip", None, False),
    ("pxe_config", "local_ip", None, False),
    ("pxe_config", "netmask", None, False),
    ("pxe_config", "net_name", None, False),
    ("admin_container", "img_name", None, False),
    ("admin_container", "hostshell", None, False),
    ("from_debian", "suite", None, False),
    ("from_debian", "mirror", None, False),
    ("from_debian", "packages", None, True),
    ("from_debian", "version", None, False),
    ("from_dockerimg", "upgrade_img", None, False),
    ("chroot_script", "path", None, False),
]
BUILD_TABLES = {"from_rootfs", "users", "copy_files", "grub", "systemd_service", "persist_mkdir"}


def base_doc(tmp: Path) -> dict[str, Any]:
    root = tmp / "root"
    if not root.exists():
        support.make_tiny_root(root)
    src = tmp / "extra.txt"
    src.write_text("extra\n")
    hostshell = tmp / "hostshell"
    hostshell.write_text("#!/bin/sh\n")
    return support.tiny_doc(
        root,
        users=[{"name": "alice", "passwd": "pw", "primary_group": "wheel", "groups": ["wheel"]}],
        copy_files=[{"src": str(src), "dst": "/opt/x/extra.txt", "create_dir": "/opt/x"}],
        grub={"passwd": "gp"},
        systemd_service={"name": ["demo.service"]},
        persist_mkdir={"name": ["data"]},
        pxe_config={"rootfs_name": "kubeos.tar", "disk": "/dev/sda", "server_ip": "10.0.0.1",
                    "route_ip": "10.0.0.254", "local_ip": "10.0.0.9",
                    "netmask": "255.255.255.0", "net_name": "eth0"},
        admin_container={"img_name": "kubeos/admin:1", "hostshell": str(hostshell)},
    )


def apply(doc: dict[str, Any], table: str, key: str, index: int | None, is_list: bool,
          value: str) -> dict[str, Any]:
    if table in ("from_debian", "from_dockerimg", "chroot_script") and table not in doc:
        del doc["from_rootfs"]
        doc[table] = {"from_debian": {"suite": "bookworm", "version": "1"},
                      "from_dockerimg": {"upgrade_img": "kubeos/os:1", "legacy_bios": False},
                      "chroot_script": {"path": "/nonexistent"}}[table]
        if table == "chroot_script":
            doc["from_rootfs"] = base_doc_root(doc)
    target = doc[table][index] if index is not None else doc[table]
    target[key] = [value] if is_list else value
    return doc


def base_doc_root(doc: dict[str, Any]) -> dict[str, Any]:
    return {"path": doc["copy_files"][0]["src"].rsplit("/", 1)[0] + "/root", "version": "1"}


@pytest.mark.node
@pytest.mark.skipif(os.geteuid() != 0, reason="builds root-owned trees (needs root)")
@pytest.mark.parametrize(("table", "key", "index", "is_list"), FIELDS,
                         ids=[f"{t}.{k}" for t, k, _, _ in FIELDS])
def test_metacharacters_are_errors_or_literal(tmp_path: Path, table: str, key: str,
                                              index: int | None, is_list: bool) -> None:
    canary = tmp_path / "pwned"
    outcomes = []
    for n, payload in enumerate(PAYLOADS):
        value = payload.format(c=canary)
        doc = apply(base_doc(tmp_path), table, key, index, is_list, value)
        toml = support.write_toml(tmp_path / f"k{n}.toml", doc)
        try:
            cfg = config.load(toml)
        except config.ConfigError as exc:
            prefix = f"{table}[{index}].{key}" if index is not None else f"{table}.{key}"
            assert str(exc).startswith(prefix), str(exc)
            outcomes.append("error")
            continue
        if table in BUILD_TABLES:
            try:
                build.build(cfg, "vm-img", tmp_path / f"out{n}")
                outcomes.append("literal")
            except KbimgError as exc:  # e.g. a literal unit name that is not in the image
                assert str(exc).startswith(f"{table}"), str(exc)
                outcomes.append("error")
        else:
            outcomes.append("accepted")
        assert not canary.exists()
    assert not canary.exists()
    assert outcomes


@pytest.mark.node
@pytest.mark.skipif(os.geteuid() != 0, reason="builds root-owned trees (needs root)")
def test_literal_values_land_literally(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    doc = base_doc(tmp_path)
    weird = f"$(touch {canary})"
    doc["users"][0]["passwd"] = weird
    doc["grub"]["passwd"] = weird
    doc["copy_files"][0]["dst"] = f"/opt/x/{weird.replace('/', '_')}"
    doc["persist_mkdir"]["name"] = ["a;b", "$(c)"]
    out = tmp_path / "out"
    build.build(config.load(support.write_toml(tmp_path / "k.toml", doc)), "vm-img", out)
    assert not canary.exists()
    table = support.partition_table(out / "system.img")
    parts = {p["name"]: p for p in table["partitions"]}
    root_a = support.cut_partition(out / "system.img", parts["ROOT-A"], tmp_path / "a")
    persist = support.cut_partition(out / "system.img", parts["PERSIST"], tmp_path / "p")
    assert weird.replace("/", "_") in support.debugfs_ls(root_a, "/opt/x")
    assert {"a;b", "$(c)"} <= set(support.debugfs_ls(persist, "/"))
