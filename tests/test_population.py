"""The synthetic population and the division tables it draws from."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from biometrics.synth import faces, population
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


# --------------------------------------------------------------------------- faces

FETCH_ASSETS = Path(__file__).resolve().parent.parent / "scripts" / "fetch_assets.py"


def _fetch_assets_module() -> ModuleType:
    """scripts/fetch_assets.py as a module (biometrics itself never imports scripts/)."""
    spec = importlib.util.spec_from_file_location("fetch_assets_for_tests", FETCH_ASSETS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_face_sources_agree_with_the_fetched_assets() -> None:
    subjects = _fetch_assets_module().subjects()
    for name, identity in faces.SOURCE_PHOTOS.items():
        assert subjects[name] == identity
    # Every independent photo is a source; only the crops of obama.jpg are left out.
    assert set(subjects) - set(faces.SOURCE_PHOTOS) == {
        "obama_partial_face.jpg",
        "obama_partial_face2.jpg",
    }


def test_face_ground_truth_is_deterministic_and_mixed(pop: population.Population) -> None:
    seeds = [p.face_seed for p in pop.people]
    chosen = [faces.source_for(s) for s in seeds]
    assert chosen == [faces.source_for(s) for s in seeds]
    assert set(chosen) == set(faces.SOURCE_PHOTOS)
    captures = [faces.capture_for(s, 1) for s in seeds]
    assert captures == [faces.capture_for(s, 1) for s in seeds]
    kinds = Counter(c.kind for c in captures)
    assert set(kinds) == set(faces.CAPTURE_MIX)
    for kind, share in faces.CAPTURE_MIX.items():
        assert abs(kinds[kind] / len(captures) - share) < 0.035, kind
    assert 0.05 < sum(c.mirror for c in captures) / len(captures) < 0.15
    assert all(c.target is None for c in captures if c.kind == "good")
    assert all(c.target is not None for c in captures if c.kind != "good")
    forced = faces.capture_for(seeds[0], 1, "mask")
    assert forced.kind == "mask"
    assert forced.as_json()["target"] == "occlusion"
    with pytest.raises(ValueError, match="unknown capture kind"):
        faces.capture_for(seeds[0], 1, "hat")


def test_two_sittings_share_the_source_and_differ_in_capture(
    pop: population.Population,
) -> None:
    by_person = {p.person_id: p for p in pop.people}
    for e in pop.enrollments:
        if e.duplicate_of is None:
            continue
        seed = by_person[e.person_id].face_seed
        first, second = faces.capture_for(seed, 1), faces.capture_for(seed, 2)
        assert first != second
        assert (first.roll, first.dx, first.gain) != (second.roll, second.dx, second.gain)
        # The source photo belongs to the person, not the sitting.
        assert faces.source_for(seed) == faces.source_for(seed)


def test_population_command_without_photos_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from biometrics.synth.__main__ import main

    argv = ["population", "--people", "3", "--out", str(tmp_path / "pop"), "--faces",
            "--assets", str(tmp_path / "nothing")]  # fmt: skip
    assert main(argv) == 2
    assert "scripts/fetch_assets.py" in capsys.readouterr().err
    assert not (tmp_path / "pop").exists()


def test_population_command_writes_marked_faces_with_ground_truth(tmp_path: Path) -> None:
    fetched = subprocess.run(
        [sys.executable, str(FETCH_ASSETS)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if fetched.returncode == 3:
        pytest.skip("face photos not available, package index unreachable")
    assert fetched.returncode == 0, fetched.stderr
    out = tmp_path / "pop"
    result = subprocess.run(
        [sys.executable, "-m", "biometrics.synth", "population", "--people", "24", "--out",
         str(out), "--duplicates", "0.25", "--seed", "5", "--faces"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    people = {
        row["person_id"]: row
        for row in map(json.loads, (out / "people.jsonl").read_text().splitlines())
    }
    rows = [json.loads(line) for line in (out / "enrollments.jsonl").read_text().splitlines()]
    assert len(rows) == 30
    for person in people.values():
        assert faces.SOURCE_PHOTOS[person["face_source"]] == person["face_identity"]
    captures: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        capture = row["face_capture"]
        assert capture["kind"] in faces.CAPTURE_MIX
        captures.setdefault(row["person_id"], []).append(capture)
        path = out / row["face_image"]
        assert path.name == f"{row['enrollment_id']}.jpg"
        with Image.open(path) as image:
            assert image.size == (480, 640)
            assert image.format == "JPEG"
            assert b"SYNTHETIC" in image.info["comment"]
            assert "SYNTHETIC" in image.getexif()[faces.EXIF_IMAGE_DESCRIPTION]
            pixels = np.asarray(image.convert("L"))
        x0, y0, x1, y1 = faces.mark_region(pixels.shape)
        label = pixels[y0:y1, x0:x1]
        assert (label < 40).mean() > 0.5  # the black box
        assert (label > 200).sum() > 40  # white letters on it
    assert sum(len(c) == 2 for c in captures.values()) == 6
    assert all(c[0] != c[1] for c in captures.values() if len(c) == 2)
