"""CONTRACT TEST WITH A STAND-IN: the ``crictl`` path of the containerd source.

crictl is not packaged in Debian 12 (no ``cri-tools``) and the test containerd runs without
its CRI plugin, so a fake ``crictl`` records its argv and performs each step with the real
``ctr`` against the test containerd (pull from the real registry, list, remove). What is
checked is the command sequence the agent sends to crictl, and that the rest (read-only
snapshot mount with ``ctr``, extraction into the loop-device slot, clean-up) works on the
image crictl pulled. A real CRI pull is not exercised here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from core.conftest import Node

from kubeos.agent.messages import UpgradeRequest
from kubeos.agent.upgrade.containerd import ContainerdSource

from .conftest import Images
from .support import Containerd, Registry
from .test_containerd import EMPTY, agent_for, creq

pytestmark = pytest.mark.node

FAKE_CRICTL = """#!{python}
import json, subprocess, sys
argv = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(argv) + "\\n")
ctr = ["ctr", "--address", {address!r}, "-n", "k8s.io"]

def listing():
    out = subprocess.run([*ctr, "images", "ls"], capture_output=True, text=True).stdout
    return {{l.split()[0]: l.split()[2] for l in out.splitlines()[1:] if l.strip()}}

if argv[0] == "pull":
    p = subprocess.run([*ctr, "images", "pull", "--hosts-dir", {hosts!r}, argv[1]],
                       capture_output=True, text=True)
    sys.stderr.write(p.stderr)
    sys.exit(p.returncode)
if argv[0] == "inspecti":
    ref = argv[-1]
    images = listing()
    if ref not in images:
        sys.stderr.write("no such image " + ref + " present\\n")
        sys.exit(1)
    repo = ref.rsplit(":", 1)[0]
    print(json.dumps({{"status": {{"repoDigests": [repo + "@" + images[ref]], "size": "1"}}}}))
    sys.exit(0)
if argv[0] == "rmi":
    sys.exit(subprocess.run([*ctr, "images", "rm", "--sync", argv[1]]).returncode)
sys.exit(2)
"""


def fake_crictl(tmp: Path, ctd: Containerd, registry: Registry) -> tuple[Path, Path]:
    log = tmp / "crictl.log"
    exe = tmp / "crictl"
    exe.write_text(FAKE_CRICTL.format(python=sys.executable, log=str(log), address=ctd.address,
                                      hosts=str(registry.hosts_dir)))
    exe.chmod(0o755)
    return exe, log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_crictl_sequence_when_the_agent_pulls(
    node: Node, ctd: Containerd, registry: Registry, images: Images
) -> None:
    exe, log = fake_crictl(node.tmp, ctd, registry)
    src = ContainerdSource(address=ctd.address, hosts_dir=Path("/nonexistent"), crictl=str(exe))
    res = agent_for(node, src).prepare_upgrade([creq(images.os_tar, images.os_tar_digest)])
    assert res["version"] == "2.0.0"
    ref = images.os_tar
    assert calls(log) == [
        ["inspecti", ref],  # present before? (then it would be kept)
        ["pull", ref],
        ["inspecti", "-o", "json", ref],  # repoDigests -> digest check
        ["inspecti", ref],
        ["rmi", ref],  # the agent pulled it, so the agent removes it
    ]
    assert ctd.store() == EMPTY


def test_crictl_keeps_an_image_that_was_there(
    node: Node, ctd: Containerd, registry: Registry, images: Images
) -> None:
    ctd.ctr("images", "pull", "--hosts-dir", str(registry.hosts_dir), images.os_tar)
    exe, log = fake_crictl(node.tmp, ctd, registry)
    src = ContainerdSource(address=ctd.address, crictl=str(exe))
    agent_for(node, src).prepare_upgrade([creq(images.os_tar, images.os_tar_digest)])
    assert [c[0] for c in calls(log)] == ["inspecti", "pull", "inspecti"]
    assert ctd.store()["images"] == [images.os_tar]
    assert ctd.store()["snapshots"] != []  # the image's own unpacked layer, not a view
    assert all(not k.startswith("/") for k in ctd.store()["snapshots"])


def test_validation_happens_before_crictl(node: Node, ctd: Containerd, registry: Registry) -> None:
    exe, log = fake_crictl(node.tmp, ctd, registry)
    src = ContainerdSource(address=ctd.address, crictl=str(exe))
    with pytest.raises(Exception, match="not a valid image reference"):
        src.validate(UpgradeRequest(version="", image_type="containerd",
                                    container_image="os:1 --all", check_sum="0" * 64))
    assert not log.exists()
