"""A work queue of keys in the style of client-go's, on asyncio.

Why this shape: controllers are level-triggered, so a key only says "look at this object
again". Adding a key that is already waiting does nothing (de-duplication); a key being
processed is never handed to a second worker, and if it was added meanwhile it is processed
once more afterwards; failures come back after a per-key exponential backoff, and successes
may ask to come back after a delay (requeue-after).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

log = logging.getLogger(__name__)


class ShutDown(Exception):
    """Raised by :meth:`WorkQueue.get` once the queue is shut down."""


@dataclass(frozen=True)
class Backoff:
    """Per-key exponential backoff: ``base * 2**failures``, capped at ``cap`` seconds."""

    base: float = 0.005
    cap: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.base * (2 ** min(failures, 40))))


@dataclass(frozen=True)
class Result:
    """What a handler asks for: ``requeue_after`` seconds (None: only on the next event)."""

    requeue_after: float | None = None


class WorkQueue(Generic[K]):
    """De-duplicating queue with delayed adds and per-key backoff; one worker per key."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self._backoff = backoff or Backoff()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._shutdown = False

    # -- adding -----------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Queue *key* unless it is already waiting; safe to call from sync event handlers."""
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._notify()

    def add_after(self, key: K, delay: float) -> None:
        """Queue *key* after *delay* seconds; an earlier pending delay for it wins."""
        if self._shutdown:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= when:
                return
            pending[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def add_rate_limited(self, key: K) -> None:
        """Queue *key* after its backoff delay, and lengthen the next one."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        self.add_after(key, self._backoff.delay(failures))

    def forget(self, key: K) -> None:
        """Reset *key*'s backoff (call after a success)."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _notify(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- taking -----------------------------------------------------------------------------

    async def get(self) -> K:
        """Wait for a key and mark it processing; pair with :meth:`done`."""
        while not self._queue and not self._shutdown:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._notify()  # pass the wake-up on to another worker
                raise
        if self._shutdown:
            raise ShutDown
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        """Mark *key* finished; if it was added while processing, it is queued again."""
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._notify()

    def __len__(self) -> int:
        return len(self._queue)

    def pending_delayed(self) -> int:
        return len(self._timers)

    def shutdown(self) -> None:
        """Stop handing out keys; waiting :meth:`get` calls raise :class:`ShutDown`."""
        self._shutdown = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)


Handler = Callable[[K], Awaitable[Result | None]]


async def run_workers(
    queue: WorkQueue[K],
    handler: Handler[K],
    workers: int = 1,
    on_error: Callable[[K, BaseException], None] | None = None,
) -> None:
    """Run *workers* loops that take keys and call *handler* until the queue shuts down.

    A handler exception requeues the key with backoff; a result's ``requeue_after`` requeues
    it after that delay and resets the backoff.
    """

    async def loop() -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            started = time.monotonic()
            try:
                result = await handler(key)
            except asyncio.CancelledError:
                queue.done(key)
                raise
            except Exception as error:  # a controller must survive any one bad object
                log.warning("handling %r failed: %s", key, error, exc_info=log.isEnabledFor(10))
                if on_error is not None:
                    on_error(key, error)
                queue.done(key)
                queue.add_rate_limited(key)
                continue
            queue.forget(key)
            queue.done(key)
            if result is not None and result.requeue_after is not None:
                queue.add_after(key, result.requeue_after)
            log.debug("handled %r in %.3fs", key, time.monotonic() - started)

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, workers)):
            group.create_task(loop())
