"""What an upgrade source writes into, and what it reports back when done."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubeos.agent.boot.partitions import Partition


@dataclass(frozen=True)
class StagingTarget:
    """The inactive slot and the agent's places to work in.

    ``mount_dir`` is where the slot is mounted while it is filled; it lives under the agent's
    state directory on /persist so that a restart finds (and unmounts) what a crash left behind.
    A source calls ``begin_write`` right before its first change to the partition: from then
    on the slot counts as dirty until verified. Failures before it (bad URL, certificates,
    HTTP errors, size checks) leave the slot, and a rollback into it, untouched.
    """

    slot: str
    partition: Partition
    mount_dir: Path
    certs_dir: Path
    mountinfo: Path
    begin_write: Callable[[], None]


@dataclass(frozen=True)
class StagedImage:
    """A verified, bootable root now in ``slot``."""

    slot: str
    version: str
    check_sum: str
    payload: str  # "rootfs-tar" or "fs-image"
    bytes: int
    seconds: float

    def to_json(self) -> dict[str, object]:
        return {
            "slot": self.slot,
            "version": self.version,
            "check_sum": self.check_sum,
            "payload": self.payload,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }
