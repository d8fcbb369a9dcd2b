"""Lease takeover rules (pure part of leader election)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubeos.kube.leader import LeaderElector, LeaseRecord, may_take

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("record", "unchanged_for", "expected"),
    [
        (LeaseRecord("", 15, None, 0), 0.0, True),  # nobody holds it
        (LeaseRecord("me", 15, NOW, 3), 0.0, True),  # we hold it: renew
        (LeaseRecord("other", 15, NOW, 3), 0.0, False),  # fresh and held by another
        (LeaseRecord("other", 15, NOW, 3), 14.9, False),
        (LeaseRecord("other", 15, NOW, 3), 15.0, True),  # watched unchanged for a duration
        (LeaseRecord("other", 15, NOW - timedelta(seconds=31), 3), 0.0, True),  # long dead
        (LeaseRecord("other", 15, NOW - timedelta(seconds=29), 3), 0.0, False),
        (LeaseRecord("other", 0, NOW, 3), 0.0, True),  # released (duration 0)
        (LeaseRecord("other", 15, None, 3), 0.0, False),
    ],
)
def test_may_take(record: LeaseRecord, unchanged_for: float, expected: bool) -> None:
    assert may_take(record, "me", now=NOW, unchanged_for=unchanged_for) is expected


def test_timings_must_nest() -> None:
    with pytest.raises(ValueError):
        LeaderElector(
            None,  # type: ignore[arg-type]
            name="x", namespace="y", identity="z",
            lease_duration=5, renew_deadline=5, retry_period=1,
        )
