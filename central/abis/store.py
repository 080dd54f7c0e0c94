"""Dedup's tables: loading a shard, replaying the change log, writing entries and changes.

The change log (``gallery_change``) is how every in-memory copy stays in step: a shard
applies the rows after the last ``seq`` it applied, in order. Every write to the gallery
(insert, delete, link) happens while its transaction holds the ``dedup_lock`` row, so
``seq`` order is commit order and a reader that has applied ``seq`` N has seen every
change up to N (a rolled-back writer leaves a gap, which is harmless).

Readers use their own connection and see only committed rows, so a gallery never holds
an insert whose transaction later rolls back. On SQLite that connection reads in a
deferred transaction: the writer holds the write lock, and WAL lets readers in.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import Engine, and_, func, or_, select
from sqlalchemy.orm import Session

from central.abis.demographics import Demographics
from central.abis.gallery import EntryInfo, GalleryShard, ShardEntry
from central.abis.scoring import VerificationTemplates
from central.abis.templates import (
    EnrollmentTemplates,
    compact_from_bytes,
    face_from_bytes,
    face_to_bytes,
    full_from_bytes,
)
from central.db.models import (
    BiometricTemplate,
    DedupLock,
    GalleryChange,
    GalleryEntry,
    Package,
)

BATCH = 1000
FINGER, FACE = "finger", "face"


class GalleryOutOfStepError(RuntimeError):
    """A gallery copy could not reach the change the lock holder saw."""


def reader(engine: Engine) -> Engine:
    """``engine`` for reading committed rows beside a writer (deferred on SQLite)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="DEFERRED")
    return engine


def lock_gallery(session: Session) -> DedupLock:
    """Take the dedup lock in the caller's transaction (released at commit/rollback)."""
    row = session.scalars(select(DedupLock).where(DedupLock.id == 1).with_for_update()).first()
    if row is None:
        raise RuntimeError(
            "the dedup_lock row is missing: bring the database to the newest schema "
            "(python -m central migrate)"
        )
    return row


def _demographics(package: Package | None) -> Demographics:
    if package is None:
        return Demographics()
    return Demographics(package.name_key, package.date_of_birth, package.place_code)


def package_demographics(session: Session, package_id: uuid.UUID) -> Demographics:
    return _demographics(session.get(Package, package_id))


def _entries(
    session: Session, entry_ids: Sequence[int], positions: tuple[int, ...], finger_model: str
) -> list[ShardEntry]:
    """Live entries among ``entry_ids`` with their compact templates and face."""
    rows = session.execute(
        select(GalleryEntry, Package)
        .join(Package, Package.package_id == GalleryEntry.package_id)
        .where(GalleryEntry.id.in_(entry_ids), GalleryEntry.deleted_at.is_(None))
    ).all()
    fingers: dict[int, dict[int, bytes]] = {}
    faces: dict[int, tuple[str, bytes]] = {}
    wanted = or_(
        and_(
            BiometricTemplate.modality == FINGER,
            BiometricTemplate.position.in_(positions),
            BiometricTemplate.model == finger_model,
        ),
        BiometricTemplate.modality == FACE,
    )
    for t in session.scalars(
        select(BiometricTemplate).where(BiometricTemplate.entry_id.in_(entry_ids), wanted)
    ):
        if t.modality == FACE:
            faces[t.entry_id] = (t.model, t.data)
        else:
            fingers.setdefault(t.entry_id, {})[t.position] = t.data
    out = []
    for entry, package in rows:
        info = EntryInfo(entry.id, entry.package_id, entry.person_id, _demographics(package))
        face = faces.get(entry.id)
        out.append(
            ShardEntry(
                info,
                {p: compact_from_bytes(d) for p, d in fingers.get(entry.id, {}).items()},
                None if face is None else face[0],
                None if face is None else face_from_bytes(face[1]),
            )
        )
    return out


def _owned_ids(session: Session, shard: GalleryShard, after: int) -> list[int]:
    query = select(GalleryEntry.id).where(
        GalleryEntry.id > after, GalleryEntry.deleted_at.is_(None)
    )
    if shard.count > 1:
        query = query.where(GalleryEntry.id % shard.count == shard.index)
    return list(session.scalars(query.order_by(GalleryEntry.id).limit(BATCH)))


def load_shard(shard: GalleryShard, engine: Engine, finger_model: str) -> None:
    """Fill an empty shard with the live entries it owns, then replay what came since."""
    with Session(reader(engine)) as session, session.begin():
        # The log position first: anything committed after it is replayed below, and
        # replaying what the load already saw is a no-op.
        shard.applied_seq = session.scalar(select(func.max(GalleryChange.seq))) or 0
        after = 0
        while ids := _owned_ids(session, shard, after):
            for entry in _entries(session, ids, shard.positions, finger_model):
                shard.add(entry)
            after = ids[-1]
    catch_up(shard, engine, finger_model)


