"""Real-world files survive: only the edited lines change, the rest stays byte for byte.

Fixtures in data/: Debian 12's stock /etc/sysctl.conf and /etc/security/limits.conf, the output
of ``containerd config default`` (containerd 1.6.20, Debian 12) and a kubeadm-written kubelet
config with hand-added comments.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path

from ruamel.yaml import YAML

from .support import DATA, apply, config, read, write


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    removed, added = [], []
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


def test_debian_sysctl_conf(tmp_path: Path) -> None:
    stock = (DATA / "debian-sysctl.conf").read_text()
    assert "#net.ipv4.ip_forward=1" in stock
    write(tmp_path, "/etc/sysctl.conf", stock)
    apply(tmp_path, config("kernel.sysctl.persist", ("net.ipv4.ip_forward", 1),
                           ("kernel.printk", "3 4 1 3")))
    after = read(tmp_path, "/etc/sysctl.conf")
    assert changed_lines(stock, after) == ([], ["net.ipv4.ip_forward=1", "kernel.printk=3 4 1 3"])
    apply(tmp_path, config("kernel.sysctl.persist", ("net.ipv4.ip_forward", 1, "delete"),
                           ("kernel.printk", "3 4 1 3", "delete")))
    assert read(tmp_path, "/etc/sysctl.conf") == stock


def test_debian_limits_conf(tmp_path: Path) -> None:
    stock = (DATA / "debian-limits.conf").read_text()
    write(tmp_path, "/etc/security/limits.conf", stock)
    apply(tmp_path, config("pam.limits", ("*", "soft.nofile.65536"), ("root", "hard.core.0")))
    after = read(tmp_path, "/etc/security/limits.conf")
    assert changed_lines(stock, after) == ([], ["* soft nofile 65536", "root hard core 0"])
    apply(tmp_path, config("pam.limits", ("*", "soft.nofile.1024")))
    assert changed_lines(stock, read(tmp_path, "/etc/security/limits.conf"))[1] == [
        "* soft nofile 1024", "root hard core 0"]
    apply(tmp_path, config("pam.limits", ("*", "soft.nofile.1024", "delete"),
                           ("root", "hard.core.0", "delete")))
    assert read(tmp_path, "/etc/security/limits.conf") == stock


def test_containerd_config_default(tmp_path: Path) -> None:
    stock = (DATA / "containerd-default.toml").read_text()
    write(tmp_path, "/etc/containerd/config.toml", stock)
    runc = 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options.SystemdCgroup'
    sandbox = 'plugins."io.containerd.grpc.v1.cri".sandbox_image'
    result = apply(tmp_path, config("container.containerd", (runc, True),
                                    (sandbox, "registry.k8s.io/pause:3.9")))
    after = read(tmp_path, "/etc/containerd/config.toml")
    assert changed_lines(stock, after) == (
        ['    sandbox_image = "registry.k8s.io/pause:3.6"',
         "            SystemdCgroup = false"],
        ['    sandbox_image = "registry.k8s.io/pause:3.9"',
         "            SystemdCgroup = true"],
    )
    assert result.restarts == ("containerd",)
    cri = tomllib.loads(after)["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    # A key that is new, then deleted again, leaves the file as it was.
    mirror = 'plugins."io.containerd.grpc.v1.cri".registry.config_path'
    apply(tmp_path, config("container.containerd", (runc, False),
                           (sandbox, "registry.k8s.io/pause:3.6"), ("grpc.new_key", 1)))
    apply(tmp_path, config("container.containerd", ("grpc.new_key", 1, "delete")))
    assert read(tmp_path, "/etc/containerd/config.toml") == stock
    result = apply(tmp_path, config("container.containerd", (mirror, "/etc/containerd/certs.d")))
    assert changed_lines(stock, read(tmp_path, "/etc/containerd/config.toml")) == (
        ['      config_path = ""'], ['      config_path = "/etc/containerd/certs.d"'])


def test_kubeadm_kubelet_config(tmp_path: Path) -> None:
    stock = (DATA / "kubeadm-kubelet-config.yaml").read_text()
    write(tmp_path, "/var/lib/kubelet/config.yaml", stock)
    apply(tmp_path, config(
        "kubernetes.kubelet", ('evictionHard."memory.available"', "500Mi"),
        ("cgroupDriver", "cgroupfs"), ("maxPods", 250), ("clusterDNS", ["10.96.0.11"])))
    after = read(tmp_path, "/var/lib/kubelet/config.yaml")
    removed, added = changed_lines(stock, after)
    assert removed == ["cgroupDriver: systemd   # must match containerd's SystemdCgroup",
                       '  memory.available: "100Mi"']
    assert added == ["cgroupDriver: cgroupfs  # must match containerd's SystemdCgroup",
                     "- 10.96.0.11", '  memory.available: "500Mi"', "maxPods: 250"]
    data = YAML(typ="safe").load(after)
    assert data["clusterDNS"] == ["10.96.0.10", "10.96.0.11"] and data["maxPods"] == 250
