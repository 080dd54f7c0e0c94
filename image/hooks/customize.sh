#!/bin/sh
# mmdebstrap --customize-hook: everything after the packages. Runs on the build host with
# the arm64 root at $1 (/proc, /sys and /dev mounted in it); commands inside the root run
# through qemu-user. The build (image/build.py) sets the VN_EID_* variables.
set -eu
root=$1
: "${VN_EID_OVERLAY:?}" "${VN_EID_WHEELS:?}" "${VN_EID_REQUIREMENTS:?}" "${VN_EID_VERSION:?}"
: "${VN_EID_VENV:?}" "${VN_EID_UV:?}" "${VN_EID_PLATFORM:?}" "${VN_EID_PYVERSION:?}"
: "${VN_EID_SDISTS:?}" "${VN_EID_BUILD_PACKAGES:?}" "${VN_EID_HOST_PYTHON:?}" "${VN_EID_WHEEL_CACHE:?}"
: "${VN_EID_KEYRING:?}" "${VN_EID_TUF_ROOT:?}"
in_root() { chroot "$root" "$@"; }
# apt as mmdebstrap runs it: on the host, downloading outside, dpkg inside the root (the
# root's resolv.conf points at systemd-resolved, which does not run here).
apt_root() {
    if [ -n "${MMDEBSTRAP_APT_CONFIG:-}" ]; then
        # As mmdebstrap itself calls it: dpkg chrooted into the root, without the
        # TMPDIR (a host path) that mmdebstrap sets for its hooks.
        APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" DEBIAN_FRONTEND=noninteractive apt-get \
            -o Dir::Bin::dpkg=env -o DPkg::Options::=--unset=TMPDIR -o DPkg::Options::=dpkg \
            -o DPkg::Chroot-Directory="$root" "$@"
    else
        in_root env DEBIAN_FRONTEND=noninteractive apt-get "$@"
    fi
}
say() { echo "customize: $*"; }

say "users"
# Fixed ids: fstab and the USB mount rule name them.
in_root getent group vn-eid >/dev/null || in_root groupadd --system --gid 991 vn-eid
in_root getent passwd vn-eid >/dev/null || in_root useradd --system --uid 991 --gid vn-eid \
    --home-dir /var/lib/vn-eid --no-create-home --shell /usr/sbin/nologin \
    --groups dialout,video,plugdev,tss vn-eid
in_root getent group kiosk >/dev/null || in_root groupadd --system --gid 990 kiosk
in_root getent passwd kiosk >/dev/null || in_root useradd --system --uid 990 --gid kiosk \
    --home-dir /home/kiosk --create-home --shell /usr/sbin/nologin \
    --groups video,render,input,audio kiosk
# No password on any account: root and the technician log in with SSH keys only.
in_root passwd --lock root >/dev/null

say "configuration files"
cp -a "$VN_EID_OVERLAY/." "$root/"
# Mount points on the read-only root: the data partition, the boot partition.
install -d -m 0755 "$root/var/lib/vn-eid" "$root/boot/firmware"
chown -R root:root "$root/etc/vn-eid" "$root/usr/lib/vn-eid" "$root/etc/systemd" \
    "$root/etc/ssh/sshd_config.d" "$root/etc/udev/rules.d"
echo "$VN_EID_VERSION" > "$root/etc/vn-eid/image-version"
install -m 0644 "$VN_EID_KEYRING" "$root/etc/rauc/keyring.pem"
# The update repository's root metadata: what network updates are checked against (TUF).
install -D -m 0644 "$VN_EID_TUF_ROOT" "$root/etc/vn-eid/tuf/root.json"
if [ -n "${VN_EID_TECHNICIAN_PIN_HASH:-}" ]; then
    # The technician PIN of this deployment (only its argon2 hash is in the image).
    printf '\n[technician]\npin_hash = "%s"\n' "$VN_EID_TECHNICIAN_PIN_HASH" \
        >> "$root/etc/vn-eid/station.toml"
fi
echo "vn-eid-station" > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tvn-eid-station\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    > "$root/etc/hosts"
ln -sf /usr/share/zoneinfo/Asia/Ho_Chi_Minh "$root/etc/localtime"
# The Pi has no clock: systemd never starts earlier than this file's time (the commit's),
# so expiry checks (TUF, certificates) do not run in 1970 before the network time comes.
touch -d "@${SOURCE_DATE_EPOCH:?}" "$root/usr/lib/clock-epoch"
echo "Asia/Ho_Chi_Minh" > "$root/etc/timezone"

