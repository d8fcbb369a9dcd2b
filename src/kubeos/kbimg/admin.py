"""admin-container: the admin image of deploy/admin-container, written with the OCI writer.

Placeholder until the Containerfile build lands: reports clearly that it is not built here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kubeos.kbimg.config import AdminContainer
from kubeos.kbimg.errors import BuildError


def build_admin(spec: AdminContainer, work: Path, step: Callable[[str], None]) -> str:
    raise BuildError("admin-container is not built by this kbimg yet: build "
                     "deploy/admin-container/Containerfile with docker/podman build")
