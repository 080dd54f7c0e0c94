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
# No documentation, manuals or translations in the image (dpkg skips them).
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat > "$root/etc/dpkg/dpkg.cfg.d/vn-eid-nodoc" <<'CFG'
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/vi/*
path-include=/usr/share/locale/en*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
CFG
cat >> "$root/etc/dpkg/dpkg.cfg.d/vn-eid-nodoc" <<'CFG'
path-exclude=/usr/lib/chromium/locales/*
path-include=/usr/lib/chromium/locales/vi.pak
path-include=/usr/lib/chromium/locales/en-US.pak
CFG
