"""The os-agent's operations and the boot check, per ``docs/boot-contract.md``.

* ``prepare_upgrade`` writes and verifies the new root in the inactive slot; grubenv untouched.
* ``upgrade``/``rollback`` check that the target slot is bootable (and holds the requested
  version), set the one-shot ``next_entry`` (``saved_entry`` stays: a failed boot comes back by
  itself) and reboot through systemd.
* ``commit`` makes the booted slot permanent (``saved_entry``) once the proxy saw it healthy.
* at start, the boot check finishes what GRUB began: a running trial gets a commit window
  (on expiry the agent reboots into ``saved_entry``); a trial of another slot failed and is
  recorded.

One operation at a time (a second gets :class:`BusyError` at once, as in the reference);
``status`` never waits for the lock. Every step that matters is recorded on disk first, so a
crash at any instant is recovered at the next start.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kubeos import __version__
from kubeos.agent.boot.manager import BootManager, BootState
from kubeos.agent.boot.mounts import unmount
from kubeos.agent.boot.partitions import SlotLayout
from kubeos.agent.commands import run_tool
from kubeos.agent.configure import run_configure
from kubeos.agent.errors import (
    INVALID_PARAMS,
    AgentError,
    BootError,
    BusyError,
    InvalidRequestError,
    SlotNotBootableError,
    StateError,
    UpgradeError,
)
from kubeos.agent.hostpaths import HostPaths
from kubeos.agent.messages import (
    COMMITTED,
    ROLLBACKED,
    UPGRADE_READY,
    UPGRADED,
    SlotStatus,
    StatusResult,
    TargetRequest,
    UpgradeRequest,
)
from kubeos.agent.settings.atomic import remove_stale_temps
from kubeos.agent.state import AgentState
from kubeos.agent.upgrade.sources import SOURCES, UpgradeSource
from kubeos.agent.upgrade.target import StagingTarget

log = logging.getLogger(__name__)

RebootHook = Callable[[str], None]
RestartHook = Callable[[str], None]
Method = Callable[[list[Any]], Any]
DEADLINE_FILE = "trial-deadline"


def systemctl_reboot(reason: str) -> None:
    """An orderly reboot (services stopped, filesystems synced), unlike the reference's syscall."""
    log.warning("rebooting: %s", reason)
    run_tool(["systemctl", "reboot"])


def systemctl_restart(service: str) -> None:
    run_tool(["systemctl", "restart", service])


def _param(params: list[Any], index: int, name: str) -> Any:
    if len(params) <= index:
        raise InvalidRequestError(f"missing parameter {name}", code=INVALID_PARAMS)
    return params[index]


def _target_version(params: list[Any]) -> str:
    if not params or params[0] is None:
        return ""
    return TargetRequest.from_json(params[0]).version


