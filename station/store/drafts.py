"""Encrypted drafts: what an enrollment holds before its package is built.

A case collects named blobs over minutes or hours (demographics JSON, the consent, the
portrait JPEG, each rolled finger's image); a power cut or a recapture must not lose them,
and a stolen SD card must not reveal them. Each blob is a row of ``draft_blob``, encrypted
with AES-256-GCM under the station data key (:mod:`station.store.sealing`):

- a fresh random 96-bit nonce per write (a key writes far fewer than 2^32 blobs);
- the associated data binds the blob to its ``case_id`` and ``name``, so a row copied
  under another case or name fails to decrypt instead of showing one citizen's fingers in
  another's enrollment;
- any flipped byte, a wrong key or a swapped row raises :class:`DraftCorruptError`.

Writes take the caller's connection (``with db.write() as conn``), so a blob and the case
state that refers to it commit together, or neither does.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from station.store.database import Schema, StationDatabase

NONCE_BYTES = 12
_AAD_PREFIX = b"vn-eid draft 1\0"
MAX_ID_CHARS = 200

DRAFTS_SCHEMA = Schema(
    "drafts",
    (
        """
        CREATE TABLE draft_blob (
            case_id TEXT NOT NULL,
            name TEXT NOT NULL,
            nonce BLOB NOT NULL,
            ciphertext BLOB NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (case_id, name)
        )
        """,
    ),
)


class DraftError(RuntimeError):
    """A draft cannot be stored or read."""


class DraftCorruptError(DraftError):
    """A stored draft does not decrypt: altered on disk, copied from another case or name,
    or encrypted under another data key."""


def _check_id(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"a draft's {what} must be a non-empty string")
    if "\0" in value or len(value) > MAX_ID_CHARS:
        raise ValueError(f"a draft's {what} must be at most {MAX_ID_CHARS} characters, no NUL")


def _aad(case_id: str, name: str) -> bytes:
    # NUL never occurs in either part (checked), so the encoding is unambiguous.
    return _AAD_PREFIX + case_id.encode() + b"\0" + name.encode()


class DraftStore:
    """Named, encrypted blobs per case, in the station database."""

    def __init__(self, db: StationDatabase, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the draft key must be 32 bytes (AES-256)")
        self._db = db
        self._aead = AESGCM(key)

    def put(self, conn: sqlite3.Connection, case_id: str, name: str, data: bytes) -> None:
        """Store (or replace) ``data`` as ``case_id``/``name`` in the caller's transaction."""
        _check_id(case_id, "case id")
        _check_id(name, "name")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"a draft holds bytes, not {type(data).__name__}")
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, bytes(data), _aad(case_id, name))
        conn.execute(
            "INSERT INTO draft_blob (case_id, name, nonce, ciphertext, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (case_id, name) DO UPDATE SET "
            "nonce = excluded.nonce, ciphertext = excluded.ciphertext, "
            "updated_at = excluded.updated_at",
            (case_id, name, nonce, sealed, datetime.now(UTC).isoformat()),
        )

    def get(
        self, case_id: str, name: str, *, conn: sqlite3.Connection | None = None
    ) -> bytes | None:
        """The blob, or None when there is none; inside the caller's transaction when
        ``conn`` is given (to read what it wrote)."""
        _check_id(case_id, "case id")
        _check_id(name, "name")
        if conn is not None:
            row = self._row(conn, case_id, name)
        else:
            with self._db.read() as c:
                row = self._row(c, case_id, name)
        if row is None:
            return None
        nonce, sealed = bytes(row[0]), bytes(row[1])
        if len(nonce) != NONCE_BYTES:
            raise DraftCorruptError(f"draft {case_id}/{name}: stored nonce is damaged")
        try:
            return self._aead.decrypt(nonce, sealed, _aad(case_id, name))
        except InvalidTag as exc:
            raise DraftCorruptError(
                f"draft {case_id}/{name} does not decrypt: it was altered on disk, copied "
                "from another case, or written under another station data key"
            ) from exc

    @staticmethod
    def _row(conn: sqlite3.Connection, case_id: str, name: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT nonce, ciphertext FROM draft_blob WHERE case_id = ? AND name = ?",
            (case_id, name),
        ).fetchone()
        return row

    def names(self, case_id: str, *, conn: sqlite3.Connection | None = None) -> list[str]:
        """The names stored for ``case_id``, sorted."""
        _check_id(case_id, "case id")
        query = "SELECT name FROM draft_blob WHERE case_id = ? ORDER BY name"
        if conn is not None:
            return [str(r[0]) for r in conn.execute(query, (case_id,))]
        with self._db.read() as c:
            return [str(r[0]) for r in c.execute(query, (case_id,))]

    def delete(self, conn: sqlite3.Connection, case_id: str, name: str) -> bool:
        """Remove one blob in the caller's transaction; whether there was one."""
        _check_id(case_id, "case id")
        _check_id(name, "name")
        cur = conn.execute("DELETE FROM draft_blob WHERE case_id = ? AND name = ?", (case_id, name))
        return cur.rowcount > 0

    def delete_case(self, conn: sqlite3.Connection, case_id: str) -> int:
        """Remove every blob of ``case_id`` in the caller's transaction (once its package
        is in the outbox, or the case is abandoned); how many there were."""
        _check_id(case_id, "case id")
        cur = conn.execute("DELETE FROM draft_blob WHERE case_id = ?", (case_id,))
        return cur.rowcount


__all__ = ["DRAFTS_SCHEMA", "DraftCorruptError", "DraftError", "DraftStore"]
