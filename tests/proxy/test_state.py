"""Table-driven tests of the per-node state machine (pure: snapshots in, actions out)."""

from __future__ import annotations

import pytest

from kubeos.api.models import SysConfigs
from kubeos.proxy.snapshot import AgentView, Snapshot
from kubeos.proxy.state import Kind, Timing, decide, swap_grub_models
from tests.proxy.builders import (
    NEW,
    OLD,
    agent,
    ago,
    node,
    os_,
    osi,
    rebooted_from,
    snap,
)

TIMING = Timing(health_window=60, reboot_timeout=900, reissue_after=120)
UNREACHABLE = AgentView.unreachable("connection refused")
TRIAL_B = agent(booted="B", committed="A", trial="B", versions={"A": OLD, "B": NEW})
COMMITTED_B = agent(booted="B", committed="B", versions={"A": OLD, "B": NEW})
STAGED = agent(versions={"A": OLD, "B": NEW})
CORDONED = node(cordoned=True, ours=True)

CASES: list[tuple[str, Snapshot, Kind]] = [
    # -- idle ---------------------------------------------------------------------------
    ("idle node: nothing", snap(node(label=None), osi("idle")), Kind.NOTHING),
    ("idle keeps a Succeeded result", snap(node(label=None), osi("idle", phase="Succeeded")),
     Kind.NOTHING),
    ("idle with a leftover label", snap(node(), osi("idle")), Kind.RELEASE),
    ("idle but cordoned by us", snap(node(label=None, cordoned=True, ours=True), osi("idle")),
     Kind.RELEASE),
    ("idle while draining: cancelled", snap(node(label=None), osi("idle", phase="Draining")),
     Kind.RELEASE),
    ("no Node object", Snapshot(None, osi(), os_(), agent(), ago(0)), Kind.WAIT),
    # -- config ---------------------------------------------------------------------------
    ("config: apply sysconfigs",
     snap(node(image=NEW), osi("config", spec_sys="v2", status_sys="v1"),
          os_("config", sys="v2")), Kind.APPLY_SYSCONFIGS),
    ("config: applied, finish",
     snap(node(image=NEW), osi("config", spec_sys="v2", status_sys="v2",
                                phase="Configuring"), os_("config", sys="v2")), Kind.FINISH),
    ("config: OS moved to v3, reassign",
     snap(node(image=NEW), osi("config", spec_sys="v2"), os_("config", sys="v3")),
     Kind.RELEASE),
    ("config on the wrong OS version fails once, no loop",
     snap(node(image=OLD), osi("config", spec_sys="v2"), os_("config", sys="v2")), Kind.FAIL),
    ("config: agent unreachable",
     snap(node(image=NEW), osi("config", spec_sys="v2"), os_("config", sys="v2"),
          UNREACHABLE), Kind.WAIT),
    ("config: waits for the operator's label",
     snap(node(image=NEW, label=None), osi("config", spec_sys="v2"), os_("config", sys="v2")),
     Kind.WAIT),
    ("config: OS switched to upgrade",
     snap(node(image=NEW), osi("config", spec_sys="v2"), os_("upgrade", sys="v2")),
     Kind.RELEASE),
    # -- upgrade, before the reboot ------------------------------------------------------------
    ("upgradeconfigs first",
     snap(node(), osi(spec_up="u1"), os_(up="u1")), Kind.APPLY_UPGRADECONFIGS),
    ("upgradeconfigs changed in the OS: reassign",
     snap(node(), osi(spec_up="u1"), os_(up="u2")), Kind.RELEASE),
    ("stage before cordon", snap(node(), osi(status_up=None), os_()), Kind.PREPARE_UPGRADE),
    ("already staged (agent says so): cordon", snap(a=agent(staged=NEW)), Kind.CORDON),
    ("already staged (inactive slot): cordon", snap(a=STAGED), Kind.CORDON),
    ("cordoned by us: drain", snap(CORDONED, osi(phase="Preparing"), a=STAGED), Kind.DRAIN),
    ("admin-cordoned: drain without cordoning",
     snap(node(cordoned=True), osi(phase="Preparing"), a=STAGED), Kind.DRAIN),
    ("drained: reboot", snap(CORDONED, osi(phase="Upgrading"), a=STAGED), Kind.REBOOT),
    ("agent busy (a download still running): wait", snap(a=agent(busy="prepare_upgrade")),
     Kind.WAIT),
    ("agent unreachable: wait", snap(a=UNREACHABLE), Kind.WAIT),
    ("waits for the operator's label", snap(node(label=None)), Kind.WAIT),
    ("rollback to the other slot: no download",
     snap(node(image=NEW), o=os_("rollback", target=OLD),
          a=agent(versions={"A": NEW, "B": OLD})), Kind.CORDON),
    ("rollback to a slot holding another version fails",
     snap(node(image=NEW), o=os_("rollback", target="KubeOS v0"),
          a=agent(versions={"A": NEW, "B": OLD})), Kind.FAIL),
    ("failed in this generation: stays failed",
     snap(i=osi(phase="Failed", generation=1), o=os_(generation=1)), Kind.NOTHING),
    ("failed in an older generation: starts over",
     snap(i=osi(phase="Failed", generation=1), o=os_(generation=2)), Kind.PREPARE_UPGRADE),
    ("drain blocked earlier: the staged image is reused",
     snap(node(), osi(phase="DrainBlocked", generation=1), os_(generation=2), STAGED),
     Kind.CORDON),
    ("bound OS deleted: release", snap(CORDONED, no_os=True), Kind.RELEASE),
    ("OS switched to config before the reboot: release", snap(o=os_("config", sys="v1")),
     Kind.RELEASE),
    ("already at the target: finish", snap(node(image=NEW)), Kind.FINISH),
    ("killed after the label was removed at the end: finish again",
     snap(node(image=NEW, label=None), osi(phase="Succeeded")), Kind.FINISH),
    ("config killed after the label was removed: finish again",
     snap(node(image=NEW, label=None), osi("config", phase="Succeeded", spec_sys="v2",
                                            status_sys="v2"), os_("config", sys="v2")),
     Kind.FINISH),
    ("at the target with an uncommitted boot: wait", snap(node(image=NEW), a=TRIAL_B),
     Kind.WAIT),
    # -- after the reboot request --------------------------------------------------------------
    ("no reboot yet: wait",
     snap(CORDONED, osi(phase="Rebooting", reboot=rebooted_from()), a=STAGED), Kind.WAIT),
    ("no reboot long after the request: ask again",
     snap(CORDONED, osi(phase="Rebooting", reboot=rebooted_from(seconds_ago=130)), a=STAGED),
     Kind.REBOOT),
    ("no reboot within the timeout: fail",
     snap(CORDONED, osi(phase="Rebooting", reboot=rebooted_from(seconds_ago=901)), a=STAGED),
     Kind.FAIL),
    ("back on the target and Ready: health window",
     snap(node(image=NEW, boot="boot-1", cordoned=True, ours=True),
          osi(phase="Rebooting", reboot=rebooted_from()), a=TRIAL_B), Kind.VERIFY),
    ("inside the health window: wait",
     snap(node(image=NEW, boot="boot-1", cordoned=True, ours=True),
          osi(phase="Verifying", since=ago(10), reboot=rebooted_from()), a=TRIAL_B), Kind.WAIT),
    ("health window passed: commit",
     snap(node(image=NEW, boot="boot-1", cordoned=True, ours=True),
          osi(phase="Verifying", since=ago(61), reboot=rebooted_from()), a=TRIAL_B),
     Kind.COMMIT),
    ("health window failed: NotReady",
     snap(node(image=NEW, boot="boot-1", ready=False),
          osi(phase="Verifying", since=ago(10), reboot=rebooted_from()), a=TRIAL_B), Kind.FAIL),
    ("came back on the old version: fail",
     snap(node(image=OLD, boot="boot-2", cordoned=True, ours=True),
          osi(phase="Rebooting", reboot=rebooted_from()),
          a=agent(versions={"A": OLD, "B": NEW}, last_error="trial of B failed")), Kind.FAIL),
    ("came back, agent unreachable, old version Ready: fail",
     snap(node(image=OLD, boot="boot-2"), osi(phase="Rebooting", reboot=rebooted_from()),
          a=UNREACHABLE), Kind.FAIL),
    ("agent on the new slot, kubelet not updated yet: wait",
     snap(node(image=OLD), osi(phase="Rebooting", reboot=rebooted_from()), a=TRIAL_B),
     Kind.WAIT),
    ("rebooted but not Ready: wait",
     snap(node(image=NEW, boot="boot-1", ready=False),
          osi(phase="Rebooting", reboot=rebooted_from()), a=TRIAL_B), Kind.WAIT),
    ("rebooted, never Ready: fail after the timeout",
     snap(node(image=NEW, boot="boot-1", ready=False),
          osi(phase="Rebooting", reboot=rebooted_from(seconds_ago=901)), a=TRIAL_B), Kind.FAIL),
    ("committed already (resumed after commit): finish",
     snap(node(image=NEW, boot="boot-1", cordoned=True, ours=True),
          osi(phase="Verifying", reboot=rebooted_from()), a=COMMITTED_B), Kind.FINISH),
    ("committed: apply sysconfigs",
     snap(node(image=NEW, boot="boot-1"),
          osi(phase="Verifying", reboot=rebooted_from(), spec_sys="s2", status_sys="s1"),
          os_(sys="s2"), COMMITTED_B), Kind.APPLY_SYSCONFIGS),
    ("committed, OS sysconfigs moved on: copy them",
     snap(node(image=NEW, boot="boot-1"),
          osi(phase="Verifying", reboot=rebooted_from(), spec_sys="s2", status_sys="s1"),
          os_(sys="s3"), COMMITTED_B), Kind.COPY_SYSCONFIGS),
    ("OS target edited after the reboot: the recorded target decides",
     snap(node(image=NEW, boot="boot-1"), osi(phase="Verifying", since=ago(61),
                                              reboot=rebooted_from()),
          os_(target="KubeOS v3"), TRIAL_B), Kind.COMMIT),
    ("legacy agent: no commit step",
     snap(node(image=NEW, boot="boot-1"), osi(phase="Rebooting", reboot=rebooted_from()),
          a=AgentView(reachable=True, legacy=True)), Kind.FINISH),
]


