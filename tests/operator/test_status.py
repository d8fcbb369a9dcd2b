"""OS.status computation (pure)."""

from __future__ import annotations

from datetime import timedelta

from kubeos.operator import status
from kubeos.operator.plan import plan_rollout

from .builders import NOW, inst, make_os, node, snap

ME = ("default", "os1")


def cond(st: dict[str, object], type_: str) -> dict[str, object]:
    return next(c for c in st["conditions"] if c["type"] == type_)  # type: ignore[attr-defined,index]


def test_progressing_then_completed() -> None:
    os = make_os()
    st = status.compute(os, plan_rollout(os, snap([node("n1"), node("n2", "KubeOS v2")])), NOW)
    assert (st["nodes"], st["updated"], st["inProgress"], st["failed"]) == (2, 1, 0, 0)
    assert cond(st, "Progressing")["status"] == "True"
    assert cond(st, "Completed")["status"] == "False"
    assert cond(st, "Degraded")["status"] == "False"
    done = status.compute(os, plan_rollout(os, snap([node("n1", "KubeOS v2")])), NOW)
    assert cond(done, "Completed")["status"] == "True"
    assert cond(done, "Progressing")["reason"] == "RolloutComplete"


def test_degraded_names_failed_nodes_and_reason() -> None:
    os = make_os()
    instances = [inst("n1", status="upgrade", owner=ME, phase="Failed"), inst("n2")]
    plan = plan_rollout(os, snap([node("n1"), node("n2")], instances))
    st = status.compute(os, plan, NOW)
    assert st["failedNodes"] == ["n1"] and st["failed"] == 1
    degraded = cond(st, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "MaxFailuresReached"
    assert "n1" in str(degraded["message"])
    assert cond(st, "Progressing")["reason"] == "MaxFailuresReached"


def test_paused_reason() -> None:
    os = make_os(paused=True)
    st = status.compute(os, plan_rollout(os, snap([node("n1")])), NOW)
    progressing = cond(st, "Progressing")
    assert progressing["status"] == "False" and progressing["reason"] == "Paused"


def test_transition_time_kept_when_status_unchanged() -> None:
    os = make_os()
    first = status.compute(os, plan_rollout(os, snap([node("n1")])), NOW)
    os2 = make_os(status=first)
    later = NOW + timedelta(minutes=5)
    second = status.compute(os2, plan_rollout(os2, snap([node("n1")])), later)
    assert cond(second, "Progressing")["lastTransitionTime"] == cond(
        first, "Progressing")["lastTransitionTime"]
    assert status.same_status(first, second)
