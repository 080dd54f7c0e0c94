"""The manifest: what a package holds, signed by the station (COSE_Sign1 payload).

    Manifest = { "format": "vn-eid/package", "version": 1, "id": tstr, "created": tstr,
                 "station": tstr, "parts": [+ Part] }
    Part     = { "name": tstr, "type": tstr, "encoding": "identity" / "deflate",
                 "size": uint, "stored": uint, "sha256": bstr(32) }

``sha256`` and ``stored`` describe the bytes as stored; ``size`` is the length after
decoding, and a reader never inflates past it (decompression bombs).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass

from enrollment import cbor
from enrollment.envelope import FORMAT_NAME, FORMAT_VERSION
from enrollment.errors import (
    MalformedPackageError,
    SizeLimitError,
    TamperedPartError,
    UnsupportedVersionError,
)
from enrollment.ids import is_package_id

MANIFEST_CONTENT_TYPE = "application/vnd.vn-eid.manifest+cbor"
RECORD_PART = "record.cbor"
RECORD_TYPE = "application/vnd.vn-eid.record+cbor"
TRANSACTION_PART = "biometrics.an2"
TRANSACTION_TYPE = "application/vnd.ansi-nist-itl.2011"
REQUIRED_PARTS = (RECORD_PART, TRANSACTION_PART)
ENCODINGS = ("identity", "deflate")
_PART_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class PartEntry:
    name: str
    media_type: str
    encoding: str
    size: int
    stored: int
    sha256: bytes

    def to_cbor(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.media_type,
            "encoding": self.encoding,
            "size": self.size,
            "stored": self.stored,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class Manifest:
    package_id: str
    created: str
    station_id: str
    parts: tuple[PartEntry, ...]

    def encode(self) -> bytes:
        return cbor.dumps(
            {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "id": self.package_id,
                "created": self.created,
                "station": self.station_id,
                "parts": [p.to_cbor() for p in self.parts],
            }
        )

    def part(self, name: str) -> PartEntry | None:
        return next((p for p in self.parts if p.name == name), None)


def encode_part(
    name: str, media_type: str, content: bytes, encoding: str
) -> tuple[PartEntry, bytes]:
    """Encode ``content`` for storage and describe it for the manifest."""
    if encoding == "deflate":
        stored = zlib.compress(content, 9)
    elif encoding == "identity":
        stored = content
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    entry = PartEntry(
        name, media_type, encoding, len(content), len(stored), hashlib.sha256(stored).digest()
    )
    return entry, stored


def decode_manifest(data: bytes, *, max_parts: int, max_part_size: int) -> Manifest:
    obj = cbor.loads_strict(data, "manifest")
    keys = {"format", "version", "id", "created", "station", "parts"}
    if not isinstance(obj, dict) or set(obj) != keys:
        raise MalformedPackageError(f"manifest must have exactly the keys {sorted(keys)}")
    if obj["format"] != FORMAT_NAME:
        raise MalformedPackageError("manifest is not for a vn-eid/package")
    if obj["version"] != FORMAT_VERSION:
        raise UnsupportedVersionError(f"manifest version {obj['version']!r} is not supported")
    pid, created, station = obj["id"], obj["created"], obj["station"]
    if not (isinstance(pid, str) and is_package_id(pid)):
        raise MalformedPackageError("manifest id must be a UUIDv7")
    if not isinstance(created, str) or not isinstance(station, str):
        raise MalformedPackageError("manifest created and station must be text")
    raw_parts = obj["parts"]
    if not isinstance(raw_parts, list) or not raw_parts:
        raise MalformedPackageError("manifest parts must be a non-empty array")
    if len(raw_parts) > max_parts:
        raise SizeLimitError(f"manifest lists {len(raw_parts)} parts; the limit is {max_parts}")
    parts: list[PartEntry] = []
    for raw in raw_parts:
        parts.append(_part_entry(raw, max_part_size))
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        raise MalformedPackageError("manifest lists a part name twice")
    return Manifest(pid, created, station, tuple(parts))


def _part_entry(raw: object, max_part_size: int) -> PartEntry:
    keys = {"name", "type", "encoding", "size", "stored", "sha256"}
    if not isinstance(raw, dict) or set(raw) != keys:
        raise MalformedPackageError(f"manifest part must have exactly the keys {sorted(keys)}")
    name, mtype, enc = raw["name"], raw["type"], raw["encoding"]
    size, stored, digest = raw["size"], raw["stored"], raw["sha256"]
    if not (isinstance(name, str) and _PART_NAME.match(name)):
        raise MalformedPackageError(f"bad part name {name!r}")
    if not isinstance(mtype, str) or enc not in ENCODINGS:
        raise MalformedPackageError(f"part {name}: bad media type or encoding {enc!r}")
    if not all(isinstance(v, int) and v >= 0 for v in (size, stored)):
        raise MalformedPackageError(f"part {name}: sizes must be non-negative integers")
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise MalformedPackageError(f"part {name}: sha256 must be 32 bytes")
    if size > max_part_size or stored > max_part_size:
        raise SizeLimitError(
            f"part {name} declares {max(size, stored)} bytes; limit {max_part_size}"
        )
    return PartEntry(name, mtype, enc, size, stored, digest)


def check_and_decode_part(entry: PartEntry, stored: bytes) -> bytes:
    """Verify a stored part against its manifest entry and decode it, bounded by ``size``."""
    if len(stored) != entry.stored or hashlib.sha256(stored).digest() != entry.sha256:
        raise TamperedPartError(f"part {entry.name} does not match its SHA-256 in the manifest")
    if entry.encoding == "identity":
        if entry.size != entry.stored:
            raise TamperedPartError(f"part {entry.name}: identity part with size != stored")
        return stored
    inflater = zlib.decompressobj()
    try:
        # Never produce more than the declared size (+1 to notice a liar).
        content = inflater.decompress(stored, entry.size + 1)
    except zlib.error as exc:
        raise MalformedPackageError(f"part {entry.name} is not valid deflate data") from exc
    if len(content) > entry.size or inflater.unconsumed_tail:
        raise SizeLimitError(
            f"part {entry.name} inflates past its declared {entry.size} bytes (decompression bomb?)"
        )
    if len(content) != entry.size or not inflater.eof or inflater.unused_data:
        raise MalformedPackageError(f"part {entry.name} does not inflate to its declared size")
    return content
