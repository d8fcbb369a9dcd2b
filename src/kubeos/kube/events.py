"""Event recorder writing ``core/v1`` Events, aggregated and rate-limited.

Why: Events are what ``kubectl describe`` shows people, but a controller in a busy loop can
emit the same event thousands of times. Like client-go's correlator we (1) aggregate: the
same (object, type, reason, message) within ``aggregate_window`` updates one Event's
``count`` instead of creating another, and its writes are coalesced to at most one per
``min_update_interval``; (2) rate-limit per involved object with a token bucket, dropping
what exceeds it; (3) write in the background from a bounded queue, so recording never blocks
or fails a reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from lightkube import AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event
from lightkube.types import PatchType

from kubeos.kube.informer import meta_of

log = logging.getLogger(__name__)

EventKind = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Ref:
    """The object an event is about."""

    api_version: str
    kind: str
    name: str
    namespace: str = ""
    uid: str = ""

    @classmethod
    def of(cls, obj: Any, *, api_version: str, kind: str) -> Ref:
        meta = meta_of(obj)
        return cls(
            api_version, kind, str(meta.name), str(meta.namespace or ""), str(meta.uid or "")
        )


@dataclass
class _Series:
    name: str
    namespace: str
    first: datetime
    last: datetime
    count: int
    created: bool = False
    written_count: int = 0
    last_write: float = 0.0


@dataclass
class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second."""

    burst: float
    rate: float
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens = self.burst
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class EventRecorder:
    """Record events for objects; call :meth:`run` as a background task to write them."""

    def __init__(
        self,
        client: AsyncClient | None,
        *,
        component: str,
        instance: str = "",
        default_namespace: str = "default",
        aggregate_window: float = 600.0,
        min_update_interval: float = 10.0,
        burst: int = 25,
        refill_per_second: float = 1 / 30,
        queue_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.component = component
        self.instance = instance
        self._default_ns = default_namespace
        self._window = aggregate_window
        self._min_update = min_update_interval
        self._burst = burst
        self._rate = refill_per_second
        self._clock = clock
        self._series: dict[tuple[Ref, str, str, str], _Series] = {}
        self._buckets: dict[Ref, TokenBucket] = {}
        self._dirty: set[tuple[Ref, str, str, str]] = set()
        self._wake = asyncio.Event()
        self._queue_size = queue_size
        self.dropped = 0
        self.written = 0

    def event(self, ref: Ref, kind: EventKind, reason: str, message: str) -> None:
        """Record one occurrence; never blocks, never raises."""
        now = self._clock()
        key = (ref, kind, reason, message[:1024])
        series = self._series.get(key)
        wall = datetime.now(UTC).replace(microsecond=0)
        if series is not None and (wall - series.last).total_seconds() <= self._window:
            series.count += 1
            series.last = wall
            self._dirty.add(key)
            self._wake.set()
            return
        bucket = self._buckets.setdefault(ref, TokenBucket(self._burst, self._rate))
        if not bucket.take(now) or len(self._dirty) >= self._queue_size:
            self.dropped += 1
            return
        namespace = ref.namespace or self._default_ns
        name = f"{ref.name}.{uuid.uuid4().hex[:16]}"
        self._series[key] = _Series(name, namespace, wall, wall, 1)
        self._dirty.add(key)
        self._wake.set()
        self._gc(wall)

    def normal(self, ref: Ref, reason: str, message: str) -> None:
        self.event(ref, "Normal", reason, message)

    def warning(self, ref: Ref, reason: str, message: str) -> None:
        self.event(ref, "Warning", reason, message)

    def _gc(self, wall: datetime) -> None:
        if len(self._series) < 4096:
            return
        for key, series in list(self._series.items()):
            if (wall - series.last).total_seconds() > self._window and key not in self._dirty:
                del self._series[key]

    async def run(self) -> None:
        """Write pending events until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            await asyncio.sleep(0.05)

    async def flush(self, force: bool = False) -> None:
        """Write every pending series whose update interval has passed (all if *force*)."""
        now = self._clock()
        retry_later = False
        for key in list(self._dirty):
            series = self._series.get(key)
            if series is None:
                self._dirty.discard(key)
                continue
            if series.created and not force and now - series.last_write < self._min_update:
                retry_later = True
                continue
            self._dirty.discard(key)
            await self._write(key, series)
            series.last_write = now
        if retry_later:
            asyncio.get_running_loop().call_later(self._min_update, self._wake.set)

    async def _write(self, key: tuple[Ref, str, str, str], series: _Series) -> None:
        if self._client is None:
            series.created = True
            series.written_count = series.count
            return
        ref, kind, reason, message = key
        try:
            if not series.created:
                await self._client.create(
                    Event(
                        metadata=ObjectMeta(name=series.name, namespace=series.namespace),
                        involvedObject=ObjectReference(
                            apiVersion=ref.api_version,
                            kind=ref.kind,
                            name=ref.name,
                            namespace=ref.namespace or None,
                            uid=ref.uid or None,
                        ),
                        type=kind,
                        reason=reason,
                        message=message,
                        count=series.count,
                        firstTimestamp=series.first,
                        lastTimestamp=series.last,
                        source=EventSource(component=self.component, host=self.instance or None),
                        reportingComponent=self.component,
                        reportingInstance=self.instance or self.component,
                    )
                )
                series.created = True
            elif series.count != series.written_count:
                await self._client.patch(
                    Event,
                    series.name,
                    {"count": series.count, "lastTimestamp": _rfc3339(series.last)},
                    namespace=series.namespace,
                    patch_type=PatchType.MERGE,
                )
            series.written_count = series.count
            self.written += 1
        except Exception as error:  # events are best effort
            log.info("writing event %s failed: %s", series.name, error)


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
