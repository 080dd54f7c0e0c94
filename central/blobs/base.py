"""The blob store interface, its errors, key rules and the verifying reader both backends share.

A blob is an immutable byte string under a key (an enrollment package under its package id).
The rules every backend keeps:

- ``put`` returns only once the blob is durably stored (that is when the registry may
  acknowledge an upload); a blob is never overwritten: the same content again is a no-op that
  returns the stored :class:`BlobInfo`, different content raises :class:`BlobConflict`.
- ``put`` with ``sha256=`` checks the content against it and refuses a mismatch with
  :class:`BlobIntegrityError`, leaving nothing behind.
- Reads check the content against the sha256 recorded at ``put`` and raise
  :class:`BlobCorrupt` at the end of a stream that does not match.
"""

from __future__ import annotations

import abc
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol

CHUNK = 1024 * 1024
MAX_KEY_LENGTH = 200

# Segments of letters, digits, '.', '_', '-', each starting with a letter or digit, joined by
# '/'. No empty, '.' or '..' segment, no leading '/', no backslash, no control characters.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_KEY = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
_PREFIX = re.compile(r"[A-Za-z0-9._/-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobError(Exception):
    """Base class of the blob store's errors."""


class InvalidBlobKey(BlobError, ValueError):  # noqa: N818 - reads better than InvalidBlobKeyError
    """The key is not one a blob store accepts (see :func:`check_key`)."""


class BlobNotFound(BlobError, KeyError):  # noqa: N818
    """No blob under this key."""

    def __str__(self) -> str:  # KeyError quotes its argument; say it plainly
        return str(self.args[0]) if self.args else "blob not found"


class BlobConflict(BlobError):  # noqa: N818
    """A different blob is already stored under this key; stored blobs are never overwritten."""


class BlobIntegrityError(BlobError):
    """The content given to ``put`` does not match the sha256 given with it; nothing was stored."""


class BlobCorrupt(BlobError):  # noqa: N818
    """A stored blob no longer matches the size or sha256 recorded when it was stored."""


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    sha256: str  # lower-case hex of the whole content
    stored_at: datetime  # timezone-aware UTC

    def same_content(self, other: BlobInfo) -> bool:
        return self.size == other.size and self.sha256 == other.sha256


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid blob key, else raise :class:`InvalidBlobKey`.

    Keys are 1 to 200 ASCII characters: segments of letters, digits, ``.``, ``_`` and ``-``,
    each starting with a letter or digit, separated by single ``/``. So no absolute path, no
    ``.``/``..`` segment (nor ``..`` anywhere), no backslash, no empty segment: a hostile
    package id cannot name anything outside the store.
    """
    if not isinstance(key, str):
        raise InvalidBlobKey(f"blob key must be a str, not {type(key).__name__}")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidBlobKey(f"blob key must be 1 to {MAX_KEY_LENGTH} characters: {key!r}")
    if not _KEY.fullmatch(key) or ".." in key:
        raise InvalidBlobKey(
            f"invalid blob key {key!r}: use segments of letters, digits, '.', '_' and '-' "
            "that start with a letter or digit, separated by '/'"
        )
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty or the start of a key (same characters as keys)."""
    if len(prefix) > MAX_KEY_LENGTH or not _PREFIX.fullmatch(prefix) or ".." in prefix:
        raise InvalidBlobKey(f"invalid blob key prefix {prefix!r}")
    return prefix


def check_sha256(sha256: str | None) -> str | None:
    """Normalise an expected sha256 (64 hex digits, any case) to lower case."""
    if sha256 is None:
        return None
    normal = sha256.strip().lower()
    if not _SHA256.fullmatch(normal):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    return normal


def iter_chunks(source: BinaryIO | bytes, size: int = CHUNK) -> Iterator[bytes]:
    """The content of ``source`` in chunks of at most ``size`` bytes, never all at once."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])
        return
    while True:
        chunk = source.read(size)
        if chunk is None:
            raise BlobError("the source stream is non-blocking and has no data ready")
        if not chunk:
            return
        yield chunk


def integrity_error(key: str, expected: str, actual: str, size: int) -> BlobIntegrityError:
    return BlobIntegrityError(
        f"sha256 mismatch for blob {key!r}: expected {expected}, the {size} bytes given hash to "
        f"{actual}; nothing was stored (re-send the package)"
    )


def conflict_error(key: str, stored: BlobInfo, new_sha256: str, new_size: int) -> BlobConflict:
    return BlobConflict(
        f"blob {key!r} is already stored with different content (stored: {stored.size} bytes, "
        f"sha256 {stored.sha256}; offered: {new_size} bytes, sha256 {new_sha256}); "
        "stored blobs are never overwritten"
    )


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes | None: ...

    def close(self) -> None: ...


class _VerifyingRaw(io.RawIOBase):
    """Reads through to ``raw`` and checks size and sha256 against ``info`` at the end."""

    def __init__(self, raw: _Readable, info: BlobInfo) -> None:
        super().__init__()
        self._raw = raw
        self._info = info
        self._hash = hashlib.sha256()
        self._seen = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        if data is None:
            raise BlobError("the underlying stream returned no data")
        n = len(data)
        if n:
            self._hash.update(data)
            self._seen += n
            view[:n] = data
            if self._seen > self._info.size:
                self._fail()
        elif not self._checked and len(view):
            self._checked = True
            if self._seen != self._info.size or self._hash.hexdigest() != self._info.sha256:
                self._fail()
        return n

    def _fail(self) -> None:
        raise BlobCorrupt(
            f"blob {self._info.key!r} does not match what was stored: expected "
            f"{self._info.size} bytes with sha256 {self._info.sha256}, read {self._seen} bytes"
            + ("" if self._seen > self._info.size else f" with sha256 {self._hash.hexdigest()}")
        )

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()


def verifying_reader(raw: _Readable, info: BlobInfo) -> BinaryIO:
    """A buffered stream over ``raw`` that raises :class:`BlobCorrupt` at its end on mismatch."""
    return io.BufferedReader(_VerifyingRaw(raw, info), buffer_size=64 * 1024)


class BlobStore(abc.ABC):
    """Immutable blobs under validated keys; see the module docstring for the rules."""

    @abc.abstractmethod
    def put(self, key: str, source: BinaryIO | bytes, *, sha256: str | None = None) -> BlobInfo:
        """Store ``source`` (bytes, or a stream read to its end in chunks) under ``key``.

        Returns once the blob is durably stored. The same content again returns the stored
        info; different content raises :class:`BlobConflict`; a ``sha256`` that does not match
        the content raises :class:`BlobIntegrityError` and stores nothing.
        """

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A streaming reader of the blob (raises :class:`BlobNotFound`); close it after use.

        Reading to the end raises :class:`BlobCorrupt` if the content no longer matches.
        """

    @abc.abstractmethod
    def info(self, key: str) -> BlobInfo | None:
        """Size, sha256 and time stored, or None when there is no blob under ``key``."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob; deleting a missing blob is not an error."""

    @abc.abstractmethod
    def keys(self, prefix: str = "") -> Iterator[str]:
        """The keys that start with ``prefix``, in ascending order."""

    @abc.abstractmethod
    def sweep(self, older_than: float = 3600.0) -> int:
        """Remove what interrupted puts left (temp files, multipart uploads) that is older than
        ``older_than`` seconds; returns how many were removed. Never touches a stored blob."""

    def get(self, key: str) -> bytes:
        """The whole blob in memory (checked against its sha256); prefer :meth:`open`."""
        with self.open(key) as stream:
            return stream.read()

    def exists(self, key: str) -> bool:
        return self.info(key) is not None
