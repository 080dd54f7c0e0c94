"""Station operators: the synced directory, two-factor login with real fingerprint templates
(synthetic prints through mindtct), lockout, sessions, supervisor approvals, the
citizen-is-not-the-operator check; and the journal they write to."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from argon2 import PasswordHasher, Type
from numpy.typing import NDArray

from biometrics.fingerprint.iso19794 import encode_minutiae
from biometrics.fingerprint.matcher import FingerTemplate, make_template, verify
from biometrics.fingerprint.minutiae import MinutiaSet, extract_minutiae
from biometrics.fingerprint.synth import ImpressionKind, SkinCondition, impression, master_finger
from station.journal import JOURNAL_SCHEMA, Journal, JournalError
from station.operators import (
    OPERATORS_SCHEMA,
    ApprovalRefused,
    Authenticator,
    FingerUnreadable,
    LoginFailed,
    NoEnrolledFingers,
    OperatorDirectory,
    OperatorDisabled,
    OperatorLocked,
    OperatorPolicy,
    SessionExpired,
)
from station.store.database import StationDatabase

SEED = 2021
# Cheap hashes for the tests (the registry uses argon2-cffi's defaults); verify reads the
# parameters from the hash, so the station's code is the same either way.
HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
OFFICER_PIN = "482915"
SUPER_PIN = "730164"
SUPER_PASSWORD = "đèn-lồng-2021"


@cache
def flat(person: int, finger: int, k: int) -> NDArray[np.uint8]:
    """Impression ``k`` of a synthetic finger: flat, normal skin, full contact (what a
    placement that passed the scanner's quality gate looks like)."""
    master = master_finger(SEED, person, finger)
    shot = impression(
        master,
        SEED,
        person,
        finger,
        k,
        ImpressionKind.FLAT,
        condition=SkinCondition.NORMAL,
        partial=False,
    )
    return np.asarray(shot.image)


@cache
def minutiae(person: int, finger: int, k: int) -> MinutiaSet:
    return extract_minutiae(flat(person, finger, k))


def template(person: int, finger: int, k: int) -> FingerTemplate:
    return make_template(minutiae(person, finger, k), max_cylinders=0)


def iso(person: int, finger: int) -> str:
    """The enrolled template as the registry sends it: impression 0, ISO 19794-2, base64."""
    record = encode_minutiae(minutiae(person, finger, 0), position=finger, impression=0)
    return base64.b64encode(record).decode()


def operator(
    operator_id: str,
    person: int,
    fingers: tuple[int, ...] = (2,),
    *,
    role: str = "officer",
    pin: str | None = None,
    password: str | None = None,
    disabled: bool = False,
    name: str = "Trần Văn Bình",
) -> dict[str, Any]:
    return {
        "operator_id": operator_id,
        "full_name": name,
        "role": role,
        "pin_hash": HASHER.hash(pin) if pin else None,
        "password_hash": HASHER.hash(password) if password else None,
        "fingers": [{"position": f, "template": iso(person, f)} for f in fingers],
        "disabled": disabled,
    }


STAFF = [
    ("officer1", 0, (2, 7), "officer", OFFICER_PIN, None),
    ("super1", 1, (2,), "supervisor", SUPER_PIN, SUPER_PASSWORD),
    ("super2", 2, (2,), "supervisor", SUPER_PIN, None),
]


def staff(**changes: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for oid, person, fingers, role, pin, password in STAFF:
        op = operator(oid, person, fingers, role=role, pin=pin, password=password)
        op.update(changes.get(oid, {}))
        out.append(op)
    return out


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2021, 3, 1, 1, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StationDatabase]:
    database = StationDatabase(tmp_path / "station.db")
    database.migrate(JOURNAL_SCHEMA, OPERATORS_SCHEMA)
    yield database
    database.close()


@pytest.fixture
def journal(db: StationDatabase, clock: Clock) -> Journal:
    return Journal(db, clock=clock)


@pytest.fixture
def directory(db: StationDatabase, journal: Journal) -> OperatorDirectory:
    d = OperatorDirectory(db, journal)
    with db.write() as c:
        d.replace(c, staff(), "v1")
    return d


@pytest.fixture
def auth(
    db: StationDatabase, directory: OperatorDirectory, journal: Journal, clock: Clock
) -> Authenticator:
    return Authenticator(db, directory, journal, OperatorPolicy(), clock)


def login(auth: Authenticator, operator_id: str = "officer1", k: int = 1) -> Any:
    challenge = auth.begin_login(operator_id, pin=OFFICER_PIN)
    return auth.complete_login(challenge.token, flat(0, 2, k))


# --- the matcher at the station's threshold ------------------------------------------------


def test_two_impressions_of_a_finger_match_and_other_fingers_do_not() -> None:
    threshold = OperatorPolicy().operator_match_threshold
    people = [(0, 2), (0, 7), (1, 2), (2, 2)]
    for a in people:
        for b in people:
            score = verify(template(*a, 1), template(*b, 0))
            if a == b:
                assert score >= threshold + 0.1, (a, score)
            else:
                assert score < threshold / 2, (a, b, score)


# --- the directory -------------------------------------------------------------------------


def test_replace_stores_operators_and_skips_bad_credentials(
    db: StationDatabase, directory: OperatorDirectory, journal: Journal
) -> None:
    sparse = MinutiaSet.from_arrays([40.0, 300.0], [40.0, 300.0], [0.0, 1.0], width=400, height=400)
    bad = operator("bad", 3, (2,), pin="1111")
    bad["fingers"] += [
        {"position": 3, "template": "not base64!"},
        {"position": 4, "template": base64.b64encode(b"FMR\x00 20\x00junk").decode()},
        {"position": 5, "template": base64.b64encode(encode_minutiae(sparse)).decode()},
        {"position": 2, "template": iso(3, 2)},  # the same position twice
    ]
    bad["password_hash"] = "$2b$12$abcdefghijklmnopqrstuv"  # bcrypt: not argon2
    argon2i = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.I)
    other = operator("other", 3, (7,))
    other["pin_hash"] = argon2i.hash("2222")
    with db.write() as c:
        result = directory.replace(
            c, [*staff(), bad, other, {"operator_id": "norole", "full_name": "X"}], "v2"
        )
    assert result.operators == 5
    skipped = {(s.operator_id, s.what, s.position) for s in result.skipped}
    assert skipped == {
        ("bad", "finger", 3),
        ("bad", "finger", 4),
        ("bad", "finger", 5),
        ("bad", "finger", 2),
        ("bad", "password_hash", None),
        ("other", "pin_hash", None),
        ("norole", "operator", None),
    }
    reasons = {(s.operator_id, s.position): s.reason for s in result.skipped}
    assert "base64" in reasons[("bad", 3)]
    assert "ISO/IEC 19794-2" in reasons[("bad", 4)]
    assert "too few minutiae" in reasons[("bad", 5)]
    assert "argon2id" in reasons[("other", None)]
    stored = directory.get("bad")
    assert stored is not None
    assert stored.finger_positions == (2,)
    assert stored.pin_hash is not None
    assert stored.password_hash is None
    assert directory.version() == "v2"
    logged = journal.recent(20, action="operators.credential_skipped")
    assert len(logged) == 7
    assert journal.recent(1, action="operators.replaced")[0].detail["operators"] == 5
    assert "$2b$" not in json.dumps([e.detail for e in logged])


