"""Build the station's flashable arm64 image on an x86_64 Debian 12 machine (as root).

    python -m image.build [--out build/image] [--mirror URL] [--keep-root]

Steps (each prints its progress and time): the station's wheel and its locked aarch64
dependencies; the Debian bookworm arm64 root with mmdebstrap (foreign architecture
through qemu-user-static), customized by image/hooks; the SBOM; the boot partition
(Pi firmware, U-Boot, GRUB and its A/B slot logic); the disk image; the zstd artefact
and its checksum. About 15-25 minutes on 2 cores the first time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from image import bundle, disk, pydeps, release, sbom
from image.keys import SigningKeys, make_development_keys
from image.profile import Profile, load

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
IMAGE_NAME = "vn-eid-station"
HOST_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "qemu-aarch64-static": "qemu-user-static",
    "update-binfmts": "binfmt-support",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mkfs.ext4": "e2fsprogs",
    "sfdisk": "fdisk",
    "zstd": "zstd",
    "eatmydata": "eatmydata",
    "arch-test": "arch-test",
}


# Files dpkg leaves out of every package (kept in the root by mmdebstrap, so later
# installs follow them too): documentation, translations but Vietnamese and English, the
# device trees of other boards, Chromium's other languages, the desktop icon theme.
DPKG_PATHS = (
    "exclude=/usr/share/man/*",
    "exclude=/usr/share/info/*",
    "exclude=/usr/share/doc/*",
    "include=/usr/share/doc/*/copyright",
    "exclude=/usr/share/locale/*",
    "include=/usr/share/locale/vi/*",
    "include=/usr/share/locale/en*",
    "include=/usr/share/locale/locale.alias",
    "exclude=/usr/share/lintian/*",
    "exclude=/usr/lib/linux-image-*/*",
    "include=/usr/lib/linux-image-*/broadcom/*",
    "exclude=/usr/lib/chromium/locales/*",
    "include=/usr/lib/chromium/locales/vi.pak",
    "include=/usr/lib/chromium/locales/en-US.pak",
    "exclude=/usr/share/icons/Adwaita/*",
    "include=/usr/share/icons/Adwaita/index.theme",
    "include=/usr/share/icons/Adwaita/cursor.theme",  # its postinst registers it
    "include=/usr/share/icons/Adwaita/cursors/*",
)


class BuildError(RuntimeError):
    """A step failed; the message says which and what to do."""


class Progress:
    """One line per step, with the time it took, and the total at the end."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.done = 0
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}

    def run(self, name: str, action: Callable[[], None]) -> None:
        self.done += 1
        print(f"[{self.done}/{self.steps}] {name} ...", flush=True)
        t0 = time.monotonic()
        action()
        self.timings[name] = time.monotonic() - t0
        print(f"[{self.done}/{self.steps}] {name}: {self.timings[name]:.0f} s", flush=True)

    def total(self) -> float:
        return time.monotonic() - self.started


def newest_artefact(folder: Path, suffixes: tuple[str, ...] = (".img",)) -> Path:
    """The most recently built image in ``folder`` with one of ``suffixes``."""
    found = sorted(
        (p for p in folder.glob(f"{IMAGE_NAME}-*") if p.name.endswith(suffixes)),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        raise FileNotFoundError(f"no {IMAGE_NAME} image in {folder}: run make image first")
    return found[-1]


def check_host() -> None:
    """Root, the tools, and binfmt for arm64 (mounted and enabled when it is not)."""
    if os.geteuid() != 0:
        raise BuildError("the image build runs as root (mmdebstrap's root mode, mkfs -d)")
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise BuildError(f"missing build tools: apt-get install {' '.join(missing)}")
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=True)
    subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    if subprocess.run(["arch-test", "arm64"], capture_output=True).returncode != 0:
        raise BuildError("arm64 binaries do not run here: qemu-user-static/binfmt not working")


def version() -> tuple[str, int]:
    """The image version (project version, commit date and id; ``.dirty`` for uncommitted
    changes) and the commit time, which stamps every file for a reproducible build."""
    import tomllib

    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["version"]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PROJECT, check=True, capture_output=True, text=True
        ).stdout.strip()

    epoch = int(git("log", "-1", "--format=%ct"))
    commit = git("rev-parse", "--short=10", "HEAD")
    dirty = ".dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    # The commit's time before its id: two builds of one day order by when, not by hash
    # (the station compares versions with dpkg's and PEP 440's rules; both agree here).
    stamp = datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%d.%H%M%S")
    return f"{project}+{stamp}.{commit}{dirty}", epoch


