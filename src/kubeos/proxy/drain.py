"""Drain one node through the Eviction API, within a time limit, and say who blocks it.

Why the Eviction API only: it is the one path on which PodDisruptionBudgets hold (safety rule
4). The API server answers 429 while a PDB allows no disruption; we retry with a capped
exponential backoff instead of the reference's endless 5 s loop, and stop at the drain timeout
(``OS.spec.draintimeout``; 0 means no limit). Then the caller reports ``DrainBlocked`` with the
pods still on the node and the PDBs that cover them, instead of a rollout stalled forever.

Pods are listed with the field selector ``spec.nodeName=<node>``, never watched cluster-wide,
and an evicted pod counts as gone when a GET returns 404 or a pod with another UID (a pod of
a StatefulSet comes back under the same name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lightkube import ALL_NS, AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod
from lightkube.resources.policy_v1 import PodDisruptionBudget

from kubeos.proxy.drain_policy import (
    Blockage,
    BudgetView,
    DrainPlan,
    PodDecision,
    blockage,
    plan_drain,
)

log = logging.getLogger(__name__)

# (kind, reason, message): a hook for Events, e.g. per evicted pod.
Notify = Callable[[str, str, str], None]


@dataclass(frozen=True)
class DrainSettings:
    """Knobs of a drain; the timeout comes from the OS per drain."""

    concurrency: int = 5
    poll_interval: float = 1.0  # waiting for evicted pods to disappear
    backoff_base: float = 0.5  # first retry of a refused eviction (429)
    backoff_cap: float = 10.0


@dataclass
class DrainResult:
    """Outcome of one drain attempt."""

    plan: DrainPlan
    finished: bool = False
    refused: bool = False  # the policy refused some pods; nothing was evicted
    blockage: Blockage | None = None
    evicted: list[str] = field(default_factory=list)
    message: str = ""
    seconds: float = 0.0


class _Tracker:
    """Shared state of the per-pod tasks: last error per pod, evicted pods."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}
        self.evicted: list[str] = []
        self.gone: set[str] = set()


async def list_node_pods(client: AsyncClient, node_name: str) -> list[Pod]:
    """All pods bound to *node_name*, by field selector (no cluster-wide list or watch)."""
    return [
        pod
        async for pod in client.list(
            Pod, namespace=ALL_NS, fields={"spec.nodeName": node_name}
        )
    ]


async def _still_there(client: AsyncClient, decision: PodDecision, node_name: str) -> bool:
    """True while the pod (same UID) is still bound to this node.

    A list scoped by ``spec.nodeName`` rather than a GET: the kubelet's identity (see
    *evictor* in :func:`drain_node`) may list its node's pods, but a GET of a pod that is gone
    is refused (403, no relationship to the node) instead of answered with 404.
    """
    ref = decision.pod
    async for pod in client.list(Pod, namespace=ref.namespace,
                                 fields={"spec.nodeName": node_name, "metadata.name": ref.name}):
        if pod.metadata is not None and pod.metadata.uid == ref.uid:
            return True
    return False


def _backoff(settings: DrainSettings, attempt: int) -> float:
    delay = min(settings.backoff_cap, settings.backoff_base * 2.0 ** min(attempt, 16))
    return float(delay * random.uniform(0.8, 1.2))


async def _evict_and_wait(
    client: AsyncClient,
    node_name: str,
    decision: PodDecision,
    settings: DrainSettings,
    limit: asyncio.Semaphore,
    tracker: _Tracker,
    notify: Notify | None,
) -> None:
    ref = decision.pod
    key = str(ref)
    attempt = 0
    async with limit:
        while True:
            try:
                await client.create(
                    Pod.Eviction(metadata=ObjectMeta(name=ref.name, namespace=ref.namespace)),
                    ref.name,
                    namespace=ref.namespace,
                )
                tracker.evicted.append(key)
                tracker.errors.pop(key, None)
                if notify is not None:
                    notify("Normal", "Evicted", f"evicted pod {key} ({decision.reason})")
                break
            except ApiError as error:
                code = error.status.code
                if code == 404:  # already gone
                    tracker.gone.add(key)
                    return
                # 429: a PDB allows no disruption now; 500: several PDBs match; others
                # (403 while a namespace terminates, 409) may pass too. Retry all until the
                # drain timeout: giving up silently would report a drain that did not happen.
                tracker.errors[key] = f"eviction refused ({code}): {error.status.message}"
            attempt += 1
            await asyncio.sleep(_backoff(settings, attempt))
    while await _still_there(client, decision, node_name):
        await asyncio.sleep(settings.poll_interval)
    tracker.gone.add(key)


