"""Hostile or mistyped settings requests are refused and change nothing outside their target.

Each case was reproduced on the agent before the fix: an arbitrary-file writer through
``kernel.sysctl.persist``'s ``configpath``, a limits.conf poisoned by ``#``, line breaks that
``splitlines`` knows but a ``\\r\\n`` check did not, and a symlinked directory under ``--root``.
The property at the end holds the invariant for random requests: nothing outside the files
the engine may touch changes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeos.agent.settings import SettingsError
from kubeos.agent.settings.engine import apply_settings

from .support import apply, config, read, write

EXAMPLES = int(os.environ.get("KUBEOS_PROPERTY_EXAMPLES", "80"))


@pytest.mark.parametrize("path", [
    "/etc/shadow", "/etc/profile.d/x.sh", "/etc/profile.d/x.conf", "/etc/cron.d/job.conf",
    "/etc/sudoers.d/k.conf", "/etc/systemd/system/x.conf", "/etc/ssh/sshd_config.d/x.conf",
    "/etc/pam.d/x.conf", "/etc/security/limits.conf", "/etc/ld.so.conf.d/x.conf",
    "/etc/ld.so.conf", "/etc/modprobe.d/x.conf", "/etc/udev/rules.d/x.conf", "/root/x.conf",
    "/usr/lib/sysctl.d/x.conf", "/etc/init.d/x.conf", "/etc/nsswitch.conf",
])
def test_configpath_outside_the_rules_is_refused(tmp_path: Path, path: str) -> None:
    write(tmp_path, path, "keep\n")
    with pytest.raises(SettingsError, match=r"configpath must be a \*\.conf file under /etc"):
        apply(tmp_path, config("kernel.sysctl.persist", ("X", "$(reboot)"), configpath=path))
    assert read(tmp_path, path) == "keep\n"


@pytest.mark.parametrize("path", ["/etc/persist.conf", "/etc/sysctl.d/90-kubeos.conf",
                                  "/etc/sysctl.conf"])
def test_configpath_the_user_guide_uses_still_works(tmp_path: Path, path: str) -> None:
    write(tmp_path, path, "")
    apply(tmp_path, config("kernel.sysctl.persist", ("kernel.pid_max", "4194304"),
                           configpath=path))
    assert read(tmp_path, path) == "kernel.pid_max=4194304\n"


def test_a_symlink_configpath_may_not_point_where_the_rules_refuse(tmp_path: Path) -> None:
    write(tmp_path, "/etc/profile.d/evil.sh", "keep\n")
    (tmp_path / "etc/x.conf").symlink_to("/etc/profile.d/evil.sh")
    with pytest.raises(SettingsError, match=r"is a symlink to /etc/profile\.d/evil\.sh"):
        apply(tmp_path, config("kernel.sysctl.persist", ("a", "1"), configpath="/etc/x.conf"))
    assert read(tmp_path, "/etc/profile.d/evil.sh") == "keep\n"


def test_a_fifo_configpath_is_refused(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc/x.conf")
    with pytest.raises(SettingsError, match="not a regular file"):
        apply(tmp_path, config("kernel.sysctl.persist", ("a", "1"), configpath="/etc/x.conf"))


def test_the_agent_option_widens_the_directories(tmp_path: Path) -> None:
    write(tmp_path, "/opt/site/sysctl.conf", "")
    request = config("kernel.sysctl.persist", ("a", "1"), configpath="/opt/site/sysctl.conf")
    with pytest.raises(SettingsError, match="not under /etc"):
        apply(tmp_path, request)
    apply_settings([request], root=tmp_path, booted_slot="A", persist_dirs=["/opt/site"])
    assert read(tmp_path, "/opt/site/sysctl.conf") == "a=1\n"


@pytest.mark.parametrize("key, value", [("#*", "soft.nofile.1024"), ("*", "soft.nofile.1#0"),
                                        ("@adm#x", "hard.nproc.10")])
def test_a_comment_mark_cannot_poison_limits_conf(tmp_path: Path, key: str, value: str) -> None:
    original = "* soft nofile 1024\n"
    write(tmp_path, "/etc/security/limits.conf", original)
    with pytest.raises(SettingsError, match="'#' is not allowed"):
        apply(tmp_path, config("pam.limits", (key, value)))
    assert read(tmp_path, "/etc/security/limits.conf") == original
    apply(tmp_path, config("pam.limits", ("*", "soft.nofile.2048")))  # still editable


@pytest.mark.parametrize("brk", ["\v", "\f", "\x1c", "\x85", "\u2028", "\u2029", "\0"])
@pytest.mark.parametrize("model, path", [("kernel.sysctl.persist", "/etc/sysctl.conf"),
                                         ("pam.limits", "/etc/security/limits.conf")])
def test_every_line_break_splitlines_knows_is_refused(
    tmp_path: Path, brk: str, model: str, path: str
) -> None:
    write(tmp_path, path, "")
    value = f"1{brk}kernel.modules_disabled=1" if model != "pam.limits" \
        else f"soft.nofile.1{brk}x"
    with pytest.raises(SettingsError, match="line breaks are not allowed"):
        apply(tmp_path, config(model, ("a", value)))
    assert read(tmp_path, path) == ""


def test_a_symlinked_directory_does_not_lead_outside_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sysctl.conf").write_text("keep\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").symlink_to(outside)
    with pytest.raises(SettingsError, match="outside the root"):
        apply(root, config("kernel.sysctl.persist", ("a", "1")))
    assert (outside / "sysctl.conf").read_text() == "keep\n"


_MODELS = st.sampled_from(["kernel.sysctl.persist", "pam.limits", "grub.cmdline.current"])
_PATHS = st.sampled_from(["", "/etc/persist.conf", "/etc/../outside/x.conf", "/outside/x.conf",
                          "/etc/profile.d/x.conf", "etc/x.conf", "/etc/lnk.conf"])
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=_MODELS, path=_PATHS, key=_TEXT, value=_TEXT,
       op=st.sampled_from(["", "delete"]))
def test_random_requests_change_nothing_outside_their_target(
    model: str, path: str, key: str, value: str, op: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        outside = top / "outside"
        outside.mkdir()
        (outside / "x.conf").write_text("keep\n")
        root = top / "root"
        write(root, "/etc/lnk.conf", "")
        (root / "etc/lnk.conf").unlink()
        (root / "etc/lnk.conf").symlink_to(outside / "x.conf")
        write(root, "/etc/profile.d/x.conf", "keep\n")
        before = {p: p.read_bytes() for p in [outside / "x.conf", root / "etc/profile.d/x.conf"]}
        item = (key, value, op) if op else (key, value)
        with contextlib.suppress(SettingsError):
            apply(root, config(model, item, configpath=path))
        assert {p: p.read_bytes() for p in before} == before
        assert sorted(p.name for p in outside.iterdir()) == ["x.conf"]
