"""Which nodes an OS selects, and which OS CRs would fight over the same nodes.

Selection is exactly the reference's (kubeos-behavior.md §3.2): control-plane nodes never;
``all-label`` selects every other node; ``no-label`` the nodes without the node-selector
label; any other value V the nodes whose label equals V (so ``""`` means "label present and
empty").

Overlap fixes the reference's [BUG] of only rejecting identical strings: two selectors
overlap when they *can* select a common node (``all-label`` overlaps everything, equal
strings overlap each other; ``no-label`` and distinct values are disjoint by construction),
whether or not such a node exists yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from kubeos.api import labels
from kubeos.api.models import OS
from kubeos.operator.snapshot import NodeView, OSKey, os_key


def selects(nodeselector: str, node_labels: Mapping[str, str]) -> bool:
    """Whether a node with *node_labels* is selected by *nodeselector*."""
    if labels.LABEL_CONTROL_PLANE in node_labels:
        return False
    if nodeselector == labels.SELECTOR_ALL:
        return True
    if nodeselector == labels.SELECTOR_NONE:
        return labels.LABEL_NODE_SELECTOR not in node_labels
    return node_labels.get(labels.LABEL_NODE_SELECTOR) == nodeselector


def selected(os: OS, nodes: Iterable[NodeView]) -> list[NodeView]:
    """The nodes *os* selects, sorted by name (a stable order makes rollouts predictable)."""
    chosen = [n for n in nodes if selects(os.spec.nodeselector, n.labels)]
    chosen.sort(key=lambda n: n.name)
    return chosen


def selectors_overlap(a: str, b: str) -> bool:
    """Whether two nodeselector values can select a common node."""
    return a == b or labels.SELECTOR_ALL in (a, b)


def overlapping(os: OS, others: Sequence[OS]) -> list[OSKey]:
    """Keys of the other OS CRs (not being deleted) whose selection overlaps *os*'s."""
    me = os_key(os)
    found = [
        os_key(other)
        for other in others
        if os_key(other) != me
        and other.metadata.deletionTimestamp is None
        and selectors_overlap(os.spec.nodeselector, other.spec.nodeselector)
    ]
    return sorted(found)
