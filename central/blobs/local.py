"""Blobs in a local folder: the embedded default.

Layout: ``<root>/<h[0:2]>/<h[2:4]>/<name>`` where ``h`` is the sha256 of the key (65,536
folders, so ~800 files per folder at 50 million blobs) and ``name`` is the key with ``/``
written as ``~`` (``~`` is not a key character, so the mapping is one-to-one and ``keys()``
reads keys back from file names).

Each file is a 512-byte header followed by the blob's bytes. The header is one line of JSON
(``{"v":1,"key":...,"size":...,"sha256":...,"stored_at":...}``) after the magic
``VNEIDBLOB1\\n``, padded with spaces to 511 bytes and a newline; ``tail -c +513 FILE`` gives
the raw package. Keeping the sha256 inside the blob's own file means it is committed by the
same atomic step as the content: no sidecar that a crash can orphan or separate, ``info()``
costs one 512-byte read, and every read is checked against it (bit rot shows as
:class:`BlobCorrupt`).

A put writes a temp file ``.put-*.tmp`` in the target folder, fsyncs it, publishes it with
``os.link`` (atomic, and unlike ``rename`` it fails when the name exists, so two writers can
never overwrite each other), removes the temp name and fsyncs the folder. A crash at any point
leaves either nothing or a temp file (which :meth:`LocalBlobStore.sweep` removes), never a
partial blob under the real key. The folder must be on a POSIX filesystem with hard links
(ext4, xfs, btrfs, zfs, tmpfs) that is case-sensitive.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from central.blobs.base import (
    BlobCorrupt,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    check_key,
    check_prefix,
    check_sha256,
    conflict_error,
    integrity_error,
    iter_chunks,
    verifying_reader,
)

MAGIC = b"VNEIDBLOB1\n"
HEADER_SIZE = 512
TEMP_PREFIX = ".put-"
TEMP_SUFFIX = ".tmp"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode_header(info: BlobInfo) -> bytes:
    body = json.dumps(
        {
            "v": 1,
            "key": info.key,
            "size": info.size,
            "sha256": info.sha256,
            "stored_at": info.stored_at.isoformat(),
        },
        separators=(",", ":"),
    ).encode("ascii")
    header = MAGIC + body
    if len(header) > HEADER_SIZE - 1:  # cannot happen with keys of at most 200 characters
        raise ValueError("blob header too long")
    return header.ljust(HEADER_SIZE - 1, b" ") + b"\n"


def _decode_header(raw: bytes, path: Path) -> BlobInfo:
    try:
        if len(raw) != HEADER_SIZE or not raw.startswith(MAGIC):
            raise ValueError("bad magic or short header")
        fields = json.loads(raw[len(MAGIC) :].decode("ascii"))
        if fields.get("v") != 1:
            raise ValueError(f"unknown header version {fields.get('v')!r}")
        return BlobInfo(
            key=str(fields["key"]),
            size=int(fields["size"]),
            sha256=str(fields["sha256"]),
            stored_at=datetime.fromisoformat(fields["stored_at"]),
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise BlobCorrupt(f"blob file {path} has an unreadable header: {exc}") from exc


class LocalBlobStore(BlobStore):
    """Blobs in the folder ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.root.parent)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    # --- paths ---------------------------------------------------------------------------

    def path(self, key: str) -> Path:
        """The file that holds (or would hold) the blob under ``key``."""
        check_key(key)
        digest = hashlib.sha256(key.encode("ascii")).hexdigest()
        return self.root / digest[0:2] / digest[2:4] / key.replace("/", "~")

    def _make_dirs(self, folder: Path) -> None:
        """Create the fan-out folders, each made durable in its parent."""
        for level in (folder.parent, folder):
            if level.is_dir():
                continue
            try:
                level.mkdir()
            except FileExistsError:
                continue
            _fsync_dir(level.parent)

    def _fanout_dirs(self) -> Iterator[Path]:
        for first in sorted(os.scandir(self.root), key=lambda e: e.name):
            if len(first.name) != 2 or not first.is_dir(follow_symlinks=False):
                continue
            for second in sorted(os.scandir(first.path), key=lambda e: e.name):
                if len(second.name) == 2 and second.is_dir(follow_symlinks=False):
                    yield Path(second.path)

    # --- the interface -------------------------------------------------------------------

    def put(self, key: str, source: BinaryIO | bytes, *, sha256: str | None = None) -> BlobInfo:
        final = self.path(key)
        expected = check_sha256(sha256)
        folder = final.parent
        self._make_dirs(folder)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(source, bytes):
                    # All in memory already (an upload's body): hash it, then write header
                    # and content in one go, without copying it into chunks.
                    actual, size = hashlib.sha256(source).hexdigest(), len(source)
                    if expected is not None and actual != expected:
                        raise integrity_error(key, expected, actual, size)
                    info = BlobInfo(key, size, actual, datetime.now(UTC))
                    out.write(_encode_header(info))
                    out.write(source)
                else:
                    out.write(b"\0" * HEADER_SIZE)  # unreadable until the content is in
                    digest = hashlib.sha256()
                    size = 0
                    for chunk in iter_chunks(source):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                    actual = digest.hexdigest()
                    if expected is not None and actual != expected:
                        raise integrity_error(key, expected, actual, size)
                    info = BlobInfo(key, size, actual, datetime.now(UTC))
                    out.seek(0)
                    out.write(_encode_header(info))
                out.flush()
                os.fsync(out.fileno())
            for _ in range(3):
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    stored = self.info(key)
                    if stored is None:  # deleted between our link and our look: try again
                        continue
                    if stored.same_content(info):
                        return stored
                    raise conflict_error(key, stored, info.sha256, info.size) from None
                os.unlink(tmp)
                _fsync_dir(folder)
                return info
            raise BlobCorrupt(f"blob {key!r} keeps appearing and disappearing under {final}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _open_file(self, key: str) -> tuple[BinaryIO, BlobInfo] | None:
        path = self.path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return None
        try:
            info = _decode_header(handle.read(HEADER_SIZE), path)
            if info.key != key:
                raise BlobCorrupt(f"blob file {path} holds key {info.key!r}, not {key!r}")
        except BaseException:
            handle.close()
            raise
        return handle, info

    def open(self, key: str) -> BinaryIO:
        opened = self._open_file(key)
        if opened is None:
            raise BlobNotFound(f"no blob under key {key!r} in {self.root}")
        handle, info = opened
        return verifying_reader(handle, info)

    def info(self, key: str) -> BlobInfo | None:
        opened = self._open_file(key)
        if opened is None:
            return None
        handle, info = opened
        handle.close()
        return info

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)

    def keys(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        found = []
        for folder in self._fanout_dirs():
            for entry in os.scandir(folder):
                if entry.name.startswith("."):
                    continue
                key = entry.name.replace("~", "/")
                if key.startswith(prefix):
                    found.append(key)
        found.sort()
        return iter(found)

    def sweep(self, older_than: float = 3600.0) -> int:
        """Remove temp files of interrupted puts older than ``older_than`` seconds.

        Keep ``older_than`` well above the longest put: a younger temp file may belong to a
        put still in progress.
        """
        cutoff = time.time() - older_than
        removed = 0
        for folder in self._fanout_dirs():
            swept = False
            for entry in os.scandir(folder):
                name = entry.name
                if not (name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                        continue
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed += 1
                swept = True
            if swept:
                _fsync_dir(folder)
        return removed
