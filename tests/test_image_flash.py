"""What ``image.flash`` writes is the image the build made: a damaged compressed image or
an image whose bytes differ from the build's checksum file is reported, not "done"."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from image import flash


def _image(folder: Path, name: str = "vn-eid-station-1.0.img") -> tuple[Path, bytes]:
    raw = folder / name
    data = bytes(range(256)) * 40_000 + b"end"
    raw.write_bytes(data)
    return raw, data


def _card(folder: Path, size: int) -> Path:
    card = folder / "card"
    card.write_bytes(b"\xff" * (size + 4096))
    return card


def _sums(raw: Path, digest: str) -> None:
    sums = raw.with_name(raw.name.removesuffix(".img") + ".sha256")
    sums.write_text(f"{digest}  {raw.name}\n{'0' * 64}  {raw.name}.zst\n")


def test_the_written_image_matches_the_builds_checksum(tmp_path: Path) -> None:
    raw, data = _image(tmp_path)
    digest = hashlib.sha256(data).hexdigest()
    _sums(raw, digest)
    subprocess.run(["zstd", "-q", str(raw), "-o", f"{raw}.zst"], check=True)
    for image in (raw, Path(f"{raw}.zst")):
        assert flash.expected_digest(image) == digest
        assert flash.write_and_verify(image, _card(tmp_path, len(data)), echo=False) == digest


def test_an_image_that_differs_from_its_checksum_file_is_reported(tmp_path: Path) -> None:
    raw, data = _image(tmp_path)
    _sums(raw, hashlib.sha256(data + b"!").hexdigest())  # the build's bytes were others
    with pytest.raises(flash.FlashError, match="not the image its checksum file lists"):
        flash.write_and_verify(raw, _card(tmp_path, len(data)), echo=False)
    # Without a checksum file (an image from elsewhere) only the read-back is compared.
    other, _ = _image(tmp_path, "other.img")
    assert flash.expected_digest(other) is None
    assert flash.write_and_verify(other, _card(tmp_path, len(data)), echo=False)


def test_a_damaged_compressed_image_is_reported(tmp_path: Path) -> None:
    raw = tmp_path / "vn-eid-station-1.0.img"
    data = os.urandom(3 * 2**20)  # incompressible: zstd stores it as is
    raw.write_bytes(data)
    packed = Path(f"{raw}.zst")
    subprocess.run(["zstd", "-q", "--check", str(raw), "-o", str(packed)], check=True)
    raw.unlink()  # no checksum file either: only zstd's own check can tell
    damaged = bytearray(packed.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # same length out, one byte wrong
    packed.write_bytes(bytes(damaged))
    card = _card(tmp_path, len(data))
    with pytest.raises(flash.FlashError, match="is damaged"):
        flash.write_and_verify(packed, card, echo=False)
