#!/bin/sh
# KubeOS PXE installer: a dracut "mount" hook shipped unchanged in every pxe-img initramfs.
# Settings come from /etc/kubeos-install.conf (key=value lines written by kbimg); values are
# read as data and never evaluated. The root tarball is fetched over https only and checked
# against the sha256 in the config before anything is written to /sysroot.
set -eu
CONF=/etc/kubeos-install.conf
LOG=/install.log

get() {
    sed -n "s/^$1=//p" "$CONF" | head -n 1
}

fail() {
    echo "kubeos-install: $*" | tee -a "$LOG" >&2
    exit 1
}

part() {
    case "$1" in
        *[0-9]) echo "${1}p$2" ;;
        *) echo "$1$2" ;;
    esac
}

DISK=$(get disk)
URL=$(get rootfs_url)
SHA=$(get rootfs_sha256)
ROOT_MIB=$(get root_mib)
[ -b "$DISK" ] || fail "disk $DISK not found"
case "$URL" in https://*) ;; *) fail "refusing non-https rootfs url" ;; esac

# Network first: nothing on the disk changes unless the image can be fetched and verified.
if [ "$(get dhcp)" = "true" ]; then
    for dev in /sys/class/net/e*; do ip link set "$(basename "$dev")" up; done
    dhclient || fail "dhcp failed"
else
    NET=$(get net_name)
    ip link set "$NET" up
    ip addr add "$(get local_ip)/$(get netmask)" dev "$NET" || fail "ip addr failed"
fi
ip route add default via "$(get route_ip)" 2>/dev/null || true
curl --fail --silent --show-error --proto '=https' --tlsv1.2 -o /rootfs.tar "$URL" \
    || fail "download of $URL failed"
echo "$SHA  /rootfs.tar" | sha256sum -c - >>"$LOG" 2>&1 || fail "checksum mismatch for $URL"

B=$((60 * 2048)); R=$((ROOT_MIB * 2048))
printf 'label: gpt\nstart=2048, size=%s, type=U, name="BOOT"\nstart=%s, size=%s, type=L, name="ROOT-A"\nstart=%s, size=%s, type=L, name="ROOT-B"\nstart=%s, type=L, name="PERSIST"\n' \
    $((B - 2048)) "$B" "$R" $((B + R)) "$R" $((B + 2 * R)) | sfdisk --quiet "$DISK" \
    || fail "partitioning $DISK failed"
udevadm settle 2>/dev/null || sleep 2
mkfs.vfat -n BOOT "$(part "$DISK" 1)" >>"$LOG"
mkfs.ext4 -q -F -L ROOT-A "$(part "$DISK" 2)"
mkfs.ext4 -q -F -L ROOT-B "$(part "$DISK" 3)"
mkfs.ext4 -q -F -L PERSIST "$(part "$DISK" 4)"

mkdir -p /sysroot
mount "$(part "$DISK" 2)" /sysroot
mkdir -p /sysroot/boot/efi
mount -t vfat "$(part "$DISK" 1)" /sysroot/boot/efi
tar --numeric-owner -xpf /rootfs.tar -C /sysroot || fail "unpacking the root failed"
rm -f /rootfs.tar
umount /sysroot/boot/efi
mkdir -p /sysroot/persist
mount "$(part "$DISK" 4)" /sysroot/persist
for d in var etc etcwork opt optwork etc/KubeOS/certs $(get persist_mkdir); do
    mkdir -p "/sysroot/persist/$d"
done
cp "$LOG" /sysroot/persist/ 2>/dev/null || true
umount /sysroot/persist
mount -o remount,ro /sysroot