say "python environment $VN_EID_VENV"
rm -rf "$root$VN_EID_VENV"
in_root python3 -m venv --without-pip "$VN_EID_VENV"
site="$root$VN_EID_VENV/lib/python$VN_EID_PYVERSION/site-packages"
if [ -n "$(ls -A "$VN_EID_SDISTS" 2>/dev/null)" ]; then
    # Source-only packages are compiled inside the arm64 root, with a throwaway pip and
    # the build tools, which are all removed again before the image is sealed.
    say "compiling source packages inside the arm64 root: $(ls "$VN_EID_SDISTS" | tr '\n' ' ')"
    # Its output kept, and shown on failure. One retry: a postinst under qemu-user has
    # been seen to fail once and then pass (dpkg --configure -a finishes the rest).
    aptlog="$root/tmp/vn-eid-build-apt.log"
    if ! apt_root install -y --no-install-recommends $VN_EID_BUILD_PACKAGES >"$aptlog" 2>&1; then
        say "installing the build tools failed, once more:"
        tail -n 30 "$aptlog"
        in_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a >>"$aptlog" 2>&1 || true
        if ! apt_root install -y --no-install-recommends $VN_EID_BUILD_PACKAGES >>"$aptlog" 2>&1; then
            tail -n 60 "$aptlog"
            exit 1
        fi
    fi
    mkdir -p "$root/tmp/vn-eid-build/in" "$root/tmp/vn-eid-build/out"
    cp "$VN_EID_SDISTS"/* "$root/tmp/vn-eid-build/in/"
    # aarch64's gcc has no -m64, which wsq's setup.py passes on every POSIX system.
    cat > "$root/tmp/vn-eid-build/cc" <<'CC'
#!/bin/sh
for arg; do shift; [ "$arg" = -m64 ] || set -- "$@" "$arg"; done
exec gcc "$@"
CC
    chmod +x "$root/tmp/vn-eid-build/cc"
    for sdist in "$VN_EID_SDISTS"/*; do
        # Debian's setuptools, cffi, swig... instead of an isolated environment from the
        # index (pip inside the emulated root cannot reach it). PYPI=1: lgpio links its C
        # library in statically (Debian has no liblgpio).
        in_root env PYPI=1 CC=/tmp/vn-eid-build/cc python3 -m pip wheel --quiet --no-deps \
            --no-build-isolation --no-index --wheel-dir /tmp/vn-eid-build/out \
            "/tmp/vn-eid-build/in/$(basename "$sdist")"
        # Cached at once: a later failure does not cost this compilation again.
        cp "$root"/tmp/vn-eid-build/out/*.whl "$VN_EID_WHEEL_CACHE/"
    done
    cp "$root"/tmp/vn-eid-build/out/*.whl "$VN_EID_WHEELS/"
    rm -rf "$root/tmp/vn-eid-build"
    apt_root purge -y --auto-remove $VN_EID_BUILD_PACKAGES >/dev/null
fi
# Every locked dependency as an aarch64 wheel checked against uv.lock's hashes, then this
# build's own wheels (the station's, and the ones compiled above); unpacked by uv on the
# host, no emulation.
"$VN_EID_UV" pip install --quiet --no-deps --require-hashes \
    --python-platform "$VN_EID_PLATFORM" --python-version "$VN_EID_PYVERSION" \
    --target "$site" -r "$VN_EID_REQUIREMENTS"
"$VN_EID_UV" pip install --quiet --no-deps --no-index \
    --python-platform "$VN_EID_PLATFORM" --python-version "$VN_EID_PYVERSION" \
    --target "$site" "$VN_EID_WHEELS"/*.whl
# What the station never runs: the libraries' own test suites, Babel's data for languages
# other than Vietnamese and English.
find "$site/scipy" "$site/numpy" -type d -name tests -prune -exec rm -rf {} +
find "$site/babel/locale-data" -name '*.dat' ! -name 'root.dat' ! -name 'vi.dat' \
    ! -name 'vi_*.dat' ! -name 'en.dat' ! -name 'en_*.dat' -delete
# The root is read-only: byte-code compiled now (the host's CPython 3.11 writes the
# same format), checked by hash rather than by the files' times.
"$VN_EID_HOST_PYTHON" -m compileall -q -j 2 --invalidation-mode unchecked-hash \
    -s "$root" -p / "$site" >/dev/null

say "services"
in_root systemctl enable vn-eid-data.service vn-eid-station.service vn-eid-kiosk.service \
    vn-eid-health.service vn-eid-usb-update.service vn-eid-net-update.timer \
    vn-eid-ssh.path vn-eid-ssh.service \
    systemd-networkd.service \
    systemd-resolved.service \
    systemd-timesyncd.service nftables.service >/dev/null 2>&1
in_root systemctl disable ssh.service >/dev/null 2>&1 || true
# Updates come as signed image bundles, never from apt on the device.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
    in_root systemctl mask "$unit" >/dev/null 2>&1 || true
done
in_root systemctl set-default graphical.target >/dev/null 2>&1

say "boot loader"
mkdir -p "$root/usr/lib/vn-eid/boot"
in_root grub-mkimage --format=arm64-efi --output=/usr/lib/vn-eid/boot/BOOTAA64.EFI \
    --prefix=/EFI/BOOT part_msdos part_gpt fat ext2 normal linux configfile loadenv regexp \
    test echo search search_label search_fs_uuid cat sleep reboot halt efi_gop gzio zstd
# GRUB's modules were needed only for that image (grub-editenv, which RAUC uses, stays).
rm -rf "$root/usr/lib/grub/arm64-efi"

say "kernel modules and initramfs"
# xz-compressed (kmod unpacks them; the kernel has no decompressor of its own): a third of
# the size. Compressed on the host, indexed again, then the one initramfs (essential.sh
# held update-initramfs back while the packages installed).
rm -f "$root/usr/sbin/update-initramfs"
in_root dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
for kdir in "$root"/lib/modules/*/; do
    kver=$(basename "$kdir")
    find "$kdir" -name '*.ko' -print0 | xargs -0 -r -P 2 -n 64 xz --check=crc32 -q -T1
    in_root depmod "$kver"
    rm -f "$root/boot/initrd.img-$kver"
    in_root update-initramfs -c -k "$kver" >/dev/null
done

say "sealing"
# Per-station secrets and identities are made on the device, never shipped.
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
rm -rf "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/*
