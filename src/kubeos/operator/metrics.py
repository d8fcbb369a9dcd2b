"""Prometheus metrics of the operator: what people watch to answer "why isn't my node
updating?" (nodes by state per OS, rollout progress) and how the operator itself is doing
(reconcile duration and errors, API requests, leadership).
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kubeos.operator.plan import NodeState, Plan

STATES: tuple[NodeState, ...] = ("updated", "in_progress", "failed", "pending", "waiting", "busy")


class Metrics:
    """All operator metrics, registered in one registry (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.nodes = Gauge(
            "kubeos_operator_nodes", "Nodes selected by an OS, by state.",
            ["namespace", "os", "state"], registry=r,
        )
        self.progress = Gauge(
            "kubeos_operator_rollout_progress_ratio",
            "Fraction of the selected nodes that are at the target (1 when none are selected).",
            ["namespace", "os"], registry=r,
        )
        self.unavailable = Gauge(
            "kubeos_operator_unavailable_nodes",
            "Selected nodes counted as unavailable against maxunavailable.",
            ["namespace", "os"], registry=r,
        )
        self.budget = Gauge(
            "kubeos_operator_max_unavailable_nodes", "maxunavailable resolved to a node count.",
            ["namespace", "os"], registry=r,
        )
        self.halted = Gauge(
            "kubeos_operator_rollout_halted",
            "1 when the rollout starts no new nodes, labelled with the reason.",
            ["namespace", "os", "reason"], registry=r,
        )
        self.assignments = Counter(
            "kubeos_operator_assignments_total", "Nodes assigned an operation.",
            ["namespace", "os", "operation"], registry=r,
        )
        self.releases = Counter(
            "kubeos_operator_releases_total",
            "Nodes released by cleanup (OS deleted or opstype changed).",
            ["namespace", "os"], registry=r,
        )
        self.reconcile_duration = Histogram(
            "kubeos_operator_reconcile_duration_seconds", "Time spent in one reconcile.",
            ["kind"], registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.reconcile_errors = Counter(
            "kubeos_operator_reconcile_errors_total", "Reconciles that raised an error.",
            ["kind"], registry=r,
        )
        self.conflicts = Counter(
            "kubeos_operator_write_conflicts_total",
            "Writes rejected with 409 Conflict (stale cache; the reconcile is repeated).",
            registry=r,
        )
        self.api_requests = Counter(
            "kubeos_operator_api_requests_total", "HTTP requests sent to the API server.",
            ["method"], registry=r,
        )
        self.api_refused = Counter(
            "kubeos_operator_api_refused_total",
            "API answers 401 Unauthorized or 403 Forbidden, by code: missing RBAC or a policy.",
            ["code"], registry=r,
        )
        self.leader = Gauge(
            "kubeos_operator_leader", "1 while this replica holds the leader lease.",
            registry=r,
        )

    def observe(self, namespace: str, name: str, plan: Plan) -> None:
        for state in STATES:
            self.nodes.labels(namespace, name, state).set(plan.count(state))
        total = plan.selected
        self.progress.labels(namespace, name).set(
            plan.count("updated") / total if total else 1.0
        )
        self.unavailable.labels(namespace, name).set(plan.unavailable)
        self.budget.labels(namespace, name).set(plan.budget)
        for reason in ("Paused", "OutsideTimeWindow", "MaxFailuresReached",
                       "SelectorOverlap", "InvalidSpec", "InvalidTimeWindow"):
            self.halted.labels(namespace, name, reason).set(1 if plan.halt == reason else 0)

    def forget(self, namespace: str, name: str) -> None:
        for gauge in (self.progress, self.unavailable, self.budget):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for state in STATES:
            with contextlib.suppress(KeyError):
                self.nodes.remove(namespace, name, state)
