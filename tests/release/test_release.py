"""``kbimg release`` end to end (issue 13): the operator and proxy images in a real containerd.

The user guide asks for the proxy binary owned by root with mode 500, the operator binary owned
by the user it runs as (6552) with mode 500, and entrypoints matching the manifests. These are
checked three ways: in the OCI config, in the layer tar headers, and by running the images'
entrypoints with ``ctr run`` (as the image's configured user) far enough to print the version.
The agent is checked the same way: installed from the release's wheels into the image's Debian
root, ``os-agent --version`` must run there.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

import kubeos
from kubeos.kbimg import content, oci, release, wheels

from .conftest import Built

pytestmark = [pytest.mark.node, pytest.mark.timeout(900)]

MANIFESTS = Path(__file__).resolve().parents[2] / "config" / "manager"
IMAGES = {"os-operator": ("operator.yaml", "6552:6552"), "os-proxy": ("proxy.yaml", "0:0")}


class Archive:
    """An OCI archive as kbimg writes it, read with tarfile only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with tarfile.open(path) as tar:
            index = self._json(tar, "index.json")
            desc = index["manifests"][0]
            self.ref = desc["annotations"]["io.containerd.image.name"]
            manifest = self._json(tar, self.blob(desc["digest"]))
            self.config: dict[str, Any] = self._json(tar, self.blob(manifest["config"]["digest"]))
            self.layers = [layer["digest"] for layer in manifest["layers"]]
            self.docker = self._json(tar, "manifest.json")

    @staticmethod
    def blob(digest: str) -> str:
        return "blobs/sha256/" + digest.split(":", 1)[1]

    @staticmethod
    def _json(tar: tarfile.TarFile, name: str) -> Any:
        f = tar.extractfile(name)
        assert f is not None
        return json.load(f)

    def members(self, index: int) -> dict[str, tarfile.TarInfo]:
        with tarfile.open(self.path) as tar:
            f = tar.extractfile(self.blob(self.layers[index]))
            assert f is not None
            with tarfile.open(fileobj=f, mode="r|gz") as layer:
                return {m.name: m for m in layer}

    def extract_layer(self, index: int, dest: Path) -> None:
        with tarfile.open(self.path) as tar:
            f = tar.extractfile(self.blob(self.layers[index]))
            assert f is not None
            subprocess.run(["tar", "--numeric-owner", "-xpzf", "-", "-C", str(dest)],
                           input=f.read(), check=True)


def _container(manifest: str) -> dict[str, Any]:
    doc = yaml.safe_load((MANIFESTS / manifest).read_text())
    container: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    pod: dict[str, Any] = doc["spec"]["template"]["spec"].get("securityContext", {})
    return {**container, "pod": pod}


def test_release_folder_has_wheels_images_and_metadata(built: Built) -> None:
    out = built.output
    for name in ("os-operator.tar", "os-proxy.tar", "admin-container.tar", "release.json",
                 "wheels"):
        assert (out / name).exists(), name
    project = wheels.find_wheel(out / "wheels", "kubeos")
    assert project.name == f"kubeos-{kubeos.__version__}-py3-none-any.whl"
    for dist in ("ruamel.yaml", "tomlkit", "pydantic", "pydantic-core", "lightkube", "click",
                 "cryptography", "prometheus-client", "pyyaml", "rich"):
        wheels.find_wheel(out / "wheels", dist)
    meta = json.loads((out / "release.json").read_text())
    assert set(meta["images"]) == set(release.IMAGES)
    assert meta["tag"] == kubeos.__version__


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_config_matches_the_manifests(built: Built, name: str) -> None:
    manifest, user = IMAGES[name]
    image = Archive(built.output / f"{name}.tar")
    assert image.ref == f"docker.io/kubeos/{name}:{kubeos.__version__}"
    assert image.docker[0]["RepoTags"] == [f"kubeos/{name}:{kubeos.__version__}"]
    config = image.config["config"]
    container = _container(manifest)
    assert container["image"] == f"kubeos-{name.removeprefix('os-')}"  # kustomize images: name
    assert config["Entrypoint"] == container["command"]
    assert config["User"] == user
    security = {**container["pod"], **container.get("securityContext", {})}
    assert f"{security['runAsUser']}:{security['runAsGroup']}" == user
    if user != "0:0":
        assert container["pod"]["runAsNonRoot"] is True


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_entrypoint_owner_and_mode_in_the_layer_headers(built: Built, name: str) -> None:
    _, user = IMAGES[name]
    uid, gid = (int(x) for x in user.split(":"))
    image = Archive(built.output / f"{name}.tar")
    assert len(image.layers) == 3
    entry = image.members(2)
    script = entry[f"usr/local/bin/{name}"]
    assert (script.uid, script.gid, script.mode & 0o7777) == (uid, gid, 0o500)
    assert script.isreg()
    for directory in ("usr", "usr/local", "usr/local/bin"):
        info = entry[directory]
        assert info.isdir() and (info.uid, info.gid, info.mode & 0o7777) == (0, 0, 0o755)
    assert set(entry) == {"usr", "usr/local", "usr/local/bin", f"usr/local/bin/{name}"}


