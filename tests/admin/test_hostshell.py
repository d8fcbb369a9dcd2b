"""hostshell's decisions, without namespaces: arguments, search paths, shell choice, refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubeos.admin import hostshell
from kubeos.admin.hostshell import HostshellError

REPO = Path(__file__).resolve().parents[2]


def test_no_arguments_means_an_interactive_shell() -> None:
    assert hostshell.parse_args([]) is None
    assert hostshell.parse_args(["--"]) is None


def test_command_after_double_dash_is_passed_through_verbatim() -> None:
    assert hostshell.parse_args(["--", "ls", "-l", "--", "x"]) == ["ls", "-l", "--", "x"]
    assert hostshell.parse_args(["systemctl", "status"]) == ["systemctl", "status"]


def test_unknown_option_is_an_error_not_a_command() -> None:
    with pytest.raises(HostshellError) as err:
        hostshell.parse_args(["-x"])
    assert err.value.exit_code == 2


def test_help_exits_zero_with_usage() -> None:
    with pytest.raises(HostshellError) as err:
        hostshell.parse_args(["--help"])
    assert err.value.exit_code == 0
    assert "hostPID: true" in str(err.value)


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        ("/usr/bin:/bin", "/usr/bin:/bin:/R/a:/R/b"),
        (None, "/R/a:/R/b"),
        ("", "/R/a:/R/b"),
        (":/usr/bin::", "/usr/bin:/R/a:/R/b"),
    ],
)
def test_search_path_appends_container_dirs_and_never_an_empty_entry(
    first: str | None, expected: str
) -> None:
    assert hostshell.join_search_path(first, "/R", ["a", "b"]) == expected


def test_resolve_in_root_keeps_absolute_symlinks_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "bash").write_text("")
    (root / "bin").symlink_to("/usr/bin")  # absolute: must mean root/usr/bin, not ours
    (root / "loop").symlink_to("loop")
    assert hostshell.resolve_in_root(str(root), "/bin/bash") == str(root / "usr/bin/bash")
    assert hostshell.resolve_in_root(str(root), "/bin/../bin/./bash") == str(
        root / "usr/bin/bash")
    assert hostshell.resolve_in_root(str(root), "/../../bin/bash") == str(root / "usr/bin/bash")
    assert hostshell.resolve_in_root(str(root), "/bin/zsh") is None
    assert hostshell.resolve_in_root(str(root), "/loop/x") is None


def _executable(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def test_shell_prefers_host_bash_then_container_bash_then_host_sh(tmp_path: Path) -> None:
    host, container = tmp_path / "host", tmp_path / "container"
    host.mkdir()
    container.mkdir()
    with pytest.raises(HostshellError, match="no shell found"):
        hostshell.choose_shell(str(host), str(container))
    _executable(host / "bin" / "sh")
    assert hostshell.choose_shell(str(host), str(container)) == "/bin/sh"
    _executable(container / "usr" / "bin" / "bash")
    assert hostshell.choose_shell(str(host), str(container)) == str(container / "usr/bin/bash")
    _executable(host / "usr" / "bin" / "bash")
    assert hostshell.choose_shell(str(host), str(container)) == "/usr/bin/bash"


def test_missing_nsenter_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HostshellError, match="install util-linux") as err:
        hostshell.find_nsenter([str(tmp_path / "nsenter")])
    assert err.value.exit_code == 127


def _fake_proc(tmp_path: Path) -> Path:
    """A /proc with our parent's root (the container) and PID 1's root (the host)."""
    proc = tmp_path / "proc"
    _executable(proc / "1" / "root" / "bin" / "bash")
    (proc / str(os.getppid()) / "root").mkdir(parents=True)
    return proc


def test_plan_enters_all_namespaces_of_pid_1_with_a_clean_environment(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path)
    r = f"{proc}/{os.getppid()}/root"
    environ = {"PATH": "/usr/sbin:/usr/bin", "TERM": "xterm-256color", "HOME": "/home/x",
               "SSH_CONNECTION": "1.2.3.4 5 6.7.8.9 22", "LD_PRELOAD": "/evil.so"}
    plan = hostshell.make_plan(None, environ, proc=str(proc), nsenter="/usr/bin/nsenter")
    assert plan.executable == "/usr/bin/nsenter"
    assert plan.argv == ["/usr/bin/nsenter", "--target", "1", "--all", "--", "/bin/bash"]
    assert plan.env == {
        "PATH": f"/usr/sbin:/usr/bin:{r}/usr/bin:{r}/usr/sbin:{r}/usr/local/bin:{r}/usr/local/sbin",
        "LD_LIBRARY_PATH": f"{r}/usr/lib:{r}/usr/lib64:{r}/lib:{r}/lib64",
        "TERM": "xterm-256color",
        "HOME": "/root",
    }


def test_plan_runs_the_given_command_and_defaults_path(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path)
    plan = hostshell.make_plan(["ls", "-l"], {}, proc=str(proc), nsenter="/x/nsenter")
    assert plan.argv[-3:] == ["--", "ls", "-l"]
    assert plan.env["PATH"].startswith(hostshell.DEFAULT_PATH + ":")
    assert "TERM" not in plan.env


def test_plan_fails_when_the_container_root_is_not_visible(tmp_path: Path) -> None:
    with pytest.raises(HostshellError, match="cannot see the admin container's root"):
        hostshell.make_plan(None, {}, proc=str(tmp_path), nsenter="/x/nsenter")


def test_non_root_is_refused_with_a_clear_message() -> None:
    """Drops to nobody in a child (after importing, since /root may be closed to nobody)."""
    code = (
        "import os, sys\n"
        "from kubeos.admin.hostshell import main\n"
        "if os.geteuid() == 0:\n"
        "    os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "sys.exit(main(['--', 'true']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, cwd="/")
    assert done.returncode == 1
    uid = 65534 if os.geteuid() == 0 else os.geteuid()
    assert done.stderr == (
        f"hostshell: must be run as root (effective uid is {uid}): log in to the admin "
        "container as root\n"
    )
    assert done.stdout == ""


def test_console_script_is_declared() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert 'hostshell = "kubeos.admin.hostshell:main"' in text


def test_help_from_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "kubeos.admin.hostshell", "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: hostshell")
