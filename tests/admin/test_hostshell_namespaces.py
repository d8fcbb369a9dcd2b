"""hostshell end to end: from an admin "container" into the namespaces of "host" PID 1.

Needs root and unshare; the fake node is built by ``nsrig.py`` (see there why it is fake).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kubeos

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and mounts"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare"),
]

RIG = Path(__file__).with_name("nsrig.py")
MARKER = "kubeos-admin-marker"
MARKER_OUTPUT = "marker from the admin container"
# The namespaces an admin pod has of its own; the shell must have left every one of them.
CONTAINER_OWN = {"cgroup", "ipc", "mnt", "net", "uts"}

PROBE = f"""\
echo "PATH=$PATH"
echo "MARKER=$(command -v {MARKER})"
{MARKER}
echo "PID=$$"
for n in cgroup ipc mnt net pid time user uts; do
    [ -e /proc/$$/ns/$n ] && echo "NS $n $(readlink /proc/$$/ns/$n) $(readlink /proc/1/ns/$n)"
done
env | sed 's/^/ENV /'
exit 7
"""


def hostshell_argv() -> list[str]:
    """The installed console script when there is one, so its wrapper is exercised too."""
    script = Path(sys.prefix, "bin", "hostshell")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "kubeos.admin.hostshell"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the rig once: one fake node, several hostshell invocations."""
    base = tmp_path_factory.mktemp("node")
    usr_extra = base / "usr-extra"
    (usr_extra / "bin").mkdir(parents=True)
    marker = usr_extra / "bin" / MARKER
    marker.write_text(f"#!/bin/sh\necho '{MARKER_OUTPUT}'\n")
    marker.chmod(0o755)
    src = Path(kubeos.__file__).resolve().parents[1]
    binds = sorted({sys.prefix, sys.base_prefix, str(src)})
    spec = {
        "tree": str(base / "root"),
        "usr_extra": str(usr_extra),
        "bind": binds,
        "hostshell": hostshell_argv(),
        "runs": [
            {"args": ["--", "sh", "-c", PROBE]},
            {"args": [], "stdin": 'echo "SHELL=$0"\nreadlink /proc/$$/ns/mnt\nexit 3\n'},
        ],
    }
    done = subprocess.run(
        ["unshare", "--pid", "--mount", "--fork", "--mount-proc", "--",
         sys.executable, str(RIG), "host", json.dumps(spec)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert "error" not in result["container"], result["container"]
    return result


def parse_probe(stdout: str) -> dict[str, Any]:
    lines = stdout.splitlines()
    values = dict(line.split("=", 1) for line in lines if line[:1].isupper() and "=" in line
                  and not line.startswith(("NS ", "ENV ")))
    ns = {}
    for line in lines:
        if line.startswith("NS "):
            _, name, own, init = line.split(" ")
            ns[name] = (own, init)
    env = dict(line[4:].split("=", 1) for line in lines if line.startswith("ENV "))
    return {"values": values, "ns": ns, "env": env, "lines": lines}


def test_the_rig_is_a_real_admin_container(node: dict[str, Any]) -> None:
    """Guard the test's own premise: the container differs from the host where a pod does."""
    host_ns, container_ns = node["ns"], node["container"]["ns"]
    assert node["pid"] == 1
    for name in CONTAINER_OWN:
        assert container_ns[name] != host_ns[name], name
    # hostPID: true: the host's PID namespace and its /proc, where the container is not PID 1.
    assert container_ns["pid"] == host_ns["pid"]
    assert node["container"]["proc_self"] != "1"
    assert not Path("/usr/bin", MARKER).exists()


def test_shell_shares_the_namespaces_of_pid_1(node: dict[str, Any]) -> None:
    run = node["container"]["runs"][0]
    assert run["rc"] == 7, run["stderr"]
    probe = parse_probe(run["stdout"])
    assert set(probe["ns"]) >= CONTAINER_OWN | {"pid", "user"}
    for name, (own, init) in probe["ns"].items():
        assert own == init, f"{name}: shell {own}, PID 1 {init}"
        assert own == node["ns"][name], name


def test_container_tools_follow_the_host_path(node: dict[str, Any]) -> None:
    run = node["container"]["runs"][0]
    probe = parse_probe(run["stdout"])
    path = probe["values"]["PATH"].split(":")
    container_dirs = [p for p in path if p.startswith("/proc/")]
    root = container_dirs[0].rsplit("/usr/", 1)[0]
    assert root.endswith("/root")
    assert container_dirs == [f"{root}/usr/bin", f"{root}/usr/sbin", f"{root}/usr/local/bin",
                              f"{root}/usr/local/sbin"]
    assert path.index(container_dirs[0]) > path.index("/usr/bin"), "host directories come first"
    assert "" not in path
    assert probe["values"]["MARKER"] == f"{root}/usr/bin/{MARKER}"
    assert MARKER_OUTPUT in probe["lines"]
    assert probe["env"]["LD_LIBRARY_PATH"].split(":") == [
        f"{root}/usr/lib", f"{root}/usr/lib64", f"{root}/lib", f"{root}/lib64"]


def test_environment_is_clean(node: dict[str, Any]) -> None:
    probe = parse_probe(node["container"]["runs"][0]["stdout"])
    # sh adds PWD (and may add SHLVL/_ and OLDPWD); nothing may come from the container.
    assert set(probe["env"]) - {"PWD", "SHLVL", "_", "OLDPWD"} <= {
        "PATH", "LD_LIBRARY_PATH", "HOME", "TERM"}
    assert probe["env"]["HOME"] == "/root"


def test_interactive_mode_runs_the_host_bash(node: dict[str, Any]) -> None:
    run = node["container"]["runs"][1]
    assert run["rc"] == 3, run["stderr"]
    lines = run["stdout"].splitlines()
    assert lines[0] in ("SHELL=/bin/bash", "SHELL=/usr/bin/bash")
    assert lines[1] == node["ns"]["mnt"]


def test_refuses_when_pid_1_is_not_elsewhere(node: dict[str, Any]) -> None:
    for case in ("on_host", "without_hostpid", "own_pid_namespace"):
        run = node[case]
        assert run["rc"] == 1, (case, run)
        assert "hostPID: true" in run["stderr"], (case, run["stderr"])