def test_replace_removes_operators_no_longer_listed(
    db: StationDatabase, directory: OperatorDirectory, auth: Authenticator
) -> None:
    with pytest.raises(LoginFailed):
        auth.begin_login("super2", pin="000000")
    assert auth.lock_state("super2").failures == 1
    with pytest.raises(LoginFailed):
        auth.begin_login("officer1", pin="000000")
    with db.write() as c:
        directory.replace(c, staff()[:2], "v3")
    assert directory.get("super2") is None
    assert [op.operator_id for op in directory.all()] == ["officer1", "super1"]
    assert auth.lock_state("super2").failures == 0  # gone with the operator
    assert auth.lock_state("officer1").failures == 1  # still listed: kept


# --- login ---------------------------------------------------------------------------------


def test_login_with_pin_and_finger(auth: Authenticator, journal: Journal, clock: Clock) -> None:
    challenge = auth.begin_login("officer1", pin=OFFICER_PIN)
    assert challenge.finger_positions == (2, 7)
    assert challenge.full_name == "Trần Văn Bình"
    session = auth.complete_login(challenge.token, flat(0, 7, 2))  # any enrolled finger
    assert (session.operator_id, session.role, session.started) == ("officer1", "officer", clock())
    assert auth.session(session.token) == session
    entry = journal.recent(1, action="operator.login")[0]
    assert entry.detail["position"] == 7
    assert entry.detail["factor"] == "pin"
    assert entry.detail["score"] >= auth.policy.operator_match_threshold


