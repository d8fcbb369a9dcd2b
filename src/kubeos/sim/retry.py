"""Retrying the simulator's own API calls through an API-server restart.

The product's components survive a restarting API server (informers re-list, writes are
retried by the next reconcile); the simulator's helpers (the kubelet stand-in, the slow-drain
workloads) must too, or a chaos run would report their failures as the product's.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx2
from lightkube.core.exceptions import ApiError

log = logging.getLogger(__name__)

T = TypeVar("T")


def transient(error: BaseException) -> bool:
    """Connection trouble, a timeout, or an answer that says "try again later"."""
    if isinstance(error, ApiError):
        return error.status.code in (429, 500, 502, 503, 504)
    return isinstance(error, httpx2.TransportError | OSError | TimeoutError)


async def retrying(call: Callable[[], Awaitable[T]], *, what: str, deadline: float = 180.0,
                   base: float = 0.2, cap: float = 2.0) -> T:
    """``await call()``, again after transient errors (jittered backoff), for *deadline* s."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as error:
            if not transient(error) or loop.time() > give_up:
                raise
            attempt += 1
            if attempt == 1 or attempt % 10 == 0:
                log.info("%s: %s; retrying", what, error or type(error).__name__)
            await asyncio.sleep(min(cap, base * 2 ** min(attempt, 10)) * random.uniform(0.8, 1.2))
