"""Disk-image upgrades on real GPT disks (loop devices) from a real HTTPS server; the A/B switch,
commit, fallback and rollback against grubenv as GRUB and grub-editenv see it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeos.agent.boot.partitions import ext_label
from kubeos.agent.client import AgentClient
from kubeos.agent.errors import (
    AgentError,
    AgentRpcError,
    CertificateError,
    ChecksumMismatchError,
    DownloadError,
    InsecureSourceError,
    InvalidRequestError,
    SpaceError,
    StateError,
    UnsupportedError,
)
from kubeos.agent.messages import UpgradeRequest
from kubeos.agent.service import AgentService
from kubeos.agent.upgrade.sources import NotSupportedYet

from .conftest import Node
from .support import (
    FileServer,
    Route,
    make_fs_image,
    make_root_tree,
    make_rootfs_tar,
    serve_files,
    sha256_of,
)
from .test_rpc import running

pytestmark = pytest.mark.node


def req(url: str, digest: str, **kw: Any) -> dict[str, Any]:
    """An UpgradeRequest exactly as the reference proxy sends it."""
    return {
        "version": kw.get("version", "2.0.0"),
        "check_sum": digest,
        "image_type": kw.get("image_type", "disk"),
        "container_image": "",
        "image_url": url,
        "flag_safe": kw.get("flag_safe", False),
        "mtls": kw.get("mtls", False),
        "certs": {
            "ca_cert": kw.get("ca_cert", "ca.crt"),
            "client_cert": kw.get("client_cert", "client.crt"),
            "client_key": kw.get("client_key", "client.key"),
        },
    }


@pytest.fixture
def tar_v2(tmp_path: Path) -> Path:
    return make_rootfs_tar(make_root_tree(tmp_path / "tree-v2", "2.0.0"), tmp_path / "v2.tar")


@pytest.fixture
def https(node: Node, tar_v2: Path) -> Iterator[FileServer]:
    with serve_files(node.pki, node.tmp / "srv") as srv:
        srv.routes["/kubeos.tar"] = Route(file=tar_v2)
        yield srv


def staged_and_upgraded(node: Node, agent: AgentService, srv: FileServer, tar: Path) -> None:
    res = agent.prepare_upgrade([req(srv.url("/kubeos.tar"), sha256_of(tar))])
    assert res["status"] == "UpgradeReady"
    assert agent.upgrade([])["status"] == "Upgraded"
    node.wait_reboot()


def assert_untouched(node: Node, before: bytes, agent: AgentService) -> None:
    """Nothing switched, nothing left mounted, no write marker left."""
    assert node.grubenv_bytes() == before
    assert not os.path.ismount(node.paths.mount_dir)
    assert agent.state.get("writing") is None
    assert node.reboots == []


# --- the happy paths --------------------------------------------------------------------------


def test_tar_upgrade_trial_and_commit(node: Node, https: FileServer, tar_v2: Path) -> None:
    agent = node.agent()
    before = node.grubenv_bytes()
    res = agent.prepare_upgrade([req(https.url("/kubeos.tar"), sha256_of(tar_v2).upper())])
    assert (res["status"], res["slot"], res["version"], res["payload"]) == (
        "UpgradeReady",
        "B",
        "2.0.0",
        "rootfs-tar",
    )
    assert node.grubenv_bytes() == before  # prepare never touches the boot entry
    assert ext_label(node.disk.parts["ROOT-B"]) == "ROOT-B"
    status = agent.status([])
    assert status["staged"]["version"] == "2.0.0"
    assert {s["name"]: s["version"] for s in status["slots"]} == {"A": "1.0.0", "B": "2.0.0"}

    assert agent.upgrade([{"version": "2.0.0"}]) == {
        "status": "Upgraded",
        "slot": "B",
        "version": "2.0.0",
    }
    node.wait_reboot()
    listed = subprocess.run(
        ["grub-editenv", str(node.paths.grubenv), "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listed == "saved_entry=A\nnext_entry=B\n"

    assert node.grub() == "B"  # one-shot trial
    node.boot("B", "2.0.0")
    trial = node.agent()
    st = trial.status([])
    assert (st["booted_slot"], st["committed_slot"], st["trial_slot"]) == ("B", "A", "B")
    assert st["commit_deadline"] is not None
    assert trial.commit([])["status"] == "Committed"
    assert node.env()["saved_entry"] == "B"
    assert "boot_trial" not in node.env()
    assert node.grub() == "B"
    assert trial.status([])["staged"] is None


def test_raw_image_over_mtls(node: Node, tmp_path: Path) -> None:
    tree = make_root_tree(tmp_path / "tree-img", "2.1.0")
    image = make_fs_image(tree, tmp_path / "root.img", 24, label="ROOT-A")  # wrong label on purpose
    with open(image, "ab") as f:
        f.write(b"\0" * 1000)  # a tail that O_DIRECT cannot write
    with serve_files(node.pki, tmp_path / "srv", require_client_cert=True) as srv:
        srv.routes["/root.img"] = Route(file=image)
        agent = node.agent()
        res = agent.prepare_upgrade(
            [req(srv.url("/root.img"), sha256_of(image), version="2.1.0", mtls=True)]
        )
    assert (res["payload"], res["version"], res["bytes"]) == (
        "fs-image",
        "2.1.0",
        (24 << 20) + 1000,
    )
    assert ext_label(node.disk.parts["ROOT-B"]) == "ROOT-B"  # relabelled for GRUB's search


def test_http_needs_flag_safe(node: Node, tar_v2: Path) -> None:
    with serve_files(None, node.tmp / "srv") as srv:
        srv.routes["/kubeos.tar"] = Route(file=tar_v2)
        agent = node.agent()
        before = node.grubenv_bytes()
        with pytest.raises(InsecureSourceError, match="flagSafe"):
            agent.prepare_upgrade([req(srv.url("/kubeos.tar"), sha256_of(tar_v2))])
        assert srv.requests == []  # refused before connecting
        assert_untouched(node, before, agent)
        res = agent.prepare_upgrade(
            [req(srv.url("/kubeos.tar"), sha256_of(tar_v2), flag_safe=True)]
        )
        assert res["status"] == "UpgradeReady"


# --- fallback and rollback --------------------------------------------------------------------


def test_no_commit_within_window_reboots_into_previous_slot(
    node: Node, https: FileServer, tar_v2: Path
) -> None:
    staged_and_upgraded(node, node.agent(), https, tar_v2)
    assert node.grub() == "B"
    node.boot("B", "2.0.0")
    agent = node.agent(commit_window=0.3)
    node.wait_reboot(2)
    env = node.env()
    assert env.get("boot_trial") is None and env["kubeos_rollback"] == "B"
    assert env["saved_entry"] == "A"
    assert "not committed" in (agent.status([])["last_error"] or "")
    assert node.grub() == "A"


def test_failed_trial_boot_is_recorded(node: Node, https: FileServer, tar_v2: Path) -> None:
    staged_and_upgraded(node, node.agent(), https, tar_v2)
    assert node.grub() == "B"  # B panics; GRUB's next boot is saved_entry
    assert node.grub() == "A"
    node.boot("A", "1.0.0")
    agent = node.agent()
    env = node.env()
    assert "boot_trial" not in env and env["kubeos_rollback"] == "B"
    st = agent.status([])
    assert "trial boot of slot B failed" in st["last_error"]
    assert st["trial_slot"] is None and st["staged"] is None


def test_rollback_checks_the_target_version(node: Node, https: FileServer, tar_v2: Path) -> None:
    staged_and_upgraded(node, node.agent(), https, tar_v2)
    node.grub()
    node.boot("B", "2.0.0")
    node.agent().commit([])
    agent = node.agent()
    with pytest.raises(StateError, match=r"holds KubeOS 1\.0\.0, not 9\.9"):
        agent.rollback([{"version": "9.9"}])
    assert node.env().get("next_entry") in (None, "")
    assert agent.rollback([])["status"] == "Rollbacked"  # reference: no params
    assert node.env()["next_entry"] == "A" and node.env()["saved_entry"] == "B"


def test_rollback_to_an_unbootable_slot_is_refused(node: Node) -> None:
    agent = node.agent()
    before = node.grubenv_bytes()
    with pytest.raises(StateError, match="not a bootable KubeOS root"):
        agent.rollback([])
    with pytest.raises(StateError, match="no verified image is staged"):
        agent.upgrade([])
    assert node.grubenv_bytes() == before and node.reboots == []


# --- failures: nothing switched, nothing left behind -------------------------------------------


def _refused(
    node: Node,
    agent: AgentService,
    request: dict[str, Any],
    exc: type[AgentError],
    match: str,
    *,
    written: bool = False,
) -> None:
    """The request fails; nothing switched; the slot is dirty only if bytes were written."""
    before = node.grubenv_bytes()
    with pytest.raises(exc, match=match):
        agent.prepare_upgrade([request])
    assert_untouched(node, before, agent)
    assert agent.state.get("dirty_slot") == ("B" if written else None)
    assert (agent.status([])["last_error"] or "").startswith("prepare_upgrade failed")


def test_checksum_mismatch(node: Node, https: FileServer) -> None:
    agent = node.agent()
    _refused(
        node,
        agent,
        req(https.url("/kubeos.tar"), "0" * 64),
        ChecksumMismatchError,
        "mismatch",
        written=True,
    )
    with pytest.raises(StateError, match="incomplete or unverified"):
        agent.upgrade([])
    with pytest.raises(StateError, match="incomplete or unverified"):
        agent.rollback([])


def test_truncated_stream(node: Node, https: FileServer, tmp_path: Path) -> None:
    tar = make_rootfs_tar(make_root_tree(tmp_path / "t", "2.0.0", extra_mib=6), tmp_path / "t.tar")
    https.routes["/short.tar"] = Route(file=tar, truncate_at=tar.stat().st_size // 2)
    _refused(
        node,
        node.agent(),
        req(https.url("/short.tar"), sha256_of(tar)),
        DownloadError,
        "truncated",
        written=True,
    )


def test_not_found(node: Node, https: FileServer) -> None:
    _refused(
        node, node.agent(), req(https.url("/missing.tar"), "a" * 64), DownloadError, "HTTP 404"
    )


def test_wrong_ca(node: Node, https: FileServer, tar_v2: Path) -> None:
    _refused(
        node,
        node.agent(),
        req(https.url("/kubeos.tar"), sha256_of(tar_v2), ca_cert="other-ca.crt"),
        DownloadError,
        "TLS",
    )


def test_missing_or_foreign_client_cert(node: Node, tar_v2: Path) -> None:
    with serve_files(node.pki, node.tmp / "srv", require_client_cert=True) as srv:
        srv.routes["/kubeos.tar"] = Route(file=tar_v2)
        agent = node.agent()
        url, digest = srv.url("/kubeos.tar"), sha256_of(tar_v2)
        _refused(node, agent, req(url, digest, mtls=False), DownloadError, "TLS|cannot download")
        _refused(
            node,
            agent,
            req(url, digest, mtls=True, client_cert=""),
            CertificateError,
            "Please provide",
        )
        _refused(
            node,
            agent,
            req(url, digest, mtls=True, client_cert="foreign.crt", client_key="foreign.key"),
            DownloadError,
            "TLS|cannot download",
        )


def test_cert_name_path_escape(node: Node, https: FileServer, tar_v2: Path) -> None:
    for field in ("ca_cert", "client_cert", "client_key"):
        _refused(
            node,
            node.agent(),
            req(
                https.url("/kubeos.tar"),
                sha256_of(tar_v2),
                mtls=True,
                **{field: "../../etc/shadow"},
            ),
            CertificateError,
            "certs",
        )
    assert https.requests == []


def test_partition_too_small(node: Node, tmp_path: Path) -> None:
    tree = make_root_tree(tmp_path / "tree-big", "2.0.0")
    image = make_fs_image(tree, tmp_path / "big.img", 48)  # ROOT-B is 40 MiB
    with serve_files(node.pki, tmp_path / "srv") as srv:
        srv.routes["/big.img"] = Route(file=image)
        _refused(
            node, node.agent(), req(srv.url("/big.img"), sha256_of(image)), SpaceError, "larger"
        )
    assert ext_label(node.disk.parts["ROOT-B"]) == "ROOT-B"  # not a byte written


def test_disk_full(node: Node, tmp_path: Path) -> None:
    tree = make_root_tree(tmp_path / "tree-fat", "2.0.0", extra_mib=36)
    tar = make_rootfs_tar(tree, tmp_path / "fat.tar")
    with serve_files(node.pki, tmp_path / "srv") as srv:
        srv.routes["/fat.tar"] = Route(file=tar)
        _refused(
            node,
            node.agent(),
            req(srv.url("/fat.tar"), sha256_of(tar)),
            SpaceError,
            "does not fit",
            written=True,
        )


def test_image_types(node: Node) -> None:
    agent = node.agent()
    with pytest.raises(UnsupportedError, match="not supported yet"):
        NotSupportedYet("oci").validate(UpgradeRequest.from_json(req("", "", image_type="oci")))
    with pytest.raises(InvalidRequestError, match='Invalid image type "foo"'):
        agent.prepare_upgrade([req("", "", image_type="foo")])
    with pytest.raises(InvalidRequestError, match="check_sum"):
        agent.prepare_upgrade([req("https://127.0.0.1/x", "abc")])


# --- over RPC: busy, status during a long write, crash and restart -----------------------------


def _slow(node: Node, tmp_path: Path, mib: int) -> Path:
    tree = make_root_tree(tmp_path / "tree-slow", "2.0.0", extra_mib=mib)
    return make_rootfs_tar(tree, tmp_path / "slow.tar")


def test_one_operation_at_a_time_and_status_meanwhile(
    node: Node, https: FileServer, tmp_path: Path
) -> None:
    tar = _slow(node, tmp_path, 8)
    https.routes["/slow.tar"] = Route(file=tar, delay_per_mib=0.15)
    agent = node.agent()
    sock = tmp_path / "agent.sock"
    with running(agent.rpc_methods(), sock):
        client = AgentClient(sock)
        results: list[Any] = []
        t = threading.Thread(
            target=lambda: results.append(
                client.call("prepare_upgrade", [req(https.url("/slow.tar"), sha256_of(tar))])
            )
        )
        t.start()
        deadline = time.monotonic() + 10
        while client.status().busy is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.status().busy == "prepare_upgrade"  # answered during the write
        for method, params in (
            ("prepare_upgrade", [req(https.url("/kubeos.tar"), "a" * 64)]),
            ("upgrade", []),
            ("configure", [{"configs": []}]),
        ):
            with pytest.raises(AgentRpcError, match="processing another request") as err:
                client.call(method, params)
            assert err.value.is_busy
        t.join(30)
        assert results and results[0]["status"] == "UpgradeReady"


def _serve(node: Node, sock: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubeos.agent.cli",
            "serve",
            "--root",
            str(node.root),
            "--socket",
            str(sock),
            "--mountinfo",
            str(node.paths.mountinfo),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "no socket")
        time.sleep(0.05)
    return proc


def test_agent_killed_mid_write_then_restarted(
    node: Node, https: FileServer, tmp_path: Path
) -> None:
    tar = _slow(node, tmp_path, 12)
    https.routes["/slow.tar"] = Route(file=tar, delay_per_mib=0.3)
    request = req(https.url("/slow.tar"), sha256_of(tar))
    before = node.grubenv_bytes()
    sock = tmp_path / "agent.sock"
    proc = _serve(node, sock)
    try:
        outcome: list[BaseException] = []

        def call() -> None:
            try:
                AgentClient(sock).call("prepare_upgrade", [request])
            except AgentError as exc:
                outcome.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 20
        while not os.path.ismount(node.paths.mount_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert os.path.ismount(node.paths.mount_dir), "the write never started"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        caller.join(10)
        assert outcome, "the caller should see the connection drop"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert node.grubenv_bytes() == before  # boot entry untouched
    sock.unlink(missing_ok=True)

    proc = _serve(node, sock)  # restart: recovery, then retry from scratch
    try:
        client = AgentClient(sock)
        st = client.status()
        assert "interrupted" in (st.last_error or "")
        assert not os.path.ismount(node.paths.mount_dir)
        slot_b = st.slot("B")
        assert slot_b is not None and slot_b.bootable is False
        result = client.call("prepare_upgrade", [request])
        assert result["status"] == "UpgradeReady"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert node.grubenv_bytes() == before
    agent = node.agent()
    assert agent.upgrade([])["status"] == "Upgraded"
    node.wait_reboot()
    assert node.env()["next_entry"] == "B"


# --- during a trial boot ----------------------------------------------------------------------


def _on_trial(node: Node, https: FileServer, tar_v2: Path) -> AgentService:
    staged_and_upgraded(node, node.agent(), https, tar_v2)
    assert node.grub() == "B"
    node.boot("B", "2.0.0")
    node.reboots.clear()
    return node.agent()


def test_no_new_upgrade_while_a_trial_is_uncommitted(
    node: Node, https: FileServer, tar_v2: Path
) -> None:
    """The inactive slot is the fallback during a trial: it must not be overwritten."""
    agent = _on_trial(node, https, tar_v2)
    before = node.grubenv_bytes()
    with pytest.raises(StateError, match="on trial and not committed"):
        agent.prepare_upgrade([req(https.url("/kubeos.tar"), sha256_of(tar_v2))])
    with pytest.raises(StateError, match="on trial"):
        agent.upgrade([])
    assert node.grubenv_bytes() == before


def test_rollback_during_a_trial_returns_to_the_committed_slot(
    node: Node, https: FileServer, tar_v2: Path
) -> None:
    agent = _on_trial(node, https, tar_v2)
    assert agent.rollback([{"version": "1.0.0"}])["slot"] == "A"
    node.wait_reboot()
    env = node.env()
    assert env["saved_entry"] == "A" and not env.get("boot_trial") and not env.get("next_entry")
    assert node.grub() == "A"


def test_boot_check_command_records_a_failed_trial(
    node: Node, https: FileServer, tar_v2: Path
) -> None:
    staged_and_upgraded(node, node.agent(), https, tar_v2)
    node.grub()  # B is tried and crashes; GRUB comes back to A
    node.boot("A", "1.0.0")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "kubeos.agent.cli",
            "boot-check",
            "--root",
            str(node.root),
            "--mountinfo",
            str(node.paths.mountinfo),
        ],
        check=True,
        capture_output=True,
    )
    env = node.env()
    assert env["kubeos_rollback"] == "B" and "boot_trial" not in env


def test_a_reboot_request_while_one_is_pending_is_the_same_reboot(
    node: Node, https: FileServer, tar_v2: Path
) -> None:
    """Asked twice before the host goes down: one reboot, and status says it is pending."""
    from kubeos.agent.service import AgentService

    agent = AgentService(node.paths, commit_window=600.0, reboot=node.reboots.append,
                         restart_service=None, reboot_delay=0.5)
    node.services.append(agent)
    agent.start()
    assert agent.status([])["reboot_pending"] is None
    agent.prepare_upgrade([req(https.url("/kubeos.tar"), sha256_of(tar_v2))])
    assert agent.upgrade([{"version": "2.0.0"}])["status"] == "Upgraded"
    assert agent.upgrade([{"version": "2.0.0"}])["status"] == "Upgraded"
    assert "2.0.0" in agent.status([])["reboot_pending"]
    node.wait_reboot()
    time.sleep(0.7)
    assert len(node.reboots) == 1
