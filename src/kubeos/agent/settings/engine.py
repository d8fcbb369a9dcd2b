"""The model registry and :func:`apply_settings`, the one entry point of the settings engine.

A request is all or nothing: every model name is checked first, then every config is applied
to an in-memory :class:`~kubeos.agent.settings.stage.Stage` in request order (later configs
see earlier ones' edits), and only when all succeeded are the changed files written, together,
by :func:`~kubeos.agent.settings.atomic.commit`. The reference applied configs one by one and
stopped at the first error, leaving the earlier ones applied.

Services are not restarted here: the result says which need it and the caller passes a
``restart`` hook (the agent's RPC uses systemd; the CLI only reports).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path

from kubeos.agent.settings.atomic import commit
from kubeos.agent.settings.containerd import ContainerContainerd
from kubeos.agent.settings.errors import RequestError, ServiceRestartError, UnknownModelError
from kubeos.agent.settings.grub import GrubCmdline
from kubeos.agent.settings.kubelet import KubernetesKubelet
from kubeos.agent.settings.model import Context, Model, Slot
from kubeos.agent.settings.pam_limits import PamLimits
from kubeos.agent.settings.request import ConfigRequest
from kubeos.agent.settings.result import ApplyResult, ConfigResult
from kubeos.agent.settings.stage import Stage
from kubeos.agent.settings.sysctl import KernelSysctl, KernelSysctlPersist

RestartHook = Callable[[str], None]
"""``restart(service)``: restart a systemd service (``kubelet``, ``containerd``)."""

MODELS: dict[str, Model] = {
    model.name: model
    for model in (
        KernelSysctl(),
        KernelSysctlPersist(),
        GrubCmdline("current"),
        GrubCmdline("next"),
        KubernetesKubelet(),
        ContainerContainerd(),
        PamLimits(),
    )
}


def get_model(name: str) -> Model:
    """The model called ``name``; unknown names get the closest known one as a suggestion
    (the reference's own user guide spells ``kuberntes.kubelet``)."""
    model = MODELS.get(name)
    if model is None:
        close = difflib.get_close_matches(name, list(MODELS), n=1, cutoff=0.6)
        raise UnknownModelError(name, close[0] if close else None)
    return model


def apply_settings(
    configs: Sequence[ConfigRequest],
    *,
    root: Path = Path("/"),
    booted_slot: Slot,
    dry_run: bool = False,
    restart: RestartHook | None = None,
    persist_dirs: Sequence[str] = (),
) -> ApplyResult:
    """Apply ``configs`` in order under ``root``; see the module docstring.

    ``booted_slot`` resolves ``grub.cmdline.current``/``.next``. With ``dry_run`` nothing is
    written and nothing restarted, but the result (diffs, warnings, effects) is the same.
    ``restart`` is called once per service whose file changed, after all files are written.
    ``persist_dirs`` widens where ``kernel.sysctl.persist`` may write (:mod:`.persist_path`).

    Raises :class:`~kubeos.agent.settings.errors.SettingsError` (nothing changed), or its
    subclass ``ServiceRestartError`` (files written, restart failed; ``.result`` holds them).
    """
    if booted_slot not in ("A", "B"):
        raise RequestError(f"booted slot must be 'A' or 'B', not {booted_slot!r}")
    models = [get_model(config.model) for config in configs]
    ctx = Context(stage=Stage(root), booted_slot=booted_slot, persist_dirs=tuple(persist_dirs))
    results = []
    for config, model in zip(configs, models, strict=True):
        outcome = model.apply(config, ctx)
        changed = any(f.changed for f in outcome.files)
        results.append(ConfigResult(model.name, tuple(outcome.files),
                                    model.effect if changed else None, tuple(outcome.warnings)))
    if dry_run:
        return ApplyResult(tuple(results), applied=False)
    commit(ctx.stage.planned_writes())
    result = ApplyResult(tuple(results), applied=True)
    if restart is None:
        return result
    restarted: list[str] = []
    for service in result.restarts:
        try:
            restart(service)
        except Exception as exc:
            error = ServiceRestartError(service, exc)
            error.result = ApplyResult(result.configs, True, tuple(restarted))
            raise error from exc
        restarted.append(service)
    return ApplyResult(result.configs, applied=True, restarted=tuple(restarted))
