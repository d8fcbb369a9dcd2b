"""A minimal, deterministic OCI image writer (and the reader for ``[from_dockerimg]``).

Builds images without a Docker daemon. The archive is an OCI image layout (``oci-layout``,
``index.json``, ``blobs/sha256/...``) that also carries Docker's ``manifest.json``, so both
``ctr images import`` and ``docker load`` accept the same file, and ``skopeo copy
oci-archive:...`` can push it. Same inputs give the same bytes: entries sorted, mtimes,
owners and gzip headers fixed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kubeos.kbimg.errors import BuildError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
_CREATED = "1970-01-01T00:00:00Z"


class _HashingWriter(io.RawIOBase):
    """Write-through wrapper computing sha256 and size of what passes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = bytes(data)
        self.sha.update(view)
        self.size += len(view)
        self.target.write(view)
        return len(view)


@dataclass(frozen=True)
class LayerFile:
    """One file of a layer: ``path`` in the image, content from ``source`` on the host."""

    path: str
    source: Path
    mode: int = 0o644


@dataclass
class Layer:
    """Files and directories of one layer; directories are given as image paths."""

    files: list[LayerFile] = field(default_factory=list)
    tree: Path | None = None  # a whole root tree (admin image), added sorted, owners kept


@dataclass(frozen=True)
class _Blob:
    digest: str
    size: int
    path: Path


def _tarinfo(name: str, *, size: int = 0, mode: int = 0o644, kind: bytes = tarfile.REGTYPE
             ) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type = size, mode, kind
    info.mtime, info.uid, info.gid, info.uname, info.gname = _EPOCH, 0, 0, "", ""
    return info


def _add_tree(tar: tarfile.TarFile, tree: Path) -> None:
    entries: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            entries.append(Path(dirpath) / name)
    for path in sorted(entries, key=lambda p: p.relative_to(tree).as_posix()):
        info = tar.gettarinfo(str(path), arcname=path.relative_to(tree).as_posix())
        info.mtime = min(int(info.mtime), _EPOCH) if _EPOCH else int(info.mtime)
        info.uname = info.gname = ""  # numeric owners: the build host's names mean nothing
        if info.isreg():
            with path.open("rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)


def _write_layer(layer: Layer, out: Path, level: int) -> tuple[_Blob, str]:
    """Write the gzip layer blob; returns it and the diff_id (sha256 of the plain tar)."""
    with out.open("wb") as raw:
        compressed = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0,
                           compresslevel=level) as gz:
            plain = _HashingWriter(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                if layer.tree is not None:
                    _add_tree(tar, layer.tree)
                dirs: set[str] = set()
                for item in sorted(layer.files, key=lambda f: f.path):
                    parts = item.path.strip("/").split("/")
                    for i in range(1, len(parts)):
                        d = "/".join(parts[:i])
                        if d not in dirs:
                            dirs.add(d)
                            tar.addfile(_tarinfo(d, mode=0o755, kind=tarfile.DIRTYPE))
                    size = item.source.stat().st_size
                    with item.source.open("rb") as f:
                        tar.addfile(_tarinfo("/".join(parts), size=size, mode=item.mode), f)
    digest = "sha256:" + compressed.sha.hexdigest()
    return _Blob(digest, compressed.size, out), "sha256:" + plain.sha.hexdigest()


def _json_blob(obj: Any, blobs: Path) -> _Blob:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    path = blobs / digest
    path.write_bytes(data)
    return _Blob("sha256:" + digest, len(data), path)


def normalize_ref(ref: str) -> tuple[str, str]:
    """(full name, tag) as docker would: ``foo:1`` is ``docker.io/library/foo:1``."""
    name, tag = ref, "latest"
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return name, tag


def _docker_tag(ref: str) -> str:
    name, tag = normalize_ref(ref)
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return f"{name}:{tag}"


def write_image(out: Path, ref: str, layers: Iterable[Layer], *, workdir: Path,
                cmd: list[str] | None = None, entrypoint: list[str] | None = None,
                env: list[str] | None = None, exposed_ports: list[str] | None = None,
                labels: dict[str, str] | None = None, gzip_level: int = 6,
                user: str | None = None, working_dir: str | None = None) -> str:
    """Write an OCI + docker-archive tarball of the image to ``out``; returns the manifest digest.

    ``user`` (``uid[:gid]``) is the config's User: runtimes start the entrypoint as that user
    unless the pod says otherwise, which is how an image declares that it runs as non-root.
    """
    blobs = workdir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    layer_blobs: list[_Blob] = []
    diff_ids: list[str] = []
    for i, layer in enumerate(layers):
        tmp = blobs / f"layer-{i}.tmp"
        blob, diff_id = _write_layer(layer, tmp, gzip_level)
        final = blobs / blob.digest.split(":", 1)[1]
        os.replace(tmp, final)
        layer_blobs.append(_Blob(blob.digest, blob.size, final))
        diff_ids.append(diff_id)
    image_config: dict[str, Any] = {}
    if cmd is not None:
        image_config["Cmd"] = cmd
    if entrypoint is not None:
        image_config["Entrypoint"] = entrypoint
    if env:
        image_config["Env"] = env
    if exposed_ports:
        image_config["ExposedPorts"] = {p: {} for p in exposed_ports}
    if labels:
        image_config["Labels"] = labels
    if user is not None:
        image_config["User"] = user
    if working_dir is not None:
        image_config["WorkingDir"] = working_dir
    config = _json_blob({
        "architecture": "amd64",
        "os": "linux",
        "created": _CREATED,
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": _CREATED, "created_by": "kbimg"} for _ in diff_ids],
    }, blobs)
    manifest = _json_blob({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": b.digest, "size": b.size}
                   for b in layer_blobs],
    }, blobs)
    full_name, tag = normalize_ref(ref)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": manifest.digest, "size": manifest.size,
            "annotations": {
                "io.containerd.image.name": f"{full_name}:{tag}",
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }
    docker_manifest = [{
        "Config": "blobs/sha256/" + config.digest.split(":")[1],
        "RepoTags": [_docker_tag(ref)],
        "Layers": ["blobs/sha256/" + b.digest.split(":")[1] for b in layer_blobs],
    }]
    small = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
        "manifest.json": json.dumps(docker_manifest, sort_keys=True).encode(),
    }
    all_blobs = sorted([*layer_blobs, config, manifest], key=lambda b: b.digest)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tarinfo("blobs", mode=0o755, kind=tarfile.DIRTYPE))
        tar.addfile(_tarinfo("blobs/sha256", mode=0o755, kind=tarfile.DIRTYPE))
        seen: set[str] = set()
        for blob in all_blobs:
            if blob.digest in seen:
                continue
            seen.add(blob.digest)
            name = "blobs/sha256/" + blob.digest.split(":")[1]
            with blob.path.open("rb") as f:
                tar.addfile(_tarinfo(name, size=blob.path.stat().st_size), f)
        for name in sorted(small):
            tar.addfile(_tarinfo(name, size=len(small[name])), io.BytesIO(small[name]))
    return manifest.digest


