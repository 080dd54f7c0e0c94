"""``audit verify``: re-compute the audit log's hash chain and name the first broken entry.

The chain (``central.audit_chain``) shows any entry changed, removed or re-ordered after
it was written. Entries cut off the end leave a shorter chain that still verifies: compare
``head_hash`` with a value published elsewhere (the daily report) to see that too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from central.audit_chain import GENESIS, ChainBroken, ChainEntry, verify_chain
from central.db.ops import audit_entries


@dataclass(frozen=True)
class AuditVerdict:
    intact: bool
    entries_checked: int
    """Entries that verified (all of them when intact; those before the break otherwise)."""
    broken_at: int | None
    """Sequence number of the first entry that does not fit."""
    reason: str | None
    head_seq: int | None
    """The last entry that verified, and its hash: the value to publish or compare."""
    head_hash: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_audit_log(
    engine: Engine, *, after_seq: int = 0, start_hash: str = GENESIS
) -> AuditVerdict:
    """Walk the log in order through ``verify_chain``; read-only, one snapshot.

    ``after_seq`` / ``start_hash``: start after an entry already verified (its hash), so a
    daily check need not re-read years of log.
    """
    passed = _Passed()

    def tracked(entries: Iterator[ChainEntry]) -> Iterator[ChainEntry]:
        previous = None
        for entry in entries:
            if previous is not None:
                passed.add(previous)  # verify_chain asks for the next: the previous passed
            yield entry
            previous = entry
        if previous is not None:
            passed.add(previous)

    broken: ChainBroken | None = None
    reader = engine.execution_options(sqlite_begin="DEFERRED")
    with Session(reader) as session, session.begin():
        try:
            verify_chain(tracked(audit_entries(session, after_seq)), start_hash)
        except ChainBroken as exc:
            broken = exc
    head = passed.last
    return AuditVerdict(
        intact=broken is None,
        entries_checked=passed.count,
        broken_at=None if broken is None else broken.seq,
        reason=None if broken is None else broken.reason,
        head_seq=None if head is None else head.seq,
        head_hash=start_hash if head is None else head.hash,
    )


class _Passed:
    """How many entries verified, and the last of them (the log may be long: no list)."""

    def __init__(self) -> None:
        self.count = 0
        self.last: ChainEntry | None = None

    def add(self, entry: ChainEntry) -> None:
        self.count += 1
        self.last = entry
