#!/bin/sh
# What the image build needs on the x86_64 Debian 12 build machine: installed when
# missing, then binfmt_misc mounted with qemu-aarch64 enabled (arm64 programs run).
set -eu
need=""
for pair in mmdebstrap:mmdebstrap qemu-aarch64-static:qemu-user-static \
    update-binfmts:binfmt-support qemu-system-aarch64:qemu-system-arm mkfs.vfat:dosfstools \
    mcopy:mtools sfdisk:fdisk zstd:zstd eatmydata:eatmydata arch-test:arch-test \
    rauc:rauc mksquashfs:squashfs-tools openssl:openssl; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need="$need ${pair#*:}"
done
[ -f /usr/share/qemu-efi-aarch64/QEMU_EFI.fd ] || need="$need qemu-efi-aarch64"
if [ -n "$need" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "image: as root, or: sudo apt-get install$need" >&2
        exit 1
    fi
    echo "image: installing Debian packages:$need"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 2>/dev/null || true
arch-test arm64 >/dev/null || { echo "image: arm64 programs do not run here (binfmt)" >&2; exit 1; }
