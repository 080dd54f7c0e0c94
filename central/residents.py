"""The pre-loaded resident lists (DC01): imported from CSV per commune, synced by the
commune's stations as deltas, and kept current as people enroll.

A list belongs to a commune (every office of the commune, and every station of those
offices, sees the same list). ``ref`` is the row's id within the commune, as written on
the paper form; a station puts it in ``record.demographics.resident_list_ref``.

Every insert and every change of a row takes the next value of one global counter
(``central.db.ops.resident_sequence``), so ``seq > after`` is exactly what a station has
not seen yet. A row changes when a re-import changes its fields, when it leaves or comes
back to the list (``--replace``), when a package naming it is received (``in_progress``,
in the ingest's transaction) and when that package is issued (``enrolled``, in the issue
stage's transaction): each change commits with the event that caused it, exactly once.

The CSV (UTF-8, a BOM is allowed, header row first, columns in any order)::

    ref,full_name,date_of_birth,sex,old_id_number,household_number,father_name,
    mother_name,residence_detail,origin_commune,origin_detail

``ref``, ``full_name``, ``date_of_birth`` (YYYY, YYYY-MM or YYYY-MM-DD) and ``sex``
(male/female, M/F, Nam/Nữ) are required; the others may be empty. The permanent
residence is the office's commune (both administrative structures) with
``residence_detail`` (house, street, hamlet); the place of origin is ``origin_commune``
(a pre-2025 GSO commune code) with ``origin_detail``.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.orm import Session

from central.db.models import Office, Resident, ResidentStatus, Station
from central.db.ops import append_audit, resident_sequence
from enrollment.record import (
    Address,
    DivisionScheme,
    Identifier,
    Name,
    PartialDate,
    Text,
)

REQUIRED_COLUMNS = ("ref", "full_name", "date_of_birth", "sex")
OPTIONAL_COLUMNS = (
    "old_id_number",
    "household_number",
    "father_name",
    "mother_name",
    "residence_detail",
    "origin_commune",
    "origin_detail",
)
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
SEXES = {
    "male": "male",
    "m": "male",
    "nam": "male",
    "female": "female",
    "f": "female",
    "nữ": "female",
}
HOUSEHOLD_MAX = 32
# The fields a row stores (and compares on re-import).
FIELDS = (
    "full_name",
    "date_of_birth",
    "sex",
    "old_id_number",
    "household_number",
    "father_name",
    "mother_name",
    "permanent_residence",
    "place_of_origin",
)
# A status only moves forward: a late "received" never takes an enrolled resident back.
_RANK = {ResidentStatus.pending: 0, ResidentStatus.in_progress: 1, ResidentStatus.enrolled: 2}

_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
_NAME: TypeAdapter[str] = TypeAdapter(Name)
_TEXT: TypeAdapter[str] = TypeAdapter(Text)
_DATE: TypeAdapter[str] = TypeAdapter(PartialDate)


class ResidentFileError(ValueError):
    """The file as a whole cannot be read (encoding, header): nothing is imported."""


@dataclass(frozen=True)
class RowError:
    line: int
    ref: str | None
    error: str

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "ref": self.ref, "error": self.error}


@dataclass(frozen=True)
class ResidentRow:
    """A valid row: its ref and the stored fields (:data:`FIELDS`)."""

    line: int
    ref: str
    fields: dict[str, Any]
    sha256: str
    """:func:`fields_sha256` of ``fields``: what a re-import compares with the stored row's."""


