"""Run one program with /proc, /sys and /dev mounted inside an image root, leaving no mounts.

Used for the two steps that cannot avoid running the image's own code: package installation
with ``dnf --installroot`` and the user's ``[chroot_script]``. The mounts are made inside a
private mount namespace (``unshare --mount --propagation private``) that the kernel destroys
with its last process, so a killed build cannot leave anything mounted on the host, and
``--kill-child`` plus a PID namespace make sure the whole step dies with the builder.

Invoked as ``python -m kubeos.kbimg.sandbox ROOT {--chroot|--installroot} -- ARGV...``; argv
is executed directly, never through a shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kubeos.kbimg.commands import run
from kubeos.kbimg.errors import BuildError


def sandboxed_argv(root: Path, argv: list[str], *, chroot: bool) -> list[str]:
    """The argv that runs ``argv`` for ``root`` in a throw-away mount and PID namespace."""
    if os.geteuid() != 0:
        raise BuildError("this step runs code from the image and needs root "
                         "(chroot_script, from_repo)")
    mode = "--chroot" if chroot else "--installroot"
    return ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            sys.executable, "-m", "kubeos.kbimg.sandbox", str(root), mode, "--", *argv]


def run_sandboxed(root: Path, argv: list[str], *, chroot: bool, env: dict[str, str] | None = None
                  ) -> str:
    return run(sandboxed_argv(root, argv, chroot=chroot), env=env)


def _mount_api_filesystems(root: Path) -> None:
    for sub in ("proc", "sys", "dev"):
        (root / sub).mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    subprocess.run(["mount", "--rbind", "/sys", str(root / "sys")], check=True)
    subprocess.run(["mount", "--make-rslave", str(root / "sys")], check=True)
    subprocess.run(["mount", "--rbind", "/dev", str(root / "dev")], check=True)
    subprocess.run(["mount", "--make-rslave", str(root / "dev")], check=True)


def main(args: list[str]) -> int:
    if len(args) < 4 or args[2] != "--":
        print("usage: sandbox ROOT --chroot|--installroot -- ARGV...", file=sys.stderr)
        return 2
    root, mode, argv = Path(args[0]), args[1], args[3:]
    _mount_api_filesystems(root)
    if mode == "--chroot":
        os.chroot(root)
        os.chdir("/")
        os.environ["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
