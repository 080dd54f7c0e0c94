"""The station's resident list: sync by cursor, diacritic-blind prefix search, eligibility."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from biometrics.synth.names import (
    FAMILY_NAMES,
    GIVEN_FEMALE,
    GIVEN_MALE,
    MIDDLE_FEMALE,
    MIDDLE_MALE,
)
from enrollment.record import Demographics
from station.journal import JOURNAL_SCHEMA, Journal
from station.residents import (
    ALREADY_ENROLLED,
    IN_PROGRESS_ELSEWHERE,
    OPEN_HERE,
    RESIDENTS_SCHEMA,
    SUBMITTED_HERE,
    UNDER_AGE,
    ResidentList,
    ResidentListError,
    age_on,
    eligibility,
    fold,
)
from station.store.database import StationDatabase

ADDRESS = {
    "detail": "Số 12, ngõ 4",
    "areas": [{"province_code": "01", "district_code": "001", "commune_code": "00001"}],
}


def row(ref: str, name: str, seq: int = 1, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ref": ref,
        "seq": seq,
        "status": "pending",
        "full_name": name,
        "date_of_birth": "1990-04-12",
        "sex": "male",
        "old_id_number": None,
        "household_number": None,
        "father_name": None,
        "mother_name": None,
        "permanent_residence": ADDRESS,
        "place_of_origin": None,
    }
    out.update(extra)
    return out


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StationDatabase]:
    database = StationDatabase(tmp_path / "station.db")
    database.migrate(JOURNAL_SCHEMA, RESIDENTS_SCHEMA)
    yield database
    database.close()


@pytest.fixture
def journal(db: StationDatabase) -> Journal:
    return Journal(db)


@pytest.fixture
def residents(db: StationDatabase, journal: Journal) -> ResidentList:
    return ResidentList(db, journal)


def load(db: StationDatabase, residents: ResidentList, rows: list[dict[str, Any]], nxt: int) -> Any:
    with db.write() as c:
        return residents.apply(c, rows, nxt)


def names(hits: list[Any]) -> list[str]:
    """The names found, without the partial matches (some query words only)."""
    return [h.resident.full_name for h in hits if h.rank != "partial"]


# --- folding and search --------------------------------------------------------------------


def test_fold_removes_diacritics_in_either_normal_form() -> None:
    name = "Nguyễn Văn Đức"
    assert fold(name) == "nguyen van duc"
    assert fold(unicodedata.normalize("NFD", name)) == "nguyen van duc"
    assert fold("  ĐẶNG   thị-HỒNG ") == "dang thi hong"
    assert fold("Lưu Ơn Ưng") == "luu on ung"


def test_search_with_and_without_diacritics(db: StationDatabase, residents: ResidentList) -> None:
    load(
        db,
        residents,
        [
            row("R1", "Nguyễn Văn An"),
            row("R2", unicodedata.normalize("NFD", "Đặng Thị Hồng")),  # arrived decomposed
            row("R3", "Trần Văn Bình"),
        ],
        3,
    )
    assert names(residents.search("nguyen van an")) == ["Nguyễn Văn An"]
    assert names(residents.search("Nguyễn Văn An")) == ["Nguyễn Văn An"]
    assert names(residents.search(unicodedata.normalize("NFD", "Nguyễn Văn An"))) == [
        "Nguyễn Văn An"
    ]
    # đ folds to d; the stored name is NFC whatever form it arrived in.
    assert names(residents.search("dang thi hong")) == ["Đặng Thị Hồng"]
    assert residents.search("dang thi hong")[0].resident.full_name == unicodedata.normalize(
        "NFC", "Đặng Thị Hồng"
    )
    assert residents.search("xyz") == []


def test_prefix_as_you_type(db: StationDatabase, residents: ResidentList) -> None:
    load(db, residents, [row("R1", "Nguyễn Văn An"), row("R2", "Ngô Thị Lan")], 2)
    assert names(residents.search("ng")) == ["Ngô Thị Lan", "Nguyễn Văn An"]
    assert names(residents.search("ngu")) == ["Nguyễn Văn An"]
    assert names(residents.search("ng v a")) == ["Nguyễn Văn An"]
    hit = residents.search("van ngu")[0]  # words in another order still match, as prefixes
    assert (hit.resident.full_name, hit.rank) == ("Nguyễn Văn An", "all_words")


def test_ranking_exact_then_ordered_then_all_words_then_partial(
    db: StationDatabase, residents: ResidentList
) -> None:
    load(
        db,
        residents,
        [
            row("P", "Lê Văn Bình"),  # partial: only "van"
            row("W", "An Văn Nguyễn"),  # all words, another order
            row("O", "Nguyễn Văn Anh"),  # starts with the query
            row("E", "Nguyễn Văn An"),  # exact
        ],
        4,
    )
    hits = residents.search("nguyen van an")
    assert [(h.resident.ref, h.rank) for h in hits] == [
        ("E", "exact"),
        ("O", "ordered"),
        ("W", "all_words"),
        ("P", "partial"),
    ]
    assert [h.matched_words for h in hits] == [3, 3, 3, 1]


def test_typed_diacritics_break_ties(db: StationDatabase, residents: ResidentList) -> None:
    load(db, residents, [row("A", "Lễ Văn Tâm"), row("B", "Lê Văn Tâm")], 2)
    # Without diacritics the two fold alike (then by ref); typing "Lê" puts Lê first.
    assert [h.resident.ref for h in residents.search("le van tam")] == ["A", "B"]
    assert [h.resident.ref for h in residents.search("Lê Văn Tâm")] == ["B", "A"]
    assert [h.resident.ref for h in residents.search("Lễ")] == ["A", "B"]


def test_search_by_old_id_household_and_date_of_birth(
    db: StationDatabase, residents: ResidentList
) -> None:
    load(
        db,
        residents,
        [
            row("R1", "Phạm Minh Tuấn", old_id_number="012345678", household_number="HK-001"),
            row("R2", "Phạm Thị Mai", date_of_birth="1990", household_number="HK-001"),
            row("R3", "Phạm Văn Hải", date_of_birth="1990-11", household_number="HK-002"),
            row("R4", "Hồ Văn Nam", date_of_birth="1985-01-02"),
        ],
        4,
    )
    assert names(residents.search(old_id="012345678")) == ["Phạm Minh Tuấn"]
    assert names(residents.search("012345678")) == ["Phạm Minh Tuấn"]  # nine digits: an old ID
    assert names(residents.search(household="HK-001")) == ["Phạm Minh Tuấn", "Phạm Thị Mai"]
    # A year matches every date in it; a full date matches list rows as coarse as a year.
    assert names(residents.search(date_of_birth="1990")) == [
        "Phạm Minh Tuấn",
        "Phạm Thị Mai",
        "Phạm Văn Hải",
    ]
    assert names(residents.search(date_of_birth="1990-11-05")) == ["Phạm Thị Mai", "Phạm Văn Hải"]
    assert names(residents.search(date_of_birth=date(1990, 4, 12))) == [
        "Phạm Minh Tuấn",
        "Phạm Thị Mai",
    ]
    assert names(residents.search("pham", date_of_birth="1990-11")) == [
        "Phạm Thị Mai",
        "Phạm Văn Hải",
    ]
    assert names(residents.search("pham", household="HK-002")) == ["Phạm Văn Hải"]
    assert all(h.rank == "filter" for h in residents.search(date_of_birth="1985"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give a name"),
        ({"query": "  ,  "}, "give a name"),
        ({"old_id": "12345"}, "9 digits"),
        ({"date_of_birth": "12/04/1990"}, "date of birth"),
        ({"date_of_birth": "1990-13"}, "month"),
        ({"household": " "}, "household"),
        ({"query": "an", "limit": 0}, "limit"),
    ],
)
def test_bad_queries_say_what_is_wrong(
    residents: ResidentList, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ResidentListError, match=message):
        residents.search(**kwargs)


# --- sync ----------------------------------------------------------------------------------


def test_apply_upserts_removes_and_keeps_the_cursor(
    db: StationDatabase, residents: ResidentList
) -> None:
    assert residents.cursor() == 0
    load(db, residents, [row("R1", "Nguyễn Văn An", 1), row("R2", "Trần Thị Bích", 2)], 3)
    assert residents.cursor() == 3
    result = load(
        db,
        residents,
        [
            row("R1", "Nguyễn Văn Ân", 4, status="in_progress"),  # corrected name
            row("R2", "Trần Thị Bích", 5, status="removed"),
        ],
        6,
    )
    assert (result.upserted, result.removed) == (1, 1)
    assert residents.cursor() == 6
    assert residents.get("R2") is None
    assert residents.search("bich") == []
    r1 = residents.get("R1")
    assert r1 is not None
    assert (r1.full_name, r1.status, r1.seq) == ("Nguyễn Văn Ân", "in_progress", 4)
    # The old name's words are gone from the index, the new ones are there.
    assert [h.rank for h in residents.search("nguyen van an")] == ["exact"]
    assert residents.count() == 1


def test_an_older_row_does_not_overwrite_a_newer_one(
    db: StationDatabase, residents: ResidentList
) -> None:
    load(db, residents, [row("R1", "Nguyễn Văn An", 10)], 10)
    result = load(db, residents, [row("R1", "Sai Tên", 7)], 11)
    assert result.stale == 1
    r1 = residents.get("R1")
    assert r1 is not None
    assert r1.full_name == "Nguyễn Văn An"


def test_malformed_rows_are_skipped_and_journalled(
    db: StationDatabase, residents: ResidentList, journal: Journal
) -> None:
    result = load(
        db,
        residents,
        [
            row("R1", "Nguyễn Văn An"),
            row("R2", "Lê Văn B", date_of_birth="1990-02-30"),
            row("R3", "Hồ Thị C", sex="x"),
            {"seq": 9},
        ],
        9,
    )
    assert result.upserted == 1
    assert [s.ref for s in result.skipped] == ["R2", "R3", None]
    assert "date_of_birth" in result.skipped[0].reason
    entries = journal.recent(10, action="residents.row_skipped")
    assert sorted(e.subject or "-" for e in entries) == ["-", "R2", "R3"]
    assert residents.cursor() == 9  # the good rows and the cursor went in


def test_a_page_and_its_cursor_commit_together(
    db: StationDatabase, residents: ResidentList
) -> None:
    def cut_short() -> None:
        with db.write() as c:
            residents.apply(c, [row("R1", "Nguyễn Văn An")], 5)
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        cut_short()
    assert residents.cursor() == 0
    assert residents.get("R1") is None


def test_a_cursor_going_back_is_refused_until_reset(
    db: StationDatabase, residents: ResidentList
) -> None:
    load(db, residents, [row("R1", "Nguyễn Văn An", 40)], 50)
    with pytest.raises(ResidentListError, match="reset"):
        load(db, residents, [], 20)
    with db.write() as c:
        residents.reset(c)
    assert (residents.cursor(), residents.count()) == (0, 0)
    load(db, residents, [row("R9", "Lê Văn Tám", 3)], 20)
    assert residents.cursor() == 20


def test_local_status_survives_list_updates(db: StationDatabase, residents: ResidentList) -> None:
    load(db, residents, [row("R1", "Nguyễn Văn An", 1)], 1)
    with db.write() as c:
        residents.mark_local(c, "R1", "open")
    load(db, residents, [row("R1", "Nguyễn Văn An", 2, status="in_progress")], 2)
    r1 = residents.get("R1")
    assert r1 is not None
    assert r1.local_status == "open"
    assert r1.as_json()["local_status"] == "open"
    with db.write() as c:
        residents.mark_local(c, "R1", None)
    r1 = residents.get("R1")
    assert r1 is not None
    assert r1.local_status is None
    with pytest.raises(ResidentListError, match="not in this station"), db.write() as c:
        residents.mark_local(c, "R404", "open")
    with pytest.raises(ResidentListError, match="local status"), db.write() as c:
        residents.mark_local(c, "R1", "finished")  # type: ignore[arg-type]


def test_prefill_maps_the_row_to_demographics_fields(
    db: StationDatabase, residents: ResidentList
) -> None:
    load(
        db,
        residents,
        [
            row(
                "R1",
                "Nguyễn Thị Hoa",
                sex="female",
                old_id_number="123456789",
                mother_name="Lê Thị Na",
            )
        ],
        1,
    )
    r1 = residents.get("R1")
    assert r1 is not None
    fields = r1.prefill()
    d = Demographics(**fields, ethnicity="01", place_of_origin=r1.permanent_residence)
    assert (d.full_name, d.sex.value, d.old_id_number, d.resident_list_ref) == (
        "Nguyễn Thị Hoa",
        "F",
        "123456789",
        "R1",
    )


# --- eligibility ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dob", "today", "age"),
    [
        ("2007-06-15", date(2021, 6, 14), 13),
        ("2007-06-15", date(2021, 6, 15), 14),
        ("2007", date(2021, 12, 30), 13),  # a year alone: taken as 31 December
        ("2007", date(2021, 12, 31), 14),
        ("2008-02", date(2022, 2, 28), 13),  # 2008 is a leap year: 29 February
        ("2008-02", date(2022, 3, 1), 14),
    ],
)
def test_age_takes_the_latest_birthday_a_partial_date_allows(
    dob: str, today: date, age: int
) -> None:
    assert age_on(dob, today) == age


def test_eligibility_reasons(db: StationDatabase, residents: ResidentList) -> None:
    today = date(2021, 3, 1)
    load(
        db,
        residents,
        [
            row("OK", "A", date_of_birth="1980"),
            row("YOUNG", "B", date_of_birth="2007"),
            row("DONE", "C", status="enrolled"),
            row("ELSE", "D", status="in_progress"),
            row("MINE", "E", status="in_progress"),
            row("OPEN", "F", status="pending"),
            row("OPEN2", "G", status="in_progress"),
        ],
        9,
    )
    with db.write() as c:
        residents.mark_local(c, "MINE", "submitted")
        residents.mark_local(c, "OPEN", "open")
        residents.mark_local(c, "OPEN2", "open")

    def reasons(ref: str) -> list[str]:
        resident = residents.get(ref)
        assert resident is not None
        return eligibility(resident, today, 14)

    assert reasons("OK") == []
    assert reasons("YOUNG") == [UNDER_AGE]
    assert reasons("DONE") == [ALREADY_ENROLLED]
    assert reasons("ELSE") == [IN_PROGRESS_ELSEWHERE]
    assert reasons("MINE") == [SUBMITTED_HERE]  # the registry's in_progress is our package
    assert reasons("OPEN") == [OPEN_HERE]
    assert reasons("OPEN2") == [IN_PROGRESS_ELSEWHERE, OPEN_HERE]
    demographics = Demographics(
        full_name="Lê Văn Mới",
        date_of_birth="2010-01-01",
        sex="M",
        ethnicity="01",
        place_of_origin=ADDRESS,
        permanent_residence=ADDRESS,
    )
    assert eligibility(demographics, today, 14) == [UNDER_AGE]
    assert eligibility(demographics, today, 10) == []


# --- a commune-sized list ------------------------------------------------------------------


def commune(n: int, seed: int = 2021) -> list[dict[str, Any]]:
    """``n`` residents with Viet Nam's surname shares and common middle and given names."""
    rng = np.random.default_rng(seed)
    families = list(FAMILY_NAMES)
    p = np.array([FAMILY_NAMES[f] for f in families])
    family = rng.choice(len(families), size=n, p=p / p.sum())
    male = rng.random(n) < 0.5
    picks = rng.integers(0, 1 << 30, size=(n, 2))
    years = rng.integers(1930, 2008, size=n)
    months = rng.integers(1, 13, size=n)
    days = rng.integers(1, 29, size=n)
    old_ids = rng.integers(10**8, 10**9, size=n)
    rows = []
    for i in range(n):
        middle = MIDDLE_MALE if male[i] else MIDDLE_FEMALE
        given = GIVEN_MALE if male[i] else GIVEN_FEMALE
        name = (
            f"{families[family[i]]} {middle[picks[i, 0] % len(middle)]} "
            f"{given[picks[i, 1] % len(given)]}"
        )
        rows.append(
            row(
                f"DC01-{i:06d}",
                name,
                i + 1,
                sex="male" if male[i] else "female",
                date_of_birth=f"{years[i]}-{months[i]:02d}-{days[i]:02d}",
                old_id_number=f"{old_ids[i]:09d}",
                household_number=f"HK-{i // 4:05d}",
            )
        )
    return rows


