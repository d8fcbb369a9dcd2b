"""The OCI writer's config fields used by the release images: User and WorkingDir.

The operator image declares its non-root user in the config (runtimes use it when the pod does
not), and an image written without the new arguments must stay byte-identical to before.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from kubeos.kbimg import oci


def _config(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{digest}"))  # type: ignore[arg-type]
        cfg = manifest["config"]["digest"].split(":")[1]
        result: dict[str, Any] = json.load(tar.extractfile(f"blobs/sha256/{cfg}"))  # type: ignore[arg-type]
    return result


def test_user_and_working_dir_reach_the_config(tmp_path: Path) -> None:
    payload = tmp_path / "hello"
    payload.write_text("hi\n")
    layer = oci.Layer(files=[oci.LayerFile("usr/local/bin/hello", payload, 0o500)])
    out = tmp_path / "img.tar"
    oci.write_image(out, "kubeos/hello:1", [layer], workdir=tmp_path / "w",
                    entrypoint=["/usr/local/bin/hello"], user="6552:6552", working_dir="/")
    config = _config(out)["config"]
    assert config["User"] == "6552:6552"
    assert config["WorkingDir"] == "/"
    assert config["Entrypoint"] == ["/usr/local/bin/hello"]


def test_without_user_the_config_is_unchanged(tmp_path: Path) -> None:
    payload = tmp_path / "hello"
    payload.write_text("hi\n")
    layer = oci.Layer(files=[oci.LayerFile("hello", payload)])
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    oci.write_image(a, "kubeos/hello:1", [layer], workdir=tmp_path / "wa", cmd=["/hello"])
    oci.write_image(b, "kubeos/hello:1", [layer], workdir=tmp_path / "wb", cmd=["/hello"],
                    user=None, working_dir=None)
    assert a.read_bytes() == b.read_bytes()
    assert "User" not in _config(a)["config"] and "WorkingDir" not in _config(a)["config"]
