"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does.

Why: two operator replicas deciding assignments at once could exceed ``maxunavailable``.
Only the holder of the Lease works. The holder renews every ``retry_period``; if it cannot
renew within ``renew_deadline`` it stops its work *before* the lease can expire for others
(``renew_deadline < lease_duration``), so two leaders never overlap. Every write is a PUT
guarded by the Lease's resourceVersion, so two candidates cannot both win.

Expiry is judged from the local clock in two ways: a record we have watched stay unchanged
for ``lease_duration`` (immune to clock skew, like client-go), or a ``renewTime`` already
older than twice the duration (so a restarted operator does not wait for a lease that a
killed predecessor abandoned long ago).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

log = logging.getLogger(__name__)


class LeadershipLost(Exception):
    """The lease could not be renewed in time; the work was stopped."""


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease that decide who leads."""

    holder: str
    duration: float
    renew_time: datetime | None
    transitions: int

    @classmethod
    def of(cls, lease: Any) -> LeaseRecord:
        spec = lease.spec or LeaseSpec()
        return cls(
            holder=spec.holderIdentity or "",
            duration=float(spec.leaseDurationSeconds or 0),
            renew_time=spec.renewTime,
            transitions=int(spec.leaseTransitions or 0),
        )


def may_take(
    record: LeaseRecord,
    identity: str,
    *,
    now: datetime,
    unchanged_for: float,
) -> bool:
    """Whether *identity* may write itself into the lease (pure, for tests)."""
    if not record.holder or record.holder == identity:
        return True
    if record.duration <= 0:
        return True
    if unchanged_for >= record.duration:
        return True
    if record.renew_time is None:
        return False
    age = (now - _aware(record.renew_time)).total_seconds()
    return age > 2 * record.duration


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class LeaderElector:
    """Acquire, hold and release one Lease; run work only while holding it."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self._client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._now = wall_clock
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self.is_leader = False

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True if we hold the lease afterwards."""
        now = self._now()
        try:
            lease = await self._client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as error:
            if error.status.code != 404:
                raise
            return await self._create(now)
        record = LeaseRecord.of(lease)
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()
        unchanged_for = time.monotonic() - self._observed_at
        if not may_take(record, self.identity, now=now, unchanged_for=unchanged_for):
            return False
        spec = lease.spec or LeaseSpec()
        if record.holder != self.identity:
            spec.acquireTime = now
            spec.leaseTransitions = record.transitions + 1
        spec.holderIdentity = self.identity
        spec.leaseDurationSeconds = round(self.lease_duration)
        spec.renewTime = now
        lease.spec = spec
        try:
            updated = await self._client.replace(lease)
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        self._observed = LeaseRecord.of(updated)
        self._observed_at = time.monotonic()
        return True

    async def _create(self, now: datetime) -> bool:
        lease = Lease(
            metadata=ObjectMeta(name=self.name, namespace=self.namespace),
            spec=LeaseSpec(
                holderIdentity=self.identity,
                leaseDurationSeconds=round(self.lease_duration),
                acquireTime=now,
                renewTime=now,
                leaseTransitions=0,
            ),
        )
        try:
            await self._client.create(lease)
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        return True

    async def acquire(self) -> None:
        """Wait until we hold the lease."""
        while True:
            try:
                if await self.try_acquire_or_renew():
                    self.is_leader = True
                    log.info("%s became leader of %s/%s", self.identity, self.namespace, self.name)
                    return
            except Exception as error:  # keep trying through any API trouble
                log.warning("leader election: %s", error)
            await asyncio.sleep(self.retry_period)

    async def _renew_forever(self) -> None:
        last_renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                async with asyncio.timeout(self.renew_deadline):
                    ok = await self.try_acquire_or_renew()
            except Exception as error:
                log.warning("renewing the lease failed: %s", error)
                ok = False
            if ok:
                last_renewed = time.monotonic()
            elif time.monotonic() - last_renewed >= self.renew_deadline:
                self.is_leader = False
                raise LeadershipLost(f"{self.identity} lost {self.namespace}/{self.name}")

    async def release(self) -> None:
        """Give the lease up at once (graceful shutdown), so a successor need not wait."""
        if not self.is_leader:
            return
        self.is_leader = False
        with contextlib.suppress(Exception):
            lease = await self._client.get(Lease, self.name, namespace=self.namespace)
            if lease.spec and lease.spec.holderIdentity == self.identity:
                lease.spec.holderIdentity = None
                lease.spec.leaseDurationSeconds = 1
                await self._client.replace(lease)

    async def run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Acquire, then run *work* while renewing; raise LeadershipLost if renewal fails."""
        await self.acquire()
        try:
            async with asyncio.TaskGroup() as group:
                renew = group.create_task(self._renew_forever())
                job = group.create_task(work())
                await job
                renew.cancel()
        except* LeadershipLost as lost:
            raise lost.exceptions[0] from None
        finally:
            await self.release()
