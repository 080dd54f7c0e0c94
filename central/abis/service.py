"""The dedup engine the pipeline calls: :class:`Abis`.

Per enrollment the pipeline extracts templates outside any transaction
(:func:`central.abis.templates.extract_templates`), then, inside its writing transaction,
calls :meth:`Abis.identify_and_insert`, which

1. takes the dedup lock (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the engine's
   ``BEGIN IMMEDIATE`` already holds the write lock), so two enrollments of one person
   processed at once are serialised and the second finds the first;
2. has every shard catch up with the committed change log, up to the last change;
3. identifies the probe (ten-print fusion, face, demographic signal), excluding itself;
4. writes the gallery entry, its templates and an ``insert`` change row.

The caller commits or rolls back; the in-memory gallery changes only by replaying
committed change rows, so a rolled-back insert never reaches it. A retried job whose
insert was committed before a crash gets the same kind of answer and inserts nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from central.abis.demographics import Demographics
from central.abis.scoring import DedupResult, identify, search_probe
from central.abis.settings import AbisSettings
from central.abis.shards import LocalShards, ProcessShards, ShardSet
from central.abis.store import (
    DbTemplateSource,
    find_entry,
    insert_entry,
    lock_gallery,
    package_demographics,
    write_change,
)
from central.abis.templates import EnrollmentTemplates, finger_model
from central.db.models import GalleryChange


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Abis:
    """The gallery (loaded at start from the tables) and the operations on it."""

    def __init__(
        self,
        engine: Engine,
        settings: AbisSettings,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.engine, self.settings, self.clock = engine, settings, clock
        self.finger_model = finger_model(settings.extractor)
        self.shards: ShardSet
        if settings.shards == 1:
            self.shards = LocalShards(engine, settings, self.finger_model)
        else:
            url = engine.url.render_as_string(hide_password=False)
            self.shards = ProcessShards(url, settings, self.finger_model, settings.shards)

    def close(self) -> None:
        self.shards.close()

    def __enter__(self) -> Abis:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check(self, templates: EnrollmentTemplates) -> None:
        if templates.fingers and templates.finger_model != self.finger_model:
            raise ValueError(
                f"templates made with {templates.finger_model}, the gallery holds "
                f"{self.finger_model}: extract with this registry's abis.extractor"
            )

    def identify_and_insert(
        self,
        session: Session,
        package_id: uuid.UUID,
        templates: EnrollmentTemplates,
        demographics: Demographics | None = None,
    ) -> DedupResult:
        """Identify the package's templates against the gallery and insert them, in the
        caller's transaction. ``demographics`` default to the package row's."""
        self._check(templates)
        lock = lock_gallery(session)
        upto = session.scalar(select(func.max(GalleryChange.seq))) or 0
        existing = find_entry(session, package_id)
        exclude = frozenset() if existing is None else frozenset({existing.id})
        if demographics is None:
            demographics = package_demographics(session, package_id)
        parts = self.shards.search(
            search_probe(templates, demographics, self.settings), exclude, upto
        )
        source = DbTemplateSource(session, self.finger_model)
        verdict, candidates = identify(templates, demographics, parts, source, self.settings)
        if existing is not None:
            return DedupResult(existing.id, False, verdict, candidates, templates.notes)
        now = self.clock()
        entry = insert_entry(session, package_id, templates, now)
        write_change(session, lock, entry.id, "insert", now)
        return DedupResult(entry.id, True, verdict, candidates, templates.notes)

    def link(self, session: Session, package_id: uuid.UUID, person_id: uuid.UUID) -> int:
        """Record the person a package's entry belongs to (after issuance or a "same"
        decision); returns the entry id. Idempotent."""
        lock = lock_gallery(session)
        entry = find_entry(session, package_id)
        if entry is None:
            raise LookupError(f"package {package_id} has no gallery entry: run dedup first")
        if entry.person_id != person_id:
            entry.person_id = person_id
            write_change(session, lock, entry.id, "link", self.clock())
        return entry.id

    def delete(self, session: Session, package_id: uuid.UUID) -> bool:
        """Take a package's entry out of the gallery (its rows stay, marked deleted, for
        the audit trail); False if it had none or it was already deleted."""
        lock = lock_gallery(session)
        entry = find_entry(session, package_id)
        if entry is None or entry.deleted_at is not None:
            return False
        now = self.clock()
        entry.deleted_at = now
        write_change(session, lock, entry.id, "delete", now)
        return True

    def refresh(self) -> None:
        """Catch the gallery up with committed changes now (identify does it anyway)."""
        self.shards.refresh()

    def stats(self) -> list[tuple[int, int, int]]:
        """Per shard: entries, bytes of packed templates, last change applied."""
        return self.shards.stats()
