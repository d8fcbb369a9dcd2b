"""Node selection, selector overlap and maxunavailable (pure)."""

from __future__ import annotations

import pytest

from kubeos.api import labels
from kubeos.operator.budget import max_unavailable
from kubeos.operator.selection import overlapping, selectors_overlap, selects

from .builders import make_os

SEL = labels.LABEL_NODE_SELECTOR
CP = labels.LABEL_CONTROL_PLANE


@pytest.mark.parametrize(
    ("selector", "node_labels", "expected"),
    [
        ("all-label", {}, True),
        ("all-label", {SEL: "x"}, True),
        ("all-label", {CP: ""}, False),
        ("all-label", {CP: "true", SEL: "x"}, False),
        ("no-label", {}, True),
        ("no-label", {SEL: "x"}, False),
        ("no-label", {SEL: ""}, False),
        ("openeuler", {SEL: "openeuler"}, True),
        ("openeuler", {SEL: "other"}, False),
        ("openeuler", {}, False),
        ("openeuler", {SEL: "openeuler", CP: ""}, False),
        ("", {SEL: ""}, True),  # reference quirk kept: "" means label present and empty
        ("", {}, False),
    ],
)
def test_selects(selector: str, node_labels: dict[str, str], expected: bool) -> None:
    assert selects(selector, node_labels) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("all-label", "foo", True),
        ("foo", "all-label", True),
        ("all-label", "no-label", True),
        ("all-label", "all-label", True),
        ("foo", "foo", True),
        ("no-label", "no-label", True),
        ("foo", "bar", False),
        ("no-label", "foo", False),
    ],
)
def test_selectors_overlap(a: str, b: str, expected: bool) -> None:
    assert selectors_overlap(a, b) is expected


def test_overlap_reported_on_both_and_ignores_deleting() -> None:
    a = make_os("a", nodeselector="all-label")
    b = make_os("b", namespace="ns2", nodeselector="foo")
    c = make_os("c", nodeselector="bar", deleting=True)
    d = make_os("d", nodeselector="no-label")
    everything = [a, b, c, d]
    assert overlapping(a, everything) == [("default", "d"), ("ns2", "b")]
    assert overlapping(b, everything) == [("default", "a")]
    assert overlapping(d, everything) == [("default", "a")]


@pytest.mark.parametrize(
    ("value", "selected", "expected"),
    [
        (2, 10, 2),
        (20, 10, 10),
        (1, 0, 0),
        ("25%", 10, 2),
        ("25%", 3, 1),  # rounds down but at least 1
        ("100%", 7, 7),
        ("50%", 1000, 500),
        ("1%", 1000, 10),
        ("3", 10, 3),
    ],
)
def test_max_unavailable(value: int | str, selected: int, expected: int) -> None:
    assert max_unavailable(value, selected) == expected


@pytest.mark.parametrize("value", [0, -1, "0%", "150%", "abc", "x%"])
def test_max_unavailable_rejects(value: int | str) -> None:
    with pytest.raises(ValueError):
        max_unavailable(value, 10)
