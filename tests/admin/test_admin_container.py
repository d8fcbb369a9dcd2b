"""The admin container's build directory, its key script, and the sample manifests."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "deploy" / "admin-container"
KEY_SCRIPT = BUILD / "set-ssh-pub-key"
SAMPLE = REPO / "config" / "samples" / "admin-container.yaml"

# Well-formed ed25519 public keys (ssh-keygen -l accepts them); no private halves are kept.
KEY_A = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMkfPla/Uc8oYoRzOHh2jnb8/0R+fN+GsDg4vMqt4IiV "
         "admin@example")
KEY_B = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFTjvrbTKbpF8/nyXKdmAUPHQQGdP0wUp41rGQW3RvNE "
         "other@example")


def set_key(key_file: Path, auth: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(KEY_SCRIPT), str(key_file), str(auth)],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "secret" / "ssh-pub-key", tmp_path / "root" / ".ssh" / "authorized_keys"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_key_script_run_twice_leaves_one_key(paths: tuple[Path, Path]) -> None:
    key_file, auth = paths
    write(key_file, KEY_A + "\n")
    for _ in range(2):
        done = set_key(key_file, auth)
        assert done.returncode == 0, done.stderr
    assert auth.read_text() == KEY_A + "\n"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert stat.S_IMODE(auth.parent.stat().st_mode) == 0o700


def test_key_script_keeps_other_lines_and_fixes_modes(paths: tuple[Path, Path]) -> None:
    key_file, auth = paths
    write(key_file, KEY_A + "\r\n")  # CRLF, as a Secret made on Windows has it
    # An unterminated last line must not fuse with the appended key.
    write(auth, "# managed by hand\n" + KEY_B)
    auth.chmod(0o644)
    auth.parent.chmod(0o755)
    assert set_key(key_file, auth).returncode == 0
    assert set_key(key_file, auth).returncode == 0
    assert auth.read_text() == f"# managed by hand\n{KEY_B}\n{KEY_A}\n"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert stat.S_IMODE(auth.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in auth.parent.iterdir()) == ["authorized_keys"]


def test_key_script_takes_several_keys_and_skips_comments(paths: tuple[Path, Path]) -> None:
    key_file, auth = paths
    write(key_file, f"# team keys\n\n  {KEY_A}  \n{KEY_B}\n{KEY_A}\n")
    assert set_key(key_file, auth).returncode == 0
    assert auth.read_text() == f"{KEY_A}\n{KEY_B}\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("", "holds no public key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n", "private key"),
        ("hello world\n", "line 1 of"),
    ],
    ids=["missing", "empty", "private-key", "not-a-key"],
)
def test_key_script_refuses_bad_input_and_changes_nothing(
    paths: tuple[Path, Path], content: str | None, message: str
) -> None:
    key_file, auth = paths
    if content is not None:
        write(key_file, content)
    write(auth, KEY_B + "\n")
    done = set_key(key_file, auth)
    assert done.returncode == 1
    assert done.stderr.startswith("set-ssh-pub-key: ") and message in done.stderr
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in done.stderr + done.stdout
    assert auth.read_text() == KEY_B + "\n"
    assert sorted(p.name for p in auth.parent.iterdir()) == ["authorized_keys"]


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="validation uses ssh-keygen")
def test_sample_placeholder_key_is_rejected(paths: tuple[Path, Path]) -> None:
    """Applying the sample unchanged must fail loudly, not run an sshd nobody can enter."""
    key_file, auth = paths
    write(key_file, base64.b64decode(_docs()["Secret"]["data"]["ssh-pub-key"]).decode())
    done = set_key(key_file, auth)
    assert done.returncode == 1
    assert "is not an SSH public key" in done.stderr


def _docs() -> dict[str, Any]:
    return {d["kind"]: d for d in yaml.safe_load_all(SAMPLE.read_text()) if d}


def test_sample_manifests_match_the_reference_layout() -> None:
    docs = _docs()
    assert set(docs) == {"Secret", "Deployment", "Service"}
    secret = docs["Secret"]
    assert secret["metadata"]["name"] == "root-secret"
    assert set(secret["data"]) == {"ssh-pub-key"}

    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod["nodeName"]
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    assert {"containerPort": 22, "name": "ssh"} in container["ports"]
    (mount,) = container["volumeMounts"]
    assert mount == {"name": "secret-volume", "mountPath": "/etc/secret-volume", "readOnly": True}
    (volume,) = pod["volumes"]
    assert volume == {"name": "secret-volume", "secret": {"secretName": "root-secret"}}

    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = docs["Service"]["spec"]
    assert service["type"] == "NodePort"
    assert service["selector"].items() <= labels.items()
    (port,) = service["ports"]
    assert port["port"] == 22 and port["targetPort"] == 22
    assert 30000 <= port["nodePort"] <= 32767


def test_sample_is_not_in_any_kustomization() -> None:
    """The OS samples' kustomization belongs to the operator; the admin pod is opt-in."""
    for path in (REPO / "config").rglob("kustomization.yaml"):
        assert "admin-container" not in path.read_text(), path


def test_build_directory_holds_every_copied_file() -> None:
    text = (BUILD / "Containerfile").read_text()
    sources = []
    for line in text.splitlines():
        if line.startswith("COPY "):
            sources += [s for s in line.split()[1:-1] if not s.startswith("--")]
    assert sorted(sources) == ["entrypoint", "hostshell", "set-ssh-pub-key", "sshd_config"]
    for name in sources:
        assert (BUILD / name).is_file(), name
    assert re.search(r"openssh-server", text) and "util-linux" in text and "python3" in text
    for name in ("entrypoint", "hostshell", "set-ssh-pub-key"):
        assert os.access(BUILD / name, os.X_OK), f"{name} is not executable in the tree"


def test_packaged_hostshell_is_the_module() -> None:
    """The image's copy must not drift: refresh with the cp command in the README."""
    module = REPO / "src" / "kubeos" / "admin" / "hostshell.py"
    assert (BUILD / "hostshell").read_bytes() == module.read_bytes(), (
        "deploy/admin-container/hostshell is stale: "
        "cp src/kubeos/admin/hostshell.py deploy/admin-container/hostshell"
    )
    assert module.read_text().startswith("#!/usr/bin/env python3\n")


@pytest.mark.parametrize("script", ["set-ssh-pub-key", "entrypoint"])
def test_shell_scripts_parse_as_posix_sh(script: str) -> None:
    for shell in ("sh", "dash", "bash"):
        if shutil.which(shell):
            done = subprocess.run([shell, "-n", str(BUILD / script)], capture_output=True,
                                  text=True, timeout=30, check=False)
            assert done.returncode == 0, (shell, done.stderr)
