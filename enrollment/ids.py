"""Package ids: UUIDv7 (RFC 9562), time-ordered so that ids sort by creation."""

from __future__ import annotations

import os
import re
import time
import uuid

_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def new_package_id(unix_ms: int | None = None) -> str:
    """A new UUIDv7 in its canonical lower-case text form."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62
    value |= rand & (2**62 - 1)
    return str(uuid.UUID(int=value))


def is_package_id(text: str) -> bool:
    return bool(_UUID7.match(text))


def package_id_time_ms(package_id: str) -> int:
    return uuid.UUID(package_id).int >> 80
