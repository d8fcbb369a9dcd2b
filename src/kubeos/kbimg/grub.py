"""GRUB pieces of an image: grub.cfg implementing docs/boot-contract.md, grubenv, password, EFI.

The grub.cfg here is the only code that decides which slot boots, so it is written once, from
constants, with no user text in it: a one-shot ``next_entry`` trial (recorded as ``boot_trial``
and cleared before booting, so a crash falls back to ``saved_entry``) and a numeric
``fallback`` (GRUB 2.06 ignores ids there) for entries GRUB cannot even load.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from kubeos.kbimg.commands import require, run
from kubeos.kbimg.errors import BuildError

ESP_DIR = "EFI/openEuler"
GRUB_CFG = f"{ESP_DIR}/grub.cfg"
GRUBENV = f"{ESP_DIR}/grubenv"
USER_CFG = f"{ESP_DIR}/user.cfg"
EFI_BINARY = f"{ESP_DIR}/grubx64.efi"
REMOVABLE_EFI = "EFI/BOOT/BOOTX64.EFI"
EFI_MODULES_SRC = Path("/usr/lib/grub/x86_64-efi")

KERNEL_ARGS = (
    "ro rootfstype=ext4 nomodeset quiet oops=panic softlockup_panic=1 nmi_watchdog=1 "
    "rd.shell=0 selinux=0 crashkernel=256M panic=3 console=tty0 console=ttyS0,115200n8"
)

# Modules built into the EFI binary: enough to find the ESP, read grub.cfg and grubenv, and boot
# a Linux kernel from ext4 even when the module directory on the ESP is missing.
EMBEDDED_MODULES = (
    "part_gpt", "part_msdos", "fat", "ext2", "search", "search_label", "search_fs_uuid",
    "search_fs_file", "configfile", "normal", "linux", "loadenv", "test", "echo", "gzio",
    "all_video", "efi_gop", "font", "gfxterm", "reboot", "halt", "password_pbkdf2", "pbkdf2",
    "sleep", "true", "serial", "terminal", "boot", "chain", "cat", "ls",
)

# The tiny config embedded in the EFI binary: find the ESP by its label, hand over to grub.cfg.
EMBEDDED_CFG = f"""search --no-floppy --label BOOT --set=root
set prefix=($root)/{ESP_DIR}
configfile ($root)/{GRUB_CFG}
"""


@dataclass(frozen=True)
class RootRef:
    """How the kernel finds a slot's root: ``PARTUUID=<uuid>`` on disks, ``LABEL=`` otherwise."""

    a: str
    b: str

    @classmethod
    def by_label(cls) -> RootRef:
        return cls(a="LABEL=ROOT-A", b="LABEL=ROOT-B")

    @classmethod
    def by_partuuid(cls, a: str, b: str) -> RootRef:
        return cls(a=f"PARTUUID={a}", b=f"PARTUUID={b}")


def grub_cfg(roots: RootRef) -> str:
    """The ESP grub.cfg. Entry ids are ``A`` (index 0) and ``B`` (index 1), as the agent expects."""
    entries = []
    for slot, ref in (("A", roots.a), ("B", roots.b)):
        entries.append(f"""menuentry 'KubeOS-{slot}' --id {slot} --unrestricted {{
    load_video
    set gfxpayload=keep
    insmod gzio
    insmod part_gpt
    insmod ext2
    search --no-floppy --label ROOT-{slot} --set=root
    linux /boot/vmlinuz root={ref} {KERNEL_ARGS}
    initrd /boot/initramfs.img
}}
""")
    return f"""# KubeOS grub.cfg, written by kbimg. Slot selection: docs/boot-contract.md.
set timeout=5
set timeout_style=menu
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial

search --no-floppy --label BOOT --set=espdev
set envfile=($espdev)/{GRUBENV}
if [ -s "${{envfile}}" ]; then
    load_env -f "${{envfile}}"
fi

# saved_entry is the committed slot; empty or unknown means A.
set default=A
if [ "${{saved_entry}}" = "B" ]; then
    set default=B
fi
# next_entry is a one-shot trial: clear it before booting so a crash boots saved_entry again.
if [ "${{next_entry}}" = "A" -o "${{next_entry}}" = "B" ]; then
    set default="${{next_entry}}"
    set boot_trial="${{next_entry}}"
    set next_entry=
    save_env -f "${{envfile}}" next_entry boot_trial
elif [ -n "${{next_entry}}" ]; then
    set next_entry=
    save_env -f "${{envfile}}" next_entry
fi
# If GRUB cannot load the chosen entry, try the other slot (GRUB 2.06 wants an index here).
if [ "${{default}}" = "B" ]; then
    set fallback=0
else
    set fallback=1
fi

function savedefault {{
    true
}}

function load_video {{
    insmod all_video
}}

set superusers="root"
export superusers
if [ -f "${{prefix}}/user.cfg" ]; then
    source "${{prefix}}/user.cfg"
    if [ -n "${{GRUB2_PASSWORD}}" ]; then
        password_pbkdf2 root "${{GRUB2_PASSWORD}}"
    fi
fi

{"".join(entries)}"""


def pbkdf2_hash(password: str, *, iterations: int = 10000, salt: bytes | None = None) -> str:
    """The ``grub-mkpasswd-pbkdf2`` format, computed here so the password never leaves memory."""
    salt = secrets.token_bytes(64) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    return f"grub.pbkdf2.sha512.{iterations}.{salt.hex().upper()}.{digest.hex().upper()}"


def user_cfg(password: str) -> str:
    """Content of user.cfg as grub2-setpassword writes it (hash only, mode 0600 on the ESP)."""
    return f"GRUB2_PASSWORD={pbkdf2_hash(password)}\n"


def grubenv_block(values: dict[str, str] | None = None) -> bytes:
    """A 1024-byte GRUB environment block, byte-compatible with ``grub-editenv create``."""
    body = "# GRUB Environment Block\n"
    body += "# WARNING: Do not edit this file by tools other than grub-editenv!!!\n"
    for key, value in (values or {}).items():
        body += f"{key}={value}\n"
    raw = body.encode()
    if len(raw) > 1024:
        raise ValueError("grubenv content exceeds 1024 bytes")
    return raw + b"#" * (1024 - len(raw))


def build_efi_binary(workdir: Path) -> Path:
    """``grub-mkimage -O x86_64-efi`` with the embedded config (Debian's grub-efi-amd64-bin)."""
    require("grub-mkimage")
    if not EFI_MODULES_SRC.is_dir():
        raise BuildError(f"{EFI_MODULES_SRC} missing: install grub-efi-amd64-bin")
    cfg = workdir / "grub-embedded.cfg"
    cfg.write_text(EMBEDDED_CFG)
    out = workdir / "grubx64.efi"
    run(["grub-mkimage", "-O", "x86_64-efi", "-d", EFI_MODULES_SRC, "-c", cfg,
         "-p", f"/{ESP_DIR}", "-o", out, *EMBEDDED_MODULES])
    os.chmod(out, 0o644)
    return out
