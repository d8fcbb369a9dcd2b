"""The proxy's view of the os-agent: the methods it calls, and a status that never raises.

The controller talks to whatever the factory returns: :class:`kubeos.agent.client.
AsyncAgentClient` on a node, a client per simulated node in the simulator. Every call is a
coroutine with a timeout (the client's own, plus an outer bound here), so a hung agent never
blocks the event loop or the other nodes' controllers in the same process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from kubeos.agent.client import (
    ConfigureRequest,
    OperationResult,
    StatusResult,
    UpgradeRequest,
)
from kubeos.agent.errors import AgentClientError, AgentRpcError
from kubeos.proxy.snapshot import AgentView


class AgentApi(Protocol):
    """The agent methods the proxy uses (the reference's four plus additive status/commit)."""

    async def status(self) -> StatusResult: ...

    async def prepare_upgrade(self, request: UpgradeRequest) -> OperationResult: ...

    async def upgrade(self, version: str | None = None) -> OperationResult: ...

    async def rollback(self, version: str | None = None) -> OperationResult: ...

    async def configure(self, request: ConfigureRequest) -> OperationResult: ...

    async def commit(self) -> OperationResult: ...


AgentFactory = Callable[[], AgentApi]


def is_transient(error: BaseException) -> bool:
    """Errors worth retrying: no connection, no answer, or the agent busy with another call.

    An error the agent *answers* with (bad request, checksum mismatch, slot not bootable) is
    not transient: retrying it would loop as the reference does.
    """
    if isinstance(error, AgentRpcError):
        return error.is_busy
    return isinstance(error, AgentClientError | TimeoutError | OSError)


async def agent_view(agent: AgentApi, timeout: float) -> AgentView:
    """The agent's status, or an unreachable view saying why; never raises."""
    try:
        async with asyncio.timeout(timeout):
            status = await agent.status()
        return AgentView.from_status(status)
    except AgentRpcError as error:
        if error.is_method_not_found:
            return AgentView(reachable=True, legacy=True)
        if error.is_busy:
            return AgentView(reachable=True, busy=str(error))
        return AgentView.unreachable(f"status failed: {error}")
    except TimeoutError:
        return AgentView.unreachable(f"no answer to status within {timeout:g} s")
    except (AgentClientError, OSError) as error:
        return AgentView.unreachable(str(error) or type(error).__name__)
