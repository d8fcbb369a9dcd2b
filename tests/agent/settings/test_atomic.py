"""Atomic replacement, mode/owner kept, symlinks followed, and rollback of a failed request."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kubeos.agent.settings import WriteError, atomic

from .support import apply, config, lines, read, write


def test_atomic_write_keeps_mode_and_owner(tmp_path: Path) -> None:
    path = write(tmp_path, "/etc/sysctl.conf", "a=1\n")
    path.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(path, 1234, 5678)
    apply(tmp_path, config("kernel.sysctl.persist", ("a", 2)))
    st = path.stat()
    assert path.read_text() == "a=2\n"
    assert stat.S_IMODE(st.st_mode) == 0o600
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert [p.name for p in path.parent.iterdir()] == ["sysctl.conf"]  # no temp file left


def test_symlinked_config_is_written_through(tmp_path: Path) -> None:
    target = write(tmp_path, "/etc/sysctl.conf", "a=1\n")
    link = tmp_path / "etc/sysctl.d/99-sysctl.conf"
    link.parent.mkdir()
    link.symlink_to("../sysctl.conf")
    apply(tmp_path, config("kernel.sysctl.persist", ("a", 2),
                           configpath="/etc/sysctl.d/99-sysctl.conf"))
    assert link.is_symlink() and target.read_text() == "a=2\n"


def test_absolute_symlink_is_mapped_under_root(tmp_path: Path) -> None:
    target = write(tmp_path, "/etc/real.conf", "a=1\n")
    (tmp_path / "etc/link.conf").symlink_to("/etc/real.conf")
    apply(tmp_path, config("kernel.sysctl.persist", ("a", 2), configpath="/etc/link.conf"))
    assert target.read_text() == "a=2\n"


def fail_on(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make the rename onto ``name`` fail, as a full disk or a read-only mount would."""
    real_replace = atomic._replace

    def replace(src: str, dst: os.PathLike[str]) -> None:
        if Path(dst).name == name:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic, "_replace", replace)


def test_failed_second_write_restores_the_first(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    first = write(tmp_path, "/etc/sysctl.conf", "# keep\na = 1\n")
    first.chmod(0o640)
    write(tmp_path, "/etc/security/limits.conf", "* soft core 0\n")
    fail_on(monkeypatch, "limits.conf")
    with pytest.raises(WriteError) as err:
        apply(tmp_path, config("kernel.sysctl.persist", ("a", 2)),
              config("pam.limits", ("*", "soft.core.1")))
    assert "restored" in str(err.value) and "limits.conf" in str(err.value)
    assert first.read_bytes() == b"# keep\na = 1\n"
    assert stat.S_IMODE(first.stat().st_mode) == 0o640
    assert read(tmp_path, "/etc/security/limits.conf") == "* soft core 0\n"
    leftovers = [p for p in (tmp_path / "etc").rglob("*") if "kubeos-tmp" in p.name]
    assert leftovers == []


def test_failed_write_removes_files_the_request_created(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path, "/etc/containerd/config.toml", "")
    fail_on(monkeypatch, "config.toml")
    with pytest.raises(WriteError):
        apply(tmp_path, config("kernel.sysctl.persist", ("a", 1), configpath="/etc/new.conf"),
              config("container.containerd", ("grpc.uid", 1)))
    assert not (tmp_path / "etc/new.conf").exists()


def test_failed_write_restores_live_sysctl(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    proc = write(tmp_path, "/proc/sys/vm/swappiness", "60\n")
    write(tmp_path, "/etc/sysctl.conf", "")
    fail_on(monkeypatch, "sysctl.conf")
    with pytest.raises(WriteError):
        apply(tmp_path, config("kernel.sysctl", ("vm.swappiness", 10)),
              config("kernel.sysctl.persist", ("vm.swappiness", 10)))
    assert proc.read_text() == "60\n"


def test_failed_fsync_after_rename_is_restored_too(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the rename (directory sync) must not leave that file changed."""
    path = write(tmp_path, "/etc/sysctl.conf", lines("a=1"))
    real_fsync = atomic._fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # 1: the temp file, 2: the directory after the rename
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(atomic, "_fsync", fsync)
    with pytest.raises(WriteError):
        apply(tmp_path, config("kernel.sysctl.persist", ("a", 2)))
    assert path.read_text() == lines("a=1")


def test_stale_temp_files_of_a_killed_write_are_removed_at_start(tmp_path: Path) -> None:
    """A kill between mkstemp and rename leaves ``.<name>.*.kubeos-tmp``; start removes it."""
    from kubeos.agent.settings.atomic import remove_stale_temps

    stale = [write(tmp_path, "/etc/.sysctl.conf.abc.kubeos-tmp", "half"),
             write(tmp_path, "/etc/security/.limits.conf.x1.kubeos-tmp", "half"),
             write(tmp_path, "/boot/efi/EFI/openEuler/.grub.cfg.q.kubeos-tmp", "half"),
             write(tmp_path, "/var/lib/kubelet/.config.yaml.z.kubeos-tmp", "half")]
    keep = [write(tmp_path, "/etc/sysctl.conf", "a=1\n"),
            write(tmp_path, "/etc/notes.kubeos-tmp", "not ours: no leading dot"),
            write(tmp_path, "/var/lib/kubelet/pods/.x.kubeos-tmp", "not walked")]
    removed = remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
