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
# No initramfs while the packages install: the kernel's own and each trigger's would be
# made under emulation and then thrown away when customize.sh compresses the modules.
# customize.sh puts update-initramfs back and makes the image's one, once.
chroot "$root" dpkg-divert --quiet --local --rename \
    --divert /usr/sbin/update-initramfs.vn-eid --add /usr/sbin/update-initramfs
printf '#!/bin/sh\n# vn-eid build: the initramfs is made once, at the end (customize.sh).\nexit 0\n' \
    > "$root/usr/sbin/update-initramfs"
chmod 0755 "$root/usr/sbin/update-initramfs"
