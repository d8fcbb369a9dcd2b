"""The steps that run image code: ``[chroot_script]`` in the sandbox, the admin container
(mmdebstrap + the Containerfile's RUN lines), and the argv of the package managers."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from kubeos.kbimg import admin, build, config, rootfs
from tests.kbimg import support

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _root_with_dash(root: Path) -> Path:
    """The tiny root plus the host's dash and libc, enough for a shell-builtin script."""
    support.make_tiny_root(root)
    for lib in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"):
        (root / lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, root / lib.lstrip("/"))
    (root / "lib64").mkdir(exist_ok=True)
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    shutil.copy2("/bin/dash", root / "bin/sh")
    return root


@pytest.mark.node
@root_only
@pytest.mark.skipif(not Path("/bin/dash").exists(), reason="needs /bin/dash")
def test_chroot_script_runs_sandboxed_and_is_removed(tmp_path: Path) -> None:
    root = _root_with_dash(tmp_path / "root")
    script = tmp_path / "setup.sh"
    script.write_text("echo ran > /ran-marker\n"
                      "if [ -e /proc/self/status ]; then echo yes > /proc-marker; fi\n"
                      "echo \"$0\" > /argv-marker\n")
    before = support.mounts_and_loops(tmp_path)
    doc = support.tiny_doc(root, chroot_script={"path": str(script), "rm": True})
    out = tmp_path / "out"
    build.build(config.load(support.write_toml(tmp_path / "k.toml", doc)), "upgrade-img", out)
    assert support.mounts_and_loops(tmp_path) == before
    with tarfile.open(out / "kubeos.tar") as t:
        names = t.getnames()
        assert "./ran-marker" in names and "./proc-marker" in names
        assert "./setup.sh" not in names
        assert t.extractfile("./argv-marker").read() == b"/setup.sh\n"  # type: ignore[union-attr]


def test_package_manager_argv_are_lists_with_end_of_options() -> None:
    repo = config.FromRepo(version="1", repo_path=Path("/r.repo"), agent_path=Path("/a"),
                           root_passwd="$6$x$y", rpmlist=("kernel", "systemd"),
                           legacy_bios=False, upgrade_img=None)
    argv = rootfs.dnf_argv(repo, Path("/w/root"), Path("/w/repos"), "dnf")
    assert argv[:3] == ["dnf", "-y", "--installroot=/w/root"]
    assert argv[argv.index("install") + 1] == "--"
    assert argv[-6:] == ["kernel", "systemd", *rootfs.RPM_EXTRAS_X86_UEFI]
    deb = config.FromDebian(suite="bookworm", mirror=None, packages=("curl",), version="1",
                            root_passwd=None, upgrade_img=None)
    argv = rootfs.mmdebstrap_argv(deb, Path("/w/root"))
    assert argv[0] == "mmdebstrap" and argv[-4:] == ["--", "bookworm", "/w/root",
                                                     rootfs.DEBIAN_MIRROR]
    include = next(a for a in argv if a.startswith("--include="))
    assert include.endswith(",linux-image-cloud-amd64,curl")
    deb2 = config.FromDebian(suite="bookworm", mirror="http://m/debian",
                             packages=("linux-image-amd64",), version="1", root_passwd=None,
                             upgrade_img=None)
    argv = rootfs.mmdebstrap_argv(deb2, Path("/r"))
    assert "linux-image-cloud-amd64" not in " ".join(argv) and argv[-1] == "http://m/debian"


def test_containerfile_subset_parser() -> None:
    plan = admin.parse(
        "ARG BASE=docker.io/library/debian:bookworm-slim\nFROM ${BASE}\n"
        "# comment\nRUN apt-get update \\\n && apt-get install -y --no-install-recommends \\\n"
        "   openssh-server python3 && rm -rf /x\nCOPY a b /usr/local/bin/\nENV A=1\n"
        "EXPOSE 22\nENTRYPOINT [\"/e\"]\n")
    assert plan.suite == "bookworm"
    assert plan.packages == ["openssh-server", "python3"]
    assert plan.steps[1] == ("COPY", "a b /usr/local/bin/")
    assert plan.exposed == ["22/tcp"] and plan.entrypoint == ["/e"] and plan.env == ["A=1"]
    with pytest.raises(admin.BuildError, match="not a Debian image"):
        admin.parse("FROM alpine:3\n")
    with pytest.raises(admin.BuildError, match="ADD is not supported"):
        admin.parse("FROM debian:bookworm\nADD x /\n")


@pytest.mark.node
@root_only
@pytest.mark.skipif(not support.have("mmdebstrap"), reason="needs mmdebstrap")
def test_admin_container_image(tmp_path: Path) -> None:
    """About 80 s: mmdebstrap of bookworm plus the Containerfile's RUN lines."""
    try:
        admin.context_dir()
    except admin.BuildError:
        pytest.skip("deploy/admin-container not present")
    hostshell = tmp_path / "hostshell"
    hostshell.write_text("#!/bin/sh\n# hostshell under test\n")
    doc = {"admin_container": {"img_name": "kubeos/admin:test", "hostshell": str(hostshell)}}
    out = tmp_path / "out"
    build.build(config.load(support.write_toml(tmp_path / "a.toml", doc)), "admin-container",
                out)
    archive = out / "admin-container.tar"
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest[0]["RepoTags"] == ["kubeos/admin:test"]
        cfg = json.load(outer.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        assert cfg["config"]["Entrypoint"] == ["/usr/local/bin/admin-container-entrypoint"]
        assert "22/tcp" in cfg["config"]["ExposedPorts"]
        layer = outer.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as t:
        names = set(t.getnames())
        assert {"usr/sbin/sshd", "usr/bin/nsenter", "usr/local/bin/set-ssh-pub-key",
                "etc/ssh/sshd_config.d/kubeos-admin.conf"} <= names
        shell = t.getmember("usr/local/bin/hostshell")
        assert shell.mode & 0o111
        assert t.extractfile(shell).read() == hostshell.read_bytes()  # type: ignore[union-attr]
        assert not [n for n in names if n.startswith("etc/ssh/ssh_host_")]
        assert not [n for n in names if n.startswith("dev/")]
        pam = t.extractfile("etc/pam.d/sshd").read().decode()  # type: ignore[union-attr]
        assert "session optional pam_loginuid.so" in pam
    if shutil.which("skopeo"):
        subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"], check=True,
                       capture_output=True)


FAKE_DNF = """#!{python}
import json, os, shutil, sys
args = sys.argv[1:]
root = next(a.split("=", 1)[1] for a in args if a.startswith("--installroot="))
if "install" in args:
    with open(os.path.join(root, "dnf-argv.json"), "w") as f:
        json.dump(args, f)
    with open(os.path.join(root, "proc-mounted"), "w") as f:
        f.write(str(os.path.exists(os.path.join(root, "proc/self/status"))))
    shutil.copytree(os.environ["FAKE_ROOT_TEMPLATE"], root, dirs_exist_ok=True, symlinks=True)
"""
FAKE_RPM = """#!{python}
import os, sys
os.makedirs(os.path.join(sys.argv[sys.argv.index("--root") + 1], "var/lib/rpm"), exist_ok=True)
"""


@pytest.mark.node
@root_only
def test_from_repo_with_a_stand_in_dnf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The from_repo path end to end, with dnf and rpm replaced by recorders (no dnf here)."""
    import sys

    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in (("dnf", FAKE_DNF), ("rpm", FAKE_RPM)):
        (bindir / name).write_text(text.format(python=sys.executable))
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ROOT_TEMPLATE", str(support.make_tiny_root(tmp_path / "template")))
    repo = tmp_path / "openEuler.repo"
    repo.write_text("[everything]\nbaseurl=https://repo.example/everything\n")
    agent = tmp_path / "os-agent"
    agent.write_text("reference agent binary")
    doc = {"from_repo": {"version": "24.03", "repo_path": str(repo), "agent_path": str(agent),
                         "root_passwd": "$6$salt$hash", "rpmlist": ["kernel", "systemd"],
                         "legacy_bios": False},
           "disk_partition": {"root": 128, "img_size": 3}}
    out = tmp_path / "out"
    build.build(config.load(support.write_toml(tmp_path / "k.toml", doc)), "vm-img", out)
    with tarfile.open(out / "kubeos.tar") as t:
        argv = json.load(t.extractfile("./dnf-argv.json"))  # type: ignore[arg-type]
        assert t.extractfile("./proc-mounted").read() == b"True"  # type: ignore[union-attr]
        shadow = t.extractfile("./etc/shadow").read().decode()  # type: ignore[union-attr]
        assert t.extractfile("./etc/yum.repos.d/iso.repo").read() == repo.read_bytes()  # type: ignore[union-attr]
    assert argv[0] == "-y" and argv[1].startswith("--installroot=")
    assert argv[argv.index("install") + 1:] == ["--", "kernel", "systemd",
                                                 *rootfs.RPM_EXTRAS_X86_UEFI]
    assert shadow.startswith("root:$6$salt$hash:")
    assert support.mounts_and_loops(tmp_path) == ([], [])
