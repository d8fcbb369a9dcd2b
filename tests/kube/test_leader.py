"""Lease takeover rules (pure part of leader election)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import Status

from kubeos.kube.leader import LeaderElector, LeadershipLost, LeaseRecord, may_take

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


class _FlakyLeaseClient:
    """A Lease API that works, then fails every call (the API server became unreachable)."""

    def __init__(self, healthy_calls: int) -> None:
        self.calls = 0
        self.healthy_calls = healthy_calls
        self.lease: Any = None

    async def get(self, res: Any, name: str, *, namespace: str) -> Any:
        self.calls += 1
        if self.calls > self.healthy_calls:
            raise OSError("connection refused")
        if self.lease is None:
            raise ApiError(status=Status(code=404, message="not found"))
        return self.lease

    async def create(self, obj: Any) -> Any:
        obj.metadata.resourceVersion = "1"
        self.lease = obj
        return obj

    async def replace(self, obj: Any) -> Any:
        self.lease = obj
        return obj


async def test_work_is_stopped_when_the_lease_cannot_be_renewed() -> None:
    client = _FlakyLeaseClient(healthy_calls=3)
    elector = LeaderElector(client, name="l", namespace="n", identity="me",  # type: ignore[arg-type]
                            lease_duration=1.0, renew_deadline=0.5, retry_period=0.1)
    stopped = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(elector.run(work), timeout=5)
    assert stopped.is_set(), "the work was cancelled before the lease could expire"
    assert not elector.is_leader