async def _budgets(client: AsyncClient, namespaces: set[str]) -> list[BudgetView]:
    views: list[BudgetView] = []
    for namespace in sorted(namespaces):
        with contextlib.suppress(ApiError):
            async for pdb in client.list(PodDisruptionBudget, namespace=namespace):
                meta = pdb.metadata
                views.append(
                    BudgetView(
                        namespace=str(meta.namespace if meta else namespace),
                        name=str(meta.name if meta else ""),
                        selector=pdb.spec.selector if pdb.spec is not None else None,
                        disruptions_allowed=int(
                            (pdb.status.disruptionsAllowed if pdb.status is not None else 0)
                            or 0
                        ),
                    )
                )
    return views


async def drain_node(
    client: AsyncClient,
    node_name: str,
    *,
    force: bool,
    timeout: float | None,
    settings: DrainSettings | None = None,
    notify: Notify | None = None,
    evictor: AsyncClient | None = None,
) -> DrainResult:
    """Evict what the policy allows and wait for it to go, for at most *timeout* seconds.

    Returns without evicting anything when the policy refuses a pod (``refused``), so a node is
    never half-drained for a drain that cannot finish.

    *evictor*, when given, lists, reads and evicts the pods instead of *client*: the node's own
    (kubelet) identity, which the API server lets evict only pods bound to this node
    (NodeRestriction). PodDisruptionBudgets are still read with *client*.
    """
    settings = settings or DrainSettings()
    started = time.monotonic()
    budgets_client = client
    client = evictor or client
    plan = plan_drain(await list_node_pods(client, node_name), force=force)
    result = DrainResult(plan=plan)
    if plan.blocked:
        result.refused = True
        result.message = "drain refused: " + plan.refusal_message()
        return result
    tracker = _Tracker()
    limit = asyncio.Semaphore(max(1, settings.concurrency))
    waiting: Sequence[PodDecision] = plan.to_wait_for
    tasks = [
        asyncio.create_task(
            _evict_and_wait(client, node_name, d, settings, limit, tracker, notify)
            if d in plan.to_evict
            else _wait_only(client, node_name, d, settings, tracker),
            name=f"drain {d.pod}",
        )
        for d in waiting
    ]
    try:
        if tasks:
            async with asyncio.timeout(timeout if timeout else None):
                await asyncio.gather(*tasks)
        result.finished = True
    except TimeoutError:
        remaining = [d for d in waiting if str(d.pod) not in tracker.gone]
        budgets = await _budgets(budgets_client, {d.pod.namespace for d in remaining})
        result.blockage = blockage(remaining, budgets, tracker.errors)
        result.message = result.blockage.message(float(timeout or 0))
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    result.evicted = list(tracker.evicted)
    result.seconds = time.monotonic() - started
    if result.finished:
        result.message = (
            f"drained: {len(result.evicted)} pod(s) evicted, "
            f"{len(plan.decisions) - len(waiting)} skipped, in {result.seconds:.1f} s"
        )
    return result


async def _wait_only(
    client: AsyncClient, node_name: str, decision: PodDecision, settings: DrainSettings,
    tracker: _Tracker,
) -> None:
    while await _still_there(client, decision, node_name):
        await asyncio.sleep(settings.poll_interval)
    tracker.gone.add(str(decision.pod))
