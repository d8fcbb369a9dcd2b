"""Rootfs extraction never changes anything outside the slot, whatever the tar holds.

The invariant is checked on a snapshot of a directory beside the slot (and of the slot's
parent): every entry's type, mode, owner, mtime, link target and content are the same after
the extraction, whether it succeeded or was refused. Hypothesis builds random tars out of
symlinks to the outside, directories, hard links, devices, duplicates, ``..`` and absolute
names in random order. ``KUBEOS_PROPERTY_EXAMPLES`` raises the example count for long runs.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeos.agent.errors import PayloadError
from kubeos.agent.upgrade.rootfs_tar import extract_rootfs

EXAMPLES = int(os.environ.get("KUBEOS_PROPERTY_EXAMPLES", "150"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

Snapshot = dict[str, tuple[int, int, int, int, str, bytes]]


def snapshot(top: Path, skip: Path | None = None) -> Snapshot:
    """Type, mode, owner, mtime, link target and bytes of everything below ``top``."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        here = Path(dirpath)
        if skip is not None and here == skip:
            dirnames[:] = []
            continue
        for name in [*dirnames, *filenames, "."]:
            path = here / name
            if skip is not None and path == skip:
                continue
            st_ = os.lstat(path)
            link = os.readlink(path) if stat.S_ISLNK(st_.st_mode) else ""
            data = path.read_bytes() if stat.S_ISREG(st_.st_mode) else b""
            out[str(path)] = (st_.st_mode, st_.st_uid, st_.st_gid, st_.st_mtime_ns, link, data)
    return out


def make_outside(top: Path) -> Path:
    outside = top / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "shadow").write_text("root:secret\n")
    (outside / "etc" / "shadow").chmod(0o600)
    (outside / "etc").chmod(0o755)
    os.utime(outside / "etc", ns=(10**18, 10**18))
    return outside


def tar_of(members: list[tuple[tarfile.TarInfo, bytes]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buf.seek(0)
    return buf


def member(name: str, kind: bytes, link: str = "", mode: int = 0o644,
           uid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    info.uid = info.gid = uid
    info.mtime = 1_000_000
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info


def extract_guarded(buf: io.BytesIO, dest: Path) -> None:
    with contextlib.suppress(PayloadError):
        extract_rootfs(buf, dest)


# --- the reproduced finding -------------------------------------------------------------------


def test_a_directory_member_never_changes_what_an_earlier_symlink_points_at(
    tmp_path: Path,
) -> None:
    """symlink ``esc -> <outside>/etc``, then directory ``esc`` 0777 uid 65534: /etc untouched."""
    outside = make_outside(tmp_path)
    slot = tmp_path / "slot"
    slot.mkdir()
    before = snapshot(outside)
    buf = tar_of([
        (member("esc", tarfile.SYMTYPE, str(outside / "etc")), b""),
        (member("esc", tarfile.DIRTYPE, mode=0o777, uid=65534), b""),
        (member("esc/owned", tarfile.REGTYPE, mode=0o4755, uid=65534), b"x"),
    ])
    extract_rootfs(buf, slot)
    assert snapshot(outside) == before
    # the directory replaced the link inside the slot, as a later tar member should
    assert (slot / "esc").is_dir() and not (slot / "esc").is_symlink()
    assert stat.S_IMODE(os.lstat(slot / "esc").st_mode) == 0o777
    assert os.lstat(slot / "esc").st_uid == 65534
    assert (slot / "esc" / "owned").read_bytes() == b"x"


@pytest.mark.parametrize("kind", [tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.FIFOTYPE,
                                  tarfile.CHRTYPE, tarfile.LNKTYPE])
def test_a_later_member_replaces_an_earlier_symlink_itself(tmp_path: Path, kind: bytes) -> None:
    outside = make_outside(tmp_path)
    slot = tmp_path / "slot"
    slot.mkdir()
    before = snapshot(outside)
    members = [(member("inner", tarfile.REGTYPE), b"inner")]
    members.append((member("shadow", tarfile.SYMTYPE, str(outside / "etc" / "shadow")), b""))
    link = "inner" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    members.append((member("shadow", kind, link, mode=0o666, uid=65534), b"pwned"))
    extract_rootfs(tar_of(members), slot)
    assert snapshot(outside) == before
    assert (slot / "shadow").is_symlink() == (kind == tarfile.SYMTYPE)


def test_members_beneath_a_symlink_are_refused(tmp_path: Path) -> None:
    outside = make_outside(tmp_path)
    slot = tmp_path / "slot"
    slot.mkdir()
    buf = tar_of([
        (member("lib", tarfile.SYMTYPE, "usr/lib"), b""),
        (member("usr/lib", tarfile.DIRTYPE, mode=0o755), b""),
        (member("lib/x", tarfile.REGTYPE), b"x"),
    ])
    with pytest.raises(PayloadError, match="symlink is never followed"):
        extract_rootfs(buf, slot)
    assert not (slot / "usr" / "lib" / "x").exists()
    del outside


# --- the property ---------------------------------------------------------------------------

NAMES = ["a", "a/b", "a/b/c", "esc", "esc/x", "esc/y/z", "./a", "/abs", "/esc/x", "../up",
         "a/../../up", "lnk", "lnk/x", "."]
KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE,
         tarfile.CHRTYPE]


@st.composite
def hostile_tars(draw: st.DrawFn) -> list[tuple[str, bytes, str, int, int, bytes]]:
    """Members as (name, kind, link target key, mode, uid, data); targets resolved later."""
    n = draw(st.integers(min_value=1, max_value=12))
    out = []
    for _ in range(n):
        name = draw(st.sampled_from(NAMES))
        kind = draw(st.sampled_from(KINDS))
        target = draw(st.sampled_from(["OUT", "OUT/etc", "OUT/etc/shadow", "../..", "a", "a/b",
                                       "esc", "/abs", "../outside/etc"]))
        mode = draw(st.sampled_from([0o777, 0o4755, 0o600, 0o1777]))
        uid = draw(st.sampled_from([0, 65534, 1000]))
        data = draw(st.binary(max_size=16))
        out.append((name, kind, target, mode, uid, data))
    return out


@PROPERTY
@given(spec=hostile_tars())
def test_nothing_outside_the_slot_changes(
    spec: list[tuple[str, bytes, str, int, int, bytes]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        outside = make_outside(top)
        slot = top / "slot"
        slot.mkdir()
        before = snapshot(top, skip=slot)
        members = []
        for name, kind, target, mode, uid, data in spec:
            link = target.replace("OUT", str(outside))
            if kind == tarfile.LNKTYPE:
                link = target.replace("OUT", "../outside")
            members.append((member(name, kind, link, mode, uid), data))
        extract_guarded(tar_of(members), slot)
        assert snapshot(top, skip=slot) == before
        # and nothing in the slot is a hard link to a file outside it
        inode_outside = {os.lstat(p).st_ino for p in before}
        for dirpath, dirnames, filenames in os.walk(slot):
            for name in filenames + dirnames:
                assert os.lstat(Path(dirpath) / name).st_ino not in inode_outside
