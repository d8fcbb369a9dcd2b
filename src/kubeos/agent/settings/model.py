"""The interface every configuration model implements, and what it is given to work with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from kubeos.agent.settings.request import ConfigRequest
from kubeos.agent.settings.result import FileChange, SettingsWarning
from kubeos.agent.settings.stage import Stage

Slot = Literal["A", "B"]


@dataclass
class Context:
    """Per-request state shared by the models: the staged files and the booted slot."""

    stage: Stage
    booted_slot: Slot
    #: directories beyond /etc where ``kernel.sysctl.persist`` may write (agent option)
    persist_dirs: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What one model did to one config; the engine adds the effect."""

    files: list[FileChange] = field(default_factory=list)
    warnings: list[SettingsWarning] = field(default_factory=list)


class Model(Protocol):
    """A configuration model. ``apply`` edits files only through ``ctx.stage``.

    ``effect`` is what the change takes to be in force (see :mod:`.result`); the engine reports
    it only when a file actually changed.
    """

    name: str
    effect: str

    def apply(self, config: ConfigRequest, ctx: Context) -> Outcome: ...
