"""A fake node for hostshell tests: a "host" PID namespace and an admin "container" inside it.

The real PID 1 of a test machine may be off limits (or may be the very sandbox that runs the
tests), so the test builds its own node:

* ``host`` mode runs as PID 1 of a new PID namespace with its own ``/proc`` (``unshare --pid
  --mount --fork --mount-proc``). It plays the node's init, whose namespaces hostshell must enter.
* ``container`` mode runs in new mount, UTS, IPC, network and cgroup namespaces but the "host"
  PID namespace and its ``/proc`` (no remount): that is what a ``hostPID: true`` pod is, and a
  container with a PID namespace of its own could not join the host's anyway (the kernel refuses
  ``setns`` into an ancestor PID namespace with EINVAL). It builds a private root (the host's
  ``/usr`` overlaid with a container-only tool, the Python environment bind-mounted read-only),
  chroots into it and runs hostshell from there.

Each mode prints one JSON document on stdout; the test reads the host's.

Usage: python nsrig.py host SPEC_JSON   (SPEC_JSON: {"tree": dir, "usr_extra": dir, "runs": [...]})
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
UNSHARE = "/usr/bin/unshare"
MOUNT = "/usr/bin/mount"
TIMEOUT = 120


def namespaces(pid: str = "self") -> dict[str, str]:
    """readlink of /proc/<pid>/ns/* for the namespace kinds the kernel offers."""
    found = {}
    for name in NAMESPACES:
        try:
            found[name] = os.readlink(f"/proc/{pid}/ns/{name}")
        except FileNotFoundError:
            continue
    return found


def run(argv: list[str], stdin: str | None = None) -> dict[str, Any]:
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    return {"argv": argv, "rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def mount(*args: str) -> None:
    subprocess.run([MOUNT, *args], check=True, timeout=TIMEOUT)


def host(spec: dict[str, Any]) -> dict[str, Any]:
    """PID 1 of the fake node: start the container, and try hostshell on the host itself."""
    result: dict[str, Any] = {"pid": os.getpid(), "ns": namespaces()}
    container = run(
        [
            UNSHARE, "--mount", "--uts", "--ipc", "--net", "--cgroup", "--fork", "--",
            sys.executable, __file__, "container", json.dumps(spec),
        ]
    )
    try:
        result["container"] = json.loads(container["stdout"])
    except json.JSONDecodeError:
        result["container"] = {"error": container}
    # Run on the host, hostshell has no other namespaces to enter and must say so.
    result["on_host"] = run([*spec["hostshell"], "--", "true"])
    # A pod without hostPID: its own PID namespace *and* its own /proc.
    result["without_hostpid"] = run(
        [UNSHARE, "--pid", "--mount", "--fork", "--mount-proc", "--", *spec["hostshell"], "--",
         "true"]
    )
    # Its own PID namespace but the host's /proc: nothing would work, it must say why.
    result["own_pid_namespace"] = run(
        [UNSHARE, "--pid", "--mount", "--fork", "--", *spec["hostshell"], "--", "true"]
    )
    return result


def build_root(spec: dict[str, Any]) -> Path:
    """A container root: the host's /usr with the container's extra tools on top."""
    tree = Path(spec["tree"])
    for name in ("usr", "etc", "proc", "dev", "tmp"):
        (tree / name).mkdir(parents=True, exist_ok=True)
    # Read-only overlay: the container's own files first, the host's /usr under them.
    mount("-t", "overlay", "overlay", "-o", f"lowerdir={spec['usr_extra']}:/usr", str(tree / "usr"))
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top = Path("/", name)
        if top.is_symlink():
            (tree / name).symlink_to(os.readlink(top))
        elif top.is_dir():
            (tree / name).mkdir()
            mount("--bind", "-o", "ro", str(top), str(tree / name))
    mount("--bind", "-o", "ro", "/etc", str(tree / "etc"))
    # The host's /proc as it is: no remount, as with hostPID: true.
    mount("--rbind", "/proc", str(tree / "proc"))
    mount("--rbind", "/dev", str(tree / "dev"))
    mount("-t", "tmpfs", "tmpfs", str(tree / "tmp"))
    for path in spec["bind"]:
        target = tree / path.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        mount("--bind", "-o", "ro", path, str(target))
    return tree


def container(spec: dict[str, Any]) -> dict[str, Any]:
    """PID 1 of the admin container: chroot into its root and run hostshell as a child."""
    result: dict[str, Any] = {"proc_self": os.readlink("/proc/self")}
    tree = build_root(spec)
    os.chroot(tree)
    os.chdir("/")
    result["ns"] = namespaces()
    result["runs"] = [run([*spec["hostshell"], *r["args"]], r.get("stdin")) for r in spec["runs"]]
    return result


if __name__ == "__main__":
    mode, spec_json = sys.argv[1], sys.argv[2]
    spec = json.loads(spec_json)
    out = host(spec) if mode == "host" else container(spec)
    print(json.dumps(out))
