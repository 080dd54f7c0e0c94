"""Enrollment quotas: each area's target over a period, imported from a CSV file.

The file (UTF-8, a BOM from Excel is fine; comma or semicolon separated)::

    level,area_code,period_start,period_end,target[,any other columns]
    province,01,01/03/2021,30/06/2021,5200000
    commune,00001,2021-03-01,2021-06-30,21000

``level`` is province (2-digit GSO code), district (3) or commune (5), in the pre-2025
structure offices use (``enrollment.divisions``); dates are dd/mm/yyyy (as Vietnamese
offices write them) or ISO; other columns (area names, notes) are ignored. The import is all
or nothing: every row is checked and every bad row reported with its line number before
anything is written, so an operator fixes the file once instead of once per error. A row
with the same (level, area_code, period_start) as a stored quota replaces its end and
target; a row whose period overlaps another quota of the same area (in the file or
stored) is refused, since two targets in force at once make progress meaningless.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from central.db.models import Quota
from enrollment import divisions

LEVELS = ("province", "district", "commune")
CODE_LENGTH = {"province": 2, "district": 3, "commune": 5}
REQUIRED_COLUMNS = ("level", "area_code", "period_start", "period_end", "target")
MAX_ERRORS_SHOWN = 50


@dataclass(frozen=True)
class RowError:
    """A refused row: its physical line in the file (the header is line 1) and why."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class ImportResult:
    """What an import did: nothing at all when ``errors`` is not empty."""

    inserted: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class QuotaRow:
    line: int
    level: str
    area_code: str
    period_start: date
    period_end: date
    target: int


@cache
def area_names(level: str) -> Mapping[str, str]:
    """Area code -> name at ``level`` (pre-2025 structure), from ``enrollment.divisions``."""
    if level not in LEVELS:
        raise ValueError(f"level {level!r}: use one of {', '.join(LEVELS)}")
    names: dict[str, str] = {}
    for commune in divisions.load().iter_communes():
        if level == "province":
            names[commune.province_code] = commune.province_name
        elif level == "district" and commune.district_code and commune.district_name:
            names[commune.district_code] = commune.district_name
        elif level == "commune":
            names[commune.code] = commune.name
    return names


def parse_date(text: str) -> date:
    """dd/mm/yyyy (the Vietnamese way) or ISO yyyy-mm-dd; ValueError saying which it wanted."""
    value = text.strip()
    for pattern in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, pattern).date()
        except ValueError:
            continue
    raise ValueError(f"date {text!r} is neither dd/mm/yyyy nor yyyy-mm-dd")


def _reader(text: str) -> csv.DictReader[str]:
    text = text.removeprefix("\ufeff")
    header = text.split("\n", 1)[0]
    delimiter = ";" if ";" in header and "," not in header else ","
    return csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)


def _parse_row(line: int, raw: Mapping[str, str | None]) -> QuotaRow | list[RowError]:
    errors: list[RowError] = []
    level = (raw.get("level") or "").strip().lower()
    code = (raw.get("area_code") or "").strip()
    if level not in LEVELS:
        errors.append(RowError(line, f"level {level!r} is not one of {', '.join(LEVELS)}"))
    elif len(code) != CODE_LENGTH[level] or not code.isdigit():
        errors.append(RowError(line, f"{level} code {code!r} must be {CODE_LENGTH[level]} digits"))
    elif code not in area_names(level):
        errors.append(RowError(line, f"unknown {level} code {code} (pre-2025 GSO code table)"))
    dates: list[date] = []
    for column in ("period_start", "period_end"):
        try:
            dates.append(parse_date(raw.get(column) or ""))
        except ValueError as exc:
            errors.append(RowError(line, f"{column}: {exc}"))
    if len(dates) == 2 and dates[1] < dates[0]:
        errors.append(RowError(line, f"period_end {dates[1]} is before period_start {dates[0]}"))
    target_text = (raw.get("target") or "").strip().replace("\u00a0", "")
    target = -1
    try:
        target = int(target_text)
    except ValueError:
        errors.append(RowError(line, f"target {target_text!r} is not a whole number"))
    else:
        if target < 0:
            errors.append(RowError(line, f"target {target} is negative"))
    if errors:
        return errors
    return QuotaRow(line, level, code, dates[0], dates[1], target)


def parse_quotas(text: str) -> tuple[list[QuotaRow], list[RowError]]:
    """Rows of a quota CSV and every problem found in them (file-internal checks only)."""
    reader = _reader(text)
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        return [], [RowError(1, f"header lacks column(s) {', '.join(missing)}")]
    reader.fieldnames = columns
    rows: list[QuotaRow] = []
    errors: list[RowError] = []
    for raw in reader:
        line = reader.line_num  # the physical line this row ended on
        if not any((value or "").strip() for value in raw.values() if isinstance(value, str)):
            continue  # blank lines (Excel leaves some at the end)
        parsed = _parse_row(line, raw)
        if isinstance(parsed, list):
            errors.extend(parsed)
        else:
            rows.append(parsed)
    errors.extend(_overlaps(rows))
    if not rows and not errors:
        errors.append(RowError(1, "the file has a header but no quota rows"))
    return rows, errors