def test_login_with_password(auth: Authenticator) -> None:
    challenge = auth.begin_login("super1", password=SUPER_PASSWORD)
    session = auth.complete_login(challenge.token, flat(1, 2, 1))
    assert session.role == "supervisor"
    with pytest.raises(LoginFailed, match="either"):
        auth.begin_login("super1", pin=SUPER_PIN, password=SUPER_PASSWORD)
    with pytest.raises(LoginFailed, match="no password"):
        auth.begin_login("officer1", password="x")


def test_neither_factor_alone_logs_in(auth: Authenticator) -> None:
    with pytest.raises(LoginFailed) as wrong_pin:
        auth.begin_login("officer1", pin="111111")
    assert wrong_pin.value.attempts_left == 4
    challenge = auth.begin_login("officer1", pin=OFFICER_PIN)
    with pytest.raises(LoginFailed, match="does not match") as wrong_finger:
        auth.complete_login(challenge.token, flat(1, 2, 1))  # the supervisor's finger
    assert wrong_finger.value.attempts_left == 3
    # The challenge survives a mismatch: the right finger still completes it.
    assert auth.complete_login(challenge.token, flat(0, 2, 1)).operator_id == "officer1"
    assert auth.lock_state("officer1").failures == 0  # a full login resets the count


def test_unknown_and_disabled_operators(
    db: StationDatabase, directory: OperatorDirectory, auth: Authenticator
) -> None:
    with pytest.raises(LoginFailed, match="wrong operator ID"):
        auth.begin_login("nobody", pin=OFFICER_PIN)
    session = login(auth)
    with db.write() as c:
        directory.replace(c, staff(officer1={"disabled": True}), "v2")
    with pytest.raises(OperatorDisabled):
        auth.begin_login("officer1", pin=OFFICER_PIN)
    with pytest.raises(SessionExpired, match="disabled"):
        auth.session(session.token)


def test_lockout_after_consecutive_failures_of_either_factor_survives_a_restart(
    tmp_path: Path, auth: Authenticator, db: StationDatabase, clock: Clock
) -> None:
    for _ in range(2):
        with pytest.raises(LoginFailed):
            auth.begin_login("officer1", pin="000000")
    challenge = auth.begin_login("officer1", pin=OFFICER_PIN)
    for _ in range(2):
        with pytest.raises(LoginFailed):
            auth.complete_login(challenge.token, flat(2, 2, 1))
    with pytest.raises(OperatorLocked) as locked:
        auth.complete_login(challenge.token, flat(2, 2, 1))  # the fifth failure locks
    assert locked.value.until == clock() + timedelta(minutes=15)
    with pytest.raises(LoginFailed, match="timed out"):  # the pending step ended with it
        auth.complete_login(challenge.token, flat(0, 2, 1))
    with pytest.raises(OperatorLocked):  # even the right PIN is not checked now
        auth.begin_login("officer1", pin=OFFICER_PIN)

    # A restart: a new database handle and a new authenticator read the lock back.
    db.close()
    reopened = StationDatabase(tmp_path / "station.db")
    try:
        journal = Journal(reopened, clock=clock)
        fresh = Authenticator(reopened, OperatorDirectory(reopened, journal), journal, None, clock)
        with pytest.raises(OperatorLocked):
            fresh.begin_login("officer1", pin=OFFICER_PIN)
        clock.advance(minutes=15, seconds=1)
        challenge = fresh.begin_login("officer1", pin=OFFICER_PIN)
        assert fresh.complete_login(challenge.token, flat(0, 2, 1)).operator_id == "officer1"
        actions = [e.action for e in journal.recent(20)]
        assert actions.count("operator.locked") == 1
        assert actions.count("operator.pin_failed") == 2
        assert actions.count("operator.finger_failed") == 3
    finally:
        reopened.close()


def test_what_is_not_a_guess_is_not_counted(auth: Authenticator, clock: Clock) -> None:
    challenge = auth.begin_login("officer1", pin=OFFICER_PIN)
    blank = np.full((400, 400), 255, np.uint8)
    with pytest.raises(FingerUnreadable):
        auth.complete_login(challenge.token, blank)
    clock.advance(seconds=auth.policy.login_step_seconds + 1)
    with pytest.raises(LoginFailed, match="timed out"):
        auth.complete_login(challenge.token, flat(0, 2, 1))
    assert auth.lock_state("officer1").failures == 0


