"""The per-node state machine: from a :class:`~kubeos.proxy.snapshot.Snapshot` to the next action.

Pure: no client, no clock, no agent. The controller builds a snapshot from what the API server
and the agent say, asks :func:`decide`, performs the one action, and asks again. Because the
decision never depends on memory, a proxy killed at any instant resumes where it was.

Upgrade order (reference §4, with its [BUG]/[LIMIT] items fixed)::

    apply upgradeconfigs → prepare_upgrade (stage the new root while workloads still run)
    → cordon → drain → upgrade (reboot) → target osversion and Ready → health window
    → commit → apply sysconfigs → uncordon (only if we cordoned) → idle

What makes it safe to repeat:

* ``prepare_upgrade`` is skipped when the agent reports the target already staged in the
  inactive slot (never download twice, also after a failed drain);
* a reboot is recorded in the ``RebootRequested`` condition (target, boot ID, booted slot)
  *before* the agent is asked to switch; afterwards a changed boot ID or booted slot proves the
  reboot, so a resumed proxy never asks for a second one;
* ``commit`` is skipped when the agent says the booted slot is already committed;
* failures after the reboot (old version back, health window failed, no Ready in time) are
  terminal ``Failed`` for that generation of the OS: no download/reboot loop (reference §4.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from kubeos.api.models import OS, Phase, SysConfig, SysConfigs
from kubeos.proxy.snapshot import NodeView, Progress, Snapshot

# Phases during which an operation is under way (the label may already be gone at the end).
ACTIVE_PHASES: frozenset[str] = frozenset(
    {"Configuring", "Preparing", "Draining", "Upgrading", "Rebooting", "Verifying"}
)
TERMINAL_FAILURES: frozenset[str] = frozenset({"Failed", "DrainBlocked"})


class Kind(StrEnum):
    """The actions the controller knows how to perform."""

    NOTHING = "Nothing"  # idle: report what we see, come back later
    WAIT = "Wait"  # an operation is under way; something else must happen first
    APPLY_UPGRADECONFIGS = "ApplyUpgradeConfigs"
    PREPARE_UPGRADE = "PrepareUpgrade"
    CORDON = "Cordon"
    DRAIN = "Drain"
    REBOOT = "Reboot"  # agent upgrade or rollback: switch slots and reboot
    VERIFY = "Verify"  # enter the health window
    COMMIT = "Commit"
    COPY_SYSCONFIGS = "CopySysConfigs"  # OS sysconfigs changed while upgrading, node at target
    APPLY_SYSCONFIGS = "ApplySysConfigs"
    FINISH = "Finish"
    RELEASE = "Release"  # give the node back without finishing (the operator re-assigns)
    FAIL = "Fail"


@dataclass(frozen=True)
class Timing:
    """Durations of the state machine, in seconds."""

    health_window: float = 60.0
    reboot_timeout: float = 900.0  # from the reboot request to Ready on the target version
    reissue_after: float = 120.0  # no sign of a reboot this long after asking: ask again
    poll: float = 5.0  # how soon to look again while waiting
    resync: float = 60.0  # how soon to look again when idle


@dataclass(frozen=True)
class Action:
    """One step to perform. ``phase`` is what the OSInstance reports once it is under way."""

    kind: Kind
    phase: Phase | None = None  # None: keep the current phase
    message: str = ""
    requeue_after: float | None = None
    op: str = ""  # upgrade, rollback or config
    target: str = ""  # the OS version the operation leads to


def _version(configs: SysConfigs | None) -> str:
    return configs.version if configs is not None else ""


def swap_grub_models(configs: SysConfigs | None) -> SysConfigs | None:
    """Swap ``grub.cmdline.current`` and ``.next``, as the operator does for upgrades.

    Settings copied for an upgrade are applied after the reboot, when the slot that was
    "current" has become "next"; the reference's proxy forgot the swap when it copied newer
    sysconfigs in place (reference §10.8).
    """
    if configs is None:
        return None
    swap = {
        "grub.cmdline.current": "grub.cmdline.next",
        "grub.cmdline.next": "grub.cmdline.current",
    }
    swapped: list[SysConfig] = []
    for config in configs.configs:
        model = swap.get(config.model, config.model)
        swapped.append(config.model_copy(update={"model": model}, deep=True))
    return configs.model_copy(update={"configs": swapped}, deep=True)


def _elapsed(snapshot: Snapshot, since: datetime | None) -> float:
    return 0.0 if since is None else (snapshot.now - since).total_seconds()


def decide(snapshot: Snapshot, timing: Timing = Timing()) -> Action:
    """The next action for this node."""
    node = snapshot.node
    osi = snapshot.osi
    progress = snapshot.progress
    if node is None:
        return Action(Kind.WAIT, message="the Node does not exist", requeue_after=timing.resync)
    if osi.spec.nodestatus == "idle":
        return _idle(node, progress, timing)
    os = snapshot.os
    if os is None:
        where = osi.spec.namespacedname
        named = f"{where.namespace}/{where.name}" if where is not None else "none"
        return Action(
            Kind.RELEASE, "Idle", f"the OS this node is bound to ({named}) does not exist"
        )
    if progress.phase in TERMINAL_FAILURES and progress.generation == os.metadata.generation:
        return Action(
            Kind.NOTHING,
            message=f"{progress.phase} for generation {progress.generation} of the OS; "
            "waiting for a new OS generation or for the operator to reset the node",
            requeue_after=timing.resync,
        )
    if osi.spec.nodestatus == "config":
        return _config(snapshot, node, os, progress, timing)
    return _upgrade(snapshot, node, os, progress, timing)


def _idle(node: NodeView, progress: Progress, timing: Timing) -> Action:
    """Not assigned. Undo leftovers of an interrupted or cancelled operation."""
    if node.has_ops_label or node.cordoned_by_us or progress.reboot is not None:
        return Action(Kind.RELEASE, "Idle", "the node is idle: removing what we left behind")
    if progress.phase in ACTIVE_PHASES:
        return Action(Kind.RELEASE, "Idle", "the operation was cancelled")
    return Action(Kind.NOTHING, requeue_after=timing.resync)


def _waiting_for_label(node: NodeView, progress: Progress, timing: Timing) -> Action | None:
    """The operator writes the OSInstance first and labels the node second: start only then."""
    if node.has_ops_label or progress.phase in ACTIVE_PHASES:
        return None
    return Action(
        Kind.WAIT, message="assigned, waiting for the operator's node label",
        requeue_after=timing.poll,
    )


def _config(
    snapshot: Snapshot, node: NodeView, os: OS, progress: Progress, timing: Timing
) -> Action:
    spec = snapshot.osi.spec
    status = snapshot.osi.status
    target = os.spec.osversion
    if os.spec.opstype != "config":
        return Action(Kind.RELEASE, "Idle", f"the OS now asks for {os.spec.opstype}, not config")
    if node.os_image != target:
        return Action(
            Kind.FAIL, "Failed",
            f"the node runs {node.os_image!r} but the OS expects {target!r}: upgrade it first",
            op="config", target=target,
        )
    if _version(os.spec.sysconfigs) != _version(spec.sysconfigs):
        return Action(
            Kind.RELEASE, "Idle",
            f"sysconfigs changed to version {_version(os.spec.sysconfigs)!r}; "
            "the operator assigns the node again",
        )
    if _version(spec.sysconfigs) == _version(status.sysconfigs if status else None):
        # Nothing left to do (also when a killed proxy already removed the label): finish.
        return Action(
            Kind.FINISH, "Succeeded", "configuration applied", op="config", target=target
        )
    wait = _waiting_for_label(node, progress, timing)
    if wait is not None:
        return wait
    return _needs_agent(snapshot, timing) or Action(
        Kind.APPLY_SYSCONFIGS, "Configuring",
        f"applying sysconfigs version {_version(spec.sysconfigs)!r}",
        op="config", target=target,
    )


def _needs_agent(snapshot: Snapshot, timing: Timing) -> Action | None:
    agent = snapshot.agent
    if not agent.reachable:
        return Action(
            Kind.WAIT, message=f"the os-agent is unreachable: {agent.error}",
            requeue_after=timing.poll,
        )
    if agent.busy:
        return Action(
            Kind.WAIT, message=f"the os-agent is busy with {agent.busy}",
            requeue_after=timing.poll,
        )
    return None


def _after_boot(
    snapshot: Snapshot, os: OS | None, op: str, target: str, timing: Timing
) -> Action:
    """At the target version, committed: settings for the new root, then done."""
    spec = snapshot.osi.spec
    status = snapshot.osi.status
    if os is not None and _version(os.spec.sysconfigs) != _version(spec.sysconfigs):
        return Action(
            Kind.COPY_SYSCONFIGS, "Configuring",
            f"sysconfigs changed to version {_version(os.spec.sysconfigs)!r} during the upgrade",
            op=op, target=target,
        )
    if _version(spec.sysconfigs) != _version(status.sysconfigs if status else None):
        return _needs_agent(snapshot, timing) or Action(
            Kind.APPLY_SYSCONFIGS, "Configuring",
            f"applying sysconfigs version {_version(spec.sysconfigs)!r}", op=op, target=target,
        )
    return Action(Kind.FINISH, "Succeeded", f"the node runs {target!r}", op=op, target=target)


def _upgrade(
    snapshot: Snapshot, node: NodeView, os: OS, progress: Progress, timing: Timing
) -> Action:
    if progress.reboot is not None:
        return _after_reboot(snapshot, node, os, progress, timing)
    spec = snapshot.osi.spec
    status = snapshot.osi.status
    op = os.spec.opstype
    target = os.spec.osversion
    if op == "config":
        return Action(Kind.RELEASE, "Idle", "the OS now asks for config, not upgrade")
    if _version(os.spec.upgradeconfigs) != _version(spec.upgradeconfigs):
        return Action(
            Kind.RELEASE, "Idle",
            f"upgradeconfigs changed to version {_version(os.spec.upgradeconfigs)!r}; "
            "the operator assigns the node again",
        )
    if node.os_image == target:
        # The operator assigns only nodes off the target, so this is the end of an operation
        # (perhaps after a killed proxy already removed the label): no need to wait for it.
        if snapshot.agent.reachable and not snapshot.agent.committed:
            return Action(
                Kind.WAIT, message="the agent has an uncommitted boot; waiting for it to settle",
                requeue_after=timing.poll,
            )
        return _after_boot(snapshot, os, op, target, timing)
    wait = _waiting_for_label(node, progress, timing)
    if wait is not None:
        return wait
    if _version(spec.upgradeconfigs) != _version(status.upgradeconfigs if status else None):
        return _needs_agent(snapshot, timing) or Action(
            Kind.APPLY_UPGRADECONFIGS, "Preparing",
            f"applying upgradeconfigs version {_version(spec.upgradeconfigs)!r}",
            op=op, target=target,
        )
    blocked = _needs_agent(snapshot, timing)
    if blocked is not None:
        return blocked
    agent = snapshot.agent
    if op == "upgrade" and not agent.holds_staged(target):
        return Action(
            Kind.PREPARE_UPGRADE, "Preparing", f"staging {target!r} in the inactive slot",
            op=op, target=target,
        )
    if op == "rollback" and agent.inactive_holds_other_than(target):
        return Action(
            Kind.FAIL, "Failed",
            f"rollback to {target!r} impossible: slot {agent.inactive_slot} holds "
            f"{agent.inactive_version!r}",
            op=op, target=target,
        )
    if not node.unschedulable:
        return Action(Kind.CORDON, "Draining", "cordoning the node", op=op, target=target)
    if progress.phase != "Upgrading":
        return Action(Kind.DRAIN, "Draining", "draining the node", op=op, target=target)
    return Action(
        Kind.REBOOT, "Rebooting",
        f"asking the agent to {op} to {target!r} and reboot", op=op, target=target,
    )


def reask_spacing(asks: int, timing: Timing) -> float:
    """How long after the latest of ``asks`` reboot requests the next may go out.

    ``reissue_after`` after the first, doubling after each further one, never more than the
    reboot timeout: a lost request is repeated, but a reboot that never comes cannot turn into
    a storm of requests (each of which would start another reboot in the agent).
    """
    return min(timing.reissue_after * float(2 ** max(asks - 1, 0)), timing.reboot_timeout)


def _after_reboot(
    snapshot: Snapshot, node: NodeView, os: OS, progress: Progress, timing: Timing
) -> Action:
    record = progress.reboot
    assert record is not None
    agent = snapshot.agent
    op, target = record.op, record.target
    elapsed = _elapsed(snapshot, record.since)
    booted_new = agent.reachable and agent.booted_slot not in (None, "", record.slot)
    booted_old = agent.reachable and agent.booted_slot == record.slot
    rebooted = (node.boot_id != record.boot_id) or booted_new
    timed_out = elapsed > timing.reboot_timeout

    def fail(why: str) -> Action:
        detail = f" (agent: {agent.last_error})" if agent.last_error else ""
        return Action(Kind.FAIL, "Failed", why + detail, op=op, target=target)

    if not rebooted:
        if timed_out:
            return fail(f"the node did not reboot within {timing.reboot_timeout:g} s")
        since_ask = _elapsed(snapshot, record.last_ask or record.since)
        spacing = reask_spacing(record.asks, timing)
        if since_ask >= spacing and agent.reachable and not agent.busy:
            return Action(
                Kind.REBOOT, "Rebooting",
                f"no reboot {elapsed:.0f} s after the request; asking again "
                f"(request {record.asks + 1})",
                op=op, target=target,
            )
        return Action(Kind.WAIT, message="waiting for the reboot",
                      requeue_after=min(timing.poll, max(spacing - since_ask, 0.1)))

    if node.os_image == target and not booted_old:
        if agent.reachable and agent.committed and agent.booted_slot != record.slot:
            return _after_boot(snapshot, os, op, target, timing)
        if not node.ready:
            if progress.phase == "Verifying":
                return fail("health window failed: the node became NotReady")
            if timed_out:
                return fail(f"the node was not Ready within {timing.reboot_timeout:g} s")
            return Action(
                Kind.WAIT, message="waiting for the node to be Ready", requeue_after=timing.poll
            )
        if progress.phase != "Verifying":
            return Action(
                Kind.VERIFY, "Verifying",
                f"the node runs {target!r}; holding the {timing.health_window:g} s health window",
                op=op, target=target,
            )
        held = _elapsed(snapshot, progress.since)
        if held < timing.health_window:
            return Action(
                Kind.WAIT, message="health window",
                requeue_after=min(timing.poll, timing.health_window - held),
            )
        return _needs_agent(snapshot, timing) or Action(
            Kind.COMMIT, "Verifying", f"healthy for {held:.0f} s: committing {target!r}",
            op=op, target=target,
        )

    came_back_old = booted_old or not agent.reachable
    if came_back_old and node.ready and node.os_image != target:
        return fail(
            f"the node came back on {node.os_image!r}, not {target!r}; "
            "the agent's fallback restored the old root"
        )
    if timed_out:
        return fail(
            f"the node reports {node.os_image!r} (Ready={node.ready}) "
            f"{timing.reboot_timeout:g} s after the reboot, not {target!r}"
        )
    return Action(Kind.WAIT, message="waiting for the rebooted node", requeue_after=timing.poll)
