#!/bin/sh
# mmdebstrap --essential-hook: settings that must be in place before the kernel, the
# firmware and the initramfs are installed. $1 is the root being built.
set -eu
root=$1
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/etc/default"
# Only the listed modules in the initramfs (MODULES=most costs ~9 min under emulation).
echo "MODULES=list" > "$root/etc/initramfs-tools/conf.d/vn-eid.conf"
echo "COMPRESS=zstd" >> "$root/etc/initramfs-tools/conf.d/vn-eid.conf"
printf '%s\n' $VN_EID_INITRAMFS_MODULES > "$root/etc/initramfs-tools/modules"
# raspi-firmware writes cmdline.txt with mmcblk0p2 unless told; GRUB gives the real one.
echo "ROOTPART=LABEL=rootA" > "$root/etc/default/raspi-firmware"
