"""``kubeos-sim controlplane`` by hand, and the no-orphans promise when the parent is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lightkube import Client, KubeConfig
from lightkube.resources.core_v1 import Namespace

pytestmark = pytest.mark.cluster

KUBEOS_SIM = Path(sys.executable).with_name("kubeos-sim")


def _descendants(pid: int) -> set[int]:
    """All live descendants of *pid*, from /proc (children re-parented away are missed on
    purpose: PR_SET_PDEATHSIG kills them the moment their parent dies)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_dead(pids: set[int], timeout: float = 15) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = {p for p in pids if _alive(p)}
        if not alive:
            return alive
        time.sleep(0.1)
    return {p for p in pids if _alive(p)}


def _start_cli(kubeconfig: Path) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen(
        [str(KUBEOS_SIM), "controlplane", "--kubeconfig-out", str(kubeconfig)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()  # blocks until ready (or exit)
    if not line:
        process.wait(10)
        pytest.fail(f"kubeos-sim controlplane exited: {process.stderr and process.stderr.read()}")
    return process, Path(line)


def test_cli_serves_until_sigterm_and_cleans_up(tmp_path: Path) -> None:
    process, printed = _start_cli(tmp_path / "kubeconfig")
    try:
        assert printed == tmp_path / "kubeconfig"
        client = Client(config=KubeConfig.from_file(printed), trust_env=False)
        assert client.get(Namespace, "default").metadata is not None
        client.close()
        children = _descendants(process.pid)
        assert len(children) == 3  # etcd, kube-apiserver, kube-controller-manager
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert _wait_dead(children) == set()
    assert not printed.exists()


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    process, _ = _start_cli(tmp_path / "kubeconfig")
    children = _descendants(process.pid)
    assert len(children) == 3
    os.kill(process.pid, signal.SIGKILL)  # no cleanup code runs in the parent
    process.wait(10)
    assert _wait_dead(children) == set(), "control-plane processes outlived their parent"
