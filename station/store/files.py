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


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that after a crash the file holds either the old
    content (or is absent) or all of ``data``: temp file, fsync, rename, fsync the folder.
    Raises OSError (ENOSPC on a full disk) with nothing left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
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
