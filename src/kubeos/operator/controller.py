"""The os-operator's reconcile loop: informers in, plans out, patches written.

Level-triggered: any change to an OS, a Node or an OSInstance re-runs the decision for the
OS CRs from the cached state (:mod:`kubeos.operator.plan` is pure); nothing depends on which
event arrived. Safety across restarts and stale caches comes from three things:

* in-flight nodes are counted from the cluster (labels, bindings, cordons), never from
  memory;
* every binding is a merge patch guarded by the OSInstance's resourceVersion, so a decision
  made on a stale cache fails with 409 instead of double-booking a node;
* after writing, a reconcile waits until the informers have seen its own writes
  ("expectations", as in client-go's controllers) before planning again, so it never counts
  slots from a cache that predates its last assignments.

Nodes are only ever patched (labels, and uncordon of our own cordon on cleanup), never PUT,
so the kubelet's concurrent status writes are not overwritten. An OS carries a finalizer
so that deleting it, like changing its opstype mid-rollout, releases every node it bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from kubeos.api import labels
from kubeos.api.models import OS
from kubeos.kube import patch as kpatch
from kubeos.kube.events import EventRecorder, Ref
from kubeos.kube.informer import Informer, resource_version
from kubeos.kube.intent import intent_changed
from kubeos.kube.resources import OSInstanceResource, OSResource
from kubeos.kube.workqueue import Result, WorkQueue, run_workers
from kubeos.operator import plan as p
from kubeos.operator import status as st
from kubeos.operator.metrics import Metrics
from kubeos.operator.snapshot import (
    InstanceView,
    NodeView,
    OSKey,
    instance_view,
    node_view,
)

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # ("os", namespace, name) or ("node", "", name)
FIELD_MANAGER = "os-operator"


@dataclass
class OperatorConfig:
    """Knobs of the controller; the CLI maps flags and environment onto these."""

    instance_namespace: str = labels.DEFAULT_OSINSTANCE_NAMESPACE
    os_namespace: str | None = None  # None: OS CRs in all namespaces
    workers: int = 2
    resync: float = 15.0  # re-check period for time-based decisions (window, pacing)
    write_concurrency: int = 16
    watch_timeout: int = 300
    expectation_timeout: float = 5.0
    status_interval: float = 1.0  # minimum seconds between count-only status writes
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


class StaleCache(Exception):
    """A guarded write hit 409: the cache is behind; plan again after it catches up."""


class Controller:
    """Runs informers on OS, OSInstance and Node and reconciles every OS."""

    def __init__(
        self,
        client: AsyncClient,
        config: OperatorConfig | None = None,
        *,
        metrics: Metrics | None = None,
        recorder: EventRecorder | None = None,
    ) -> None:
        self.client = client
        self.config = config or OperatorConfig()
        self.metrics = metrics or Metrics()
        self.recorder = recorder or EventRecorder(client, component="os-operator")
        cfg = self.config
        self.os_informer: Informer[Any] = Informer(
            client, OSResource, namespace=cfg.os_namespace, watch_timeout=cfg.watch_timeout,
            name="os",
        )
        self.instance_informer: Informer[Any] = Informer(
            client, OSInstanceResource, namespace=cfg.instance_namespace,
            watch_timeout=cfg.watch_timeout, name="osinstances",
        )
        self.node_informer: Informer[Any] = Informer(
            client, Node, watch_timeout=cfg.watch_timeout, name="nodes"
        )
        self.queue: WorkQueue[Key] = WorkQueue()
        self._nodes: dict[str, NodeView] = {}
        self._instances: dict[str, InstanceView] = {}
        self._expected: dict[tuple[str, str], tuple[int, float]] = {}
        # Last resourceVersion of deleted objects: a write answered after the DELETED event
        # (removing an OS's last finalizer) must not wait for an event that already came.
        self._tombstones: dict[tuple[str, str], int] = {}
        self._caught_up = asyncio.Event()
        self._last_round: dict[OSKey, datetime] = {}
        self._status_written: dict[OSKey, tuple[dict[str, Any], float]] = {}
        self._labelling: dict[str, float] = {}  # node -> when we sent its operation label
        self._background: set[asyncio.Task[None]] = set()
        self._write_slots = asyncio.Semaphore(cfg.write_concurrency)
        self.ready = False

    # -- wiring -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Start everything and run until cancelled."""
        try:
            await self._run()
        finally:
            for task in list(self._background):
                task.cancel()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for informer in (self.node_informer, self.instance_informer, self.os_informer):
                group.create_task(informer.run(), name=f"informer-{informer.name}")
            group.create_task(self.recorder.run(), name="events")
            await asyncio.gather(
                self.node_informer.wait_synced(),
                self.instance_informer.wait_synced(),
                self.os_informer.wait_synced(),
            )
            self.node_informer.add_handler(self._on_node)
            self.instance_informer.add_handler(self._on_instance)
            self.os_informer.add_handler(self._on_os)
            self._sweep_orphans()
            self.ready = True
            log.info("caches synced: %d nodes, %d osinstances, %d OS",
                     len(self.node_informer), len(self.instance_informer),
                     len(self.os_informer))
            group.create_task(
                run_workers(self.queue, self.reconcile, self.config.workers, self._on_error),
                name="workers",
            )

    def _on_error(self, key: Key, error: BaseException) -> None:
        self.metrics.reconcile_errors.labels(key[0]).inc()

    def _all_os_keys(self) -> list[Key]:
        out: list[Key] = []
        for obj in self.os_informer.items():
            meta = obj.get("metadata") or {}
            out.append(("os", str(meta.get("namespace", "")), str(meta.get("name", ""))))
        return out

    def _enqueue_all_os(self) -> None:
        for key in self._all_os_keys():
            self.queue.add(key)

    def _on_os(self, event: str, new: Any, old: Any) -> None:
        obj = new if new is not None else old
        meta = obj.get("metadata") or {}
        self._seen("os", f"{meta.get('namespace')}/{meta.get('name')}", obj, event)
        key: Key = ("os", str(meta.get("namespace", "")), str(meta.get("name", "")))
        if not intent_changed(event, new, old):
            return  # only the status moved (usually our own write): nothing to decide
        self.queue.add(key)
        if event == "DELETED":
            self.metrics.forget(key[1], key[2])
            self._last_round.pop((key[1], key[2]), None)
            self._status_written.pop((key[1], key[2]), None)
        # Another OS appearing or changing selector changes overlaps for everyone.
        if event != "MODIFIED" or _selector(new) != _selector(old):
            self._enqueue_all_os()

    def _on_node(self, event: str, new: Any, old: Any) -> None:
        obj = new if new is not None else old
        name = str(obj.metadata.name)
        self._seen("node", name, obj, event)
        if event == "DELETED":
            self._nodes.pop(name, None)
            self._labelling.pop(name, None)
            self.queue.add(("node", "", name))
            self._enqueue_all_os()
            return
        view = node_view(new)
        if name in self._labelling and view.op_labelled:
            del self._labelling[name]
        if self._nodes.get(name) == view:
            return  # a heartbeat or another change the policy does not read
        self._nodes[name] = view
        self._enqueue_all_os()

    def _on_instance(self, event: str, new: Any, old: Any) -> None:
        obj = new if new is not None else old
        view = instance_view(obj)
        self._seen("osinstance", view.name, obj, event)
        if event == "DELETED":
            self._instances.pop(view.name, None)
        else:
            previous = self._instances.get(view.name)
            self._instances[view.name] = view
            if previous is not None and _same_instance(previous, view):
                return
            if view.name not in self._nodes and self.node_informer.has_synced:
                self.queue.add(("node", "", view.name))
        self._enqueue_all_os()

    def _sweep_orphans(self) -> None:
        for name in list(self._instances):
            if name not in self._nodes:
                self.queue.add(("node", "", name))

    # -- expectations -----------------------------------------------------------------------

    def _cached(self, kind: str, name: str) -> Any:
        if kind == "os":
            return self.os_informer.get(name)
        if kind == "node":
            return self.node_informer.get(name)
        return self.instance_informer.get(f"{self.config.instance_namespace}/{name}")

    def _expect(self, kind: str, name: str, obj: Any) -> None:
        """Remember that the cache must reach *obj*'s version before we plan again."""
        try:
            version = int(resource_version(obj))
        except ValueError:
            return
        if self._tombstones.get((kind, name), -1) >= version:
            return  # already deleted, and we saw it go
        cached = self._cached(kind, name)
        if cached is not None:  # the watch event may have beaten the response to us
            try:
                if int(resource_version(cached)) >= version:
                    return
            except ValueError:
                pass
        key = (kind, name)
        current = self._expected.get(key)
        if current is None or current[0] < version:
            self._expected[key] = (version, time.monotonic())
            self._caught_up.clear()

    def _seen(self, kind: str, name: str, obj: Any, event: str) -> None:
        key = (kind, name)
        if event == "DELETED":
            if len(self._tombstones) > 10000:
                self._tombstones.clear()
            with contextlib.suppress(ValueError):
                self._tombstones[key] = int(resource_version(obj))
        else:
            self._tombstones.pop(key, None)
        expected = self._expected.get(key)
        if expected is None:
            return
        try:
            version = int(resource_version(obj))
        except ValueError:
            version = expected[0]
        if event == "DELETED" or version >= expected[0]:
            del self._expected[key]
            if not self._expected:
                self._caught_up.set()

    async def _wait_caught_up(self) -> bool:
        """Wait (bounded) until the caches reflect our own writes."""
        if not self._expected:
            return True
        try:
            async with asyncio.timeout(self.config.expectation_timeout):
                await self._caught_up.wait()
            return True
        except TimeoutError:
            horizon = time.monotonic() - 4 * self.config.expectation_timeout
            for key, (_, since) in list(self._expected.items()):
                if since < horizon:  # the object vanished without a DELETED we could see
                    del self._expected[key]
            return not self._expected

    # -- reconcile --------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> Result | None:
        kind = key[0]
        started = time.perf_counter()
        try:
            if kind == "node":
                await self._reconcile_node(key[2])
                return None
            return await self._reconcile_os((key[1], key[2]))
        except StaleCache:
            self.metrics.conflicts.inc()
            return Result(requeue_after=0.05)
        finally:
            self.metrics.reconcile_duration.labels(kind).observe(time.perf_counter() - started)

    async def _reconcile_node(self, name: str) -> None:
        """A deleted Node takes its OSInstance with it (reference behaviour, §3.1)."""
        if name in self._nodes or self.node_informer.get(name) is not None:
            return
        try:  # the node watch may lag the OSInstance watch: ask before deleting anything
            await self.client.get(Node, name)
            return
        except ApiError as error:
            if error.status.code != 404:
                raise
        namespace = self.config.instance_namespace
        doomed = {
            view.name
            for obj in self.instance_informer.items()
            if (view := instance_view(obj)).name == name
            or ((obj.get("metadata") or {}).get("labels") or {}).get(
                labels.LABEL_OSINSTANCE_NODE) == name
        }
        for instance in sorted(doomed):
            try:
                await self.client.delete(OSInstanceResource, instance, namespace=namespace)
                log.info("node %s is gone: deleted OSInstance %s/%s", name, namespace, instance)
            except ApiError as error:
                if error.status.code != 404:
                    raise

    def _snapshot(self, now: datetime, key: OSKey) -> p.Snapshot:
        all_os = []
        for obj in self.os_informer.items():
            try:
                all_os.append(OS.model_validate(obj))
            except ValueError:
                continue
        return p.Snapshot(
            nodes=list(self._nodes.values()),
            instances=dict(self._instances),
            all_os=all_os,
            now=now,
            last_round=self._last_round.get(key),
        )

    async def _reconcile_os(self, key: OSKey) -> Result | None:
        obj = self.os_informer.get(f"{key[0]}/{key[1]}")
        if obj is None:
            return None
        os = OS.model_validate(obj)
        if not await self._wait_caught_up():
            return Result(requeue_after=0.2)
        now = self.config.clock()
        if os.metadata.deletionTimestamp is not None:
            return await self._finalize(os, obj, now)
        if labels.FINALIZER_OS_CLEANUP not in os.metadata.finalizers:
            await self._set_finalizers(os, [*os.metadata.finalizers, labels.FINALIZER_OS_CLEANUP])
            return None  # the update event brings us back with the new resourceVersion

        plan = p.plan_rollout(os, self._snapshot(now, key))
        ref = Ref.of(obj, api_version=labels.API_VERSION, kind=labels.OS_KIND)
        # The status describes the cluster this plan was made from; it need not wait for the
        # plan's writes (the next reconcile, triggered by them, reports their effect).
        outcomes = await asyncio.gather(
            self._execute(os, plan, ref), self._write_status(os, obj, plan, now, ref),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        status_retry = outcomes[1]
        if plan.assignments:
            self._last_round[key] = now
            self.recorder.normal(
                ref, "NodesAssigned",
                f"{plan.category} of {len(plan.assignments)} node(s) to {os.spec.osversion}: "
                + ", ".join(a.node for a in plan.assignments[:20])
                + (" ..." if len(plan.assignments) > 20 else ""),
            )
        self.metrics.observe(key[0], key[1], plan)
        delay = self.config.resync
        if plan.requeue_after is not None:
            delay = min(delay, plan.requeue_after + 0.01)
        if isinstance(status_retry, float):
            delay = min(delay, status_retry)
        return Result(requeue_after=delay)

    async def _finalize(self, os: OS, obj: Any, now: datetime) -> Result | None:
        if labels.FINALIZER_OS_CLEANUP not in os.metadata.finalizers:
            return None
        plan = p.plan_cleanup(os, self._snapshot(now, (os.metadata.namespace,
                                                         os.metadata.name)))
        if plan.releases or plan.serial_remove:
            ref = Ref.of(obj, api_version=labels.API_VERSION, kind=labels.OS_KIND)
            await self._execute(os, plan, ref)
            return Result(requeue_after=0.1)  # confirm from the cache, then drop the finalizer
        await self._set_finalizers(
            os, [f for f in os.metadata.finalizers if f != labels.FINALIZER_OS_CLEANUP]
        )
        log.info("OS %s/%s: cleaned up, finalizer removed",
                 os.metadata.namespace, os.metadata.name)
        return None

    async def _set_finalizers(self, os: OS, finalizers: list[str]) -> None:
        try:
            updated = await kpatch.merge_patch(
                self.client, OSResource, os.metadata.name,
                {"metadata": {"finalizers": finalizers}},
                namespace=os.metadata.namespace,
                resource_version=os.metadata.resourceVersion,
            )
        except ApiError as error:
            if error.status.code == 409:
                raise StaleCache from error
            if error.status.code == 404:
                return
            raise
        self._expect("os", f"{os.metadata.namespace}/{os.metadata.name}", updated)

    # -- writing ----------------------------------------------------------------------------

    async def _execute(self, os: OS, plan: p.Plan, ref: Ref) -> None:
        namespace, name = os.metadata.namespace, os.metadata.name
        # Undo first, then start: nobody ever sees an old serial batch and a new one at once.
        undo: list[Any] = [self._release(release) for release in plan.releases]
        for node in plan.serial_remove:
            undo.append(self._patch_node(node, kpatch.label_patch({labels.LABEL_SERIAL: None})))
        stale = False
        if undo:
            for result in await asyncio.gather(*undo, return_exceptions=True):
                if isinstance(result, StaleCache):
                    stale = True
                elif isinstance(result, BaseException):
                    raise result
        if stale:
            raise StaleCache
        jobs: list[Any] = []
        for node in plan.serial_add:
            jobs.append(self._patch_node(node, kpatch.label_patch({labels.LABEL_SERIAL: ""})))
        if plan.category is not None:
            label = p.OP_LABEL[plan.category]
            horizon = time.monotonic() - 2 * self.config.expectation_timeout
            for node in plan.label_repairs:
                if self._labelling.get(node, 0.0) > horizon:
                    continue  # our own label write has not reached the cache yet
                jobs.append(self._patch_node(node, kpatch.label_patch({label: ""})))
        for assignment in plan.assignments:
            jobs.append(self._assign(plan.key, assignment))
        results = await asyncio.gather(*jobs, return_exceptions=True) if jobs else []
        for result in results:
            if isinstance(result, StaleCache):
                stale = True
            elif isinstance(result, BaseException):
                raise result
        done = sum(1 for r in results[len(results) - len(plan.assignments):] if r is True
                   ) if plan.assignments else 0
        if done:
            self.metrics.assignments.labels(namespace, name, plan.category or "").inc(done)
        if plan.releases:
            self.metrics.releases.labels(namespace, name).inc(len(plan.releases))
            self.recorder.normal(
                ref, "NodesReleased",
                f"released {len(plan.releases)} node(s): "
                + ", ".join(r.node for r in plan.releases[:20]),
            )
        if stale:
            raise StaleCache

    async def _patch_node(self, node: str, body: dict[str, Any], *, expect: bool = True
                          ) -> None:
        async with self._write_slots:
            try:
                updated = await self.client.patch(Node, node, body, patch_type=PatchType.MERGE)
            except ApiError as error:
                if error.status.code == 404:
                    return
                raise
        if expect:
            self._expect("node", node, updated)

    async def _assign(self, owner: OSKey, a: p.Assignment) -> bool:
        """Bind the OSInstance (guarded), then label the node; True when both happened."""
        async with self._write_slots:
            try:
                updated = await kpatch.merge_patch(
                    self.client, OSInstanceResource, a.node, a.instance_patch(owner),
                    namespace=a.instance_namespace,
                    resource_version=a.instance_resource_version,
                )
            except ApiError as error:
                if error.status.code == 409:
                    raise StaleCache from error
                if error.status.code == 404:
                    return False
                raise
        self._expect("osinstance", a.node, updated)
        # Adding one label key commutes with every other writer, so no precondition is
        # needed here; the binding above is what counts the node as in flight.
        # The next plan need not wait to see this label: the binding already counts the
        # node as unavailable, and label repairs skip nodes whose label is on its way.
        # So the label is written in the background: the reconcile ends after one round trip.
        self._labelling[a.node] = time.monotonic()
        task = asyncio.get_running_loop().create_task(self._label(a))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        log.info("assigned %s: %s for %s/%s", a.node, a.nodestatus, *owner)
        return True

    async def _label(self, a: p.Assignment) -> None:
        """Label an assigned node; on failure the next plan's label repair retries."""
        try:
            await self._patch_node(a.node, kpatch.label_patch({a.label: ""}), expect=False)
        except Exception as error:
            self._labelling.pop(a.node, None)
            self.queue.add(("os", *self._owner_of(a.node)))
            log.warning("labelling %s failed: %s", a.node, error)

    def _owner_of(self, node: str) -> OSKey:
        inst = self._instances.get(node)
        return inst.owner if inst is not None and inst.owner is not None else ("", "")

    async def _release(self, r: p.Release) -> None:
        if r.unbind:
            async with self._write_slots:
                try:
                    updated = await kpatch.merge_patch(
                        self.client, OSInstanceResource, r.node, p.Release.instance_patch(),
                        namespace=r.instance_namespace,
                        resource_version=r.instance_resource_version,
                    )
                    self._expect("osinstance", r.node, updated)
                except ApiError as error:
                    if error.status.code == 409:
                        raise StaleCache from error
                    if error.status.code != 404:
                        raise
        body = r.node_patch()
        if body is not None:
            await self._patch_node(r.node, body)
        log.info("released %s", r.node)

    async def _write_status(
        self, os: OS, obj: Any, plan: p.Plan, now: datetime, ref: Ref
    ) -> float | None:
        """Write the status if it changed; returns seconds until a deferred write is due.

        Count-only changes are written at most every ``status_interval`` seconds per OS (a
        large rollout changes counts many times a second); condition changes go at once.
        """
        wanted = st.compute(os, plan, now)
        current = obj.get("status")
        key = (os.metadata.namespace, os.metadata.name)
        last = self._status_written.get(key)
        if st.same_status(current, wanted) or (
            last is not None and st.same_status(last[0], wanted)
        ):
            return None
        if last is not None and st.same_conditions(last[0], wanted):
            wait = self.config.status_interval - (time.monotonic() - last[1])
            if wait > 0:
                return wait
        before_failed = set((current or {}).get("failedNodes") or [])
        for node in plan.failed_nodes:
            if node not in before_failed:
                detail = plan.errors.get(node, "")
                self.recorder.warning(ref, "NodeFailed",
                                      f"node {node} failed" + (f": {detail}" if detail else ""))
        was_complete = any(
            c.get("type") == "Completed" and c.get("status") == "True"
            for c in (current or {}).get("conditions") or []
        )
        if plan.complete and not was_complete and plan.selected:
            self.recorder.normal(ref, "RolloutCompleted",
                                 f"all {plan.selected} node(s) at {os.spec.osversion}")
        try:
            updated = await self.client.patch(
                OSResource.Status, os.metadata.name, {"status": wanted},
                namespace=os.metadata.namespace, patch_type=PatchType.MERGE,
            )
        except ApiError as error:
            if error.status.code == 404:
                return None
            raise
        self._status_written[key] = (updated.get("status") or wanted, time.monotonic())
        return None


def _selector(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    return str((obj.get("spec") or {}).get("nodeselector"))


def _same_instance(a: InstanceView, b: InstanceView) -> bool:
    return (a.nodestatus, a.owner, a.spec_sys_version, a.spec_upg_version,
            a.status_sys_version, a.phase) == (b.nodestatus, b.owner, b.spec_sys_version,
                                               b.spec_upg_version, b.status_sys_version,
                                               b.phase)
