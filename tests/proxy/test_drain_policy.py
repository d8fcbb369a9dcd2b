"""Table-driven tests of the drain policy: kubectl drain's rules, not the reference's."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube.models.core_v1 import Pod
from lightkube.models.meta_v1 import LabelSelector, LabelSelectorRequirement

from kubeos.api import labels
from kubeos.proxy.drain_policy import (
    BudgetView,
    Verdict,
    blockage,
    decide_pod,
    plan_drain,
    selector_matches,
)


def pod(
    name: str = "p",
    *,
    owner: str | None = "ReplicaSet",
    controller: bool = True,
    empty_dir: bool = False,
    phase: str = "Running",
    mirror: bool = False,
    deleting: bool = False,
    pod_labels: dict[str, str] | None = None,
) -> Pod:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                            "labels": pod_labels or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner, "name": "o",
                                    "uid": "o-uid", "controller": controller}]
    if mirror:
        meta["annotations"] = {labels.ANNOTATION_MIRROR_POD: "hash"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    volumes = [{"name": "scratch", "emptyDir": {}}] if empty_dir else []
    return Pod.from_dict({
        "metadata": meta,
        "spec": {"containers": [{"name": "c", "image": "i"}], "volumes": volumes},
        "status": {"phase": phase},
    })


CASES = [
    # (description, pod, force, verdict)
    ("replicated pod", pod(), False, Verdict.EVICT),
    ("DaemonSet pod without force is skipped, not an error", pod(owner="DaemonSet"), False,
     Verdict.SKIP),
    ("DaemonSet pod with force is skipped", pod(owner="DaemonSet"), True, Verdict.SKIP),
    ("mirror pod", pod(owner=None, mirror=True), False, Verdict.SKIP),
    ("finished mirror pod still skipped", pod(mirror=True, phase="Succeeded"), False,
     Verdict.SKIP),
    ("bare pod refused without force", pod(owner=None), False, Verdict.REFUSE),
    ("bare pod evicted with force", pod(owner=None), True, Verdict.EVICT),
    ("owner that is not the controller counts as none", pod(controller=False), False,
     Verdict.REFUSE),
    ("emptyDir refused without force", pod(empty_dir=True), False, Verdict.REFUSE),
    ("emptyDir evicted with force", pod(empty_dir=True), True, Verdict.EVICT),
    ("finished bare pod passes", pod(owner=None, phase="Succeeded"), False, Verdict.EVICT),
    ("failed emptyDir pod passes", pod(empty_dir=True, phase="Failed"), False, Verdict.EVICT),
    ("finished DaemonSet pod is evicted", pod(owner="DaemonSet", phase="Failed"), False,
     Verdict.EVICT),
    ("terminating pod is only waited for", pod(owner=None, deleting=True), False, Verdict.WAIT),
    ("StatefulSet pod", pod(owner="StatefulSet"), False, Verdict.EVICT),
]


@pytest.mark.parametrize(("description", "subject", "force", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_verdict(description: str, subject: Pod, force: bool, expected: Verdict) -> None:
    assert decide_pod(subject, force=force).verdict is expected


def test_refusal_names_every_pod_and_reason() -> None:
    plan = plan_drain([pod("b", owner=None), pod("a", empty_dir=True), pod("c")], force=False)
    assert plan.blocked
    message = plan.refusal_message()
    assert "ns/a: uses emptyDir volume(s) scratch" in message
    assert "ns/b: has no controller" in message
    assert "evictpodforce" in message
    assert "ns/c" not in message
    assert [str(d.pod) for d in plan.decisions] == ["ns/a", "ns/b", "ns/c"]


def test_plan_without_force_for_the_reference_scenario_minus_local_pods() -> None:
    plan = plan_drain([pod("ds", owner="DaemonSet"), pod("web"), pod("big")], force=False)
    assert not plan.blocked
    assert [str(d.pod) for d in plan.to_evict] == ["ns/big", "ns/web"]


def req(key: str, op: str, values: list[str] | None = None) -> LabelSelectorRequirement:
    return LabelSelectorRequirement(key=key, operator=op, values=values)


SELECTOR_CASES = [
    (None, {"a": "1"}, False),
    (LabelSelector(), {"a": "1"}, True),
    (LabelSelector(matchLabels={"a": "1"}), {"a": "1", "b": "2"}, True),
    (LabelSelector(matchLabels={"a": "1"}), {"a": "2"}, False),
    (LabelSelector(matchExpressions=[req("a", "In", ["1", "2"])]), {"a": "2"}, True),
    (LabelSelector(matchExpressions=[req("a", "NotIn", ["1"])]), {}, True),
    (LabelSelector(matchExpressions=[req("a", "Exists")]), {}, False),
    (LabelSelector(matchExpressions=[req("a", "DoesNotExist")]), {}, True),
]


@pytest.mark.parametrize(("selector", "pod_labels", "expected"), SELECTOR_CASES)
def test_selector(selector: LabelSelector | None, pod_labels: dict[str, str],
                  expected: bool) -> None:
    assert selector_matches(selector, pod_labels) is expected


def test_blockage_names_only_budgets_without_disruptions_left() -> None:
    plan = plan_drain([pod("web-1", pod_labels={"app": "web"}), pod("db", pod_labels={})],
                      force=False)
    budgets = [
        BudgetView("ns", "web-pdb", LabelSelector(matchLabels={"app": "web"}), 0),
        BudgetView("ns", "roomy", LabelSelector(matchLabels={"app": "web"}), 1),
        BudgetView("other", "web-pdb", LabelSelector(matchLabels={"app": "web"}), 0),
    ]
    block = blockage(plan.to_evict, budgets, {"ns/web-1": "eviction refused (429)"})
    assert block.pods == ("ns/db", "ns/web-1")
    assert block.budgets == ("ns/web-pdb",)
    text = block.message(30)
    assert "within 30 s" in text and "ns/web-pdb" in text and "eviction refused (429)" in text
