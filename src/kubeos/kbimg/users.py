"""Users and passwords: /etc/passwd, shadow, group and gshadow edited as data, in Python.

The reference pipes ``name:password`` into chpasswd from a generated script, so plaintext
passwords sit in files on the build host and user names are shell code. Here passwords are
hashed in memory (SHA-512 crypt) and only the hash is written; names were validated by
config.py and are never interpreted.
"""

from __future__ import annotations

import os
import secrets
import string
import time
import warnings
from pathlib import Path

from kubeos.kbimg.config import User
from kubeos.kbimg.errors import BuildError
from kubeos.kbimg.inroot import makedirs, resolve, write_file

UID_MIN = 1000
_SALT_CHARS = string.ascii_letters + string.digits + "./"


def hash_password(password: str) -> str:
    """SHA-512 crypt(3) of ``password`` with a random salt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    salt = "$6$" + "".join(secrets.choice(_SALT_CHARS) for _ in range(16))
    hashed = crypt.crypt(password, salt)
    if not hashed or not hashed.startswith("$6$"):
        raise BuildError("this Python's crypt() cannot make SHA-512 hashes")
    return hashed


class _Db:
    """One colon-separated database file (passwd, shadow, group, gshadow) of the image."""

    def __init__(self, root: Path, name: str) -> None:
        self.path = resolve(root, f"/etc/{name}")
        self.exists = self.path.is_file()
        text = self.path.read_text() if self.exists else ""
        self.rows = [line.split(":") for line in text.splitlines() if line.strip()]

    def find(self, name: str) -> list[str] | None:
        return next((row for row in self.rows if row[0] == name), None)

    def save(self) -> None:
        if not self.exists:
            return
        st = self.path.stat()
        tmp = self.path.with_name(f".{self.path.name}.kbimg")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(":".join(row) + "\n" for row in self.rows))
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, self.path)


def _days_since_epoch() -> str:
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    return str(epoch // 86400)


def _next_id(rows: list[list[str]], column: int) -> int:
    used = {int(r[column]) for r in rows if len(r) > column and r[column].isdigit()}
    n = UID_MIN
    while n in used:
        n += 1
    return n


def set_root_password(root: Path, crypt_hash: str) -> None:
    """Replace root's whole password field (the reference kept the rest of the old hash)."""
    shadow = _Db(root, "shadow")
    row = shadow.find("root")
    if row is None:
        raise BuildError("/etc/shadow in the image has no root entry")
    row[1] = crypt_hash
    if len(row) > 2:
        row[2] = _days_since_epoch()
    shadow.save()


def add_users(root: Path, users: tuple[User, ...]) -> None:
    """useradd -m -g <primary|name> [-G groups] -s /bin/bash, then the hashed password."""
    if not users:
        return
    passwd, shadow, group, gshadow = (_Db(root, n) for n in ("passwd", "shadow", "group",
                                                              "gshadow"))
    if not passwd.exists or not group.exists:
        raise BuildError("users: the image has no /etc/passwd or /etc/group")
    for i, user in enumerate(users):
        where = f"users[{i}]"
        if passwd.find(user.name) is not None:
            raise BuildError(f"{where}.name: user {user.name!r} already exists in the image")
        if user.primary_group is not None:
            grow = group.find(user.primary_group)
            if grow is None:
                raise BuildError(f"{where}.primary_group: group {user.primary_group!r} "
                                 "does not exist in the image")
        else:
            grow = group.find(user.name)
            if grow is None:
                gid = _next_id(group.rows, 2)
                grow = [user.name, "x", str(gid), ""]
                group.rows.append(grow)
                if gshadow.exists:
                    gshadow.rows.append([user.name, "!", "", ""])
        gid = int(grow[2])
        for j, extra in enumerate(user.groups):
            erow = group.find(extra)
            if erow is None:
                raise BuildError(f"{where}.groups[{j}]: group {extra!r} is not in the image")
            while len(erow) < 4:
                erow.append("")
            members = [m for m in erow[3].split(",") if m]
            erow[3] = ",".join([*members, user.name])
            srow = gshadow.find(extra)
            if srow is not None:
                while len(srow) < 4:
                    srow.append("")
                smembers = [m for m in srow[3].split(",") if m]
                srow[3] = ",".join([*smembers, user.name])
        uid = max(_next_id(passwd.rows, 2), gid if user.primary_group is None else 0)
        while any(r[2] == str(uid) for r in passwd.rows if len(r) > 2):
            uid += 1
        home = f"/home/{user.name}"
        passwd.rows.append([user.name, "x", str(uid), str(gid), "", home, "/bin/bash"])
        shadow.rows.append([user.name, hash_password(user.passwd), _days_since_epoch(),
                            "0", "99999", "7", "", "", ""])
        _make_home(root, home, uid, gid)
    for db in (passwd, shadow, group, gshadow):
        db.save()


def _make_home(root: Path, home: str, uid: int, gid: int) -> None:
    """``useradd -m``: create the home from /etc/skel, owned by the user, mode 0700."""
    target = makedirs(root, home, 0o700)
    skel = resolve(root, "/etc/skel")
    if skel.is_dir():
        for entry in sorted(skel.iterdir()):
            if entry.is_file() and not entry.is_symlink():
                dest = write_file(root, f"{home}/{entry.name}", entry.read_bytes(),
                                  entry.stat().st_mode & 0o777)
                os.chown(dest, uid, gid, follow_symlinks=False)
    os.chmod(target, 0o700)
    os.chown(target, uid, gid)
