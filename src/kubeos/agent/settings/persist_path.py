"""Where ``kernel.sysctl.persist`` may write: a ``*.conf`` under ``/etc`` that runs no code.

``configpath`` comes from an ``OS`` custom resource, and the agent writes it as root. Without a
rule, a settings model for sysctl lines becomes a writer of arbitrary files: ``/etc/shadow``, or
``/etc/profile.d/x.sh`` holding ``X=$(cmd)`` that every login shell runs. So the path must be:

* under ``/etc`` and named ``*.conf`` (the reference user guide's own sample is
  ``/etc/persist.conf``; the default is ``/etc/sysctl.conf``), or under a directory the node's
  administrator allowed with ``os-agent serve --persist-dir DIR``;
* outside every directory whose files are executed, loaded into processes, or grant access
  (:data:`DENIED_DIRS`), and not one of the files of that kind that end in ``.conf``
  (:data:`DENIED_FILES`) — not even when an allowed directory contains them;
* a regular file or absent: never a directory, a device or a FIFO (checked on disk by
  :func:`check_on_disk`). A symlink is never written through to a place the rules refuse: the
  file it resolves to (mapped under the root) must pass every rule above itself, so the link
  adds no reach — Debian's ``/etc/sysctl.d/99-sysctl.conf -> ../sysctl.conf`` keeps working.

docs/security.md lists the same rules.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from kubeos.agent.settings.errors import ConfigPathError

#: Directory names (at any depth below /etc) whose files run code or grant access.
DENIED_DIRS = frozenset({
    "profile.d", "cron.d", "cron.daily", "cron.hourly", "cron.weekly", "cron.monthly",
    "crontabs", "sudoers.d", "systemd", "ssh", "pam.d", "security", "ld.so.conf.d",
    "modprobe.d", "modules-load.d", "udev", "init.d", "rc.d", "rcS.d", "rc0.d", "rc1.d",
    "rc2.d", "rc3.d", "rc4.d", "rc5.d", "rc6.d", "xdg", "polkit-1", "sudo", "apparmor.d",
    "selinux", "NetworkManager", "network", "dhcp", "kubernetes", "containerd", "docker",
    "cni", "sysconfig", "default", "logrotate.d", "apt", "yum.repos.d", "dnf", "audit",
    "dbus-1", "tmpfiles.d", "binfmt.d", "environment.d", "X11", "bash_completion.d",
})
#: Files ending in ``.conf`` that load code, change identity lookups or grant access.
DENIED_FILES = frozenset({
    "ld.so.conf", "sudo.conf", "sudo_logsrvd.conf", "pam.conf", "nsswitch.conf",
    "modprobe.conf", "host.conf", "resolv.conf", "login.defs.conf", "logrotate.conf",
    "rsyslog.conf", "syslog.conf", "sshd.conf", "krb5.conf", "ld.so.preload.conf",
})
RULE = ("configpath must be a *.conf file under /etc (or under an --persist-dir of the agent), "
        "outside directories whose files run code or grant access")


def check_persist_path(
    model: str, path: PurePosixPath, allowed_dirs: Sequence[str] = ()
) -> None:
    """Refuse ``path`` unless it follows the rules of the module docstring."""
    def refuse(why: str) -> ConfigPathError:
        return ConfigPathError(f"{why}; {RULE}", model=model, file=str(path))

    if path.suffix != ".conf":
        raise refuse("not a *.conf file")
    parents = [PurePosixPath("/etc"), *(PurePosixPath(d) for d in allowed_dirs)]
    base = next((p for p in parents if path.is_relative_to(p) and path != p), None)
    if base is None:
        raise refuse("not under /etc")
    for part in path.relative_to(base).parts[:-1]:
        if part in DENIED_DIRS or part.startswith(("cron", "sudoers", "rc")):
            raise refuse(f"directory {part!r} holds files that run code or grant access")
    if path.name in DENIED_FILES or path.name.startswith("sudoers"):
        raise refuse(f"{path.name!r} loads code or grants access")


def check_on_disk(
    model: str, node: PurePosixPath, root: Path, resolved: Path,
    allowed_dirs: Sequence[str] = (),
) -> None:
    """What ``node`` resolves to (``resolved``, under ``root``) must pass the rules too, and be
    a regular file or absent."""
    try:
        inside = PurePosixPath("/", Path(os.path.realpath(resolved)).relative_to(
            os.path.realpath(root)))
    except ValueError:
        raise ConfigPathError(f"configpath resolves outside the root; {RULE}", model=model,
                              file=str(node)) from None
    if inside != node:
        try:
            check_persist_path(model, inside, allowed_dirs)
        except ConfigPathError as exc:
            raise ConfigPathError(f"configpath is a symlink to {inside}: {exc.detail}",
                                  model=model, file=str(node)) from None
    try:
        st = os.stat(resolved)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise ConfigPathError(f"configpath is not a regular file; {RULE}", model=model,
                              file=str(node))