def clear_root(root: Path) -> None:
    """Remove a root left by an earlier build: first whatever an interrupted mmdebstrap left
    mounted in it (/proc, /sys, /dev/pts), so that removing it never reaches the host's."""
    prefix = str(root.resolve()) + "/"
    mounts = [
        line.split()[1]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    for mount in sorted(mounts, reverse=True):
        subprocess.run(["umount", "--lazy", mount], check=True)
    if root.exists():
        shutil.rmtree(root)


def mmdebstrap(profile: Profile, root: Path, env: dict[str, str], mirror: str) -> None:
    clear_root(root)
    hooks = HERE / "hooks"
    components = " ".join(profile.components)
    security = f"deb {profile.security_mirror} {profile.suite}-security {components}"
    updates = f"deb {mirror} {profile.suite}-updates {components}"
    command = [
        "mmdebstrap", "--mode=root", f"--arch={profile.architecture}", "--variant=apt",
        f"--components={','.join(profile.components)}",
        "--hook-dir=/usr/share/mmdebstrap/hooks/eatmydata",
        # Our /etc/default/raspi-firmware (written before the package) stays.
        "--dpkgopt=force-confold", "--dpkgopt=force-confdef",
        # Only what is asked for: the profile names what a recommendation would bring.
        "--aptopt=Apt::Install-Recommends \"false\"",
        *(f"--dpkgopt=path-{rule}" for rule in DPKG_PATHS),
        f"--essential-hook={hooks / 'essential.sh'} \"$1\"",
        f"--customize-hook={hooks / 'customize.sh'} \"$1\"",
        f"--include={','.join(profile.packages())}",
        profile.suite, str(root), f"deb {mirror} {profile.suite} {' '.join(profile.components)}",
        updates, security,
    ]  # fmt: skip
    started = time.monotonic()
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-40:], line]
            # mmdebstrap's own steps and ours; not every file of every package.
            if line.startswith(("I: ", "E: ", "W: ", "customize: ")):
                print(f"    {time.monotonic() - started:5.0f} s  {line}", flush=True)
    if proc.returncode != 0:
        raise BuildError("mmdebstrap failed:\n" + "\n".join(tail))


def boot_tree(root: Path, tree: Path, layout: disk.Layout) -> None:
    """The FAT partition: the Pi's firmware and device trees (from Debian's
    raspi-firmware), U-Boot for the Pi 4, GRUB as the removable-media EFI loader, its
    A/B configuration and environment. The kernels stay in the root slots."""
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    firmware = root / "boot/firmware"
    for item in sorted(firmware.iterdir()):
        # The firmware's own kernel copies are not used: GRUB boots each slot's kernel.
        if item.name.startswith(("vmlinuz", "initrd", "cmdline.txt", "config.txt")):
            continue
        target = tree / item.name
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            shutil.copy2(item, target)
    # What raspi-firmware put there belongs to the boot partition, not to the slot.
    for item in firmware.iterdir():
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    uboot = root / "usr/lib/u-boot/rpi_arm64/u-boot.bin"
    if not uboot.is_file():
        raise BuildError(f"{uboot} missing: is u-boot-rpi in the profile's boot packages?")
    shutil.copy2(uboot, tree / "u-boot.bin")
    shutil.copy2(HERE / "boot/config.txt", tree / "config.txt")
    efi = tree / "EFI/BOOT"
    efi.mkdir(parents=True)
    shutil.copy2(root / "usr/lib/vn-eid/boot/BOOTAA64.EFI", efi / "BOOTAA64.EFI")
    grub_cfg = (HERE / "boot/grub.cfg").read_text().replace("@DISK_ID@", layout.disk_id_hex)
    (efi / "grub.cfg").write_text(grub_cfg)
    (efi / "grubenv").write_bytes(
        disk.grubenv({"ORDER": "A B", "A_OK": "1", "A_TRY": "0", "B_OK": "0", "B_TRY": "0"})
    )


