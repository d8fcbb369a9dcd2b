"""The rollout decision (pure): which nodes start, what is released, how nodes are counted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from kubeos.api import labels
from kubeos.operator import plan as p
from kubeos.operator.plan import plan_cleanup, plan_rollout

from .builders import NOW, inst, make_os, node, snap

ME = ("default", "os1")
OTHER = ("default", "other")


def assigned(plan: p.Plan) -> list[str]:
    return [a.node for a in plan.assignments]


N4 = [node(f"n{i}") for i in range(1, 5)]


@pytest.mark.parametrize(
    ("case", "os_spec", "nodes", "instances", "expected"),
    [
        ("fills maxunavailable in name order", {}, N4, None, ["n1", "n2"]),
        ("percentage of selected nodes", {"maxunavailable": "50%"}, N4, None, ["n1", "n2"]),
        ("percentage rounds down but at least 1", {"maxunavailable": "10%"}, N4, None, ["n1"]),
        ("nodes at target are skipped",
         {}, [node("n1", "KubeOS v2"), *N4[1:]], None, ["n2", "n3"]),
        ("in-flight labelled nodes use slots",
         {}, [node("n1", upgrading=True), *N4[1:]], None, ["n2"]),
        ("configuring label also counts",
         {}, [node("n1", configuring=True), *N4[1:]], None, ["n2"]),
        ("bound instance without label counts (restart after half an assignment)",
         {}, N4, [inst("n1", status="upgrade", owner=ME), *[inst(f"n{i}") for i in (2, 3, 4)]],
         ["n2"]),
        ("cordoned node counts as unavailable and is not picked",
         {}, [node("n1", unschedulable=True), *N4[1:]], None, ["n2"]),
        ("NotReady node counts as unavailable",
         {}, [node("n1", ready=False), *N4[1:]], None, ["n2"]),
        ("slots full", {}, [node("n1", upgrading=True), node("n2", upgrading=True),
                             *N4[2:]], None, []),
        ("node without OSInstance is skipped", {}, N4,
         [inst("n2"), inst("n3"), inst("n4")], ["n2", "n3"]),
        ("control-plane never", {}, [node("n0", control_plane=True), *N4], None, ["n1", "n2"]),
        ("selector value", {"nodeselector": "openeuler"},
         [node("n1"), node("n2", selector="openeuler")], None, ["n2"]),
        ("no-label", {"nodeselector": "no-label"},
         [node("n1", selector="x"), node("n2")], None, ["n2"]),
        ("paused", {"paused": True}, N4, None, []),
        ("outside window", {"timewindow": {"starttime": "13:00:00", "endtime": "14:00:00",
                                           "timezone": "UTC"}}, N4, None, []),
        ("inside window", {"timewindow": {"starttime": "11:00:00", "endtime": "14:00:00",
                                          "timezone": "UTC"}}, N4, None, ["n1", "n2"]),
        ("halt at first failure (maxfailures 0)", {"maxunavailable": 3}, N4,
         [inst("n1", status="upgrade", owner=ME, phase="Failed"), inst("n2"), inst("n3"),
          inst("n4")], []),
        ("maxfailures tolerates; a failed node back in service uses no slot",
         {"maxunavailable": 2, "maxfailures": 1}, N4,
         [inst("n1", status="upgrade", owner=ME, phase="Failed"), inst("n2"), inst("n3"),
          inst("n4")], ["n2", "n3"]),
        ("a failed node still cordoned uses a slot", {"maxunavailable": 2, "maxfailures": 1},
         [node("n1", unschedulable=True), *N4[1:]],
         [inst("n1", status="upgrade", owner=ME, phase="DrainBlocked"), inst("n2"), inst("n3"),
          inst("n4")], ["n2"]),
        ("rollback is an upgrade to an older version",
         {"opstype": "rollback", "osversion": "KubeOS v1", "maxunavailable": 3},
         [node("n1", "KubeOS v2"), node("n2", "KubeOS v2")], None, ["n1", "n2"]),
        ("config: versions differ", {"opstype": "config", "osversion": "KubeOS v1",
                                     "sysconfigs": {"version": "v2", "configs": []}},
         [node("n1"), node("n2"), node("n3")],
         [inst("n1", sys_status="v2"), inst("n2", sys_status="v1"), inst("n3")], ["n2", "n3"]),
        ("config: node at another OS version waits",
         {"opstype": "config", "osversion": "KubeOS v1",
          "sysconfigs": {"version": "v2", "configs": []}},
         [node("n1", "KubeOS v0"), node("n2")], None, ["n2"]),
        ("node bound to another OS is not taken", {}, N4,
         [inst("n1", status="upgrade", owner=OTHER), inst("n2"), inst("n3"), inst("n4")],
         ["n2"]),
    ],
)
def test_parallel_assignments(case: str, os_spec: dict[str, Any], nodes: list[Any],
                              instances: list[Any] | None, expected: list[str]) -> None:
    plan = plan_rollout(make_os(**os_spec), snap(nodes, instances))
    assert assigned(plan) == expected, case


def test_remembered_failures_are_not_retried_until_spec_changes() -> None:
    status = {"observedGeneration": 1, "failedNodes": ["n1"]}
    os = make_os(status=status, maxfailures=5)
    plan = plan_rollout(os, snap(N4))
    assert "n1" not in assigned(plan)
    assert plan.failed_nodes == ["n1"]
    os2 = make_os(status=status, generation=2, maxfailures=5)
    assert "n1" in assigned(plan_rollout(os2, snap(N4)))


def test_assignment_content_upgrade_swaps_grub() -> None:
    sys = {"version": "v2", "configs": [
        {"model": "grub.cmdline.current", "contents": [{"key": "a", "value": ""}]},
        {"model": "grub.cmdline.next", "contents": [{"key": "b", "value": ""}]}]}
    upg = {"version": "u2", "configs": [{"model": "kernel.sysctl", "contents": []}]}
    os = make_os(sysconfigs=sys, upgradeconfigs=upg, maxunavailable=1)
    (a,) = plan_rollout(os, snap([node("n1")])).assignments
    patch = a.instance_patch(ME)["spec"]
    assert patch["nodestatus"] == "upgrade"
    assert patch["namespacedname"] == {"namespace": "default", "name": "os1"}
    assert [c["model"] for c in patch["sysconfigs"]["configs"]] == [
        "grub.cmdline.next", "grub.cmdline.current"]
    assert patch["upgradeconfigs"]["version"] == "u2"
    assert patch["upgradeconfigs"]["configs"][0]["model"] == "kernel.sysctl"
    assert a.label == labels.LABEL_UPGRADING
    assert os.spec.sysconfigs is not None
    assert os.spec.sysconfigs.configs[0].model == "grub.cmdline.current"


def test_assignment_content_config_no_swap() -> None:
    sys = {"version": "v2", "configs": [
        {"model": "grub.cmdline.current", "contents": [{"key": "a", "value": ""}]}]}
    os = make_os(opstype="config", osversion="KubeOS v1", sysconfigs=sys, maxunavailable=1)
    (a,) = plan_rollout(os, snap([node("n1")])).assignments
    patch = a.instance_patch(ME)["spec"]
    assert patch["nodestatus"] == "config"
    assert patch["sysconfigs"]["configs"][0]["model"] == "grub.cmdline.current"
    assert "upgradeconfigs" not in patch
    assert a.label == labels.LABEL_CONFIGURING


def test_serial_labels_a_batch_and_runs_one_at_a_time() -> None:
    os = make_os(executionmode="serial", maxunavailable=2)
    plan = plan_rollout(os, snap(N4))
    assert plan.serial_add == ["n1", "n2"]
    assert assigned(plan) == ["n1"]
    # n1 in flight: nothing new, batch stays.
    nodes = [node("n1", upgrading=True, serial=True), node("n2", serial=True), *N4[2:]]
    instances = [inst("n1", status="upgrade", owner=ME), inst("n2"), inst("n3"), inst("n4")]
    plan = plan_rollout(os, snap(nodes, instances))
    assert assigned(plan) == [] and plan.serial_add == []
    # n1 done: its serial label goes, n2 starts.
    nodes = [node("n1", "KubeOS v2", serial=True), node("n2", serial=True), *N4[2:]]
    plan = plan_rollout(os, snap(nodes))
    assert plan.serial_remove == ["n1"] and assigned(plan) == ["n2"] and plan.serial_add == []
    # batch done: next batch.
    nodes = [node("n1", "KubeOS v2"), node("n2", "KubeOS v2", serial=True), *N4[2:]]
    plan = plan_rollout(os, snap(nodes))
    assert plan.serial_remove == ["n2"]
    assert plan.serial_add == ["n3", "n4"] and assigned(plan) == ["n3"]


def test_overlap_halts_both() -> None:
    a = make_os("os1", nodeselector="all-label")
    b = make_os("other", nodeselector="foo")
    for os in (a, b):
        plan = plan_rollout(os, snap(N4, all_os=[a, b]))
        assert plan.halt == p.HALT_OVERLAP and not plan.assignments


def test_opstype_change_releases_stale_bindings() -> None:
    os = make_os(opstype="config", osversion="KubeOS v1",
                 sysconfigs={"version": "v2", "configs": []})
    nodes = [node("n1", upgrading=True, unschedulable=True, cordoned_by_us=True), *N4[1:]]
    instances = [inst("n1", status="upgrade", owner=ME), inst("n2"), inst("n3"), inst("n4")]
    plan = plan_rollout(os, snap(nodes, instances))
    (release,) = plan.releases
    assert release.node == "n1" and release.unbind and release.uncordon
    assert release.remove_labels == (labels.LABEL_UPGRADING,)
    patch = release.node_patch()
    assert patch is not None and patch["spec"] == {"unschedulable": None}
    assert assigned(plan) == ["n2"]  # n1 still counts until released


def test_label_repair_after_crash_between_bind_and_label() -> None:
    instances = [inst("n1", status="upgrade", owner=ME), inst("n2")]
    plan = plan_rollout(make_os(), snap([node("n1"), node("n2")], instances))
    assert plan.label_repairs == ["n1"]
    # ...but not while the proxy is finishing (node at target, label already removed).
    plan = plan_rollout(make_os(), snap([node("n1", "KubeOS v2"), node("n2")], instances))
    assert plan.label_repairs == []


def test_timeinterval_paces_rounds() -> None:
    os = make_os(timeinterval=30)
    plan = plan_rollout(os, snap(N4, last_round=NOW - timedelta(seconds=10)))
    assert assigned(plan) == [] and plan.requeue_after == pytest.approx(20)
    plan = plan_rollout(os, snap(N4, last_round=NOW - timedelta(seconds=31)))
    assert assigned(plan) == ["n1", "n2"]


def test_window_closed_requeues_at_opening() -> None:
    os = make_os(timewindow={"starttime": "13:00:00", "endtime": "14:00:00", "timezone": "UTC"})
    plan = plan_rollout(os, snap(N4))
    assert plan.halt == p.HALT_WINDOW and plan.requeue_after == pytest.approx(3600)


def test_cleanup_releases_only_own_nodes() -> None:
    os = make_os(deleting=True)
    nodes = [node("n1", upgrading=True), node("n2", upgrading=True), node("n3", serial=True)]
    instances = [inst("n1", status="upgrade", owner=ME), inst("n2", status="upgrade",
                                                              owner=OTHER), inst("n3")]
    plan = plan_cleanup(os, snap(nodes, instances))
    assert [r.node for r in plan.releases] == ["n1"]
    assert plan.serial_remove == ["n3"]


def test_states_for_status() -> None:
    nodes = [node("n1", "KubeOS v2"), node("n2", upgrading=True), node("n3"), node("n4")]
    instances = [inst("n1"), inst("n2", status="upgrade", owner=ME), inst("n3")]
    plan = plan_rollout(make_os(maxunavailable=3), snap(nodes, instances))
    assert plan.states == {"n1": "updated", "n2": "in_progress", "n3": "pending",
                           "n4": "waiting"}
    assert plan.waiting == {"NoOSInstance": ["n4"]}
    assert assigned(plan) == ["n3"]
