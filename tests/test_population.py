"""The synthetic population and the division tables it draws from."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from biometrics.synth import population
from enrollment import divisions
from enrollment.record import DivisionScheme, EnrollmentRecord, youngest_age_on


@pytest.fixture(scope="module")
def pop() -> population.Population:
    return population.generate(1500, seed=7, duplicate_fraction=0.04)


def test_division_tables() -> None:
    table = divisions.load()
    assert len(table.provinces()) == 63
    assert len(table.provinces(DivisionScheme.y2025)) == 34
    assert table.provinces()["01"] == "Thành phố Hà Nội"
    assert table.provinces()["79"] == "Thành phố Hồ Chí Minh"
    phuc_xa = table.commune("00001")
    assert (phuc_xa.district_code, phuc_xa.name) == ("001", "Phường Phúc Xá")
    successor = table.successor("00001")
    assert successor is not None
    assert successor.province_code == "01"
    # Every pre-2025 commune has a 2025 successor in the same or a merged province.
    assert len(table.successors) == len(table.communes[DivisionScheme.pre_2025])
    assert divisions.personal_number_province("79") == "079"


def test_area_check() -> None:
    table = divisions.load()
    area = table.commune("26734").area()
    assert table.check(area) == []
    wrong = area.model_copy(update={"province_code": "01"})
    assert "province 79" in table.check(wrong)[0]
    missing = area.model_copy(update={"commune_code": "99999"})
    assert "does not exist" in table.check(missing)[0]


def test_deterministic(pop: population.Population) -> None:
    again = population.generate(1500, seed=7, duplicate_fraction=0.04)
    assert again.people == pop.people
    assert again.enrollments == pop.enrollments
    other = population.generate(50, seed=8)
    assert other.people[0].demographics != pop.people[0].demographics


def test_people_are_plausible(pop: population.Population) -> None:
    table = divisions.load()
    on = date(2021, 3, 1)
    family = Counter(p.demographics.full_name.split()[0] for p in pop.people)
    assert family.most_common(1)[0][0] == "Nguyễn"
    assert 0.25 < family["Nguyễn"] / len(pop.people) < 0.5
    assert all(youngest_age_on(p.demographics.date_of_birth, on) >= 14 for p in pop.people)
    kinh = sum(p.demographics.ethnicity == "01" for p in pop.people) / len(pop.people)
    assert 0.7 < kinh < 0.95
    for p in pop.people[:200]:
        for area in p.demographics.permanent_residence.areas:
            assert table.check(area) == []
    assert len({p.finger_seed for p in pop.people}) == len(pop.people)
    old_ids = [p.demographics.old_id_number for p in pop.people if p.demographics.old_id_number]
    assert len(old_ids) == len(set(old_ids))


def test_households_link_names(pop: population.Population) -> None:
    by_household: dict[str, list[population.Person]] = {}
    for p in pop.people:
        by_household.setdefault(p.household_id, []).append(p)
    linked = 0
    for members in by_household.values():
        names = {m.demographics.full_name for m in members}
        homes = {m.demographics.permanent_residence.model_dump_json() for m in members}
        assert len(homes) == 1
        for m in members:
            if m.demographics.father_name in names or m.demographics.mother_name in names:
                linked += 1
    assert linked > len(pop.people) * 0.2


def test_planted_duplicates(pop: population.Population) -> None:
    dups = [e for e in pop.enrollments if e.duplicate_of]
    assert len(dups) == 60
    firsts = {e.enrollment_id: e for e in pop.enrollments if e.duplicate_of is None}
    for e in dups:
        first = firsts[e.duplicate_of or ""]
        assert first.person_id == e.person_id
        assert first.impression_seed != e.impression_seed
        assert first.declared != e.declared
        # Still a valid record's demographics.
        EnrollmentRecord.model_fields["demographics"].annotation.model_validate(  # type: ignore[union-attr]
            e.declared.model_dump()
        )


def test_strip_diacritics() -> None:
    assert population.strip_diacritics("Đặng Thị Ánh Nguyệt") == "Dang Thi Anh Nguyet"


def test_population_command(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    out = tmp_path / "pop"
    result = subprocess.run(
        [sys.executable, "-m", "biometrics.synth", "population", "--people", "200", "--out",
         str(out), "--duplicates", "0.05", "--seed", "3"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    people = [json.loads(line) for line in (out / "people.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (out / "enrollments.jsonl").read_text().splitlines()]
    assert len(people) == 200
    assert len(rows) == 210
    assert all(r["synthetic"] for r in rows)
    assert sum(r["duplicate_of"] is not None for r in rows) == 10
