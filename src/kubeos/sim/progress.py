"""Live progress of a rollout in the terminal (rich), and the summaries printed afterwards.

Per node: the operation it is assigned, its phase, the version it reports and the slot it
booted; overall: the operator's own counts from ``OS.status``. Above 30 nodes only the nodes
that are busy or failed are listed, so the table fits a screen at 200 nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from kubeos.sim.rollout import Follower, RolloutResult

MAX_ROWS = 30
_STYLE = {"Succeeded": "green", "Failed": "bold red", "DrainBlocked": "yellow", "Idle": "dim"}


def render(follower: Follower) -> Group:
    result = follower.result
    status = result.status
    rows = list(result.nodes.values())
    if len(rows) > MAX_ROWS:
        rows = [r for r in rows if r.nodestatus != "idle" or r.phase == "Failed"][:MAX_ROWS]
    table = Table(title=f"{result.title} — {follower.elapsed:5.1f} s", expand=False)
    for column in ("node", "operation", "phase", "version", "slot", "last error"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, row.nodestatus, Text(row.phase, style=_STYLE.get(row.phase, "")),
                      row.os_image, row.slot, row.error[:60])
    overall = Text(
        f"selected {status.get('nodes', 0)}  updated {status.get('updated', 0)}  "
        f"in progress {status.get('inProgress', 0)}  failed {status.get('failed', 0)}  "
        f"batches so far {len(result.batches)}"
    )
    return Group(table, overall)


def summary_table(results: Sequence[RolloutResult], nodes: int) -> Table:
    table = Table(title="summary")
    for column in ("phase", "outcome", "wall time", "nodes", "batches", "failed nodes"):
        table.add_column(column)
    for result in results:
        table.add_row(result.title, result.outcome, f"{result.seconds:.1f} s", str(nodes),
                      str(len(result.batches)), ", ".join(result.failed_nodes) or "none")
    return table


def batches_table(result: RolloutResult) -> Table:
    table = Table(title=f"{result.title}: batches (nodes first seen assigned together)")
    for column in ("#", "started at", "nodes", "slowest node"):
        table.add_column(column)
    for index, batch in enumerate(result.batches, start=1):
        rows = [result.nodes[n] for n in batch]
        started = min(r.started or 0.0 for r in rows)
        took = [(r.finished - r.started) for r in rows
                if r.finished is not None and r.started is not None]
        slowest = f"{max(took):.1f} s" if took else "unfinished"
        table.add_row(str(index), f"{started:.1f} s", ", ".join(batch), slowest)
    return table


def print_failures(console: Console, result: RolloutResult) -> None:
    for row in result.nodes.values():
        if row.phase == "Failed" or row.name in result.failed_nodes:
            console.print(f"[red]{row.name}[/red]: {row.error or 'failed'} "
                          f"(now {row.os_image}, slot {row.slot})")
