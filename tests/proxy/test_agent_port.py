"""How agent failures become the proxy's view: reachable, busy, legacy or unreachable."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kubeos.agent.client import AsyncAgentClient
from kubeos.agent.errors import (
    BUSY,
    METHOD_NOT_FOUND,
    AgentConnectionError,
    AgentRpcError,
    AgentTimeoutError,
)
from kubeos.proxy.agent_port import agent_view, is_transient


class Raising:
    def __init__(self, error: BaseException | None = None, delay: float = 0.0) -> None:
        self.error, self.delay = error, delay

    async def status(self) -> object:
        await asyncio.sleep(self.delay)
        assert self.error is not None
        raise self.error


async def test_status_errors_map_to_views(tmp_path: Path) -> None:
    legacy = await agent_view(Raising(AgentRpcError("Method not found",
                                                    code=METHOD_NOT_FOUND)), 1)
    assert legacy.reachable and legacy.legacy and legacy.committed
    busy = await agent_view(Raising(AgentRpcError("busy", code=BUSY)), 1)
    assert busy.reachable and busy.busy
    down = await agent_view(Raising(AgentConnectionError("Cannot connect")), 1)
    assert not down.reachable and "Cannot connect" in down.error
    slow = await agent_view(Raising(AgentTimeoutError("x"), delay=5), 0.1)
    assert not slow.reachable and "within 0.1 s" in slow.error
    real = await agent_view(AsyncAgentClient(tmp_path / "none.sock", connect_timeout=0.5), 1)
    assert not real.reachable and "os-agent unix socket" in real.error


def test_transient_errors() -> None:
    assert is_transient(AgentConnectionError("gone"))
    assert is_transient(AgentTimeoutError("slow"))
    assert is_transient(AgentRpcError("os-agent is processing another request", code=-1))
    assert not is_transient(AgentRpcError("checksum mismatch", code=-1))
    assert not is_transient(ValueError("bug"))


async def test_a_stop_is_never_lost_when_the_agent_fails_at_that_moment() -> None:
    """os-proxy must stop on SIGINT/SIGTERM even if the agent call ends in the same loop turn.

    Python 3.11's ``asyncio.wait_for`` returns the inner result (here: raises the agent error,
    which becomes an "unreachable" view) when the cancellation and the inner call's end meet,
    and the cancellation is lost; the proxy then kept polling after SIGINT. Every turn offset
    is tried, so one of them lands on the race.
    """
    requested = 0
    for turns in range(8):
        task = asyncio.create_task(agent_view(Raising(AgentConnectionError("gone")), 5))
        for _ in range(turns):
            await asyncio.sleep(0)
        if not task.cancel():
            await task  # it had already finished: there was nothing to cancel
            continue
        requested += 1
        try:
            view = await task
        except asyncio.CancelledError:
            continue
        raise AssertionError(f"cancellation after {turns} loop turns was lost: {view}")
    assert requested >= 2  # the offsets did reach into the call
