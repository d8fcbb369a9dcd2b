"""Event aggregation and rate limiting, without an API server."""

from __future__ import annotations

from kubeos.kube.events import EventRecorder, Ref, TokenBucket

REF = Ref("v1", "Node", "n1")


async def test_repeats_aggregate_into_one_series() -> None:
    rec = EventRecorder(None, component="t")
    for _ in range(100):
        rec.normal(REF, "Assigned", "same message")
    await rec.flush()
    assert len(rec._series) == 1
    (series,) = rec._series.values()
    assert series.count == 100
    assert rec.dropped == 0


async def test_distinct_messages_are_rate_limited_per_object() -> None:
    rec = EventRecorder(None, component="t", burst=5, refill_per_second=0.0)
    for i in range(20):
        rec.warning(REF, "Failed", f"message {i}")
    rec.warning(Ref("v1", "Node", "n2"), "Failed", "other object has its own bucket")
    assert len(rec._series) == 6
    assert rec.dropped == 15


def test_token_bucket_refills() -> None:
    bucket = TokenBucket(burst=2, rate=1.0, stamp=0.0)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.1)
    assert bucket.take(1.2)
