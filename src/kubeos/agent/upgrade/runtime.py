"""argv runners for the container runtimes' CLIs (``ctr``, ``crictl``, ``docker``).

Every call is an argv list with a timeout: a reference from a request is one argument and
never meets a shell, and a hung runtime (a registry that accepts the connection and then says
nothing) cannot hold the agent's single operation slot forever. Failures keep the tool's last
stderr line because "exit status 1" tells an operator nothing, and the callers need the text to
tell "image not found" apart from "registry unreachable".
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from kubeos.agent.errors import AgentError, UpgradeError

DEFAULT_TIMEOUT = 120.0


class ToolFailed(Exception):
    """A runtime command failed; ``detail`` is its last stderr (or stdout) line."""

    def __init__(self, argv: Sequence[str], detail: str) -> None:
        super().__init__(f"{argv[0]} {' '.join(argv[1:3])}: {detail}")
        self.argv = list(argv)
        self.detail = detail


def _tail(text: str, returncode: int) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit status {returncode}"


@dataclass(frozen=True)
class Tool:
    """One CLI with its fixed leading arguments (e.g. ``ctr --address X -n k8s.io``)."""

    prefix: tuple[str, ...]
    timeout: float = DEFAULT_TIMEOUT

    @property
    def name(self) -> str:
        return self.prefix[0]

    def argv(self, *args: str) -> list[str]:
        return [*self.prefix, *args]

    def run(self, *args: str, timeout: float | None = None) -> str:
        """Run and return stdout; raise :class:`ToolFailed` on a non-zero exit or a timeout."""
        argv = self.argv(*args)
        limit = self.timeout if timeout is None else timeout
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=limit, check=False
            )
        except FileNotFoundError:
            raise ToolFailed(argv, f"{argv[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise ToolFailed(argv, f"no answer within {limit:g} s") from None
        if proc.returncode != 0:
            raise ToolFailed(argv, _tail(proc.stderr or proc.stdout, proc.returncode))
        return proc.stdout

    def ok(self, *args: str) -> bool:
        """Whether the command succeeds (for existence checks such as ``image inspect``)."""
        try:
            self.run(*args)
        except ToolFailed:
            return False
        return True

    def check(self, *args: str, error: type[AgentError] = UpgradeError,
              what: str = "", timeout: float | None = None) -> str:
        """:meth:`run`, with a failure turned into ``error`` ("<what> failed: <detail>")."""
        try:
            return self.run(*args, timeout=timeout)
        except ToolFailed as exc:
            raise error(f"{what or self.name} failed: {exc.detail}") from None

    @contextlib.contextmanager
    def stream(self, *args: str, timeout: float | None = None) -> Iterator[IO[bytes]]:
        """Run the command and yield its stdout as a byte stream (``docker cp ... -``).

        The process is killed when the consumer stops early or the timeout expires; leaving the
        block after a clean read checks the exit status, so a stream that ended because the
        tool failed is never mistaken for a complete one.
        """
        argv = self.argv(*args)
        limit = self.timeout if timeout is None else timeout
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
            except FileNotFoundError:
                raise ToolFailed(argv, f"{argv[0]} is not installed") from None
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                proc.kill()

            timer = threading.Timer(limit, expire)
            timer.daemon = True
            timer.start()
            assert proc.stdout is not None
            try:
                yield proc.stdout
            except BaseException:
                proc.kill()
                raise
            finally:
                timer.cancel()
                proc.stdout.close()
                code = proc.wait()
            if expired.is_set():
                raise ToolFailed(argv, f"no end of output within {limit:g} s")
            if code != 0:
                err.seek(0)
                detail = _tail(err.read().decode(errors="replace"), code)
                raise ToolFailed(argv, detail)