def test_search_on_a_commune_of_20000_is_fast(db: StationDatabase, residents: ResidentList) -> None:
    rows = commune(20_000)
    load(db, residents, rows, 20_000)
    target = rows[12_345]
    queries = {
        "n": None,  # one letter as the officer starts typing
        "nguyen": None,  # ~38 % of the commune
        "nguyen van": None,
        "van": None,  # a middle name: no name starts with it, the word index answers
        fold(target["full_name"]): target["ref"],
        target["full_name"]: target["ref"],
        "thi h": None,
    }
    worst = 0.0
    for query, expected in queries.items():
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            hits = residents.search(query)
            timings.append(time.perf_counter() - started)
        worst = max(worst, float(np.median(timings)))
        assert len(hits) == 20
        if expected is not None:
            assert expected in [h.resident.ref for h in hits]
            assert hits[0].rank == "exact"
    # Measured ~0.3 ms (a name prefix) to ~11 ms (a common full name) on a shared
    # 2-core VM; see docs/station-operators.md. The bound only catches a lost index.
    assert worst < 0.05, f"slowest median search {worst * 1000:.1f} ms"
    started = time.perf_counter()
    found = residents.search(old_id=target["old_id_number"])
    assert time.perf_counter() - started < 0.05
    assert [h.resident.ref for h in found] == [target["ref"]]
