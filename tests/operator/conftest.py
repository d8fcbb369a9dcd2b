"""Cluster fixtures for the operator tests: the shared ones from tests/cluster, plus helpers.

The control plane, namespace, client and kubelet fixtures are those of
``tests/cluster/conftest.py`` (re-exported so this directory can use them).
"""

from __future__ import annotations

from tests.cluster.conftest import (  # noqa: F401 - fixtures used by name
    client,
    control_plane,
    kubelet,
    namespace,
    sync_client,
    unique,
)