def _overlaps(rows: Iterable[QuotaRow]) -> list[RowError]:
    errors: list[RowError] = []
    by_area: dict[tuple[str, str], list[QuotaRow]] = {}
    for row in rows:
        by_area.setdefault((row.level, row.area_code), []).append(row)
    for group in by_area.values():
        group.sort(key=lambda r: (r.period_start, r.line))
        # The earlier row reaching furthest: any later row starting before its end overlaps.
        reach = group[0]
        for later in group[1:]:
            if later.period_start <= reach.period_end:
                errors.append(
                    RowError(
                        later.line,
                        f"{later.level} {later.area_code} {later.period_start}..."
                        f"{later.period_end} overlaps line {reach.line} "
                        f"({reach.period_start}...{reach.period_end})",
                    )
                )
            if later.period_end > reach.period_end:
                reach = later
    return errors


def import_quotas(session: Session, text: str) -> ImportResult:
    """Check a quota CSV and, when every row is good, upsert all of it in ``session``'s
    transaction (the caller commits). Nothing is written when any row is bad."""
    rows, errors = parse_quotas(text)
    if errors:
        return ImportResult(errors=sorted(errors, key=lambda e: e.line))
    levels = {row.level for row in rows}
    stored = session.execute(
        select(Quota.level, Quota.area_code, Quota.period_start, Quota.period_end).where(
            Quota.level.in_(levels)
        )
    ).all()
    existing = {(s.level, s.area_code, s.period_start): s.period_end for s in stored}
    for row in rows:
        for s in stored:
            same_area = (s.level, s.area_code) == (row.level, row.area_code)
            if not same_area or s.period_start == row.period_start:
                continue  # the row replaces its own key; other areas don't matter
            if s.period_start <= row.period_end and row.period_start <= s.period_end:
                errors.append(
                    RowError(
                        row.line,
                        f"{row.level} {row.area_code} {row.period_start}...{row.period_end} "
                        f"overlaps the stored quota {s.period_start}...{s.period_end}",
                    )
                )
    if errors:
        return ImportResult(errors=sorted(errors, key=lambda e: e.line))
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    for row in rows:
        statement = insert(Quota).values(
            level=row.level,
            area_code=row.area_code,
            period_start=row.period_start,
            period_end=row.period_end,
            target=row.target,
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["level", "area_code", "period_start"],
                set_={
                    "period_end": statement.excluded.period_end,
                    "target": statement.excluded.target,
                },
            )
        )
    updated = sum((r.level, r.area_code, r.period_start) in existing for r in rows)
    return ImportResult(inserted=len(rows) - updated, updated=updated)


# --- command line: python -m central quotas import FILE -----------------------------------


def add_quotas_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``quotas import FILE`` to the registry's command line (``argparse`` subparsers)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "quotas", help="import enrollment quotas from a CSV file"
    )
    actions = parser.add_subparsers(dest="quotas_command", required=True)
    do_import = actions.add_parser(
        "import",
        help="check a quota CSV and import it, all or nothing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    do_import.add_argument("file", help="the CSV file (UTF-8; '-' reads standard input)")
    do_import.add_argument(
        "--check", action="store_true", help="check the file only; write nothing"
    )
    return parser


def run_quotas(args: argparse.Namespace, settings: Any) -> int:
    """Run ``quotas import``: 0 done, 2 refused (bad rows printed to stderr, none imported).

    ``settings`` is the registry's settings object (its ``database`` section is used)."""
    import sys

    from central.db.engine import engine_from_settings, session_factory

    if args.file == "-":
        text = sys.stdin.read()
    else:
        with open(args.file, encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    engine = engine_from_settings(settings.database)
    try:
        with session_factory(engine)() as session:
            result = import_quotas(session, text)
            if result.ok and not args.check:
                session.commit()
            else:
                session.rollback()
    finally:
        engine.dispose()
    if not result.ok:
        shown = result.errors[:MAX_ERRORS_SHOWN]
        for error in shown:
            print(f"{args.file}: {error}", file=sys.stderr)
        more = len(result.errors) - len(shown)
        tail = f" (and {more} more)" if more else ""
        print(
            f"{args.file}: {len(result.errors)} problem(s){tail}; nothing imported. "
            "Fix the rows named above and import the whole file again.",
            file=sys.stderr,
        )
        return 2
    verb = "would import" if args.check else "imported"
    print(f"{args.file}: {verb} {result.inserted} new and {result.updated} updated quota(s)")
    return 0
