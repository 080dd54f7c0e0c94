"""The pre-loaded resident list of this office (the paper DC01 collection), and who may enroll.

    residents = ResidentList(db, journal)
    with db.write() as c:                       # what GET /v1/station/residents returned
        residents.apply(c, page["residents"], page["next"])
    residents.search("nguyen van an")           # finds "Nguyễn Văn An"
    residents.search("", date_of_birth="1990", household="HK-0042")
    eligibility(residents.get(ref), date.today(), min_age=14)   # [] or reason codes

Before the 2021 rollout, commune police collected each resident's particulars on paper
(form DC01) and typed them into the population database; the station gets its commune's
rows so that the officer finds the citizen instead of typing the record again. The list
arrives in pages ordered by the registry's change sequence: ``apply`` upserts rows by
``ref``, deletes rows whose status is ``removed`` and keeps the ``next`` cursor, so the
next sync asks only for what changed (``after=cursor()``).

Search. Officers type names without diacritics (a Latin keyboard, or haste), and the same
name arrives precomposed (NFC) or decomposed (NFD) from different keyboards. Every name is
*folded* once, when stored: Unicode NFKD, combining marks dropped, ``đ``/``Đ`` -> ``d``
(a letter of its own, not a ``d`` with a mark, so NFD leaves it alone), lower case,
anything else than ``a-z``/``0-9`` a word break. The folded name is indexed, and each
folded word goes into an indexed word table, so a query word matches as a *prefix* of any
name word ("ng v a" already finds "Nguyễn Văn An" as the officer types) through index
ranges, never a scan of every name. Ranking:

1. the whole folded name equals the folded query;
2. the folded name starts with the folded query (the words in the order typed);
3. every query word is a prefix of some name word, in any order;
4. partial: some of the query words match, most matched first.

Ranks 1-2 are one range of the name index. Rank 3 intersects the words' index ranges when
one word is rare, and otherwise walks the names in order and stops at the limit (a common
word matches often, so the walk is short); rank 4 is computed only when ranks 1-3 fill
less than the limit. Within a rank, a name that also matches the diacritics the officer
typed comes first
("Lê" before "Lễ" when "Lê" was typed), then by folded name. Other criteria narrow the
result: the old 9-digit ID (CMND) exactly, the household book number exactly, the date of
birth as full date or year (or year-month): a list row with a partial date matches every
query date it could be ("1990" in the list matches a query "1990-04-12", and a query
"1990" matches "1990-04-12").

Eligibility. The minimum age is a policy value from the registry (14 in 2021). A partial
date of birth is read as the *latest* day it allows (``1990`` = 31 December 1990,
``1990-02`` = 28 February or the 29th in a leap year), so nobody who may still be under
age is admitted on a guess; a citizen born early in that year is refused until the
officer enters the full date, which the record then carries.
"""

from __future__ import annotations

import json
import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from enrollment.record import (
    Address,
    Demographics,
    Name,
    PartialDate,
    parse_partial_date,
    youngest_age_on,
)
from station.journal import Journal
from station.store.database import Schema, StationDatabase

RESIDENTS_SCHEMA = Schema(
    "residents",
    (
        """
        CREATE TABLE residents (
            id INTEGER PRIMARY KEY,
            ref TEXT NOT NULL UNIQUE,
            seq INTEGER NOT NULL,
            status TEXT NOT NULL,
            full_name TEXT NOT NULL,
            name_folded TEXT NOT NULL,
            name_lower TEXT NOT NULL,
            date_of_birth TEXT NOT NULL,
            old_id_number TEXT,
            household_number TEXT,
            data TEXT NOT NULL,
            local_status TEXT
        );
        CREATE INDEX residents_name ON residents (name_folded, ref);
        CREATE INDEX residents_dob ON residents (date_of_birth);
        CREATE INDEX residents_old_id ON residents (old_id_number);
        CREATE INDEX residents_household ON residents (household_number);
        CREATE TABLE residents_words (
            word TEXT NOT NULL,
            rid INTEGER NOT NULL REFERENCES residents (id) ON DELETE CASCADE,
            PRIMARY KEY (word, rid)
        ) WITHOUT ROWID;
        CREATE INDEX residents_words_rid ON residents_words (rid);
        CREATE TABLE residents_meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        """,
    ),
)