def technician_pin_hash(out: Path, given: str | None) -> tuple[str, Path | None]:
    """The technician PIN's argon2 hash for the image: the one given (a deployment's PIN,
    hashed with ``python -m station technician-pin``), else a random PIN made for this
    build folder, kept in ``technician-pin.txt`` (0600) so rebuilds keep it."""
    if given:
        return given, None
    import secrets

    from station.technician import hash_pin

    pin_file = out / "technician-pin.txt"
    if not pin_file.exists():
        pin_file.touch(mode=0o600)
        pin_file.write_text(f"{secrets.randbelow(10**8):08d}\n")
    return hash_pin(pin_file.read_text().strip()), pin_file


def compress(image: Path) -> Path:
    packed = image.with_suffix(image.suffix + ".zst")
    subprocess.run(["zstd", "-q", "-f", "-10", "-T2", str(image), "-o", str(packed)], check=True)
    return packed


def sha256sum(paths: list[Path], target: Path) -> None:
    import hashlib

    lines = []
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(16 * disk.MIB), b""):
                digest.update(chunk)
        lines.append(f"{digest.hexdigest()}  {path.name}\n")
    target.write_text("".join(lines))


def build(
    out: Path,
    mirror: str | None,
    keep_root: bool,
    keys_dir: Path | None = None,
    pin_hash: str | None = None,
    tuf_repo: Path | None = None,
) -> dict[str, object]:
    profile = load()
    check_host()
    # Updates are signed from the first image on: the keyring goes into the root.
    keys = SigningKeys.in_folder(keys_dir) if keys_dir else make_development_keys(out / "keys")
    if not keys.ca.is_file() or not keys.cert.is_file():
        raise BuildError(f"signing keys incomplete in {keys_dir}: ca.pem and signing.pem")
    # And the update metadata's trusted root (TUF) for updates over the network.
    if keys_dir is not None and tuf_repo is None:
        raise BuildError(
            "production signing keys (--keys) need the update repository whose root the "
            "stations will trust (--tuf-repo; python -m image.release init)"
        )
    try:
        repo = tuf_repo or release.development_repository(out / "tuf", out / "keys" / "tuf")
        tuf_root = release.trusted_root(repo)
    except release.ReleaseError as exc:
        raise BuildError(f"update repository: {exc}") from exc
    image_version, epoch = version()
    out.mkdir(parents=True, exist_ok=True)
    pin_hash, pin_file = technician_pin_hash(out, pin_hash)
    if pin_file:
        print(f"technician PIN of this build: in {pin_file}")
    work = out / "work"
    work.mkdir(exist_ok=True)
    (work / "tuf-root.json").write_bytes(tuf_root)
    root = work / "root"
    cache = out / "cache" / "wheels-aarch64"
    layout = disk.Layout(
        profile.first_offset_mib, profile.boot_mib, profile.root_mib, profile.disk_id
    )
    uv = PROJECT / ".tools/bin/uv"
    if not uv.exists():
        uv = Path(shutil.which("uv") or "uv")
    progress = Progress(7)
    prepared: dict[str, object] = {}
    print(f"{IMAGE_NAME} {image_version} into {out}", flush=True)

    def python_side() -> None:
        req, wheels, sdists, to_compile = pydeps.prepare(PROJECT, uv, profile, work, cache)
        prepared.update(req=req, wheels=wheels, sdists=sdists, compiled=to_compile)
        print(f"    compiled in the arm64 root this time: {to_compile or 'none (cached)'}")

    def root_fs() -> None:
        env = {
            **os.environ,
            "SOURCE_DATE_EPOCH": str(epoch),
            "VN_EID_OVERLAY": str(HERE / "overlay"),
            "VN_EID_WHEELS": str(prepared["wheels"]),
            "VN_EID_SDISTS": str(prepared["sdists"]),
            "VN_EID_WHEEL_CACHE": str(cache),
            "VN_EID_REQUIREMENTS": str(prepared["req"]),
            "VN_EID_VERSION": image_version,
            "VN_EID_VENV": profile.venv,
            "VN_EID_UV": str(uv),
            "VN_EID_PLATFORM": profile.python_platform,
            "VN_EID_PYVERSION": profile.python_version,
            "VN_EID_HOST_PYTHON": sys.executable,
            "VN_EID_BUILD_PACKAGES": " ".join(profile.build_packages),
            "VN_EID_INITRAMFS_MODULES": " ".join(profile.initramfs_modules),
            "VN_EID_KEYRING": str(keys.ca),
            "VN_EID_TUF_ROOT": str(work / "tuf-root.json"),
            "VN_EID_TECHNICIAN_PIN_HASH": pin_hash,
        }
        mmdebstrap(profile, root, env, mirror or profile.mirror)

    manifest_path = out / f"{IMAGE_NAME}-{image_version}.sbom.cdx.json"

    def manifest() -> None:
        site = root / profile.venv.lstrip("/") / f"lib/python{profile.python_version}/site-packages"
        document = sbom.cyclonedx(
            IMAGE_NAME, image_version, root, site, datetime.fromtimestamp(epoch, UTC)
        )
        sbom.write(document, manifest_path, root / "usr/share/vn-eid/sbom.cdx.json")
        prepared["components"] = len(document["components"])

    image = out / f"{IMAGE_NAME}-{image_version}.img"

    def disk_image() -> None:
        tree = work / "boot"
        boot_tree(root, tree, layout)
        boot_fs, root_fs_file = work / "boot.vfat", work / "root.ext4"
        disk.make_vfat(tree, boot_fs, profile.boot_mib, "BOOT", layout.disk_id)
        fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{IMAGE_NAME}/{image_version}/root"))
        disk.make_ext4(root, root_fs_file, profile.root_mib, "vn-eid-root", fs_uuid)
        disk.assemble(layout, boot_fs, root_fs_file, image)
        # The root slot's file system alone: what an update bundle carries.
        shutil.move(root_fs_file, root_slot)
        boot_fs.unlink()

    root_slot = out / f"{IMAGE_NAME}-{image_version}.root.ext4"
    update = out / f"{IMAGE_NAME}-{image_version}.raucb"

    def update_bundle() -> None:
        bundle.make_bundle(root_slot, image_version, keys, update)
        bundle.info(update, keys.ca)  # verifies as the station will

    packed_holder: list[Path] = []

    def artefacts() -> None:
        packed = compress(image)
        packed_holder.append(packed)
        sha256sum(
            [image, packed, update, manifest_path], out / f"{IMAGE_NAME}-{image_version}.sha256"
        )

    progress.run("python: station wheel and locked aarch64 dependencies", python_side)
    progress.run("root file system (mmdebstrap, arm64)", root_fs)
    progress.run("software bill of materials", manifest)
    progress.run("disk image (boot, slot A; slot B and data at first boot)", disk_image)
    progress.run("signed update bundle (RAUC)", update_bundle)
    progress.run("compressed artefact and checksums", artefacts)
    progress.run("clean up", lambda: None if keep_root else shutil.rmtree(root))
    summary: dict[str, object] = {
        "version": image_version,
        "image": str(image),
        "image_bytes": image.stat().st_size,
        "compressed": str(packed_holder[0]),
        "compressed_bytes": packed_holder[0].stat().st_size,
        "sbom": str(manifest_path),
        "bundle": str(update),
        "bundle_bytes": update.stat().st_size,
        "components": prepared["components"],
        "compiled_from_source": prepared["compiled"],
        "disk_id": layout.disk_id_hex,
        "seconds": {k: round(v) for k, v in progress.timings.items()},
        "total_seconds": round(progress.total()),
    }
    (out / "build.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m image.build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=PROJECT / "build/image")
    parser.add_argument("--mirror", help="Debian mirror (e.g. a snapshot.debian.org URL)")
    parser.add_argument("--keep-root", action="store_true", help="keep the unpacked root")
    parser.add_argument(
        "--keys", type=Path, help="update signing keys (default: development keys in OUT/keys)"
    )
    parser.add_argument(
        "--technician-pin-hash",
        default=os.environ.get("VN_EID_TECHNICIAN_PIN_HASH"),
        help="argon2 hash of the deployment's technician PIN (python -m station "
        "technician-pin); default: a random PIN kept in OUT/technician-pin.txt",
    )
    parser.add_argument(
        "--tuf-repo",
        type=Path,
        help="the update repository (python -m image.release) whose root.json the image "
        "trusts; needed with --keys (default: a development one in OUT/tuf)",
    )
    args = parser.parse_args(argv)
    try:
        summary = build(
            args.out.resolve(), args.mirror, args.keep_root, args.keys,
            args.technician_pin_hash, args.tuf_repo,
        )  # fmt: skip
    except (BuildError, pydeps.DependencyError, bundle.BundleError) as exc:
        print(f"image build failed: {exc}", file=sys.stderr)
        return 1
    gib = int(str(summary["image_bytes"])) / 2**30
    print(f"built {summary['image']} ({gib:.2f} GiB) in {summary['total_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
