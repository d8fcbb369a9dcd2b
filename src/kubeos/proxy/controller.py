"""The per-node controller: watch, decide (:mod:`kubeos.proxy.state`), perform one step, repeat.

One :class:`ProxyController` serves one node. It watches only its Node (field selector
``metadata.name``), its OSInstance (same) and the OS objects (to find the one its OSInstance is
bound to); watches only wake it up. Each pass reads the three objects fresh from the API server
and the agent's status, so decisions never rest on a stale cache or on memory (safety rule 7),
then performs exactly one action and reports it in the OSInstance status and as Events on the
Node and the OSInstance. Several controllers can share one process and one client (the
simulator runs one per simulated node); ``os-proxy`` (:mod:`kubeos.proxy.main`) runs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta as KubeObjectMeta
from lightkube.resources.core_v1 import Node

from kubeos.api import labels
from kubeos.api.models import OS, OSInstance, OSInstanceStatus, Phase
from kubeos.kube.events import EventRecorder, Ref
from kubeos.kube.informer import Informer
from kubeos.kube.intent import intent_changed
from kubeos.kube.patch import is_not_found, merge_patch
from kubeos.kube.resources import OSInstanceResource, OSResource
from kubeos.kube.workqueue import Result, WorkQueue, run_workers
from kubeos.proxy import report
from kubeos.proxy.agent_port import AgentApi, AgentFactory, agent_view, is_transient
from kubeos.proxy.drain import DrainSettings, drain_node
from kubeos.proxy.requests import configure_request, upgrade_request
from kubeos.proxy.snapshot import (
    COND_PROGRESSING,
    AgentView,
    NodeView,
    RebootRecord,
    Snapshot,
    agent_version,
)
from kubeos.proxy.state import Action, Kind, Timing, decide, swap_grub_models

log = logging.getLogger(__name__)

COMPONENT = "os-proxy"
TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "DrainBlocked"})
# A test hook: awaited at named points of every step; raising there simulates a crash.
Checkpoint = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ProxySettings:
    """Configuration of one node's controller."""

    namespace: str = labels.DEFAULT_OSINSTANCE_NAMESPACE
    timing: Timing = field(default_factory=Timing)
    drain: DrainSettings = field(default_factory=DrainSettings)
    agent_status_timeout: float = 10.0
    watch_timeout: int = 300


