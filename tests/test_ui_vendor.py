"""Vendored browser files are the published ones, byte for byte."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "station" / "ui" / "static" / "vendor"


def test_vendored_files_match_their_recorded_checksums() -> None:
    rows = re.findall(
        r"^\| (\S+) \| .+? \| .+? \| ([0-9a-f]{64}) \|$",
        (VENDOR / "VENDOR.md").read_text(),
        re.MULTILINE,
    )
    assert rows, "VENDOR.md lists no files"
    listed = {name for name, _ in rows}
    present = {p.name for p in VENDOR.iterdir() if p.name != "VENDOR.md"}
    assert present == listed, (present, listed)
    for name, digest in rows:
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
