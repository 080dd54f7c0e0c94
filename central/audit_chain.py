"""The audit log's hash chain: each entry commits to the one before it.

An entry's hash is SHA-256 over the deterministic CBOR (RFC 8949 4.2.1) of its fields and
the previous entry's hash, so changing, removing or reordering any entry breaks every
hash after it; an auditor re-computes the chain from the first entry (or from a hash
published elsewhere, e.g. printed in the daily report) and finds the first entry that no
longer fits. Pure functions: the database layer stores entries, this module decides what
their hashes are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from enrollment import cbor

GENESIS = "0" * 64
"""The previous hash of the first entry."""


@dataclass(frozen=True)
class ChainEntry:
    seq: int
    at: datetime
    actor: str
    """Who: "user:<name>", "station:<id>", "worker:<id>", "system"."""
    action: str
    """What, as a stable dotted name: "package.received", "case.decided", ..."""
    subject: str
    """On what: a package id, a station id, a case id."""
    details: Mapping[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS
    hash: str = ""


class ChainBroken(ValueError):  # noqa: N818 (a verdict, not an error of the caller)
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"audit chain broken at entry {seq}: {reason}")
        self.seq = seq
        self.reason = reason


def _timestamp(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    prev_hash: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any],
) -> str:
    body = {
        "prev": prev_hash,
        "seq": seq,
        "at": _timestamp(at),
        "actor": actor,
        "action": action,
        "subject": subject,
        "details": dict(details),
    }
    return hashlib.sha256(cbor.dumps(body)).hexdigest()


def next_entry(
    previous: ChainEntry | None,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any] | None = None,
) -> ChainEntry:
    """The entry that follows ``previous`` (None: the first one), hash filled in."""
    seq = 1 if previous is None else previous.seq + 1
    prev = GENESIS if previous is None else previous.hash
    facts = dict(details or {})
    digest = entry_hash(prev, seq, at, actor, action, subject, facts)
    return ChainEntry(seq, at, actor, action, subject, facts, prev, digest)


def verify_chain(entries: Iterable[ChainEntry], start_hash: str = GENESIS) -> int:
    """Check entries in order; the number checked. Raises :class:`ChainBroken` at the
    first entry whose sequence, link or hash does not fit."""
    prev_hash, expected_seq, n = start_hash, None, 0
    for entry in entries:
        if expected_seq is not None and entry.seq != expected_seq:
            raise ChainBroken(entry.seq, f"expected entry {expected_seq} (one is missing)")
        if entry.prev_hash != prev_hash:
            raise ChainBroken(entry.seq, "its link to the previous entry does not match")
        digest = entry_hash(
            entry.prev_hash,
            entry.seq,
            entry.at,
            entry.actor,
            entry.action,
            entry.subject,
            entry.details,
        )
        if digest != entry.hash:
            raise ChainBroken(entry.seq, "its contents were changed after it was written")
        prev_hash, expected_seq, n = entry.hash, entry.seq + 1, n + 1
    return n
