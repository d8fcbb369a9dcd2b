"""Running external programs: argv lists only, never a shell, children die with the builder.

The builder must leave nothing behind when it is killed (even with SIGKILL, which no handler
sees). Each child therefore asks the kernel to kill it when its parent dies (PR_SET_PDEATHSIG),
so an interrupted build stops writing at once instead of racing the next build's cleanup.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from kubeos.kbimg.errors import BuildError

_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGKILL it when the builder dies."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _load_libc() -> None:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:  # pragma: no cover - every Linux libc has prctl
            _libc = None


def require(program: str) -> str:
    """Full path of ``program``; a clear error naming the apt package helps more than ENOENT."""
    found = shutil.which(program)
    if found is None:
        raise BuildError(f"required program {program!r} not found in PATH (see hack/setup.sh)")
    return found


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    input: bytes | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = True,
) -> str:
    """Run ``argv`` (no shell) and return its stdout; a failure raises BuildError with stderr.

    ``input`` is fed through a pipe, which is how secrets and scripts reach a child without
    touching the disk or the process list.
    """
    _load_libc()
    args = [os.fspath(a) for a in argv]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(
            args,
            input=input,
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            preexec_fn=_die_with_parent,  # no threads start children here
            check=False,
        )
    except FileNotFoundError as exc:
        raise BuildError(f"required program {args[0]!r} not found in PATH") from exc
    if proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip()
        tail = "\n".join(err.splitlines()[-15:])
        raise BuildError(f"{args[0]} failed with status {proc.returncode}: {tail}")
    return (proc.stdout or b"").decode(errors="replace")