def test_an_operator_without_fingers_cannot_finish_a_login(
    db: StationDatabase, directory: OperatorDirectory, auth: Authenticator
) -> None:
    with db.write() as c:
        directory.replace(c, staff(officer1={"fingers": []}), "v2")
    challenge = auth.begin_login("officer1", pin=OFFICER_PIN)
    with pytest.raises(NoEnrolledFingers, match="registry administrator"):
        auth.complete_login(challenge.token, flat(0, 2, 1))


def test_sessions_expire_after_inactivity(
    auth: Authenticator, clock: Clock, journal: Journal
) -> None:
    session = login(auth)
    for _ in range(3):  # activity keeps it open well past the limit
        clock.advance(seconds=250)
        auth.touch(session.token)
    assert clock() - session.started > timedelta(seconds=700)
    clock.advance(seconds=301)
    with pytest.raises(SessionExpired, match="inactivity"):
        auth.session(session.token)
    with pytest.raises(SessionExpired, match="not logged in"):
        auth.touch(session.token)
    assert journal.recent(1, action="operator.session_expired")[0].detail == {
        "reason": "inactivity"
    }
    again = login(auth)
    auth.logout(again.token)
    auth.logout(again.token)  # twice is fine
    with pytest.raises(SessionExpired):
        auth.session(again.token)


def test_a_new_login_replaces_the_operators_old_session(auth: Authenticator) -> None:
    first = login(auth, k=1)
    second = login(auth, k=2)
    assert [s.token for s in auth.sessions()] == [second.token]
    with pytest.raises(SessionExpired):
        auth.session(first.token)


def test_policy_from_the_registry_config() -> None:
    policy = OperatorPolicy.from_station_config(
        {
            "min_age_years": 14,
            "lockout_failures": 3,
            "lockout_minutes": 5,
            "inactivity_logout_seconds": 120,
            "operator_match_threshold": 0.3,
            "same_finger_threshold": 0.5,
        }
    )
    assert (policy.lockout_failures, policy.lockout_minutes) == (3, 5)
    assert (policy.inactivity_logout_seconds, policy.operator_match_threshold) == (120, 0.3)
    assert policy.login_step_seconds == OperatorPolicy().login_step_seconds
    kept = OperatorPolicy.from_station_config({"operator_match_threshold": None}, policy)
    assert kept.operator_match_threshold == 0.3
    with pytest.raises(ValueError, match="lockout_failures"):
        OperatorPolicy.from_station_config({"lockout_failures": 0})


def test_a_new_policy_applies_to_open_sessions(auth: Authenticator, clock: Clock) -> None:
    session = login(auth)
    auth.set_policy(OperatorPolicy(inactivity_logout_seconds=60))
    clock.advance(seconds=61)
    with pytest.raises(SessionExpired):
        auth.session(session.token)


# --- approvals -----------------------------------------------------------------------------


def test_a_supervisor_approves_an_officers_case(auth: Authenticator, journal: Journal) -> None:
    approval = auth.approve(
        "super1", SUPER_PIN, flat(1, 2, 1), "finger_exception", "case-42", requested_by="officer1"
    )
    assert (approval.supervisor_id, approval.requested_by) == ("super1", "officer1")
    assert approval.score >= auth.policy.operator_match_threshold
    entry = journal.recent(1, action="approval.granted")[0]
    assert (entry.actor, entry.subject) == ("super1", "case-42")
    assert entry.detail["approval_id"] == approval.approval_id
    assert entry.detail["action"] == "finger_exception"


def test_approval_rules(auth: Authenticator, journal: Journal) -> None:
    with pytest.raises(ApprovalRefused, match="own case"):
        auth.approve("super1", SUPER_PIN, flat(1, 2, 1), "override", "c1", requested_by="super1")
    with pytest.raises(ApprovalRefused, match="not a supervisor"):
        auth.approve("officer1", OFFICER_PIN, flat(0, 2, 1), "override", "c1", requested_by="x")
    with pytest.raises(LoginFailed):  # the right PIN, but super2's finger is not super1's
        auth.approve("super1", SUPER_PIN, flat(2, 2, 1), "override", "c1", requested_by="officer1")
    with pytest.raises(LoginFailed):
        auth.approve("super1", "000000", flat(1, 2, 1), "override", "c1", requested_by="officer1")
    assert auth.lock_state("super1").failures == 2  # failed approvals count towards lockout
    approval = auth.approve(
        "super2", SUPER_PIN, flat(2, 2, 1), "override", "c1", requested_by="super1"
    )
    assert approval.supervisor_id == "super2"  # another supervisor may approve super1's case
    refused = [e.detail["reason"] for e in journal.recent(10, action="approval.refused")]
    assert sorted(refused) == ["not_a_supervisor", "own_case"]


