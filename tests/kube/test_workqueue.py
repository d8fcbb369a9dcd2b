"""Work queue semantics: de-duplication, one worker per key, requeue-after, backoff."""

from __future__ import annotations

import asyncio

import pytest

from kubeos.kube.workqueue import Backoff, Result, ShutDown, WorkQueue, run_workers


async def test_duplicate_adds_collapse() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"


async def test_key_added_while_processing_comes_back_once_after_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add("a")
    q.add("a")
    assert len(q) == 0, "a key being processed is not handed out twice"
    q.done(key)
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    assert len(q) == 0


async def test_add_after_delays_and_earliest_wins() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add_after("a", 5.0)
    q.add_after("a", 0.05)
    assert len(q) == 0
    got = await asyncio.wait_for(q.get(), timeout=1)
    assert got == "a"
    assert q.pending_delayed() == 0


def test_backoff_grows_and_caps() -> None:
    b = Backoff(base=0.01, cap=1.0)
    assert [b.delay(i) for i in range(4)] == [0.01, 0.02, 0.04, 0.08]
    assert b.delay(100) == 1.0


async def test_rate_limited_counts_failures_and_forget_resets() -> None:
    q: WorkQueue[str] = WorkQueue(Backoff(base=0.001, cap=0.01))
    q.add_rate_limited("a")
    q.add_rate_limited("a")
    assert q.failures("a") == 2
    q.forget("a")
    assert q.failures("a") == 0


async def test_shutdown_wakes_waiters() -> None:
    q: WorkQueue[str] = WorkQueue()
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.shutdown()
    with pytest.raises(ShutDown):
        await waiter


async def test_workers_never_run_one_key_concurrently_and_honour_requeue() -> None:
    q: WorkQueue[str] = WorkQueue(Backoff(base=0.001, cap=0.01))
    running: set[str] = set()
    overlaps = 0
    calls: dict[str, int] = {}

    async def handle(key: str) -> Result | None:
        nonlocal overlaps
        if key in running:
            overlaps += 1
        running.add(key)
        calls[key] = calls.get(key, 0) + 1
        await asyncio.sleep(0.01)
        q.add(key)  # an event for the key arrives while it is processed
        running.discard(key)
        if key == "fail" and calls[key] < 3:
            raise RuntimeError("boom")
        if calls[key] >= 3:
            return None
        return Result(requeue_after=0.01)

    for key in ("a", "b", "fail"):
        q.add(key)
    task = asyncio.create_task(run_workers(q, handle, workers=4))
    await asyncio.sleep(0.5)
    q.shutdown()
    await asyncio.wait_for(task, timeout=2)
    assert overlaps == 0
    assert all(count >= 3 for count in calls.values())
