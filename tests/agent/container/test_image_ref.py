"""Image references, checksums and runtime digest parsing (pure functions, no node needed)."""

from __future__ import annotations

import pytest

from kubeos.agent.errors import InvalidRequestError
from kubeos.agent.upgrade.containerd import ctr_digest
from kubeos.agent.upgrade.docker import repo_digest
from kubeos.agent.upgrade.image_ref import (
    digest_from_repo_digest,
    parse_checksum,
    parse_image_ref,
)

HEX = "ab" * 32


@pytest.mark.parametrize(
    ("text", "qualified"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("kubeos/os:1.0", "docker.io/kubeos/os:1.0"),
        ("registry.example.com/kubeos/os", "registry.example.com/kubeos/os:latest"),
        ("localhost/os:v2", "localhost/os:v2"),
        ("127.0.0.1:5000/a/b/c:2.0.0-rc_1", "127.0.0.1:5000/a/b/c:2.0.0-rc_1"),
        (f"reg:5000/os@sha256:{HEX.upper()}", f"reg:5000/os@sha256:{HEX}"),
        ("my_reg.example-1.com:443/os-image.x:1.2", "my_reg.example-1.com:443/os-image.x:1.2"),
    ],
)
def test_valid_references(text: str, qualified: str) -> None:
    assert str(parse_image_ref(text)) == qualified


@pytest.mark.parametrize(
    "text",
    [
        "",
        " busybox",
        "busybox ",
        "/busybox",
        "busybox/",
        "reg//os",
        "os:1@sha256:" + HEX,  # tag and digest together
        "os@sha256:abc",  # short digest
        "os@sha512:" + HEX,
        "os:1;reboot",
        "os:$(id)",
        "os|sh",
        "-os:1",  # would be read as an option
        "reg:5000/-rm:1",
        "reg:port/os",
        "os:" + "x" * 200,
        "ös:1",
        "os\n:1",
        "busybox\n",
        "a" * 1100,
    ],
)
def test_invalid_references(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="container_image"):
        parse_image_ref(text)


@pytest.mark.parametrize("text", [HEX, HEX.upper(), f"sha256:{HEX}", f"SHA256:{HEX}", f" {HEX}\n"])
def test_checksum_forms(text: str) -> None:
    assert parse_checksum(text) == HEX


@pytest.mark.parametrize("text", ["", "abc", f"sha512:{HEX}", HEX + "0", "g" * 64, HEX + "\n0"])
def test_bad_checksums(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="check_sum"):
        parse_checksum(text)


def test_repo_digests() -> None:
    assert digest_from_repo_digest(f"reg/os@sha256:{HEX.upper()}") == HEX
    assert digest_from_repo_digest("reg/os:1") is None
    assert digest_from_repo_digest("reg/os@sha256:abc") is None
    ref = parse_image_ref("kubeos/os:1")
    other = "cd" * 32
    # docker shortens docker.io names in RepoDigests; the matching repository wins
    assert repo_digest([f"mirror.local/kubeos/os@sha256:{other}", f"kubeos/os@sha256:{HEX}"],
                       ref) == HEX
    assert repo_digest([f"mirror.local/x@sha256:{other}"], ref) == other
    assert repo_digest([], ref) is None


def test_ctr_listing() -> None:
    listing = (
        "REF TYPE DIGEST SIZE PLATFORMS LABELS\n"
        f"reg:5000/os:1 application/vnd.oci.image.manifest.v1+json sha256:{HEX} 1.1 KiB "
        "linux/amd64 -\n"
        f"reg:5000/os:10 application/vnd.oci.image.manifest.v1+json sha256:{'cd' * 32} 2 MiB "
        "linux/amd64 -\n"
    )
    assert ctr_digest(listing, "reg:5000/os:1") == HEX
    assert ctr_digest(listing, "reg:5000/os:10") == "cd" * 32
    assert ctr_digest(listing, "reg:5000/os") is None
