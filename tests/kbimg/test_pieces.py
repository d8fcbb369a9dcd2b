"""Unit tests of kbimg's pieces: GRUB password and grubenv formats, the OCI writer/reader,
symlink-safe paths in the root, unit enabling, the cpio writer."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from kubeos.kbimg import cpio, grub, inroot, oci, units
from kubeos.kbimg.errors import BuildError


def test_pbkdf2_matches_grub_format() -> None:
    salt = bytes(range(64))
    hashed = grub.pbkdf2_hash("secret", salt=salt)
    algo, kind, iterations, salt_hex, digest_hex = hashed.split(".")[1:]
    assert hashed.startswith("grub.pbkdf2.sha512.10000.")
    assert (algo, kind, iterations) == ("pbkdf2", "sha512", "10000")
    assert bytes.fromhex(salt_hex) == salt
    expect = hashlib.pbkdf2_hmac("sha512", b"secret", salt, 10000, 64)
    assert bytes.fromhex(digest_hex) == expect
    assert grub.pbkdf2_hash("secret") != grub.pbkdf2_hash("secret")  # random salt


def test_pbkdf2_verified_by_grub_mkpasswd_reference() -> None:
    """grub-mkpasswd-pbkdf2 uses the same primitive; check ours against its output."""
    if not shutil.which("grub-mkpasswd-pbkdf2"):
        pytest.skip("grub-mkpasswd-pbkdf2 missing")
    out = subprocess.run(["grub-mkpasswd-pbkdf2", "-c", "1000"], input="pw\npw\n",
                         capture_output=True, text=True, check=True).stdout
    ref = out.strip().rsplit(" ", 1)[-1]
    salt = bytes.fromhex(ref.split(".")[4])
    assert grub.pbkdf2_hash("pw", iterations=1000, salt=salt) == ref


def test_grubenv_block_matches_grub_editenv(tmp_path: Path) -> None:
    assert len(grub.grubenv_block()) == 1024
    if not shutil.which("grub-editenv"):
        pytest.skip("grub-editenv missing")
    ref = tmp_path / "grubenv"
    subprocess.run(["grub-editenv", str(ref), "create"], check=True)
    assert grub.grubenv_block() == ref.read_bytes()
    subprocess.run(["grub-editenv", str(ref), "set", "saved_entry=B"], check=True)
    assert grub.grubenv_block({"saved_entry": "B"}) == ref.read_bytes()


def test_grub_cfg_contract() -> None:
    cfg = grub.grub_cfg(grub.RootRef.by_label())
    assert "root=LABEL=ROOT-A" in cfg and "root=LABEL=ROOT-B" in cfg
    assert cfg.index("--id A") < cfg.index("--id B")
    # the one-shot trial is consumed before booting and recorded as boot_trial
    trial = cfg[cfg.index('if [ "${next_entry}" = "A"'):]
    assert trial.index("set next_entry=") < trial.index("save_env")
    assert 'set boot_trial="${next_entry}"' in trial
    assert "save_env -f \"${envfile}\" next_entry boot_trial" in trial
    assert "set fallback=0" in cfg and "set fallback=1" in cfg


def _reference_layer_members(archive: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            data = outer.extractfile(layer).read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as ltar:
                for m in ltar.getmembers():
                    if m.isreg():
                        out[m.name] = ltar.extractfile(m).read()  # type: ignore[union-attr]
    return out


def test_oci_image_roundtrip_and_determinism(tmp_path: Path) -> None:
    payload = tmp_path / "os.tar"
    payload.write_bytes(b"root filesystem" * 1000)
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    for out, work in ((a, tmp_path / "wa"), (b, tmp_path / "wb")):
        oci.write_image(out, "kubeos/os:1.0", [oci.Layer(files=[oci.LayerFile("os.tar", payload)])],
                        workdir=work, cmd=["/bin/sh"])
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as t:
        names = t.getnames()
        assert names == sorted(names, key=lambda n: (not n.startswith("blobs"), n))
        assert {"oci-layout", "index.json", "manifest.json"} <= set(names)
        index = json.load(t.extractfile("index.json"))  # type: ignore[arg-type]
        ann = index["manifests"][0]["annotations"]
        assert ann["io.containerd.image.name"] == "docker.io/kubeos/os:1.0"
        assert ann["org.opencontainers.image.ref.name"] == "1.0"
        docker = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert docker[0]["RepoTags"] == ["kubeos/os:1.0"]
        # every blob is named by its digest
        for member in t.getmembers():
            if member.name.startswith("blobs/sha256/") and member.isreg():
                data = t.extractfile(member).read()  # type: ignore[union-attr]
                assert hashlib.sha256(data).hexdigest() == member.name.rsplit("/", 1)[1]
        manifest_blob = "blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(t.extractfile(manifest_blob))  # type: ignore[arg-type]
        config = json.load(t.extractfile(  # type: ignore[arg-type]
            "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]))
        layer = t.extractfile("blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1])
        plain = gzip.decompress(layer.read())  # type: ignore[union-attr]
        assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(plain).hexdigest()]
        assert config["config"]["Cmd"] == ["/bin/sh"]
    assert _reference_layer_members(a) == {"os.tar": payload.read_bytes()}
    extracted = tmp_path / "out.tar"
    oci.extract_file(a, "os.tar", extracted)
    assert extracted.read_bytes() == payload.read_bytes()
    with pytest.raises(BuildError, match="has no /missing"):
        oci.extract_file(a, "missing", tmp_path / "x")


def test_oci_archive_accepted_by_skopeo(tmp_path: Path) -> None:
    if not shutil.which("skopeo"):
        pytest.skip("skopeo not installed")
    payload = tmp_path / "os.tar"
    payload.write_bytes(b"x" * 100)
    out = tmp_path / "img.tar"
    oci.write_image(out, "kubeos/os:2", [oci.Layer(files=[oci.LayerFile("os.tar", payload)])],
                    workdir=tmp_path / "w", cmd=["/bin/sh"])
    for transport in ("oci-archive", "docker-archive"):
        info = subprocess.run(["skopeo", "inspect", f"{transport}:{out}"], check=True,
                              capture_output=True, text=True).stdout
        assert json.loads(info)["Layers"]
        dest = tmp_path / transport
        subprocess.run(["skopeo", "copy", "--quiet", f"{transport}:{out}", f"dir:{dest}"],
                       check=True, capture_output=True)
        assert (dest / "manifest.json").exists()


@pytest.mark.parametrize(("ref", "expect"), [
    ("foo", ("docker.io/library/foo", "latest")),
    ("foo:1", ("docker.io/library/foo", "1")),
    ("kubeos/os:1", ("docker.io/kubeos/os", "1")),
    ("reg.example.com:5000/a/b:v2", ("reg.example.com:5000/a/b", "v2")),
    ("localhost/x", ("localhost/x", "latest")),
])
def test_normalize_ref(ref: str, expect: tuple[str, str]) -> None:
    assert oci.normalize_ref(ref) == expect


def test_inroot_resolve_never_leaves_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/abs").symlink_to("/etc")
    (root / "etc/up").symlink_to("../../../../../tmp")
    (root / "run").mkdir()
    (root / "etc/resolv.conf").symlink_to("/run/resolv.conf")
    assert inroot.resolve(root, "/etc/abs/passwd") == root / "etc/passwd"
    assert inroot.resolve(root, "/etc/up/x") == root / "tmp/x"
    assert inroot.resolve(root, "/etc/resolv.conf") == root / "run/resolv.conf"
    assert inroot.resolve(root, "/etc/resolv.conf", follow_last=False) == root / "etc/resolv.conf"
    (root / "loop").symlink_to("loop")
    with pytest.raises(BuildError, match="too many symlinks"):
        inroot.resolve(root, "/loop/x")
    made = inroot.makedirs(root, "/etc/abs/new/deeper")
    assert made == root / "etc/new/deeper" and made.is_dir()


def test_enable_units_from_install_section(tmp_path: Path) -> None:
    root = tmp_path / "root"
    d = root / "usr/lib/systemd/system"
    d.mkdir(parents=True)
    (d / "a.service").write_text("[Unit]\n[Service]\nExecStart=/x\n[Install]\n"
                                 "WantedBy=multi-user.target\nRequiredBy=b.target\n"
                                 "Alias=alias.service\nAlso=c.socket\n")
    (d / "c.socket").write_text("[Socket]\nListenStream=/run/c\n"
                                "[Install]\nWantedBy=sockets.target\n")
    (d / "t@.service").write_text("[Service]\nExecStart=/x %i\n[Install]\nWantedBy=x.target\n")
    (d / "static.service").write_text("[Service]\nExecStart=/x\n")
    units.enable(root, "a")
    units.enable(root, "t@one.service")
    etc = root / "etc/systemd/system"
    assert (etc / "multi-user.target.wants/a.service").readlink() == Path(
        "/usr/lib/systemd/system/a.service")
    assert (etc / "b.target.requires/a.service").is_symlink()
    assert (etc / "alias.service").is_symlink()
    assert (etc / "sockets.target.wants/c.socket").is_symlink()
    assert (etc / "x.target.wants/t@one.service").readlink() == Path(
        "/usr/lib/systemd/system/t@.service")
    with pytest.raises(BuildError, match="no \\[Install\\] section"):
        units.enable(root, "static.service")
    with pytest.raises(BuildError, match=r"systemd_service\.name: unit 'nope\.service' not found"):
        units.enable(root, "nope.service")


def test_cpio_newc_readable_by_cpio(tmp_path: Path) -> None:
    if not shutil.which("cpio"):
        pytest.skip("cpio missing")
    data = cpio.newc([cpio.Entry("etc", mode=0o040755),
                      cpio.Entry("etc/conf", b"a=1\n"),
                      cpio.Entry("bin/x", b"#!/bin/sh\n", 0o100755)])
    assert len(data) % 512 == 0
    listing = subprocess.run(["cpio", "-it"], input=data, capture_output=True,
                             check=True).stdout.decode().split()
    assert listing == ["etc", "etc/conf", "bin/x"]
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=data, cwd=dest, check=True)
    assert (dest / "etc/conf").read_text() == "a=1\n"


def test_agent_copy_runs_on_a_bare_system_python(tmp_path: Path) -> None:
    """The image's agent needs only python3 (>= 3.11): the package and its two pure-Python
    dependencies are copied next to it."""
    from kubeos.kbimg import content

    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip("no system python3")
    root = tmp_path / "root"
    root.mkdir()
    content.install_agent(root)
    launcher = (root / "usr/bin/os-agent").read_text()
    assert launcher.startswith("#!/usr/bin/python3\n") and content.AGENT_PYTHON_DIR in launcher
    code = ("import sys; sys.argv = ['os-agent', '--help']\n"
            "from kubeos.agent.cli import main\nmain()")
    proc = subprocess.run([str(python), "-S", "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(root / content.AGENT_PYTHON_DIR.lstrip("/")),
                               "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "serve" in proc.stdout


def test_pxe_installer_is_valid_posix_sh_and_reads_config_as_data() -> None:
    from kubeos.kbimg import pxe

    subprocess.run(["sh", "-n", str(pxe.INSTALLER)], check=True)
    code = "\n".join(line for line in pxe.INSTALLER.read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    assert not re.search(r"\beval\b|\bsource\b|^\s*\.\s", code, re.M)
    text = pxe.INSTALLER.read_text()
    assert "--proto '=https'" in text and "sha256sum -c" in text