# ---------------------------------------------------------------------------- reading


def _layer_names(archive: tarfile.TarFile) -> list[str]:
    names = set(archive.getnames())
    if "index.json" in names:
        index = json.load(_member(archive, "index.json"))
        desc = index["manifests"][0]
        if desc.get("mediaType") == OCI_INDEX:
            index = json.load(_member(archive, _blob_name(desc["digest"])))
            desc = index["manifests"][0]
        manifest = json.load(_member(archive, _blob_name(desc["digest"])))
        return [_blob_name(layer["digest"]) for layer in manifest["layers"]]
    if "manifest.json" in names:
        manifest = json.load(_member(archive, "manifest.json"))
        return [str(layer) for layer in manifest[0]["Layers"]]
    raise BuildError("not an OCI or docker archive (no index.json or manifest.json)")


def _blob_name(digest: str) -> str:
    algo, hexdigest = digest.split(":", 1)
    return f"blobs/{algo}/{hexdigest}"


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    f = archive.extractfile(name)
    if f is None:
        raise BuildError(f"image archive member {name!r} is not a file")
    return f


def extract_file(archive_path: Path, wanted: str, dest: Path) -> None:
    """Copy file ``wanted`` (e.g. ``os.tar``) out of the image's layers, topmost layer first."""
    wanted = wanted.strip("/")
    try:
        with tarfile.open(archive_path) as archive:
            for layer in reversed(_layer_names(archive)):
                with tarfile.open(fileobj=_member(archive, layer), mode="r|*") as ltar:
                    for member in ltar:
                        if member.name.lstrip("./") == wanted and member.isreg():
                            src = ltar.extractfile(member)
                            assert src is not None
                            with dest.open("wb") as out:
                                shutil.copyfileobj(src, out, 1 << 20)
                            return
    except (tarfile.TarError, KeyError, IndexError, json.JSONDecodeError) as exc:
        raise BuildError(f"{archive_path}: cannot read image archive: {exc}") from exc
    raise BuildError(f"{archive_path}: the image has no /{wanted}")
