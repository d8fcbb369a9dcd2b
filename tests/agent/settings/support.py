"""Helpers for the settings tests: build requests tersely and apply them under a temp root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubeos.agent.settings import ApplyResult, ConfigRequest, apply_settings, parse_config
from kubeos.agent.settings.model import Slot

DATA = Path(__file__).parent / "data"
GRUB_CFG = "boot/efi/EFI/openEuler/grub.cfg"


def config(model: str, *items: tuple[Any, ...], configpath: str = "") -> ConfigRequest:
    """``config("m", ("key", value), ("key", value, "delete"))`` in the CR list shape."""
    contents = []
    for item in items:
        entry: dict[str, Any] = {"key": item[0], "value": item[1]}
        if len(item) > 2:
            entry["operation"] = item[2]
        contents.append(entry)
    return parse_config({"model": model, "configpath": configpath, "contents": contents})


def apply(root: Path, *configs: ConfigRequest, slot: Slot = "A",
          dry_run: bool = False) -> ApplyResult:
    return apply_settings(configs, root=root, booted_slot=slot, dry_run=dry_run)


def write(root: Path, node_path: str, text: str) -> Path:
    path = root / node_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def read(root: Path, node_path: str) -> str:
    return (root / node_path.lstrip("/")).read_text()


def lines(*items: str) -> str:
    return "".join(f"{item}\n" for item in items)


def reference_grub_cfg() -> str:
    """The grub.cfg of the reference's own grub test (titles 'A' and 'B', ids 'KubeOS-A/B')."""
    entry = (
        "menuentry '{slot}' --class KubeOS --class gnu-linux --class gnu --class os"
        " --unrestricted $menuentry_id_option 'KubeOS-{slot}' {{\n"
        "        load_video\n"
        "        set gfxpayload=keep\n"
        "        insmod gzio\n"
        "        insmod part_gpt\n"
        "        insmod ext2\n"
        "        set root='hd0,gpt{part}'\n"
        "        linux   /boot/vmlinuz root=UUID={uuid} ro rootfstype=ext4 nomodeset quiet"
        " oops=panic softlockup_panic=1 nmi_watchdog=1 rd.shell=0 selinux=0 crashkernel=256M"
        " panic=3\n"
        "        initrd  /boot/initramfs.img\n"
        "}}\n"
    )
    return entry.format(slot="A", part=2, uuid=1) + "\n" + entry.format(slot="B", part=3, uuid=2)