def test_operator_and_proxy_share_their_debian_and_python_layers(built: Built) -> None:
    operator = Archive(built.output / "os-operator.tar")
    proxy = Archive(built.output / "os-proxy.tar")
    assert operator.layers[:2] == proxy.layers[:2]
    assert operator.layers[2] != proxy.layers[2]


def test_base_is_stripped(built: Built) -> None:
    image = Archive(built.output / "os-operator.tar")
    names = set(image.members(0)) | set(image.members(1))
    assert "usr/bin/python3" in names
    assert any(n.startswith("usr/share/zoneinfo/Asia/") for n in names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(("usr/share/man/", "usr/share/locale/"))]
    docs = [n for n in names if n.startswith("usr/share/doc/") and n.count("/") > 3]
    assert all(n.endswith("/copyright") for n in docs)
    assert not [n for n in names if n.startswith(("var/lib/apt/lists/", "var/cache/", "dev/"))]
    assert not [n for n in names if n.startswith("usr/bin/apt")]
    site = "usr/local/lib/python3.11/dist-packages"
    assert f"{site}/kubeos/operator/main.py" in names
    assert f"{site}/kubeos-{kubeos.__version__}.dist-info/METADATA" in names


def _ctr_run(ctr: list[str], ref: str, cid: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ctr, "run", "--rm", ref, cid, *argv], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_entrypoint_prints_its_version_in_containerd(built: Built, ctr: list[str], name: str
                                                     ) -> None:
    """``ctr run`` (containerd 1.6) replaces the whole process argv when given one, so the
    entrypoint is taken from the image config and ``--version`` appended, as a pod's ``args``
    would be. The process runs as the config's User."""
    _, user = IMAGES[name]
    archive = built.output / f"{name}.tar"
    subprocess.run([*ctr, "images", "import", str(archive)], check=True, capture_output=True)
    image = Archive(archive)
    proc = _ctr_run(ctr, image.ref, f"{name}-version", *image.config["config"]["Entrypoint"],
                    "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{name}, version {kubeos.__version__}"
    ident = _ctr_run(ctr, image.ref, f"{name}-id", "/usr/bin/python3", "-c",
                     "import os; print(f'{os.getuid()}:{os.getgid()}')")
    assert ident.returncode == 0, ident.stderr
    assert ident.stdout.strip() == user
    listing = _ctr_run(ctr, image.ref, f"{name}-stat", "/usr/bin/stat", "-c", "%u:%g %a",
                       f"/usr/local/bin/{name}")
    assert listing.stdout.strip() == f"{user} 500", listing.stderr


def test_admin_container_imports(built: Built, ctr: list[str]) -> None:
    archive = built.output / "admin-container.tar"
    subprocess.run([*ctr, "images", "import", str(archive)], check=True, capture_output=True)
    image = Archive(archive)
    assert image.config["config"]["Entrypoint"] == ["/usr/local/bin/admin-container-entrypoint"]
    names = subprocess.run([*ctr, "images", "ls", "-q"], check=True, capture_output=True,
                           text=True).stdout.split()
    assert image.ref in names
    proc = _ctr_run(ctr, image.ref, "admin-sshd", "/usr/sbin/sshd", "-t", "-f",
                    "/etc/ssh/sshd_config")
    # No host keys in the image (they are made at start): sshd -t says so, and nothing else.
    assert "no hostkeys available" in proc.stderr or proc.returncode == 0, proc.stderr


def test_agent_from_the_release_wheels_runs_in_the_image(
        built: Built, ctr: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kbimg's install_agent with ``KBIMG_WHEELS`` pointing at the release: the wheels are
    unpacked into the image's Debian root, and ``os-agent --version`` runs there."""
    root = tmp_path / "root"
    root.mkdir()
    Archive(built.output / "os-proxy.tar").extract_layer(0, root)  # Debian + python3 only
    monkeypatch.setenv(wheels.WHEELS_ENV, str(built.output / "wheels"))
    content.install_agent(root)
    agent_dir = root / content.AGENT_PYTHON_DIR.lstrip("/")
    dist_infos = sorted(p.name.split("-")[0] for p in agent_dir.glob("*.dist-info"))
    assert dist_infos == ["kubeos", "ruamel_yaml", "tomlkit"]
    launcher = root / "usr/bin/os-agent"
    st = launcher.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o500)
    archive = tmp_path / "agent.tar"
    oci.write_image(archive, "kubeos/agent-check:test", [oci.Layer(tree=root)],
                    workdir=tmp_path / "oci", gzip_level=1)
    subprocess.run([*ctr, "images", "import", str(archive)], check=True, capture_output=True)
    proc = _ctr_run(ctr, "docker.io/kubeos/agent-check:test", "agent-version",
                    "/usr/bin/os-agent", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"os-agent {kubeos.__version__}"
