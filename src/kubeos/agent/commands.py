"""Running external tools (mkfs.ext4, mount, umount, e2label, systemctl) by argv.

Arguments are always a list and never pass through a shell, so no request text can become a
command. Failures become :class:`AgentError` subclasses carrying the tool's stderr, because
"exit status 1" alone tells an operator nothing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from kubeos.agent.errors import AgentError


def run_tool(
    argv: Sequence[str],
    *,
    error: type[AgentError] = AgentError,
    timeout: float = 600.0,
) -> str:
    """Run ``argv``; return stdout, or raise ``error`` naming the tool and its stderr."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise error(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise error(f"{argv[0]} did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        tail = detail[-1] if detail else f"exit status {proc.returncode}"
        raise error(f"{argv[0]} failed: {tail}")
    return proc.stdout