def fields_sha256(fields: Mapping[str, Any]) -> str:
    canonical = json.dumps(
        {name: fields[name] for name in FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class ImportResult:
    commune_code: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    errors: list[RowError] = field(default_factory=list)
    next: int = 0
    """The commune's highest ``seq`` after the import."""
    checked_only: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "commune_code": self.commune_code,
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "rejected": len(self.errors),
            "errors": [e.as_json() for e in self.errors],
            "next": self.next,
            "checked_only": self.checked_only,
        }


@functools.lru_cache(maxsize=4096)
def _areas(commune_code: str) -> tuple[dict[str, Any], ...]:
    """The commune in the pre-2025 structure and, where known, the 2025 commune it became
    part of (records carry both), as ``AdministrativeArea`` JSON; KeyError when unknown."""
    from enrollment import divisions

    table = divisions.load()
    commune = table.commune(commune_code, DivisionScheme.pre_2025)
    areas = [commune.area()]
    successor = table.successor(commune_code)
    if successor is not None:
        areas.append(successor.area())
    # Validated once here, as an Address would; rows only add their (validated) detail.
    Address(areas=areas)
    return tuple(a.model_dump(mode="json") for a in areas)


def _address(detail: str | None, areas: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """``enrollment.record.Address`` JSON (what ``Address(...).model_dump(mode="json")``
    gives, without re-validating the code table's areas on every row)."""
    return {"detail": detail, "areas": [dict(a) for a in areas]}


def _message(exc: ValidationError) -> str:
    return "; ".join(str(e["msg"]) for e in exc.errors()[:2])


def _clean(value: str | None) -> str:
    return unicodedata.normalize("NFC", value or "").strip()


def _check_characters(column: str, value: str) -> None:
    """Refuse control and invisible characters (a zero-width space makes two spellings of
    one name); white space, line breaks in a quoted field included, is collapsed later."""
    if value.isprintable():  # the common case, in C
        return
    for ch in value:
        if unicodedata.category(ch).startswith("C") and not ch.isspace():
            raise ValueError(f"{column}: control or invisible character U+{ord(ch):04X}")


def _row(
    line: int, raw: Mapping[str, str | None], residence: tuple[dict[str, Any], ...]
) -> ResidentRow:
    """Validate one CSV record; ValueError with a message that names the column."""
    values = {c: _clean(raw.get(c)) for c in COLUMNS}
    for column, value in values.items():
        _check_characters(column, value)
    for column in REQUIRED_COLUMNS:
        if not values[column]:
            raise ValueError(f"{column} is empty")

    def check(adapter: TypeAdapter[str], column: str) -> str | None:
        value = values[column]
        if not value:
            return None
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            raise ValueError(f"{column} {value!r}: {_message(exc)}") from None

    ref = check(_IDENTIFIER, "ref")
    assert ref is not None
    sex = SEXES.get(values["sex"].lower())
    if sex is None:
        raise ValueError(f"sex {values['sex']!r}: write male or female (M/F, Nam/Nữ)")
    old_id = values["old_id_number"] or None
    if old_id is not None and not (len(old_id) == 9 and old_id.isascii() and old_id.isdigit()):
        raise ValueError(f"old_id_number {old_id!r}: the old identity card number is 9 digits")
    household = values["household_number"] or None
    if household is not None and len(household) > HOUSEHOLD_MAX:
        raise ValueError(f"household_number: at most {HOUSEHOLD_MAX} characters")
    residence_detail = check(_TEXT, "residence_detail")
    origin_detail = check(_TEXT, "origin_detail")
    origin: dict[str, Any] | None = None
    if values["origin_commune"]:
        try:
            origin_areas = _areas(values["origin_commune"])
        except KeyError:
            raise ValueError(
                f"origin_commune {values['origin_commune']!r} is not a pre-2025 commune code"
            ) from None
        origin = _address(origin_detail, origin_areas)
    elif origin_detail:
        raise ValueError("origin_detail needs origin_commune (the commune's GSO code)")
    fields = {
        "full_name": check(_NAME, "full_name"),
        "date_of_birth": check(_DATE, "date_of_birth"),
        "sex": sex,
        "old_id_number": old_id,
        "household_number": household,
        "father_name": check(_NAME, "father_name"),
        "mother_name": check(_NAME, "mother_name"),
        "permanent_residence": _address(residence_detail, residence),
        "place_of_origin": origin,
    }
    return ResidentRow(line, ref, fields, fields_sha256(fields))


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ResidentFileError(
            f"line {line}: not UTF-8 (byte {exc.start}); save the file as UTF-8 CSV"
        ) from None


def parse_csv(data: bytes, commune_code: str) -> tuple[list[ResidentRow], list[RowError]]:
    """The valid rows and the errors (with the line each record starts on) of a resident
    list CSV for ``commune_code``. A ref given twice: the first one counts."""
    text = _decode(data)
    if "\x00" in text:
        raise ResidentFileError("the file holds NUL characters: it is not a CSV text file")
    try:
        residence = _areas(commune_code)
    except KeyError:
        raise ResidentFileError(f"commune {commune_code} is not in the code table") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise ResidentFileError(f"line 1: {exc}") from None
    if not header:
        raise ResidentFileError("the file is empty: the first line is the header")
    reader.fieldnames = header
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if missing or unknown or duplicated:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown {', '.join(repr(c) for c in unknown)}")
        if duplicated:
            problems.append(f"twice {', '.join(duplicated)}")
        raise ResidentFileError(f"header: {'; '.join(problems)} (columns: {', '.join(COLUMNS)})")
    rows: list[ResidentRow] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    line = reader.line_num + 1
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(RowError(line, None, f"unreadable CSV: {exc}"))
            break  # the reader cannot resynchronise after a broken quote
        start, line = line, reader.line_num + 1
        if None in raw:
            errors.append(RowError(start, raw.get("ref"), "more fields than the header has"))
            continue
        if all(not (v or "").strip() for v in raw.values()):
            continue  # blank line
        try:
            row = _row(start, raw, residence)
        except ValueError as exc:
            errors.append(RowError(start, _clean(raw.get("ref")) or None, str(exc)))
            continue
        if row.ref in seen:
            errors.append(
                RowError(start, row.ref, f"ref {row.ref} is on line {seen[row.ref]} already")
            )
            continue
        seen[row.ref] = start
        rows.append(row)
    return rows, errors


def _office(session: Session, office_id: int) -> Office:
    office = session.get(Office, office_id)
    if office is None:
        raise LookupError(f"no office {office_id}")
    return office


@dataclass(frozen=True)
class ParsedList:
    """A resident list read and checked for one office's commune, ready to apply."""

    office_id: int
    commune_code: str
    rows: list[ResidentRow]
    errors: list[RowError]
    sha256: str


def read_list(session: Session, office_id: int, data: bytes) -> ParsedList:
    """Look up the office (a read) and check ``data`` against its commune. Run it outside
    the writing transaction: checking 50,000 rows takes seconds, and on SQLite a writing
    transaction holds the one write lock that every upload needs too.

    Raises LookupError for an unknown office, :class:`ResidentFileError` for a file that
    cannot be read as a whole."""
    commune = _office(session, office_id).commune_code
    rows, errors = parse_csv(data, commune)
    return ParsedList(office_id, commune, rows, errors, hashlib.sha256(data).hexdigest())


def apply_list(
    session: Session,
    parsed: ParsedList,
    now: datetime,
    actor: str,
    *,
    replace: bool = False,
    check: bool = False,
) -> ImportResult:
    """Apply a checked list in the caller's (writing) transaction: new refs inserted,
    changed rows updated, identical rows left alone (no new ``seq``). With ``replace`` the
    rows absent from the file are marked removed (not those whose line has an error).
    With ``check`` nothing is written."""
    commune, rows, errors = parsed.commune_code, parsed.rows, parsed.errors
    result = ImportResult(commune, rows=len(rows) + len(errors), errors=errors, checked_only=check)
    with contextlib.ExitStack() as locked:
        # The counter's lock first (writes only): the rows compared with the file are then
        # the latest, and no other writer of residents changes them before this commits.
        seq = None if check else locked.enter_context(resident_sequence(session))
        existing = {
            r.ref: r
            for r in session.execute(
                select(
                    Resident.id, Resident.ref, Resident.removed_at, Resident.fields_sha256
                ).where(Resident.commune_code == commune)
            )
        }
        inserts: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        for row in rows:
            old = existing.get(row.ref)
            digest = row.sha256
            if old is None:
                inserts.append(row.fields | {"ref": row.ref, "fields_sha256": digest})
            elif old.removed_at is not None or old.fields_sha256 != digest:
                changes.append(row.fields | {"id": old.id, "fields_sha256": digest})
            else:
                result.unchanged += 1
        removals: list[int] = []
        if replace:
            keep = {row.ref for row in rows} | {e.ref for e in errors if e.ref}
            removals = [
                old.id
                for ref, old in existing.items()
                if ref not in keep and old.removed_at is None
            ]
        result.created, result.updated, result.removed = len(inserts), len(changes), len(removals)
        if seq is not None and inserts:
            session.execute(
                insert(Resident),
                [
                    values
                    | {
                        "commune_code": commune,
                        "seq": seq.next(),
                        "status": ResidentStatus.pending,
                        "created_at": now,
                        "updated_at": now,
                        "removed_at": None,
                    }
                    for values in inserts
                ],
            )
        if seq is not None and changes:
            session.execute(
                update(Resident),
                [
                    values | {"seq": seq.next(), "updated_at": now, "removed_at": None}
                    for values in changes
                ],
            )
        if seq is not None and removals:
            session.execute(
                update(Resident),
                [
                    {"id": rid, "seq": seq.next(), "updated_at": now, "removed_at": now}
                    for rid in removals
                ],
            )
    if not check:
        append_audit(
            session,
            now,
            actor,
            "residents.imported",
            f"office:{parsed.office_id}",
            {
                "commune": commune,
                "sha256": parsed.sha256,
                "created": result.created,
                "updated": result.updated,
                "unchanged": result.unchanged,
                "removed": result.removed,
                "rejected": len(errors),
                "replace": replace,
            },
        )
    top = session.execute(
        select(Resident.seq)
        .where(Resident.commune_code == commune)
        .order_by(Resident.seq.desc())
        .limit(1)
    ).scalar_one_or_none()
    result.next = int(top or 0)
    return result


def import_residents(
    engine: Engine,
    office_id: int,
    data: bytes,
    now: datetime,
    actor: str,
    *,
    replace: bool = False,
    check: bool = False,
) -> ImportResult:
    """Read and check ``data`` (CSV) for the office's commune, then apply it in one writing
    transaction (:func:`read_list`, :func:`apply_list`). Bad rows are reported in the
    result and skipped; LookupError for an unknown office, :class:`ResidentFileError` for
    an unreadable file."""
    with Session(engine.execution_options(sqlite_begin="DEFERRED")) as session:
        parsed = read_list(session, office_id, data)
    with Session(engine) as session, session.begin():
        return apply_list(session, parsed, now, actor, replace=replace, check=check)


# --- status as packages arrive and are issued ---------------------------------------------

_FIND = (
    select(Resident.id, Resident.status)
    .join(Office, Office.commune_code == Resident.commune_code)
    .join(Station, Station.office_id == Office.id)
    .where(Station.id == bindparam("station_id"), Resident.ref == bindparam("ref"))
)


def mark_resident(
    connection: Connection, station_id: str, ref: str, status: ResidentStatus, now: datetime
) -> bool:
    """Move the resident ``ref`` of the station's commune forward to ``status`` (never
    back), with a new ``seq``, inside the caller's transaction. False when there is no
    such resident or it is already there (a ref the list does not hold is not an error:
    the station may have entered the person as new)."""
    row = connection.execute(_FIND, {"station_id": station_id, "ref": ref}).one_or_none()
    if row is None or _RANK[ResidentStatus(row.status)] >= _RANK[status]:
        return False
    lower = [s for s, rank in _RANK.items() if rank < _RANK[status]]
    with resident_sequence(connection) as seq:
        value = seq.next()
        changed = connection.execute(
            update(Resident)
            .where(Resident.id == row.id, Resident.status.in_(lower))
            .values(status=status, seq=value, updated_at=now)
        ).rowcount
        if changed != 1:  # moved on by a transaction that committed since the read
            seq.give_back()
            return False
    return True


# --- what a station fetches ---------------------------------------------------------------


def resident_entry(row: Resident) -> dict[str, Any]:
    return {
        "ref": row.ref,
        "seq": row.seq,
        "status": "removed" if row.removed_at is not None else row.status.value,
        "full_name": row.full_name,
        "date_of_birth": row.date_of_birth,
        "sex": row.sex,
        "old_id_number": row.old_id_number,
        "household_number": row.household_number,
        "father_name": row.father_name,
        "mother_name": row.mother_name,
        "permanent_residence": row.permanent_residence,
        "place_of_origin": row.place_of_origin,
    }


def residents_page(session: Session, commune_code: str, after: int, limit: int) -> dict[str, Any]:
    """The commune's rows with ``seq > after`` in ``seq`` order, at most ``limit``;
    ``next`` is the cursor for the following page (``after`` itself when nothing is new),
    ``complete`` whether this page reached the end."""
    found = list(
        session.scalars(
            select(Resident)
            .where(Resident.commune_code == commune_code, Resident.seq > after)
            .order_by(Resident.seq)
            .limit(limit + 1)
        )
    )
    page = found[:limit]
    return {
        "residents": [resident_entry(r) for r in page],
        "next": page[-1].seq if page else after,
        "complete": len(found) <= limit,
    }


def office_commune(session: Session, office_id: int) -> str:
    return _office(session, office_id).commune_code
