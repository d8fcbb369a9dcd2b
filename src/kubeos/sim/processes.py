"""Child processes that cannot outlive the Python process that started them.

A test run killed with SIGKILL (a CI timeout, an impatient Ctrl-C twice) never runs ``finally``
blocks, and an orphaned etcd or kube-apiserver keeps ports and memory until the machine dies.
So every child gets ``PR_SET_PDEATHSIG`` = SIGKILL: the kernel kills it when its parent goes.
Each child also leads its own process group so that stopping it reaches anything it forked,
and so a Ctrl-C in the terminal reaches only us, letting us stop the children in order.

Caveat (documented by the kernel): the death signal fires when the *thread* that forked the
child exits. Start control planes from a long-lived thread (the main thread in tests and CLIs).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _death_signal_preexec(parent_pid: int) -> Callable[[], None]:
    """Return a ``preexec_fn`` that arms the parent-death signal in the forked child."""

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl; then the signal never comes.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


class ManagedProcess:
    """One long-running child with its log file; stops its whole process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_death_signal_preexec(os.getpid()),
                close_fds=True,
            )

    @property
    def pid(self) -> int:
        """The child's process id (also its process group id)."""
        return self._popen.pid

    def returncode(self) -> int | None:
        """The exit status if the child has exited, else None (without blocking)."""
        return self._popen.poll()

    def log_tail(self, lines: int = 40) -> str:
        """The end of the child's output, for error messages that explain a failed start."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it has not exited within *timeout*."""
        if self._popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._popen.wait()

    def kill(self) -> None:
        """SIGKILL the process group and reap it (a crash, for chaos runs)."""
        if self._popen.poll() is None:
            self._signal_group(signal.SIGKILL)
            self._popen.wait()

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)