def _changes(session: Session, after: int) -> list[tuple[int, int, str]]:
    rows = session.execute(
        select(GalleryChange.seq, GalleryChange.entry_id, GalleryChange.op)
        .where(GalleryChange.seq > after)
        .order_by(GalleryChange.seq)
        .limit(BATCH)
    ).all()
    return [(int(s), int(e), str(o)) for s, e, o in rows]


def catch_up(
    shard: GalleryShard, engine: Engine, finger_model: str, target: int | None = None
) -> int:
    """Apply the committed changes after ``shard.applied_seq``; returns how many. With
    ``target`` (the last seq the lock holder saw), fail unless the shard reaches it."""
    applied = 0
    with Session(reader(engine)) as session, session.begin():
        while changes := _changes(session, shard.applied_seq):
            inserted = [e for _, e, op in changes if op == "insert" and shard.owns(e)]
            loaded = {
                entry.info.entry_id: entry
                for entry in (
                    _entries(session, inserted, shard.positions, finger_model) if inserted else []
                )
            }
            linked = [e for _, e, op in changes if op == "link" and e in shard]
            people = {
                e: p
                for e, p in session.execute(
                    select(GalleryEntry.id, GalleryEntry.person_id).where(
                        GalleryEntry.id.in_(linked)
                    )
                )
            }
            for _, entry_id, op in changes:
                if op == "insert" and entry_id in loaded:
                    shard.add(loaded[entry_id])
                elif op == "delete":
                    shard.remove(entry_id)
                elif op == "link" and entry_id in people:
                    shard.link(entry_id, people[entry_id])
            shard.applied_seq = changes[-1][0]
            applied += len(changes)
    if target is not None and shard.applied_seq < target:
        raise GalleryOutOfStepError(
            f"gallery shard {shard.index} reached change {shard.applied_seq}, the lock holder "
            f"saw {target}: is this shard reading another database than the writer?"
        )
    return applied


def find_entry(session: Session, package_id: uuid.UUID) -> GalleryEntry | None:
    return session.scalars(
        select(GalleryEntry).where(GalleryEntry.package_id == package_id)
    ).first()


def write_change(session: Session, lock: DedupLock, entry_id: int, op: str, now: datetime) -> int:
    """Append a change row (the lock must be held); returns its seq."""
    change = GalleryChange(entry_id=entry_id, op=op, at=now)
    session.add(change)
    session.flush()
    lock.last_seq = change.seq
    return change.seq


def insert_entry(
    session: Session, package_id: uuid.UUID, templates: EnrollmentTemplates, now: datetime
) -> GalleryEntry:
    """The gallery entry of a package and its template rows (flushed, not committed)."""
    entry = GalleryEntry(package_id=package_id, inserted_at=now)
    session.add(entry)
    session.flush()
    for position, record in sorted(templates.fingers.items()):
        session.add(
            BiometricTemplate(
                entry_id=entry.id,
                modality=FINGER,
                position=position,
                model=templates.finger_model,
                data=record.to_bytes(position),
            )
        )
    if templates.face is not None and templates.face_model is not None:
        session.add(
            BiometricTemplate(
                entry_id=entry.id,
                modality=FACE,
                position=0,
                model=templates.face_model,
                data=face_to_bytes(templates.face),
            )
        )
    session.flush()
    return entry


class DbTemplateSource:
    """Verification templates read in the caller's transaction."""

    def __init__(self, session: Session, finger_model: str) -> None:
        self.session = session
        self.finger_model = finger_model

    def templates(self, entry_ids: Sequence[int]) -> dict[int, VerificationTemplates]:
        fingers: dict[int, dict[int, bytes]] = {e: {} for e in entry_ids}
        faces: dict[int, tuple[str, bytes]] = {}
        for chunk in _chunks(list(entry_ids), BATCH):
            for t in self.session.scalars(
                select(BiometricTemplate).where(BiometricTemplate.entry_id.in_(chunk))
            ):
                if t.modality == FACE:
                    faces[t.entry_id] = (t.model, t.data)
                elif t.modality == FINGER and t.model == self.finger_model:
                    fingers[t.entry_id][t.position] = t.data
        out = {}
        for entry_id, stored in fingers.items():
            face = faces.get(entry_id)
            out[entry_id] = VerificationTemplates(
                {p: full_from_bytes(d) for p, d in stored.items()},
                None if face is None else face[0],
                None if face is None else face_from_bytes(face[1]),
            )
        return out


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
