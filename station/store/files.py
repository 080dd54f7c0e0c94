"""Files that must survive a power cut: written whole or not at all."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so that after a crash the file holds either the old
    content (or is absent) or all of ``data``: temp file, fsync, rename, fsync the folder.
    ``mode``: the file's permissions whatever the umask (a secret: 0o600), and the temp
    file is made new, never through a link planted in the folder. Raises OSError (ENOSPC
    on a full disk) with nothing left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if mode is None:
            fh = tmp.open("wb")
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # a leftover of a crashed writer of this pid
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fh = os.fdopen(os.open(tmp, flags, mode), "wb")
            os.fchmod(fh.fileno(), mode)
        with fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def remove_durably(path: Path) -> None:
    """Delete ``path`` (if present) and make the deletion durable."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def sweep_temporaries(folder: Path) -> int:
    """Remove the temp files of writes a power cut interrupted; returns how many."""
    if not folder.is_dir():
        return 0
    removed = 0
    for leftover in folder.glob(".*.tmp-*"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            removed += 1
    return removed


__all__ = ["atomic_write", "fsync_dir", "remove_durably", "sweep_temporaries"]
