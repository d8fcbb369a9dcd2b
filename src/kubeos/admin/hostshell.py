#!/usr/bin/env python3
"""hostshell: a root shell on the node, opened from the admin container.

KubeOS hosts are minimal and immutable, so an administrator logs in to a privileged admin
container (sshd, ``hostPID: true``) and runs ``hostshell`` there. hostshell enters every
namespace of host PID 1 and starts a shell whose PATH holds the host's directories first and the
admin container's ``/usr/bin``, ``/usr/sbin``, ``/usr/local/bin`` and ``/usr/local/sbin`` after
them, so the tools baked into the admin image are usable on the host without installing them
there. ``hostshell -- CMD ARGS...`` runs one command instead and exits with its status.

The container's files are reached as ``R = /proc/<parent>/root``: the root of hostshell's parent
(the login shell in the container) as seen through the host's ``/proc``. That path stays valid
after the switch to the host's mount namespace, which is why the parent is used and not
hostshell itself: hostshell becomes nsenter, whose own root moves to the host's.

Differences from the reference (Go) tool, each on purpose:

* It refuses to run unless the effective uid is 0; the reference logs and carries on into a
  confusing nsenter failure.
* It checks that it shares the PID namespace that ``/proc`` shows and that PID 1 is in another
  mount namespace, and says "hostPID: true" when not. Without hostPID, PID 1 is the container's
  own init and "entering" it silently gives a shell in the container; with a PID namespace of
  its own but the host's ``/proc``, ``R`` would name the wrong process, ``nsenter -a`` skips
  every namespace (it looks itself up as ``/proc/<getpid()>``) and the kernel refuses to join
  an ancestor PID namespace anyway.
* Empty PATH/LD_LIBRARY_PATH entries are dropped: the reference's ``$LD_LIBRARY_PATH:...`` with an
  unset variable yields a leading empty entry, which the loader reads as the current directory.
* The interactive shell is the host's ``/bin/bash`` when the host has one, and the container's
  ``R/usr/bin/bash`` (the reference's choice) only otherwise. A host binary runs with the host's
  loader and libraries; the container's bash runs with the *host's* ``ld.so`` and whichever libc
  LD_LIBRARY_PATH finds first, which works only while the two distributions' glibc match.
* The environment is cleared by handing nsenter a fresh one (``execve``) instead of chaining
  ``env -i``; only PATH, LD_LIBRARY_PATH, TERM and HOME reach the shell.

Namespaces are entered with ``nsenter -t 1 -a`` (util-linux, installed in the admin image) rather
than ``setns(2)`` through ctypes: entering a PID namespace only affects children, so a fork and a
wait that forwards the exit status and signals are needed anyway; the user namespace must be
entered first and skipped when it is already ours; and a mount namespace cannot be entered by a
multi-threaded process. nsenter does all of that, and is what the reference runs.

This module uses only the standard library and runs on Python 3.7+, because the admin image
ships it as a plain script (``deploy/admin-container/hostshell`` is a verbatim copy).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping, Sequence
from typing import NamedTuple

#: Container directories appended to PATH, in this order (the reference's list).
CONTAINER_BIN_DIRS = ("usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin")
#: Container directories appended to LD_LIBRARY_PATH, in this order (the reference's list).
CONTAINER_LIB_DIRS = ("usr/lib", "usr/lib64", "lib", "lib64")
#: Where util-linux puts nsenter on the distributions an admin image is built from. A fixed list,
#: not a PATH search: this runs as root and should not run whatever "nsenter" PATH offers first.
NSENTER_PATHS = ("/usr/bin/nsenter", "/bin/nsenter", "/usr/sbin/nsenter", "/sbin/nsenter")
#: The PATH used when hostshell's own environment has none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Root's home on the host, where the shell lands.
HOST_HOME = "/root"

USAGE = """\
usage: hostshell [-- COMMAND [ARG...]]

Open a root shell on the host from the KubeOS admin container (which must run privileged with
hostPID: true). With a COMMAND, run it on the host instead and exit with its status.
The host's PATH comes first; the admin container's /usr/bin, /usr/sbin, /usr/local/bin and
/usr/local/sbin follow, so the container's tools work on the host.
"""


class HostshellError(Exception):
    """A condition that stops hostshell before it execs; the message is for the operator."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Plan(NamedTuple):
    """What hostshell will exec: kept separate from the exec so it can be tested and printed."""

    executable: str
    argv: list[str]
    env: dict[str, str]


def parse_args(args: Sequence[str]) -> list[str] | None:
    """Return the command to run, or None for an interactive shell.

    ``--`` is the documented form; a bare ``hostshell CMD`` is accepted too because nothing else
    could be meant, but an unknown option is an error so typos are not run as commands.
    """
    if not args:
        return None
    first = args[0]
    if first == "--":
        return list(args[1:]) or None
    if first in ("-h", "--help"):
        raise HostshellError(USAGE.rstrip("\n"), exit_code=0)
    if first.startswith("-"):
        raise HostshellError(f"unknown option {first!r}\n{USAGE}", exit_code=2)
    return list(args)