ListStatus = Literal["pending", "in_progress", "enrolled", "removed"]
LocalStatus = Literal["open", "submitted"]
"""What this station itself knows: ``open`` = an enrollment case for this resident is open
here; ``submitted`` = its package left this station (in the outbox or sent). ``None``
clears it (the case was cancelled)."""

# Eligibility reason codes (stable strings: the UI translates them).
UNDER_AGE = "under_age"
ALREADY_ENROLLED = "already_enrolled"
IN_PROGRESS_ELSEWHERE = "in_progress_elsewhere"
OPEN_HERE = "open_here"
SUBMITTED_HERE = "submitted_here"

_CURSOR_KEY = "residents_next"
_OLD_ID = re.compile(r"^\d{9}$")
_NON_WORD = re.compile(r"[^a-z0-9]+")
# Folded words hold only a-z and 0-9, all below "~": prefix p covers [p, p + "~").
_PREFIX_END = "~"
# Below this many index entries for its rarest word, a search intersects the words' rows
# and sorts them (~7 us a row); above it, it walks the names in order and stops at the
# limit (~0.5 us a row walked, ~limit * rows / matches of them). Measured on 20,000 rows.
_INTERSECT_BELOW = 500


class ResidentListError(ValueError):
    """The resident list cannot do what was asked (a bad query, a cursor going back)."""


def fold(text: str) -> str:
    """The search form of a name: no diacritics, đ -> d, lower case, words split on
    anything else than letters and digits, single spaces. ``fold("Nguyễn Văn  Đức")`` ==
    ``fold("nguyen van duc")`` == ``"nguyen van duc"``; NFC and NFD input fold alike."""
    decomposed = unicodedata.normalize("NFKD", text.replace("đ", "d").replace("Đ", "D"))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(_NON_WORD.split(stripped.casefold())).strip()