# --- the citizen is not the operator -------------------------------------------------------


def test_citizen_is_operator(auth: Authenticator, journal: Journal) -> None:
    stranger = {pos: template(3, 2, 1) for pos in (2,)} | {7: template(2, 2, 2)}
    assert not auth.citizen_is_operator("officer1", stranger)
    # The officer puts their own finger on the scanner for the citizen.
    assert auth.citizen_is_operator("officer1", {1: template(3, 2, 1), 2: template(0, 2, 2)})
    entry = journal.recent(1, action="operator.citizen_match")[0]
    assert (entry.detail["citizen_position"], entry.detail["operator_position"]) == (2, 2)
    # A swapped finger (the officer's finger 7 captured as the citizen's finger 8).
    assert auth.citizen_is_operator("officer1", {8: template(0, 7, 1)})
    assert not auth.citizen_is_operator("nobody", {2: template(0, 2, 2)})


# --- the journal ---------------------------------------------------------------------------


def test_the_journal_never_holds_secrets_or_samples(
    auth: Authenticator, journal: Journal, db: StationDatabase
) -> None:
    with pytest.raises(LoginFailed):
        auth.begin_login("officer1", pin="555555")
    login(auth)
    text = json.dumps([(e.actor, e.subject, e.detail) for e in journal.recent(100)])
    assert OFFICER_PIN not in text
    assert "555555" not in text
    assert "$argon2" not in text
    refused: list[dict[str, Any]] = [
        {"pin": "1234"},
        {"new_password": "x"},
        {"session_token": "abc"},
        {"finger_templates": []},
        {"image": b"\x00\x01"},
        {"nested": {"pin_hash": "x"}},
        {"frame": np.zeros(3)},
    ]
    with db.write() as c:
        for bad in refused:
            with pytest.raises(JournalError):
                journal.record(c, "officer1", "test", None, **bad)


def test_the_journal_is_append_only_and_filters_by_action(
    db: StationDatabase, journal: Journal, clock: Clock
) -> None:
    with db.write() as c:
        first = journal.record(c, "officer1", "case.opened", "c1", ticket="A-001")
        journal.record(c, "officer1", "case.consent", "c1")
        journal.record(c, "super1", "approval.granted", "c1", action="override")
    entries = journal.recent(10, action=("case.opened", "approval.granted"))
    assert [e.action for e in entries] == ["approval.granted", "case.opened"]
    assert entries[0].detail == {"action": "override"}
    assert entries[1].at == clock()
    assert journal.recent(1)[0].action == "approval.granted"
    with pytest.raises(Exception, match="append-only"), db.write() as c:
        c.execute("UPDATE journal_entries SET actor = 'x' WHERE id = ?", (first,))
    with pytest.raises(Exception, match="append-only"), db.write() as c:
        c.execute("DELETE FROM journal_entries")
    assert len(journal.recent(10)) == 3


def test_parallel_guesses_cannot_get_past_the_lockout(auth: Authenticator) -> None:
    """A burst of wrong PINs in parallel (the API has a thread pool): exactly as many hash
    checks as the limit allows, then the lock holds and no late failure lifts it."""
    from concurrent.futures import ThreadPoolExecutor

    def guess(_: int) -> str:
        try:
            auth.begin_login("officer1", pin="000000")
        except OperatorLocked:
            return "locked"
        except LoginFailed:
            return "failed"
        return "in"

    with ThreadPoolExecutor(9) as pool:
        outcomes = list(pool.map(guess, range(27)))
    assert outcomes.count("in") == 0
    assert outcomes.count("failed") == 4  # the fifth failure answers "locked"
    state = auth.lock_state("officer1")
    assert state.locked_until is not None
    with pytest.raises(OperatorLocked):
        auth.begin_login("officer1", pin=OFFICER_PIN)