class ProxyController:
    """Drive one node; ``await run()`` until cancelled."""

    def __init__(
        self,
        node_name: str,
        client: AsyncClient,
        agent_client_factory: AgentFactory,
        *,
        settings: ProxySettings | None = None,
        events: EventRecorder | None = None,
        checkpoint: Checkpoint | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        evictor: AsyncClient | None = None,
    ) -> None:
        self.node_name = node_name
        self._client = client
        self.evictor = evictor  # drains with this client if set (see drain.drain_node)
        self._agent_factory = agent_client_factory
        self.settings = settings or ProxySettings()
        self._own_events = events is None
        self.events = events or EventRecorder(
            # Events about the cluster-scoped Node must live in "default".
            client, component=COMPONENT, instance=node_name, default_namespace="default",
        )
        self._checkpoint = checkpoint
        self._clock = clock
        self.history: list[Action] = []  # performed actions, for tests and the simulator
        self.last_action: Action | None = None
        # The OS objects as the watch last saw them (set while run() runs). The proxy never
        # writes an OS, so reading the bound one from here instead of GETting it each pass is
        # only ever as stale as a GET a moment earlier, and any spec change wakes us anyway.
        self._os_cache: Informer[Any] | None = None

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Watch, and reconcile on every change and whenever a step asks to look again."""
        queue: WorkQueue[str] = WorkQueue()
        key = self.node_name

        def wake(_type: str, obj: Any, old: Any) -> None:
            queue.add(key)

        def wake_on_intent(event: str, obj: Any, old: Any) -> None:
            # Status-only writes are skipped: the operator rewrites OS status on every node
            # transition in the fleet, and our own OSInstance status writes are followed by a
            # pass of their own (a performed step asks to look again at once).
            if intent_changed(event, obj, old):
                queue.add(key)

        ns = self.settings.namespace
        timeout = self.settings.watch_timeout
        node_informer: Informer[Any] = Informer(
            self._client, Node, fields={"metadata.name": key}, watch_timeout=timeout,
            name=f"proxy-{key}-node")
        osi_informer: Informer[Any] = Informer(
            self._client, OSInstanceResource, namespace=ns, fields={"metadata.name": key},
            watch_timeout=timeout, name=f"proxy-{key}-osinstance")
        os_informer: Informer[Any] = Informer(
            self._client, OSResource, watch_timeout=timeout, name=f"proxy-{key}-os")
        informers = [node_informer, osi_informer, os_informer]
        self._os_cache = os_informer
        node_informer.add_handler(wake)
        osi_informer.add_handler(wake_on_intent)
        os_informer.add_handler(wake_on_intent)
        queue.add(key)

        async def handle(_key: str) -> Result:
            return Result(requeue_after=await self.reconcile_once())

        # The recorder runs beside the task group: its writes swallow cancellation (events are
        # best effort), so it is stopped separately and never holds up our exit.
        recorder = asyncio.create_task(self.events.run()) if self._own_events else None
        try:
            async with asyncio.TaskGroup() as group:
                for informer in informers:
                    group.create_task(informer.run())
                group.create_task(run_workers(queue, handle, workers=1))
        finally:
            self._os_cache = None
            queue.shutdown()
            if recorder is not None:
                await _stop(recorder)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await self.events.flush(force=True)

    # -- one pass ---------------------------------------------------------------------------

    async def reconcile_once(self) -> float:
        """Read, decide, perform one step; returns when to look again (seconds)."""
        node_obj = await self._get_node()
        osi = await self._get_or_create_osinstance(node_obj)
        if osi is None:
            return self.settings.timing.poll
        bound = await self._get_bound_os(osi)
        agent = self._agent_factory()
        view = await agent_view(agent, self.settings.agent_status_timeout)
        node = NodeView.from_node(node_obj) if node_obj is not None else None
        now = self._clock()
        pass_ = _Pass(self, node_obj, osi, bound, agent, view)
        await pass_.write_status(report.observed(pass_.status, node, view, now))
        if not view.reachable and pass_.osi.spec.nodestatus != "idle":
            self._warn(pass_, "AgentUnreachable", view.error)
        snapshot = Snapshot(node=node, osi=pass_.osi, os=bound, agent=view, now=now)
        action = decide(snapshot, self.settings.timing)
        self.last_action = action
        if action.kind in (Kind.NOTHING, Kind.WAIT):
            log.debug("%s: %s %s", self.node_name, action.kind, action.message)
            return action.requeue_after or self.settings.timing.poll
        log.info("%s: %s: %s", self.node_name, action.kind, action.message)
        await self._point(f"{action.kind}:before")
        self.history.append(action)
        await pass_.perform(action, snapshot)
        await self._point(f"{action.kind}:after")
        return 0.0

    async def _point(self, name: str) -> None:
        if self._checkpoint is not None:
            await self._checkpoint(name)

    # -- reading ----------------------------------------------------------------------------

    async def _get_node(self) -> Node | None:
        try:
            node: Node = await self._client.get(Node, self.node_name)
            return node
        except ApiError as error:
            if is_not_found(error):
                return None
            raise

    async def _get_or_create_osinstance(self, node: Node | None) -> dict[str, Any] | None:
        ns = self.settings.namespace
        try:
            obj = await self._client.get(OSInstanceResource, self.node_name, namespace=ns)
            return dict(obj)
        except ApiError as error:
            if not is_not_found(error):
                raise
        if node is None:
            return None
        body = OSInstanceResource(
            metadata=KubeObjectMeta(
                name=self.node_name, namespace=ns,
                labels={labels.LABEL_OSINSTANCE_NODE: self.node_name},
            ),
            spec={"nodestatus": "idle"},
        )
        try:
            created = await self._client.create(body)
        except ApiError as error:
            if error.status.code != 409:
                raise
            created = await self._client.get(OSInstanceResource, self.node_name, namespace=ns)
        log.info("%s: created OSInstance %s/%s", self.node_name, ns, self.node_name)
        return dict(created)

    async def _get_bound_os(self, osi: dict[str, Any]) -> OS | None:
        where = (osi.get("spec") or {}).get("namespacedname") or {}
        name, namespace = where.get("name"), where.get("namespace")
        if not name or not namespace:
            return None
        cache = self._os_cache
        cached = None
        if cache is not None and cache.has_synced:
            cached = cache.get(f"{namespace}/{name}")
        if cached is not None:
            return OS.model_validate(dict(cached))
        try:
            obj = await self._client.get(OSResource, name, namespace=namespace)
        except ApiError as error:
            if is_not_found(error):
                return None
            raise
        return OS.model_validate(dict(obj))

    # -- events -----------------------------------------------------------------------------

    def _refs(self, pass_: _Pass) -> list[Ref]:
        refs = []
        if pass_.node_obj is not None:
            refs.append(Ref.of(pass_.node_obj, api_version="v1", kind="Node"))
        refs.append(
            Ref(labels.API_VERSION, labels.OSINSTANCE_KIND, pass_.osi.metadata.name,
                pass_.osi.metadata.namespace, pass_.osi.metadata.uid)
        )
        return refs

    def _normal(self, pass_: _Pass, reason: str, message: str) -> None:
        for ref in self._refs(pass_):
            self.events.normal(ref, reason, message)

    def _warn(self, pass_: _Pass, reason: str, message: str) -> None:
        for ref in self._refs(pass_):
            self.events.warning(ref, reason, message)


async def _stop(task: asyncio.Task[None], attempts: int = 20) -> None:
    """Cancel *task* until it ends (it may swallow a cancellation), at most ~2 s."""
    for _ in range(attempts):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.1)
        if done:
            with contextlib.suppress(BaseException):
                task.result()
            return


class _Pass:
    """The objects of one reconcile pass, kept current as this pass writes them."""

    def __init__(
        self,
        owner: ProxyController,
        node_obj: Node | None,
        osi_raw: dict[str, Any],
        bound: OS | None,
        agent: AgentApi,
        view: AgentView,
    ) -> None:
        self.owner = owner
        self.node_obj = node_obj
        self.osi = OSInstance.model_validate(osi_raw)
        self.bound = bound
        self.agent = agent
        self.view = view

    @property
    def client(self) -> AsyncClient:
        return self.owner._client

    @property
    def status(self) -> OSInstanceStatus:
        return self.osi.status or OSInstanceStatus()

    @property
    def generation(self) -> int:
        return self.bound.metadata.generation if self.bound is not None else 0

    def now(self) -> datetime:
        return self.owner._clock()

    # -- writes -----------------------------------------------------------------------------

    async def write_status(self, status: OSInstanceStatus) -> None:
        if self.osi.status is not None and report.same(status, self.osi.status):
            return
        meta = self.osi.metadata
        updated = await merge_patch(
            self.client, OSInstanceResource.Status, meta.name, report.status_body(status),
            namespace=meta.namespace, resource_version=meta.resourceVersion,
        )
        self.osi = OSInstance.model_validate(dict(updated))

    async def write_spec_idle(self) -> None:
        meta = self.osi.metadata
        updated = await merge_patch(
            self.client, OSInstanceResource, meta.name,
            {"spec": {"nodestatus": "idle", "namespacedname": None}},
            namespace=meta.namespace, resource_version=meta.resourceVersion,
        )
        self.osi = OSInstance.model_validate(dict(updated))

    async def patch_node(self, patch: dict[str, Any]) -> None:
        assert self.node_obj is not None and self.node_obj.metadata is not None
        self.node_obj = await merge_patch(
            self.client, Node, self.owner.node_name, patch,
            resource_version=str(self.node_obj.metadata.resourceVersion),
        )

    async def enter(self, phase: Phase, message: str, **kw: Any) -> None:
        await self.write_status(
            report.with_phase(
                self.status, phase, self.now(), message=message,
                generation=self.generation, **kw,
            )
        )

    async def release_node(self, *, remove_labels: bool) -> list[str]:
        """Uncordon if (and only if) we cordoned; optionally drop the operation labels."""
        if self.node_obj is None:
            return []
        node = NodeView.from_node(self.node_obj)
        patch: dict[str, Any] = {}
        done: list[str] = []
        if node.cordoned_by_us:
            patch["spec"] = {"unschedulable": False}
            patch.setdefault("metadata", {})["annotations"] = {
                labels.ANNOTATION_CORDONED_BY_US: None
            }
            done.append("uncordoned")
        if remove_labels and node.has_ops_label:
            patch.setdefault("metadata", {})["labels"] = {
                labels.LABEL_UPGRADING: None, labels.LABEL_CONFIGURING: None
            }
            done.append("removed the operation label")
        if patch:
            await self.patch_node(patch)
        return done

    # -- actions ----------------------------------------------------------------------------

    async def perform(self, action: Action, snapshot: Snapshot) -> None:
        handler = {
            Kind.APPLY_UPGRADECONFIGS: self._apply_upgradeconfigs,
            Kind.PREPARE_UPGRADE: self._prepare,
            Kind.CORDON: self._cordon,
            Kind.DRAIN: self._drain,
            Kind.REBOOT: self._reboot,
            Kind.VERIFY: self._verify,
            Kind.COMMIT: self._commit,
            Kind.COPY_SYSCONFIGS: self._copy_sysconfigs,
            Kind.APPLY_SYSCONFIGS: self._apply_sysconfigs,
            Kind.FINISH: self._finish,
            Kind.RELEASE: self._release,
            Kind.FAIL: self._fail,
        }[action.kind]
        try:
            await handler(action, snapshot)
        except Exception as error:
            if not is_transient(error):
                raise
            # The agent went away or is busy: report it, look again soon; no crash loop.
            message = f"{action.kind}: the os-agent did not answer: {error}"
            self.owner._warn(self, "AgentUnreachable", message)
            await self.write_status(report.observed(
                self.status, None, AgentView.unreachable(str(error)), self.now()
            ))

    async def _agent_call(self, action: Action, call: Awaitable[Any]) -> bool:
        """Await an agent call; an error the agent answers with fails the operation."""
        try:
            await call
        except Exception as error:
            if is_transient(error):
                raise
            await self._fail(
                Action(Kind.FAIL, "Failed", f"{action.kind} refused by the os-agent: {error}",
                       op=action.op, target=action.target),
                None,
            )
            return False
        return True

    async def _apply_configs(self, action: Action, which: str) -> None:
        spec_configs = getattr(self.osi.spec, which)
        await self.enter(action.phase or "Configuring", action.message)
        request = configure_request(spec_configs)
        if request is not None and not await self._agent_call(
            action, self.agent.configure(request)
        ):
            return
        await self.write_status(self.status.model_copy(update={which: spec_configs}))
        version = spec_configs.version if spec_configs is not None else ""
        self.owner._normal(self, "Configured", f"{which} version {version!r} applied")

    async def _apply_upgradeconfigs(self, action: Action, _s: Snapshot) -> None:
        await self._apply_configs(action, "upgradeconfigs")

    async def _apply_sysconfigs(self, action: Action, _s: Snapshot) -> None:
        await self._apply_configs(action, "sysconfigs")

    async def _prepare(self, action: Action, _s: Snapshot) -> None:
        assert self.bound is not None
        await self.enter("Preparing", action.message)
        self.owner._normal(self, "Staging", action.message)
        if await self._agent_call(action, self.agent.prepare_upgrade(
            upgrade_request(self.bound.spec)
        )):
            self.owner._normal(self, "Staged", f"{action.target!r} staged in the inactive slot")

    async def _cordon(self, action: Action, _s: Snapshot) -> None:
        await self.enter("Draining", action.message)
        await self.patch_node({
            "spec": {"unschedulable": True},
            "metadata": {"annotations": {labels.ANNOTATION_CORDONED_BY_US: "true"}},
        })
        self.owner._normal(self, "Cordoned", "cordoned the node (and recorded that we did)")

    async def _drain(self, action: Action, snapshot: Snapshot) -> None:
        assert self.bound is not None
        await self.enter("Draining", action.message)
        since = next(
            (c.lastTransitionTime for c in self.status.conditions
             if c.type == COND_PROGRESSING and c.reason == "Draining"),
            None,
        )
        limit = float(self.bound.spec.draintimeout)
        timeout: float | None = None
        if limit > 0:
            spent = (self.now() - since).total_seconds() if since is not None else 0.0
            timeout = max(limit - spent, 0.001)
        self.owner._normal(self, "Draining", f"draining (timeout {limit:g} s, 0 = none)")

        def notify(kind: str, reason: str, message: str) -> None:
            if kind == "Warning":
                self.owner._warn(self, reason, message)
            else:
                self.owner._normal(self, reason, message)

        result = await drain_node(
            self.client, self.owner.node_name, force=self.bound.spec.evictpodforce,
            timeout=timeout, settings=self.owner.settings.drain, notify=notify,
            evictor=self.owner.evictor,
        )
        if result.finished:
            await self.enter("Upgrading", result.message)
            self.owner._normal(self, "Drained", result.message)
            return
        await self._refresh_node()
        undone = await self.release_node(remove_labels=False)
        # Name the configured timeout, not what was left of it after a resumed drain.
        text = result.blockage.message(limit) if result.blockage is not None else result.message
        message = text + (f"; {', '.join(undone)}" if undone else "")
        await self.enter("DrainBlocked", message, last_error=message)
        self.owner._warn(self, "DrainBlocked", message)

    async def _reboot(self, action: Action, snapshot: Snapshot) -> None:
        node = snapshot.node
        assert node is not None
        previous = snapshot.progress.reboot
        # a re-ask is recorded (count, time) before the call, so a restarted proxy spaces
        # out its next one too
        record = previous.asked_again(self.now()) if previous is not None else RebootRecord(
            op=action.op, target=action.target, boot_id=node.boot_id,
            slot=self.view.booted_slot or "", since=self.now(),
        )
        status = report.with_reboot(self.status, record)
        status = report.with_phase(
            status, "Rebooting", self.now(), message=action.message, generation=self.generation
        )
        await self.write_status(status)
        await self.owner._point("Reboot:recorded")
        self.owner._normal(self, "Rebooting", action.message)
        version = agent_version(record.target)
        call = (
            self.agent.rollback(version) if record.op == "rollback"
            else self.agent.upgrade(version)
        )
        try:
            await call
        except Exception as error:
            if is_transient(error):
                # The host going down takes the connection with it: that is the expected end.
                log.info("%s: %s call ended with %s", self.owner.node_name, record.op, error)
                return
            await self._fail(
                Action(Kind.FAIL, "Failed", f"{record.op} refused by the os-agent: {error}",
                       op=record.op, target=record.target),
                None,
            )

    async def _verify(self, action: Action, _s: Snapshot) -> None:
        await self.enter("Verifying", action.message)
        self.owner._normal(self, "Verifying", action.message)

    async def _commit(self, action: Action, _s: Snapshot) -> None:
        if await self._agent_call(action, self.agent.commit()):
            self.owner._normal(self, "Committed", f"committed {action.target!r}")

    async def _copy_sysconfigs(self, action: Action, _s: Snapshot) -> None:
        assert self.bound is not None
        copied = swap_grub_models(self.bound.spec.sysconfigs)
        meta = self.osi.metadata
        body = copied.model_dump(mode="json", by_alias=True) if copied is not None else None
        updated = await merge_patch(
            self.client, OSInstanceResource, meta.name, {"spec": {"sysconfigs": body}},
            namespace=meta.namespace, resource_version=meta.resourceVersion,
        )
        self.osi = OSInstance.model_validate(dict(updated))
        self.owner._normal(self, "SysConfigsUpdated", action.message)

    async def _finish(self, action: Action, _s: Snapshot) -> None:
        undone = await self.release_node(remove_labels=True)
        await self.owner._point("Finish:node")
        status = report.with_reboot(self.status, None)
        status = report.with_phase(
            status, "Succeeded", self.now(), message=action.message,
            generation=self.generation, last_error="",
        )
        await self.write_status(status)
        await self.owner._point("Finish:status")
        await self.write_spec_idle()
        extra = f" ({', '.join(undone)})" if undone else ""
        self.owner._normal(self, "Succeeded", action.message + extra)

    async def _release(self, action: Action, _s: Snapshot) -> None:
        undone = await self.release_node(remove_labels=True)
        status = report.with_reboot(self.status, None)
        # An idle node keeps the result of its last operation; a cancelled one becomes Idle.
        phase: Phase = "Idle"
        if self.osi.spec.nodestatus == "idle" and self.status.phase in TERMINAL_PHASES:
            phase = self.status.phase
        status = report.with_phase(status, phase, self.now(), message=action.message)
        await self.write_status(status)
        if self.osi.spec.nodestatus != "idle" or self.osi.spec.namespacedname is not None:
            await self.write_spec_idle()
        extra = f" ({', '.join(undone)})" if undone else ""
        self.owner._normal(self, "Released", action.message + extra)

    async def _fail(self, action: Action, _s: Snapshot | None) -> None:
        await self._refresh_node()
        undone = await self.release_node(remove_labels=False)
        message = action.message + (f"; {', '.join(undone)}" if undone else "")
        status = report.with_reboot(self.status, None)
        status = report.with_phase(
            status, "Failed", self.now(), message=message,
            generation=self.generation, last_error=message,
        )
        await self.write_status(status)
        self.owner._warn(self, "Failed", message)

    async def _refresh_node(self) -> None:
        """Re-read the Node (a drain takes long; our copy's resourceVersion is stale)."""
        with contextlib.suppress(ApiError):
            self.node_obj = await self.client.get(Node, self.owner.node_name)
