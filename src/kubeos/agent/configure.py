"""``configure``: hand the request to the settings engine and report what it did.

Kept apart from the service so that the RPC layer depends on one function, not on the engine's
internals. Service restarts go through systemd with constant unit names chosen by the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from kubeos.agent.errors import ConfigureError
from kubeos.agent.messages import CONFIGURED
from kubeos.agent.settings.engine import apply_settings
from kubeos.agent.settings.errors import ServiceRestartError, SettingsError
from kubeos.agent.settings.request import parse_request

RestartHook = Callable[[str], None]


def run_configure(
    request: Any, *, root: Path, booted_slot: str, restart: RestartHook | None,
    persist_dirs: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Apply a ``ConfigureRequest``; all or nothing. Returns ``{"status": "Configured", ...}``
    with the engine's summary (changed files, effects, restarts, warnings)."""
    slot: Literal["A", "B"] = "B" if booted_slot == "B" else "A"
    try:
        parsed = parse_request(request)
        result = apply_settings(parsed.configs, root=root, booted_slot=slot, restart=restart,
                                persist_dirs=persist_dirs)
    except ServiceRestartError as exc:
        raise ConfigureError(f"settings written, but a service restart failed: {exc}") from None
    except SettingsError as exc:
        raise ConfigureError(str(exc)) from None
    return {"status": CONFIGURED, **result.to_dict()}
