"""Upgrade sources keyed by ``image_type``.

``disk`` streams an image into the inactive partition; ``docker`` and ``containerd`` pull a
container image and take its rootfs. A source that is not ready can be registered as
:class:`NotSupportedYet`, so the protocol answer stays clear; adding one is one entry in
:data:`SOURCES`.
"""

from __future__ import annotations

from typing import Protocol

from kubeos.agent.errors import UnsupportedError
from kubeos.agent.messages import UpgradeRequest
from kubeos.agent.upgrade.containerd import ContainerdSource
from kubeos.agent.upgrade.disk import DiskImageSource
from kubeos.agent.upgrade.docker import DockerSource
from kubeos.agent.upgrade.target import StagedImage, StagingTarget


class UpgradeSource(Protocol):
    image_type: str

    def validate(self, request: UpgradeRequest) -> None:
        """Refuse a bad request before anything is touched."""

    def stage(self, request: UpgradeRequest, target: StagingTarget) -> StagedImage:
        """Write and verify the new root in ``target``; never touches the boot entry."""
        ...


class NotSupportedYet:
    """Placeholder for a source another change will add."""

    def __init__(self, image_type: str) -> None:
        self.image_type = image_type

    def validate(self, request: UpgradeRequest) -> None:
        raise UnsupportedError(f'image type "{self.image_type}" is not supported yet')

    def stage(self, request: UpgradeRequest, target: StagingTarget) -> StagedImage:
        self.validate(request)
        raise AssertionError("unreachable")


SOURCES: dict[str, UpgradeSource] = {
    "disk": DiskImageSource(),
    "docker": DockerSource(),
    "containerd": ContainerdSource(),
}

