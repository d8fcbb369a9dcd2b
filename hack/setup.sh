#!/usr/bin/env bash
# One-time setup of a development or CI machine: system packages, the Python
# environment, and the control-plane test binaries. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    # filesystems and partitions for the agent and kbimg
    e2fsprogs dosfstools mtools fdisk gdisk util-linux
    # grub-editenv is the reference the agent's grubenv writer is checked against
    grub-common
    # kbimg: GRUB EFI modules for grub-mkimage, Debian roots, qcow2 output
    grub-efi-amd64-bin mmdebstrap qemu-utils
    # kbimg pxe-img writes its initramfs with cpio (tests/kbimg skip without it)
    cpio
    # kbimg tests: an independent reader of the OCI / docker archives kbimg writes
    skopeo
    # TLS test servers and helpers
    openssl curl
    # vm tier (tests/vm, docs/vm-tests.md): qemu with UEFI firmware
    qemu-system-x86 ovmf
    # agent container-image upgrades: containerd (brings ctr), a registry (distribution) and
    # dockerd for the tests; none is started here, the tests start their own instances
    containerd docker-registry docker.io
)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q -U pip
.venv/bin/pip install -q -e '.[dev]'

# Control-plane binaries (etcd, kube-apiserver, kube-controller-manager) for the cluster tests
# and the simulator: built once from Go modules into ~/.cache/kubeos/envtest/ (docs/envtest.md).
bash hack/envtest-build.sh
