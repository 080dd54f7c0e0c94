"""Deterministic CBOR (RFC 8949 section 4.2.1) with a strict reader for untrusted bytes.

The strict reader accepts only the deterministic encoding of plain data (maps, arrays, text,
bytes, integers, booleans, null and the tags we name), so one logical package has exactly one
byte form: any other spelling of the same data is rejected rather than silently accepted.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import cbor2

from enrollment.errors import MalformedPackageError, PackageError

MAX_DEPTH = 16


def dumps(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def _check_plain(obj: Any, allowed_tags: frozenset[int], depth: int, what: str) -> None:
    if depth > MAX_DEPTH:
        raise MalformedPackageError(f"{what}: nested deeper than {MAX_DEPTH}")
    if isinstance(obj, bool) or obj is None or isinstance(obj, int | str | bytes):
        return
    if isinstance(obj, list):
        for item in obj:
            _check_plain(item, allowed_tags, depth + 1, what)
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, int | str):
                raise MalformedPackageError(f"{what}: map keys must be integers or text")
            _check_plain(value, allowed_tags, depth + 1, what)
        return
    if isinstance(obj, cbor2.CBORTag) and obj.tag in allowed_tags:
        _check_plain(obj.value, allowed_tags, depth + 1, what)
        return
    raise MalformedPackageError(f"{what}: unexpected CBOR item {type(obj).__name__}")


def _tag_hook(decoder: Any, tag: cbor2.CBORTag) -> cbor2.CBORTag:
    return tag  # keep unknown tags visible to _check_plain instead of interpreting them


def loads_strict(
    data: bytes,
    what: str,
    *,
    allowed_tags: frozenset[int] = frozenset(),
    error: Callable[[str], PackageError] = MalformedPackageError,
) -> Any:
    """Decode exactly one deterministic CBOR item of plain data, or raise ``error``."""
    stream = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(stream, tag_hook=_tag_hook).decode()
    except (cbor2.CBORDecodeError, RecursionError, ValueError, OverflowError, MemoryError) as e:
        raise error(f"{what} is not valid CBOR: {e}") from e
    if stream.tell() != len(data):
        raise error(f"{what} has {len(data) - stream.tell()} trailing bytes")
    try:
        _check_plain(obj, allowed_tags, 0, what)
    except MalformedPackageError as e:
        raise error(e.message) from e
    if dumps(obj) != data:
        raise error(f"{what} is not in deterministic CBOR encoding")
    return obj
