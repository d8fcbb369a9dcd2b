"""Cluster fixtures for the runtime's integration tests (those of tests/cluster)."""

from __future__ import annotations

from tests.cluster.conftest import (  # noqa: F401 - fixtures used by name
    client,
    control_plane,
    namespace,
    sync_client,
    unique,
)