def _lower(text: str) -> str:
    """NFC, lower case, single spaces: the form the diacritics tie-break compares."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


class ResidentRow(BaseModel):
    """One row of ``GET /v1/station/residents`` (unknown future fields are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ref: str
    seq: int
    status: ListStatus
    full_name: Name
    date_of_birth: PartialDate
    sex: Literal["male", "female"]
    old_id_number: str | None = None
    household_number: str | None = None
    father_name: Name | None = None
    mother_name: Name | None = None
    permanent_residence: Address
    place_of_origin: Address | None = None


class Resident(ResidentRow):
    """A stored resident: the row as the registry sent it, plus this station's own note."""

    local_status: LocalStatus | None = None

    def as_json(self) -> dict[str, Any]:
        """The row as JSON-ready values (the wire fields plus ``local_status``)."""
        return self.model_dump(mode="json")

    def prefill(self) -> dict[str, Any]:
        """Fields of :class:`enrollment.record.Demographics` this row already gives (the
        officer still confirms them and adds ethnicity, religion and the rest)."""
        out: dict[str, Any] = {
            "full_name": self.full_name,
            "date_of_birth": self.date_of_birth,
            "sex": "M" if self.sex == "male" else "F",
            "permanent_residence": self.permanent_residence,
            "resident_list_ref": self.ref,
        }
        if self.place_of_origin is not None:
            out["place_of_origin"] = self.place_of_origin
        if self.old_id_number is not None and _OLD_ID.match(self.old_id_number):
            out["old_id_number"] = self.old_id_number
        if self.father_name is not None:
            out["father_name"] = self.father_name
        if self.mother_name is not None:
            out["mother_name"] = self.mother_name
        return out


@dataclass(frozen=True)
class SkippedRow:
    """A row ``apply`` refused (journalled as ``residents.row_skipped``)."""

    ref: str | None
    reason: str


@dataclass(frozen=True)
class ApplyResult:
    """What one ``apply`` changed."""

    upserted: int
    removed: int
    stale: int
    """Rows older (by seq) than what the station already holds: ignored."""
    skipped: tuple[SkippedRow, ...]


@dataclass(frozen=True)
class SearchHit:
    """A search result and why it ranked where it did."""

    resident: Resident
    rank: Literal["exact", "ordered", "all_words", "partial", "filter"]
    """``filter``: no name was given, only other criteria (ordered by name)."""
    matched_words: int


def _dob_bounds(value: str | date) -> tuple[list[str], str]:
    """The list values compatible with a query date: its own prefixes (a list row with a
    coarser date) and everything that starts with it (a finer one)."""
    text = value.isoformat() if isinstance(value, date) else value.strip()
    try:
        year, month, day = parse_partial_date(text)
    except ValueError as exc:
        raise ResidentListError(
            f"date of birth {text!r}: {exc} (the year alone or a full date will do)"
        ) from exc
    prefixes = [f"{year:04d}"]
    if month is not None:
        prefixes.append(f"{year:04d}-{month:02d}")
    if day is not None:
        prefixes.append(f"{year:04d}-{month:02d}-{day:02d}")
    return prefixes, text


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class ResidentList:
    """The office's resident list in the station database (tables ``residents*``)."""

    def __init__(self, db: StationDatabase, journal: Journal | None = None) -> None:
        self._db = db
        self._journal = journal

    # --- sync ------------------------------------------------------------------------------

    def cursor(self) -> int:
        """The ``next`` of the last applied page: pass it as ``after`` to get the delta."""
        with self._db.read() as c:
            row = c.execute(
                "SELECT value FROM residents_meta WHERE key = ?", (_CURSOR_KEY,)
            ).fetchone()
        return int(row["value"]) if row else 0

    def apply(
        self,
        conn: sqlite3.Connection,
        rows: Iterable[Mapping[str, Any] | ResidentRow],
        next_seq: int,
    ) -> ApplyResult:
        """Apply one page inside the caller's write transaction (rows and cursor commit
        together, so a power cut never skips a page). Upserts by ``ref``; ``removed``
        deletes; a row older than the stored one is ignored; a malformed row is skipped
        and journalled, never half-stored. Raises :class:`ResidentListError` when
        ``next_seq`` is behind the stored cursor (the registry's list was reset: call
        :meth:`reset` and load it again from 0)."""
        row = conn.execute(
            "SELECT value FROM residents_meta WHERE key = ?", (_CURSOR_KEY,)
        ).fetchone()
        current = int(row["value"]) if row else 0
        if next_seq < current:
            raise ResidentListError(
                f"the registry's resident cursor {next_seq} is behind this station's "
                f"{current}: its list was reset; reset the station's list and sync from 0"
            )
        upserted = removed = stale = 0
        skipped: list[SkippedRow] = []
        for raw in rows:
            try:
                item = raw if isinstance(raw, ResidentRow) else ResidentRow.model_validate(raw)
            except ValidationError as exc:
                ref = raw.get("ref") if isinstance(raw, Mapping) else None
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                skip = SkippedRow(ref if isinstance(ref, str) else None, f"{where}: {first['msg']}")
                skipped.append(skip)
                if self._journal is not None:
                    self._journal.record(
                        conn, "sync", "residents.row_skipped", skip.ref, reason=skip.reason
                    )
                continue
            held = conn.execute("SELECT seq FROM residents WHERE ref = ?", (item.ref,)).fetchone()
            if held is not None and int(held["seq"]) > item.seq:
                stale += 1
                continue
            if item.status == "removed":
                if held is not None:
                    conn.execute("DELETE FROM residents WHERE ref = ?", (item.ref,))
                    removed += 1
                continue
            self._upsert(conn, item)
            upserted += 1
        conn.execute(
            "INSERT INTO residents_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_CURSOR_KEY, str(next_seq)),
        )
        return ApplyResult(upserted, removed, stale, tuple(skipped))

    @staticmethod
    def _upsert(conn: sqlite3.Connection, item: ResidentRow) -> None:
        folded = fold(item.full_name)
        rid = conn.execute(
            "INSERT INTO residents (ref, seq, status, full_name, name_folded, name_lower, "
            "date_of_birth, old_id_number, household_number, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (ref) DO UPDATE SET seq = excluded.seq, status = excluded.status, "
            "full_name = excluded.full_name, name_folded = excluded.name_folded, "
            "name_lower = excluded.name_lower, date_of_birth = excluded.date_of_birth, "
            "old_id_number = excluded.old_id_number, "
            "household_number = excluded.household_number, data = excluded.data "
            "RETURNING id",
            (
                item.ref,
                item.seq,
                item.status,
                item.full_name,
                folded,
                _lower(item.full_name),
                item.date_of_birth,
                item.old_id_number,
                item.household_number,
                item.model_dump_json(),
            ),
        ).fetchone()[0]
        conn.execute("DELETE FROM residents_words WHERE rid = ?", (rid,))
        conn.executemany(
            "INSERT INTO residents_words (word, rid) VALUES (?, ?)",
            [(word, rid) for word in set(folded.split())],
        )

    def reset(self, conn: sqlite3.Connection) -> None:
        """Forget the whole list and the cursor (the office changed, or the registry's
        list was rebuilt); the next sync loads it again from 0."""
        conn.execute("DELETE FROM residents_words")
        conn.execute("DELETE FROM residents")
        conn.execute("DELETE FROM residents_meta WHERE key = ?", (_CURSOR_KEY,))

    def mark_local(self, conn: sqlite3.Connection, ref: str, status: LocalStatus | None) -> None:
        """Record in the caller's transaction what this station itself did with the
        resident (one of :data:`LocalStatus`, or None); kept across list updates."""
        if status is not None and status not in get_args(LocalStatus):
            raise ResidentListError(
                f"local status {status!r}: expected one of {get_args(LocalStatus)} or None"
            )
        cur = conn.execute("UPDATE residents SET local_status = ? WHERE ref = ?", (status, ref))
        if cur.rowcount == 0:
            raise ResidentListError(f"resident {ref!r} is not in this station's list")

    # --- reading ---------------------------------------------------------------------------

    @staticmethod
    def _resident(row: sqlite3.Row) -> Resident:
        data = json.loads(row["data"])
        data["local_status"] = row["local_status"]
        return Resident.model_validate(data)

    def get(self, ref: str) -> Resident | None:
        """The resident with this ref, or None (never listed, or removed)."""
        with self._db.read() as c:
            row = c.execute(
                "SELECT data, local_status FROM residents WHERE ref = ?", (ref,)
            ).fetchone()
        return None if row is None else self._resident(row)

    def count(self) -> int:
        """How many residents the list holds."""
        with self._db.read() as c:
            return int(c.execute("SELECT COUNT(*) FROM residents").fetchone()[0])

    def search(
        self,
        query: str = "",
        *,
        date_of_birth: str | date | None = None,
        old_id: str | None = None,
        household: str | None = None,
        limit: int = 20,
    ) -> list[SearchHit]:
        """Residents matching a name (see the module docstring for the ranking) and
        every other criterion given. A query of exactly nine digits is read as an old ID.
        Raises :class:`ResidentListError` for no criterion at all or a malformed one."""
        if not 1 <= limit <= 500:
            raise ResidentListError(f"limit must be 1-500, not {limit}")
        query = query.strip()
        if _OLD_ID.match(query) and old_id is None:
            query, old_id = "", query
        where: list[str] = []
        params: list[object] = []
        if old_id is not None:
            old_id = old_id.strip()
            if not _OLD_ID.match(old_id):
                raise ResidentListError(f"old ID {old_id!r}: the CMND number has 9 digits")
            where.append("r.old_id_number = ?")
            params.append(old_id)
        if household is not None:
            household = household.strip()
            if not household:
                raise ResidentListError("household number is empty")
            where.append("r.household_number = ?")
            params.append(household)
        if date_of_birth is not None:
            prefixes, text = _dob_bounds(date_of_birth)
            where.append(
                f"(r.date_of_birth IN ({', '.join('?' for _ in prefixes)}) "
                "OR (r.date_of_birth > ? AND r.date_of_birth < ?))"
            )
            # "1990" covers "1990-..." : every value between "1990-" and "1990." ("." > "-").
            params.extend([*prefixes, text + "-", text + "."])
        folded = fold(query)
        words = list(dict.fromkeys(folded.split()))
        if not words and not where:
            raise ResidentListError("give a name, a date of birth, an old ID or a household number")
        filters = (" AND " + " AND ".join(where)) if where else ""
        with self._db.read() as c:
            if not words:
                # Only fixed fragments with "?" placeholders are spliced into the SQL here
                # and below; every value is bound.
                sql = (
                    "SELECT r.data, r.local_status FROM residents r "  # noqa: S608
                    f"WHERE 1 = 1{filters} ORDER BY r.name_folded, r.ref LIMIT ?"
                )
                rows = c.execute(sql, [*params, limit]).fetchall()
                return [SearchHit(self._resident(r), "filter", 0) for r in rows]
            typed = _lower(query)
            accent_sql, accent_params = "0", list[object]()
            if typed != folded:  # the officer typed diacritics: prefer names that have them
                accent_sql = "(' ' || r.name_lower) LIKE ? ESCAPE '\\'"
                accent_params = ["% " + _like_escape(typed) + "%"]
            # Ranks 1-2 straight from the name index: the range of names starting with the
            # query. Without diacritics to weigh, the index order is the rank order (an
            # exact name sorts first in its range) and LIMIT stops the scan early.
            order = "exact DESC, accent DESC, " if accent_params else ""
            sql = (
                "SELECT r.id, r.data, r.local_status, r.name_folded = ? AS exact, "  # noqa: S608
                f"{accent_sql} AS accent FROM residents r "
                f"WHERE r.name_folded >= ? AND r.name_folded < ?{filters} "
                f"ORDER BY {order}r.name_folded, r.ref LIMIT ?"
            )
            head = c.execute(
                sql,
                [folded, *accent_params, folded, folded + _PREFIX_END, *params, limit],
            ).fetchall()
            hits = [
                SearchHit(self._resident(r), "exact" if r["exact"] else "ordered", len(words))
                for r in head
            ]
            if len(hits) == limit:
                return hits
            # Rank 3: every query word is a prefix of some name word, any order.
            outside_head = "NOT (r.name_folded >= ? AND r.name_folded < ?)"
            head_params: list[object] = [folded, folded + _PREFIX_END]
            sizes = [
                int(
                    c.execute(
                        "SELECT COUNT(*) FROM (SELECT 1 FROM residents_words "
                        "WHERE word >= ? AND word < ? LIMIT ?)",  # counting stops there
                        (word, word + _PREFIX_END, _INTERSECT_BELOW + 1),
                    ).fetchone()[0]
                )
                for word in words
            ]
            word_params: list[object] = []
            for word in words:
                word_params.extend([word, word + _PREFIX_END])
            if min(sizes) <= _INTERSECT_BELOW:
                # A rare word: intersect the words' index ranges, sort the few rows left.
                ranges = " INTERSECT ".join(
                    "SELECT rid FROM residents_words WHERE word >= ? AND word < ?" for _ in words
                )
                match_sql = f"r.id IN ({ranges})"
            else:
                # Only common words: walk the names in order and stop at the limit.
                match_sql = " AND ".join(
                    "EXISTS (SELECT 1 FROM residents_words w WHERE w.rid = r.id "
                    "AND w.word >= ? AND w.word < ?)"
                    for _ in words
                )
            # Names with the typed diacritics first, as two ordered queries (so that the
            # walk in name order can still stop at the limit).
            passes: list[tuple[str, list[object]]] = [("", [])]
            if accent_params:
                passes = [
                    (f" AND {accent_sql}", accent_params),
                    (f" AND NOT {accent_sql}", accent_params),
                ]
            for accent_filter, accent_values in passes:
                if len(hits) >= limit:
                    break
                sql = (
                    "SELECT r.data, r.local_status FROM residents r "  # noqa: S608
                    f"WHERE {match_sql} AND {outside_head}{accent_filter}{filters} "
                    "ORDER BY r.name_folded, r.ref LIMIT ?"
                )
                rows = c.execute(
                    sql,
                    [*word_params, *head_params, *accent_values, *params, limit - len(hits)],
                ).fetchall()
                hits.extend(SearchHit(self._resident(r), "all_words", len(words)) for r in rows)
            if len(hits) >= limit or len(words) == 1:
                return hits
            # Rank 4, partial: some of the words match, the most first. Reached only when
            # fewer than ``limit`` names match every word.
            values = ", ".join("(?, ?, ?)" for _ in words)
            q_params: list[object] = []
            for i, word in enumerate(words):
                q_params.extend([i, word, word + _PREFIX_END])
            sql = (
                f"WITH q (i, lo, hi) AS (VALUES {values}), "  # noqa: S608
                "pairs AS (SELECT DISTINCT q.i, w.rid FROM q JOIN residents_words w "
                "ON w.word >= q.lo AND w.word < q.hi), "
                "hits AS (SELECT rid, COUNT(*) AS matched FROM pairs GROUP BY rid) "
                f"SELECT r.data, r.local_status, hits.matched, {accent_sql} AS accent "
                "FROM hits JOIN residents r ON r.id = hits.rid "
                f"WHERE hits.matched < ?{filters} "
                "ORDER BY hits.matched DESC, accent DESC, r.name_folded, r.ref LIMIT ?"
            )
            rows = c.execute(
                sql,
                [*q_params, *accent_params, len(words), *params, limit - len(hits)],
            ).fetchall()
        hits.extend(SearchHit(self._resident(r), "partial", int(r["matched"])) for r in rows)
        return hits


# --- eligibility ---------------------------------------------------------------------------


def age_on(date_of_birth: str, today: date) -> int:
    """Age in whole years on ``today`` for a full or partial date of birth, reading a
    partial date as the latest birthday it allows ("1990" = 31 Dec 1990, "1990-02" = the
    last day of February 1990): never older than the citizen may really be."""
    return youngest_age_on(date_of_birth, today)


def eligibility(
    subject: Resident | ResidentRow | Demographics, today: date, min_age: int
) -> list[str]:
    """Why this person may not start an enrollment here now; ``[]`` when they may.

    Codes: :data:`UNDER_AGE`; from the list's status :data:`ALREADY_ENROLLED` and
    :data:`IN_PROGRESS_ELSEWHERE` (a package naming this resident reached the registry
    and none left this station: when one did, it is taken to be that one); from this
    station's own note :data:`OPEN_HERE` (a case is open here: continue it) and
    :data:`SUBMITTED_HERE` (its package already left). A :class:`Demographics` without a
    list row can only be checked for age; look its ``resident_list_ref`` up with
    :meth:`ResidentList.get` first. A case the registry sends back for recapture reopens
    the existing case and does not come through here.
    """
    reasons: list[str] = []
    if age_on(subject.date_of_birth, today) < min_age:
        reasons.append(UNDER_AGE)
    if isinstance(subject, ResidentRow):
        local = subject.local_status if isinstance(subject, Resident) else None
        if subject.status == "enrolled":
            reasons.append(ALREADY_ENROLLED)
        elif subject.status == "in_progress" and local != "submitted":
            # Nothing has left this station for them (no note, or a case still open):
            # the package the registry holds came from elsewhere.
            reasons.append(IN_PROGRESS_ELSEWHERE)
        if local == "open":
            reasons.append(OPEN_HERE)
        elif local == "submitted" and subject.status != "enrolled":
            reasons.append(SUBMITTED_HERE)
    return reasons


__all__ = [
    "ALREADY_ENROLLED",
    "IN_PROGRESS_ELSEWHERE",
    "OPEN_HERE",
    "RESIDENTS_SCHEMA",
    "SUBMITTED_HERE",
    "UNDER_AGE",
    "ApplyResult",
    "ListStatus",
    "LocalStatus",
    "Resident",
    "ResidentList",
    "ResidentListError",
    "ResidentRow",
    "SearchHit",
    "SkippedRow",
    "age_on",
    "eligibility",
    "fold",
]