def join_search_path(first: str | None, root: str, subdirs: Sequence[str]) -> str:
    """Build ``first:root/d1:root/d2...`` without empty entries.

    An empty entry means "the current directory" to both the shell and the dynamic loader, so a
    root shell must never inherit one by accident.
    """
    entries = [e for e in (first or "").split(":") if e]
    entries.extend(os.path.join(root, d) for d in subdirs)
    return ":".join(entries)


def resolve_in_root(root: str, path: str, max_links: int = 40) -> str | None:
    """Resolve ``path`` as if ``root`` were ``/``, returning the real path or None if missing.

    Used to look at the host's files through ``/proc/1/root`` before switching namespaces: a
    plain path walk would follow an absolute symlink (``/bin -> /usr/bin``) into *our* root.
    """
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            links += 1
            if links > max_links:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _is_executable_file(path: str | None) -> bool:
    return path is not None and os.path.isfile(path) and os.access(path, os.X_OK)


def choose_shell(host_root: str, container_root: str) -> str:
    """Pick the interactive shell, as a path valid after entering the host's mount namespace.

    Host bash first (host loader, host libraries: always consistent), the container's bash as the
    reference does when the host has none, host ``/bin/sh`` as the last resort.
    """
    for candidate in ("/bin/bash", "/usr/bin/bash"):
        if _is_executable_file(resolve_in_root(host_root, candidate)):
            return candidate
    container_bash = os.path.join(container_root, "usr/bin/bash")
    if _is_executable_file(container_bash):
        return container_bash
    if _is_executable_file(resolve_in_root(host_root, "/bin/sh")):
        return "/bin/sh"
    raise HostshellError(f"no shell found: neither the host nor {container_root} has bash or sh")


def find_nsenter(candidates: Sequence[str] = NSENTER_PATHS) -> str:
    """The nsenter binary of the admin container; a clear error when util-linux is missing."""
    for candidate in candidates:
        if _is_executable_file(candidate):
            return candidate
    raise HostshellError(
        "nsenter not found (looked in " + ", ".join(candidates) + "): install util-linux "
        "in the admin container",
        exit_code=127,
    )


def check_host_namespaces(proc: str = "/proc") -> None:
    """Refuse unless we share the PID namespace of ``proc`` and PID 1 is in another mount one.

    Both conditions are what ``hostPID: true`` gives a pod. Run on the host itself, the mount
    test fails too, and there is nothing to enter.
    """
    hint = "the admin container must run privileged with hostPID: true"
    try:
        proc_pid = int(os.readlink(os.path.join(proc, "self")))
        same_mnt = os.readlink(os.path.join(proc, "self", "ns", "mnt")) == os.readlink(
            os.path.join(proc, "1", "ns", "mnt"))
    except OSError as err:
        raise HostshellError(
            f"cannot inspect {err.filename} ({err.strerror}): {hint}") from err
    if proc_pid != os.getpid():
        raise HostshellError(
            f"this process is PID {os.getpid()} in a PID namespace of its own but "
            f"PID {proc_pid} in {proc}, so PID 1 there cannot be entered: {hint}")
    if same_mnt:
        raise HostshellError(
            f"PID 1 shares this process's mount namespace, so there is no host to enter: {hint} "
            "(or you are on the host already)")


def make_plan(
    command: Sequence[str] | None,
    environ: Mapping[str, str],
    proc: str = "/proc",
    nsenter: str | None = None,
) -> Plan:
    """Work out the exec of ``nsenter -t 1 -a`` with the container tools on PATH.

    The environment given to nsenter is the shell's whole environment: nsenter passes it on, so
    nothing else from the container (SSH_*, LANG, container variables) leaks onto the host.
    """
    container_root = os.path.join(proc, str(os.getppid()), "root")
    if not os.path.isdir(container_root):
        raise HostshellError(f"cannot see the admin container's root at {container_root}")
    env = {
        "PATH": join_search_path(environ.get("PATH") or DEFAULT_PATH, container_root,
                                 CONTAINER_BIN_DIRS),
        "LD_LIBRARY_PATH": join_search_path(environ.get("LD_LIBRARY_PATH"), container_root,
                                            CONTAINER_LIB_DIRS),
        "HOME": HOST_HOME,
    }
    if environ.get("TERM"):
        env["TERM"] = environ["TERM"]
    if command is None:
        command = [choose_shell(os.path.join(proc, "1", "root"), container_root)]
    executable = nsenter or find_nsenter()
    argv = [executable, "--target", "1", "--all", "--", *command]
    return Plan(executable, argv, env)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hostshell`` console script; returns only on failure."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        command = parse_args(args)
        euid = os.geteuid()
        if euid != 0:
            raise HostshellError(
                f"must be run as root (effective uid is {euid}): log in to the admin "
                "container as root"
            )
        check_host_namespaces()
        plan = make_plan(command, os.environ)
    except HostshellError as err:
        stream = sys.stdout if err.exit_code == 0 else sys.stderr
        prefix = "" if err.exit_code == 0 else "hostshell: "
        print(f"{prefix}{err}", file=stream)
        return err.exit_code
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(plan.executable, plan.argv, plan.env)
    except OSError as err:
        print(f"hostshell: cannot run {plan.executable}: {err.strerror}", file=sys.stderr)
        return 126


if __name__ == "__main__":
    sys.exit(main())
