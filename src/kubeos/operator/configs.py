"""What the operator copies from an OS into a node's OSInstance.

The one non-obvious rule (reference §3.3): for an upgrade or rollback, settings in
``sysconfigs`` are applied *after* the reboot, when "current" and "next" boot entries have
traded places; so the copy swaps the models ``grub.cmdline.current`` and
``grub.cmdline.next``. ``upgradeconfigs`` run before the reboot and are copied unchanged, as
are the sysconfigs of a plain config operation. The OS itself is never modified.
"""

from __future__ import annotations

from typing import Any

from kubeos.api.models import SysConfigs

_SWAP = {"grub.cmdline.current": "grub.cmdline.next", "grub.cmdline.next": "grub.cmdline.current"}


def swap_grub(configs: SysConfigs) -> SysConfigs:
    """A deep copy of *configs* with the two grub cmdline models traded."""
    copy = configs.model_copy(deep=True)
    for config in copy.configs:
        swapped = _SWAP.get(config.model)
        if swapped is not None:
            config.model = swapped  # type: ignore[assignment]
    return copy


def as_json(configs: SysConfigs | None) -> dict[str, Any] | None:
    """The JSON form written into an OSInstance spec."""
    if configs is None:
        return None
    return configs.model_dump(mode="json", by_alias=True)


def version(configs: SysConfigs | None) -> str:
    return configs.version if configs is not None else ""
