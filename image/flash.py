"""Write a built image onto a card or USB disk, and check what was written.

    python -m image.flash --device /dev/sdX [--image build/image/...img.zst] [--yes]

It refuses, before writing anything: a path that is not a whole-disk block device; a disk
with anything mounted or used as swap; the disk this machine runs from; a disk that is not
removable or on USB (a technician's laptop's own drive) unless --fixed-disk; a card
smaller than the image needs for both root slots and data. It opens the disk exclusively
(nothing can mount it meanwhile), and after writing reads the image's length back and
compares checksums: with what was written, and with the build's ``<name>.sha256``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from image import disk
from image.build import newest_artefact

CHUNK = 4 * disk.MIB
# Bigger than any card a station takes: more likely a backup disk plugged in by mistake.
LARGEST_SANE_BYTES = 512 * 2**30


class FlashError(RuntimeError):
    """Refused or failed; the message says why and what to do."""


@dataclass(frozen=True)
class Target:
    """What lsblk says of the device and everything on it."""

    path: str
    kind: str  # disk, part, loop, rom ...
    size: int
    removable: bool
    transport: str | None
    read_only: bool
    mountpoints: tuple[str, ...]  # of the disk and all its partitions
    holds_root: bool


def describe(device: str) -> Target:
    """The device as lsblk sees it (the disk and its partitions)."""
    out = subprocess.run(
        ["lsblk", "--json", "--bytes", "--output",
         "PATH,TYPE,SIZE,RM,TRAN,RO,MOUNTPOINTS,PKNAME", device],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    nodes = json.loads(out)["blockdevices"]
    if not nodes:
        raise FlashError(f"{device}: lsblk knows no such device")
    top = nodes[0]
    mounts: list[str] = []

    def walk(node: dict[str, object]) -> Iterator[dict[str, object]]:
        yield node
        for child in node.get("children", []) or []:  # type: ignore[attr-defined]
            yield from walk(child)

    for node in walk(top):
        mounts.extend(str(m) for m in node.get("mountpoints") or [] if m)  # type: ignore[attr-defined]
    root_disk = _root_disk()
    return Target(
        path=str(top["path"]),
        kind=str(top["type"]),
        size=int(top["size"]),
        removable=bool(top["rm"]),
        transport=top.get("tran"),
        read_only=bool(top["ro"]),
        mountpoints=tuple(mounts),
        holds_root=root_disk is not None and os.path.realpath(device) == root_disk,
    )


def _root_disk() -> str | None:
    """The whole disk the running system's / lives on."""
    source = subprocess.run(
        # --nofsroot: a btrfs subvolume's source is /dev/sda2, not /dev/sda2[/@].
        ["findmnt", "-n", "--nofsroot", "-o", "SOURCE", "/"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not source.startswith("/dev/"):
        return None
    parent = subprocess.run(
        ["lsblk", "-n", "-d", "-o", "PKNAME", source], capture_output=True, text=True
    ).stdout.strip()
    return os.path.realpath(f"/dev/{parent}" if parent else source)


def swaps() -> set[str]:
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {os.path.realpath(line.split()[0]) for line in lines if line.strip()}


def refusals(target: Target, needed_bytes: int, fixed_disk: bool, in_swap: bool) -> list[str]:
    """Every reason not to write onto ``target`` (empty: go ahead)."""
    reasons = []
    if target.kind != "disk":
        reasons.append(f"{target.path} is a {target.kind}, not a whole disk (give /dev/sdX)")
    if target.holds_root:
        reasons.append(f"{target.path} is the disk this machine runs from")
    if target.mountpoints:
        reasons.append(
            f"{target.path} has mounted file systems ({', '.join(target.mountpoints)}): "
            "unmount them first"
        )
    if in_swap:
        reasons.append(f"{target.path} is in use as swap")
    if target.read_only:
        reasons.append(f"{target.path} is read-only (the card's lock switch?)")
    if not fixed_disk and not target.removable and target.transport != "usb":
        reasons.append(
            f"{target.path} is neither removable nor on USB: a built-in drive? "
            "(--fixed-disk if you really mean it)"
        )
    if target.size < needed_bytes:
        reasons.append(
            f"{target.path} holds {target.size / 2**30:.1f} GiB; the station needs at least "
            f"{needed_bytes / 2**30:.1f} GiB (two root slots and data)"
        )
    if target.size > LARGEST_SANE_BYTES and not fixed_disk:
        reasons.append(f"{target.path} is {target.size / 2**40:.1f} TiB: not a station's card")
    return reasons


def expected_digest(image: Path) -> str | None:
    """The raw image's sha256 as the build listed it in ``<name>.sha256`` beside it; None
    when there is no such file or line (an image from elsewhere)."""
    raw = image.name.removesuffix(".zst")
    sums = image.with_name(raw.removesuffix(".img") + ".sha256")
    try:
        lines = sums.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        digest, _, name = line.partition("  ")
        if name.strip() == raw:
            return digest.strip().lower()
    return None


def open_image(image: Path) -> tuple[IO[bytes], int, subprocess.Popen[bytes] | None]:
    """A reader of the raw image (decompressing .zst on the fly), its size, and the
    decompressor (whose exit status says whether the stream was intact)."""
    if image.suffix == ".zst":
        size_text = subprocess.run(
            ["zstd", "-lv", str(image)], check=True, capture_output=True, text=True
        ).stdout
        size = next(
            int(line.split("(")[1].split()[0])
            for line in size_text.splitlines()
            if "Decompressed Size" in line
        )
        proc = subprocess.Popen(["zstd", "-dc", str(image)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        return proc.stdout, size, proc
    return image.open("rb"), image.stat().st_size, None


def write_and_verify(image: Path, device: Path, echo: bool = True) -> str:
    """Write the image, flush it to the medium, read it back; the sha256 of both, which
    must also be the one the build listed beside the image (a corrupt copy of the image
    would otherwise be written and \"verified\" faithfully)."""
    expected = expected_digest(image)
    reader, size, decompressor = open_image(image)
    written = hashlib.sha256()
    started = time.monotonic()
    done = 0
    flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
    if stat.S_ISBLK(os.stat(device).st_mode):
        # Exclusive: fails (EBUSY) if anything mounted a partition since the checks.
        flags |= os.O_EXCL
    try:
        fd = os.open(device, flags)
    except OSError as exc:
        if decompressor is not None:
            decompressor.kill()
            decompressor.wait()
        reader.close()
        raise FlashError(f"{device}: cannot open it for writing alone: {exc.strerror}") from None
    try:
        with reader:
            while chunk := reader.read(CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                written.update(chunk)
                done += len(chunk)
                if echo and done % (64 * disk.MIB) < CHUNK:
                    rate = done / max(time.monotonic() - started, 1e-3) / disk.MIB
                    print(f"\r  written {done * 100 // size:3d} %  ({rate:.0f} MiB/s)", end="")
        os.fsync(fd)
    finally:
        os.close(fd)
        if decompressor is not None:
            decompressor.wait()
    if decompressor is not None and decompressor.returncode != 0:
        raise FlashError(f"{image.name} is damaged (zstd exit {decompressor.returncode})")
    if done != size:
        raise FlashError(f"wrote {done} bytes, the image has {size}")
    if expected is not None and written.hexdigest() != expected:
        raise FlashError(
            f"{image.name} is not the image its checksum file lists (a damaged copy?): "
            "do not use this card; copy the image again"
        )
    if echo:
        print("\n  reading back ...", flush=True)
    # Drop the page cache for the device so the check reads the medium, not memory.
    if stat.S_ISBLK(os.stat(device).st_mode):
        subprocess.run(["blockdev", "--flushbufs", str(device)], check=False)
    check = hashlib.sha256()
    with device.open("rb") as back:
        remaining = size
        while remaining:
            chunk = back.read(min(CHUNK, remaining))
            if not chunk:
                break
            check.update(chunk)
            remaining -= len(chunk)
    if check.hexdigest() != written.hexdigest():
        raise FlashError(f"{device}: what was read back differs from the image: a bad card?")
    return written.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m image.flash",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", required=True, help="the card or USB disk, e.g. /dev/sdb")
    parser.add_argument("--image", type=Path, help="default: the newest in build/image")
    parser.add_argument("--fixed-disk", action="store_true", help="allow a non-removable disk")
    parser.add_argument("--yes", action="store_true", help="do not ask before writing")
    args = parser.parse_args(argv)
    try:
        image = args.image or newest_artefact(Path("build/image"), (".img", ".img.zst"))
        device = Path(args.device)
        if not device.exists() or not stat.S_ISBLK(os.stat(device).st_mode):
            raise FlashError(f"{device} is not a block device")
        target = describe(str(device))
        layout_min = _card_min_bytes()
        reasons = refusals(target, layout_min, args.fixed_disk, os.path.realpath(device) in swaps())
        if reasons:
            raise FlashError("refusing to write:\n  - " + "\n  - ".join(reasons))
        if not args.yes:
            answer = input(f"Erase everything on {device} ({target.size / 2**30:.1f} GiB)? [y/N] ")
            if answer.strip().lower() not in ("y", "yes", "c", "co"):
                print("nothing written")
                return 1
        print(f"writing {image.name} to {device}")
        digest = write_and_verify(image, device)
    except (FlashError, FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"flash: {exc}", file=sys.stderr)
        return 1
    print(f"done: {device} holds the image (sha256 {digest}); remove it and put it in the Pi")
    return 0


def _card_min_bytes() -> int:
    """Both root slots and a data partition, as the profile cuts the disk."""
    from image.profile import load

    profile = load()
    layout = disk.Layout(profile.first_offset_mib, profile.boot_mib, profile.root_mib, 1)
    return layout.card_min_mib * disk.MIB


if __name__ == "__main__":
    sys.exit(main())