class AgentService:
    """Everything behind the RPC methods; the RPC server only decodes and encodes."""

    def __init__(
        self,
        paths: HostPaths,
        *,
        commit_window: float = 900.0,
        reboot: RebootHook = systemctl_reboot,
        restart_service: RestartHook | None = systemctl_restart,
        reboot_delay: float = 1.0,
        sources: Mapping[str, UpgradeSource] = SOURCES,
        layout: str = "partitions",
        persist_dirs: tuple[str, ...] = (),
    ) -> None:
        self.paths = paths
        self.persist_dirs = persist_dirs
        self.boot = BootManager(paths, layout)
        self.state = AgentState(paths.state_dir)
        self.commit_window = commit_window
        self._reboot = reboot
        self._restart_service = restart_service
        self._reboot_delay = reboot_delay
        self._sources = sources
        self._lock = threading.Lock()
        self._running: str | None = None
        self._layout: SlotLayout | None = None
        self._versions: dict[str, str | None] = {}
        self._bootable: dict[str, bool | None] = {}
        self._deadline: float | None = None
        self._timer: threading.Timer | None = None
        self._reboot_thread: threading.Thread | None = None
        self._reboot_pending: str | None = None

    # --- plumbing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _operation(self, name: str) -> Iterator[None]:
        if not self._lock.acquire(blocking=False):
            raise BusyError(self._running or "another operation")
        self._running = name
        try:
            yield
        finally:
            self._running = None
            self._lock.release()

    def _require_layout(self) -> SlotLayout:
        if self._layout is None:
            self._layout = self.boot.layout()
        return self._layout

    def _request_reboot(self, reason: str) -> None:
        """Reboot shortly after the answer has been sent (the caller learns the outcome).

        Idempotent: a request while an earlier one is still waiting to be issued is the same
        reboot (a host goes down once), and ``status`` says a reboot is pending. Once issued,
        a new request issues it again — the earlier ``systemctl reboot`` may have been lost;
        the proxy spaces such re-asks out.
        """
        thread = self._reboot_thread
        if thread is not None and thread.is_alive():
            log.info("reboot already pending (%s); %r joins it", self._reboot_pending, reason)
            return
        self._reboot_pending = reason

        def later() -> None:
            time.sleep(self._reboot_delay)
            try:
                self._reboot(reason)
            except AgentError as exc:
                self._reboot_pending = None
                self.state.record_error(f"reboot failed: {exc}")

        self._reboot_thread = threading.Thread(target=later, name="reboot", daemon=True)
        self._reboot_thread.start()

    def wait_for_reboot(self, timeout: float = 60.0) -> None:
        """Block until a requested reboot command has been issued (one-shot commands)."""
        if self._reboot_thread is not None:
            self._reboot_thread.join(timeout)

    def _refuse_dirty(self, slot: str) -> None:
        if self.state.get("dirty_slot") == slot:
            raise StateError(
                f"slot {slot} holds an incomplete or unverified image (the last prepare_upgrade "
                "did not finish); run prepare_upgrade again"
            )

    def _cleanup_mount(self) -> None:
        try:
            unmount(self.paths.mount_dir)
        except BootError as exc:
            log.error("cannot unmount %s: %s", self.paths.mount_dir, exc)
            return
        with contextlib.suppress(OSError):
            self.paths.mount_dir.rmdir()

    # --- start-up: recovery and boot check --------------------------------------------------

    def start(self) -> None:
        """Recover from a crash, run the boot check, learn the slots. Called once before serving."""
        self._recover_interrupted_write()
        for stale in remove_stale_temps(self.paths.root, self.persist_dirs):
            log.warning("removed %s, left by an interrupted settings write", stale)
        for source in self._sources.values():  # images/mounts a crashed container pull left
            recover = getattr(source, "recover", None)
            if recover is not None:
                recover(self.paths.state_dir)
        try:
            layout = self._require_layout()
        except BootError as exc:
            # still serve status and configure; boot operations will report the same error
            log.error("boot layout: %s", exc)
            self.state.record_error(f"boot layout not understood: {exc}")
            return
        self._boot_check(layout)
        self._scan_slots(layout)

    def _recover_interrupted_write(self) -> None:
        writing = self.state.get("writing")
        self._cleanup_mount()
        if writing:
            slot = writing.get("slot")
            msg = (
                f"prepare_upgrade of version {writing.get('version')!r} into slot {slot} was "
                "interrupted; the slot is unusable until prepare_upgrade succeeds"
            )
            log.warning(msg)
            self.state.update(writing=None)
            self.state.record_error(msg)

    def _boot_check(self, layout: SlotLayout) -> None:
        bs = self.boot.state()
        booted = layout.booted
        if bs.trial == booted:
            self._arm_commit_timer(self._trial_deadline(booted))
        elif bs.trial is not None:
            msg = f"trial boot of slot {bs.trial} failed; slot {booted} is running again"
            log.warning(msg)
            self.boot.edit(boot_trial=None, kubeos_rollback=bs.trial)
            staged = self.state.get("staged")
            if isinstance(staged, dict) and staged.get("slot") == bs.trial:
                self.state.update(staged=None)
            self.state.record_error(msg)
        elif bs.saved != booted and bs.next is None:
            msg = f"booted slot {booted}, but the committed slot is {bs.saved} (GRUB fell back?)"
            log.warning(msg)
            self.state.record_error(msg)

    def _trial_deadline(self, slot: str) -> float:
        """The commit deadline of this boot's trial; kept in /run so a restarted agent keeps it."""
        path = self.paths.run_dir / DEADLINE_FILE
        try:
            saved_slot, _, value = path.read_text().partition(" ")
            if saved_slot == slot:
                return float(value)
        except (OSError, ValueError):
            pass
        deadline = time.time() + self.commit_window
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        path.write_text(f"{slot} {deadline}")
        return deadline

    def _arm_commit_timer(self, deadline: float) -> None:
        self._cancel_commit_timer(forget=False)
        self._deadline = deadline
        self._timer = threading.Timer(max(0.0, deadline - time.time()), self._commit_window_expired)
        self._timer.daemon = True
        self._timer.start()

    def _cancel_commit_timer(self, *, forget: bool = True) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if forget:
            self._deadline = None
            (self.paths.run_dir / DEADLINE_FILE).unlink(missing_ok=True)

    def expire_trial(self) -> bool:
        """End this boot's trial if it is still uncommitted: clear it and reboot into
        ``saved_entry``. Returns whether it did."""
        with self._operation("commit window"):
            layout = self._require_layout()
            bs = self.boot.state()
            if bs.trial != layout.booted:
                return False
            msg = (
                f"slot {layout.booted} was not committed within the commit window; "
                f"rebooting into slot {bs.saved}"
            )
            log.warning(msg)
            self.boot.edit(boot_trial=None, next_entry=None, kubeos_rollback=layout.booted)
            self.state.record_error(msg)
            self._request_reboot(msg)
            return True

    def _commit_window_expired(self) -> None:
        try:
            self.expire_trial()
        except BusyError:
            self._arm_commit_timer(time.time() + 5.0)
        except AgentError as exc:
            log.error("commit window: %s", exc)

    def _scan_slots(self, layout: SlotLayout) -> None:
        for slot in layout.slots:
            if self.state.get("dirty_slot") == slot:
                self._versions[slot], self._bootable[slot] = None, False
                continue
            try:
                info = self.boot.inspect(layout, slot)
            except BootError as exc:
                log.info("slot %s: %s", slot, exc)
                self._versions[slot], self._bootable[slot] = None, False
            else:
                self._versions[slot], self._bootable[slot] = info.version, True

    # --- operations ---------------------------------------------------------------------------

    def prepare_upgrade(self, params: list[Any]) -> dict[str, Any]:
        request = UpgradeRequest.from_json(_param(params, 0, "UpgradeRequest"))
        with self._operation("prepare_upgrade"):
            try:
                source = self._sources[request.image_type]
            except KeyError:
                raise InvalidRequestError(f'Invalid image type "{request.image_type}"') from None
            source.validate(request)
            layout = self._require_layout()
            bs = self.boot.state()
            if bs.trial == layout.booted:
                raise StateError(
                    f"slot {layout.booted} is on trial and not committed; commit or roll back "
                    "before preparing another upgrade"
                )
            slot = layout.inactive

            def begin_write() -> None:
                if bs.next == slot:
                    # an upgrade to this slot awaits a reboot: never boot a slot in rewrite
                    self.boot.edit(next_entry=None)
                self.state.update(
                    writing={"slot": slot, "version": request.version, "started": time.time()},
                    dirty_slot=slot,
                    staged=None,
                )
                self._versions[slot], self._bootable[slot] = None, False

            target = StagingTarget(
                slot=slot,
                partition=layout.slots[slot],
                mount_dir=self.paths.mount_dir,
                certs_dir=self.paths.certs,
                mountinfo=self.paths.mountinfo,
                begin_write=begin_write,
            )
            try:
                staged = source.stage(request, target)
            except AgentError as exc:
                self.state.update(writing=None)
                self.state.record_error(f"prepare_upgrade failed: {exc}")
                raise
            except Exception as exc:
                log.exception("prepare_upgrade crashed")
                self.state.update(writing=None)
                self.state.record_error(f"prepare_upgrade failed: {exc!r}")
                raise UpgradeError(f"prepare_upgrade failed: {exc!r}") from exc
            finally:
                self._cleanup_mount()
            self.state.update(writing=None, dirty_slot=None, staged=staged.to_json())
            self._versions[slot], self._bootable[slot] = staged.version, True
            log.info("staged KubeOS %s in slot %s (%.1f s)", staged.version, slot, staged.seconds)
            return {"status": UPGRADE_READY, **staged.to_json()}

    def upgrade(self, params: list[Any]) -> dict[str, Any]:
        version = _target_version(params)
        with self._operation("upgrade"):
            layout = self._require_layout()
            bs = self.boot.state()
            if bs.trial == layout.booted:
                raise StateError(f"slot {layout.booted} is on trial and not committed")
            slot = layout.inactive
            self._refuse_dirty(slot)
            staged = self.state.get("staged")
            if not isinstance(staged, dict) or staged.get("slot") != slot:
                raise StateError(
                    f"no verified image is staged in slot {slot}; call prepare_upgrade first"
                )
            info = self.boot.inspect(layout, slot)
            if version and info.version != version:
                raise StateError(
                    f"slot {slot} holds KubeOS {info.version}, not the requested {version}"
                )
            self.boot.edit(next_entry=slot, kubeos_rollback=None)
            self._request_reboot(f"trial boot of KubeOS {info.version} in slot {slot}")
            return {"status": UPGRADED, "slot": slot, "version": info.version}

    def rollback(self, params: list[Any]) -> dict[str, Any]:
        version = _target_version(params)
        with self._operation("rollback"):
            layout = self._require_layout()
            bs = self.boot.state()
            slot = layout.inactive
            self._refuse_dirty(slot)
            try:
                info = self.boot.inspect(layout, slot)
            except SlotNotBootableError as exc:
                raise StateError(f"rollback refused: slot {slot}: {exc}") from None
            if version and info.version != version:
                raise StateError(
                    f"rollback refused: slot {slot} holds KubeOS {info.version}, not {version}"
                )
            if slot == bs.saved:
                # back to the committed slot: GRUB boots saved_entry; no trial needed
                self.boot.edit(next_entry=None, boot_trial=None)
            else:
                self.boot.edit(next_entry=slot)
            self._cancel_commit_timer()
            self._request_reboot(f"rollback to KubeOS {info.version} in slot {slot}")
            return {"status": ROLLBACKED, "slot": slot, "version": info.version}

    def commit(self, params: list[Any]) -> dict[str, Any]:
        with self._operation("commit"):
            layout = self._require_layout()
            bs = self.boot.state()
            booted = layout.booted
            changed = bs.saved != booted or bs.trial is not None
            if changed:
                self.boot.edit(saved_entry=booted, boot_trial=None, kubeos_rollback=None)
            self._cancel_commit_timer()
            staged = self.state.get("staged")
            if isinstance(staged, dict) and staged.get("slot") == booted:
                self.state.update(staged=None)
            return {"status": COMMITTED, "slot": booted, "changed": changed}

    def configure(self, params: list[Any]) -> dict[str, Any]:
        request = _param(params, 0, "ConfigureRequest")
        with self._operation("configure"):
            layout = self._layout
            booted = layout.booted if layout is not None else self.boot.state().saved
            return run_configure(
                request, root=self.paths.root, booted_slot=booted, restart=self._restart_service,
                persist_dirs=self.persist_dirs,
            )

    def status(self, params: list[Any]) -> dict[str, Any]:
        layout = self._layout
        try:
            bs: BootState | None = self.boot.state()
        except BootError:
            bs = None
        slots = [
            SlotStatus(
                name=name,
                device=str(part.device),
                version=self._versions.get(name),
                bootable=self._bootable.get(name),
            )
            for name, part in (layout.slots.items() if layout else ())
        ]
        staged = self.state.get("staged")
        return StatusResult(
            agent_version=__version__,
            booted_slot=layout.booted if layout else None,
            committed_slot=bs.saved if bs else None,
            trial_slot=bs.trial if bs else None,
            commit_deadline=self._deadline,
            slots=slots,
            staged=staged if isinstance(staged, dict) else None,
            last_error=self.state.last_error,
            busy=self._running,
            reboot_pending=self._reboot_pending,
        ).to_json()

    def rpc_methods(self) -> dict[str, Method]:
        return {
            "prepare_upgrade": self.prepare_upgrade,
            "upgrade": self.upgrade,
            "rollback": self.rollback,
            "configure": self.configure,
            "commit": self.commit,
            "status": self.status,
        }

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