@pytest.mark.parametrize(("description", "snapshot", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_decide(description: str, snapshot: Snapshot, expected: Kind) -> None:
    action = decide(snapshot, TIMING)
    assert action.kind is expected, action


def test_fail_after_reboot_names_the_reason_and_the_agent_error() -> None:
    action = decide(
        snap(node(image=OLD, boot="boot-2"), osi(phase="Rebooting", reboot=rebooted_from()),
             a=agent(last_error="trial of B failed")),
        TIMING,
    )
    assert action.phase == "Failed"
    assert "came back on 'KubeOS v1'" in action.message
    assert "trial of B failed" in action.message


def test_reboot_carries_op_and_target() -> None:
    action = decide(snap(CORDONED, osi(phase="Upgrading"), a=STAGED), TIMING)
    assert (action.op, action.target) == ("upgrade", NEW)


def test_grub_models_are_swapped_and_the_input_is_untouched() -> None:
    configs = SysConfigs.model_validate({"version": "v2", "configs": [
        {"model": "grub.cmdline.current", "contents": [{"key": "a"}]},
        {"model": "grub.cmdline.next", "contents": [{"key": "b"}]},
        {"model": "kernel.sysctl", "contents": [{"key": "c", "value": "1"}]},
    ]})
    swapped = swap_grub_models(configs)
    assert swapped is not None
    assert [c.model for c in swapped.configs] == [
        "grub.cmdline.next", "grub.cmdline.current", "kernel.sysctl"
    ]
    assert [c.contents[0].key for c in swapped.configs] == ["a", "b", "c"]
    assert configs.configs[0].model == "grub.cmdline.current"
    assert swap_grub_models(None) is None


def test_a_lost_reboot_is_asked_again_with_backoff_never_on_every_pass() -> None:
    """The re-ask storm: after one re-ask the next waits twice as long, counted from the
    latest ask (recorded in status), not from the first request."""
    import dataclasses

    from kubeos.proxy.state import reask_spacing

    first = rebooted_from(seconds_ago=130)
    asked = snap(CORDONED, osi(phase="Rebooting", reboot=first), a=STAGED)
    assert decide(asked, TIMING).kind is Kind.REBOOT
    again = dataclasses.replace(first.asked_again(ago(1)), since=ago(131))
    for _ in range(3):  # pass after pass, right after the re-ask: wait
        waiting = decide(snap(CORDONED, osi(phase="Rebooting", reboot=again), a=STAGED), TIMING)
        assert waiting.kind is Kind.WAIT
    later = dataclasses.replace(again, last_ask=ago(239))
    assert decide(snap(CORDONED, osi(phase="Rebooting", reboot=later), a=STAGED),
                  TIMING).kind is Kind.WAIT
    later = dataclasses.replace(again, last_ask=ago(241), since=ago(371))
    assert decide(snap(CORDONED, osi(phase="Rebooting", reboot=later), a=STAGED),
                  TIMING).kind is Kind.REBOOT
    assert [reask_spacing(n, TIMING) for n in (1, 2, 3, 4, 5)] == [120, 240, 480, 900, 900]


def test_the_reboot_record_keeps_its_asks_through_the_condition() -> None:
    from kubeos.api.models import Condition
    from kubeos.proxy.snapshot import RebootRecord

    record = rebooted_from(seconds_ago=300).asked_again(ago(20)).asked_again(ago(5))
    condition = Condition(type="RebootRequested", status="True", reason="Upgrade",
                          message=record.message(), lastTransitionTime=record.since)
    back = RebootRecord.from_condition(condition)
    assert back is not None
    assert (back.asks, back.last_ask, back.slot, back.target) == (
        3, ago(5).replace(microsecond=0), record.slot, record.target)
    plain = Condition(type="RebootRequested", status="True", reason="Upgrade",
                      message=rebooted_from().message(), lastTransitionTime=ago(1))
    old = RebootRecord.from_condition(plain)
    assert old is not None and (old.asks, old.last_ask) == (1, None)
