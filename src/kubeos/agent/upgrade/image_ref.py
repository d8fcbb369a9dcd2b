"""Container image references and image digests from an ``UpgradeRequest``.

The reference accepts ``repo/name``, ``repo/name:tag`` and ``repo/name@sha256:hex`` (tag or
digest, not both) through one regex. We keep that grammar but parse it into parts, because the
runtimes need the parts: ``ctr`` does not add ``docker.io/library/`` or ``:latest`` by itself,
and the digest a runtime reports has to be matched against the right repository. Two things are
stricter than the reference and both are about argv safety, since the reference is passed to
``ctr``/``crictl``/``docker`` as an argument (never through a shell): no component may start
with ``-`` (it would be read as an option) and the whole text is ASCII without whitespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubeos.agent.errors import InvalidRequestError

# one path component: what the reference's [\w.-]+ allows, but not starting with "-" or "."
_COMPONENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_HOST = rf"{_COMPONENT}(?::[0-9]+)?"
_REF = re.compile(
    rf"^(?P<name>(?:{_HOST}/)*{_COMPONENT})"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})|@sha256:(?P<digest>[0-9a-fA-F]{64}))?$",
    re.ASCII,
)
_HEX64 = re.compile(r"^[0-9a-f]{64}$", re.ASCII)
MAX_REF = 1024


@dataclass(frozen=True)
class ImageRef:
    """A parsed reference; ``str()`` gives the fully qualified form the runtimes store."""

    repository: str  # fully qualified: registry/path/name
    tag: str | None
    digest: str | None  # 64 lowercase hex, without "sha256:"

    def __str__(self) -> str:
        if self.digest is not None:
            return f"{self.repository}@sha256:{self.digest}"
        return f"{self.repository}:{self.tag or 'latest'}"


def _qualify(name: str) -> str:
    """``name`` as containerd stores it: docker's defaults for a missing registry/namespace."""
    first, sep, _ = name.partition("/")
    if not sep:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def parse_image_ref(text: str) -> ImageRef:
    """Parse ``container_image``; anything the reference grammar does not allow is refused
    with a message that names the field and the accepted forms."""
    if not text:
        raise InvalidRequestError("container_image is required for container image upgrades")
    if len(text) > MAX_REF:
        raise InvalidRequestError(f"container_image is longer than {MAX_REF} characters")
    m = _REF.fullmatch(text)
    if m is None:
        raise InvalidRequestError(
            f"container_image {text!r} is not a valid image reference; expected "
            "registry/name, registry/name:tag or registry/name@sha256:<64 hex digits>"
        )
    digest = m.group("digest")
    return ImageRef(
        repository=_qualify(m.group("name")),
        tag=m.group("tag"),
        digest=digest.lower() if digest else None,
    )


def parse_checksum(text: str) -> str:
    """``check_sum`` of a container upgrade: the image digest as 64 hex digits, with or without
    ``sha256:``, any case. Returned lowercase without the prefix."""
    value = text.strip().lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:") :]
    if not _HEX64.fullmatch(value):
        raise InvalidRequestError(
            "check_sum must be the image digest: 64 hex digits, optionally prefixed by sha256:"
        )
    return value


def digest_from_repo_digest(text: str) -> str | None:
    """The hex digest in ``repo@sha256:<hex>`` (the runtimes' RepoDigests), or None."""
    _, sep, digest = text.strip().rpartition("@")
    if not sep or not digest.startswith("sha256:"):
        return None
    hexpart = digest[len("sha256:") :].lower()
    return hexpart if _HEX64.fullmatch(hexpart) else None
