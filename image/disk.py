"""The disk image: an MBR table (what the Pi's firmware reads) with the FAT boot
partition, root slot A, root slot B, and, made at first boot, the data partition.

The image file ends after slot A: slot B is declared in the table but lies past the end
of the file (flashed onto a card it is free space that RAUC fills at the first update),
so the file stays under 2 GB. Everything is made without loop devices: the file systems
as files (``mkfs.vfat -C`` + mtools, ``mkfs.ext4 -d``), the table with sfdisk, then the
file systems copied into place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
SECTOR = 512
GRUBENV_SIZE = 1024


@dataclass(frozen=True)
class Layout:
    """Offsets and sizes in MiB, and the MBR disk identifier the root= lines name."""

    first_offset_mib: int
    boot_mib: int
    root_mib: int
    disk_id: int

    @property
    def boot_start(self) -> int:
        return self.first_offset_mib

    @property
    def root_a_start(self) -> int:
        return self.boot_start + self.boot_mib

    @property
    def root_b_start(self) -> int:
        return self.root_a_start + self.root_mib

    @property
    def image_mib(self) -> int:
        """Where the file ends: after slot A."""
        return self.root_b_start

    @property
    def card_min_mib(self) -> int:
        """The smallest card that holds both slots and some data."""
        return self.root_b_start + self.root_mib + 1024

    @property
    def disk_id_hex(self) -> str:
        return f"{self.disk_id:08x}"

    def partuuid(self, number: int) -> str:
        """What the kernel calls partition ``number`` of an MBR disk: ``<disk id>-<nn>``."""
        return f"{self.disk_id_hex}-{number:02d}"

    def sfdisk_script(self) -> str:
        sectors = MIB // SECTOR
        return "\n".join(
            [
                "label: dos",
                f"label-id: 0x{self.disk_id_hex}",
                "unit: sectors",
                f"start={self.boot_start * sectors}, size={self.boot_mib * sectors}, "
                "type=c, bootable",
                f"start={self.root_a_start * sectors}, size={self.root_mib * sectors}, type=83",
                f"start={self.root_b_start * sectors}, size={self.root_mib * sectors}, type=83",
                "",
            ]
        )


def grubenv(values: dict[str, str]) -> bytes:
    """GRUB's environment block: a header, ``KEY=value`` lines, '#' up to 1024 bytes."""
    body = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in values.items())
    data = body.encode()
    if len(data) > GRUBENV_SIZE:
        raise ValueError("GRUB environment block over 1024 bytes")
    return data + b"#" * (GRUBENV_SIZE - len(data))


def read_grubenv(data: bytes) -> dict[str, str]:
    values = {}
    for line in data.decode().splitlines()[1:]:
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def make_vfat(tree: Path, target: Path, size_mib: int, label: str, volume_id: int) -> None:
    """A FAT32 file system holding ``tree``, as a file, without mounting anything."""
    target.unlink(missing_ok=True)
    subprocess.run(
        ["mkfs.vfat", "-C", "-F", "32", "-n", label, "-i", f"{volume_id:08x}",
         str(target), str(size_mib * 1024)],
        check=True, capture_output=True,
    )  # fmt: skip
    entries = sorted(str(p) for p in tree.iterdir())
    if entries:
        subprocess.run(
            ["mcopy", "-s", "-p", "-m", "-i", str(target), *entries, "::"],
            check=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
        )  # fmt: skip


def make_ext4(tree: Path, target: Path, size_mib: int, label: str, uuid: str) -> None:
    """An ext4 file system holding ``tree`` (owners and modes as they are), as a file."""
    target.unlink(missing_ok=True)
    result = subprocess.run(
        # -m 0: no blocks kept back for root on a file system mounted read-only.
        ["mkfs.ext4", "-q", "-F", "-m", "0", "-L", label, "-U", uuid, "-d", str(tree),
         "-E", f"hash_seed={uuid},root_owner=0:0", "-O", "^metadata_csum_seed",
         str(target), f"{size_mib}M"],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(
            f"mkfs.ext4 could not fit {tree} into {size_mib} MiB: {result.stderr.strip()} "
            "(raise disk.root_mib in image/profile.toml or trim the package list)"
        )


def assemble(layout: Layout, boot_fs: Path, root_fs: Path, target: Path) -> None:
    """The flashable image: the table, then each file system at its offset."""
    target.unlink(missing_ok=True)
    # sfdisk refuses a partition past the end of the file: cut the table on a file as
    # large as the card's minimum, then cut the file back after slot A.
    with target.open("wb") as out:
        out.truncate(layout.card_min_mib * MIB)
    subprocess.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(target)],
        input=layout.sfdisk_script(), text=True, check=True,
    )  # fmt: skip
    with target.open("r+b") as out:
        out.truncate(layout.image_mib * MIB)
        for source, start_mib in ((boot_fs, layout.boot_start), (root_fs, layout.root_a_start)):
            out.seek(start_mib * MIB)
            with source.open("rb") as src:
                shutil.copyfileobj(src, out, 16 * MIB)


def partition_table(image: Path) -> list[dict[str, object]]:
    """The partitions sfdisk reads back from an image file (for checks and tests)."""
    import json

    result = subprocess.run(
        ["sfdisk", "--json", str(image)], check=True, capture_output=True, text=True
    )
    table = json.loads(result.stdout)["partitiontable"]
    return list(table.get("partitions", []))
