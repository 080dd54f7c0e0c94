"""The registry's side of station sync, through the real app: the station policy, operator
credentials (checked here with argon2-cffi and the ISO 19794-2 decoder, as a station
checks them offline), the communes' resident lists (CSV import, deltas by ``seq``, status
following the packages through ingest and issuance), heartbeats, and the command line.

The change sequence is also tested under concurrent writers on SQLite and PostgreSQL: a
reader that follows ``next`` must never miss a change, whatever commits when.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from biometrics.fingerprint.iso19794 import decode_minutiae, encode_minutiae
from biometrics.fingerprint.minutiae import MinutiaSet
from central.app import create_app
from central.db.models import (
    AuditEntry,
    Office,
    Resident,
    ResidentStatus,
    Station,
    StationStatus,
)
from central.db.ops import append_audit, resident_sequence
from central.residents import import_residents, mark_resident, residents_page
from central.services import Registry
from enrollment import divisions
from enrollment.keys.software import SoftwareKeySigner
from enrollment.package import build_package
from enrollment.record import Address, DivisionScheme
from enrollment.request_signing import StationRequestAuth
from station.drivers.health import DeviceHealthBoard, DeviceKind, HealthCell
from station.heartbeat import HeartbeatSources, payload
from station.residents import ResidentRow as StationResidentRow
from tests import registrykit
from tests.registrykit import ADMIN

ROOT = Path(__file__).resolve().parents[1]
FINGERS = (1, 2, 6, 7)
POLICY_FIELDS = {
    "min_age_years",
    "finger_min_quality",
    "finger_max_attempts",
    "face_min_quality",
    "staleness_limit_hours",
    "heartbeat_seconds",
    "inactivity_logout_seconds",
    "lockout_failures",
    "lockout_minutes",
    "operator_match_threshold",
    "same_finger_threshold",
}
RESIDENT_FIELDS = {
    "ref",
    "seq",
    "status",
    "full_name",
    "date_of_birth",
    "sex",
    "old_id_number",
    "household_number",
    "father_name",
    "mother_name",
    "permanent_residence",
    "place_of_origin",
}
HEADER = (
    "ref,full_name,date_of_birth,sex,old_id_number,household_number,father_name,"
    "mother_name,residence_detail,origin_commune,origin_detail"
)
# Communes of Hà Nội (pre-2025 codes): one per site, so each test has a list of its own.
COMMUNES = sorted(c.code for c in divisions.load().iter_communes() if c.province_code == "01")


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def template(position: int, seed: int, count: int = 30) -> str:
    """A one-view ISO/IEC 19794-2 record of ``count`` minutiae, base64."""
    rng = random.Random(seed)
    minutiae = MinutiaSet.from_arrays(
        [rng.uniform(20, 380) for _ in range(count)],
        [rng.uniform(20, 480) for _ in range(count)],
        [rng.uniform(0, 6.28) for _ in range(count)],
        width=400,
        height=500,
    )
    return base64.b64encode(encode_minutiae(minutiae, position=position)).decode()


@dataclass
class Site:
    """An office in a commune of its own, with one enrolled station."""

    station_id: str
    office_id: int
    commune: str
    signer: SoftwareKeySigner

    @property
    def auth(self) -> StationRequestAuth:
        return StationRequestAuth(self.signer, self.station_id)


@dataclass
class World:
    client: TestClient
    registry: Registry
    admin: dict[str, str]
    tmp: Path
    counter: Iterator[int] = field(default_factory=itertools.count)

    def site(self) -> Site:
        n = next(self.counter)
        commune = COMMUNES[n]
        station_id = f"HN-SYNC-{n:03d}"
        signer, office_id = registrykit.onboard(self.client, self.admin, station_id, commune)
        return Site(station_id, office_id, commune, signer)

    def operator(self, site: Site, username: str, role: str = "officer") -> None:
        made = self.client.post(
            "/v1/operators",
            json={
                "office_id": site.office_id,
                "username": username,
                "full_name": "Lê Thị Hồng",
                "role": role,
            },
            headers=self.admin,
        )
        assert made.status_code == 201, made.text

    def import_csv(self, site: Site, text: str, **params: Any) -> dict[str, Any]:
        r = self.client.post(
            f"/v1/offices/{site.office_id}/residents",
            content=text.encode(),
            params=params,
            headers={**self.admin, "Content-Type": "text/csv; charset=utf-8"},
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def page(self, site: Site, after: int = 0, limit: int = 1000) -> dict[str, Any]:
        r = self.client.get(
            "/v1/station/residents", params={"after": after, "limit": limit}, auth=site.auth
        )
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("station-sync")
    settings = registrykit.registry_settings(
        tmp,
        quality={"finger_scorer": "station-model", "min_fingers": 4},
        residents={"max_upload_bytes": 64 * 1024},
    )
    with TestClient(create_app(settings)) as client:
        admin = registrykit.login(client, *ADMIN)
        registry: Registry = client.app.state.registry  # type: ignore[attr-defined]
        yield World(client, registry, admin, tmp)


# --- the station policy -----------------------------------------------------------------


def test_config_is_the_policy_with_its_version(world: World) -> None:
    site = world.site()
    r = world.client.get("/v1/station/config", auth=site.auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["settings"]) == POLICY_FIELDS
    assert body["settings"]["min_age_years"] == 14
    assert body["settings"]["lockout_failures"] == 5
    assert isinstance(body["settings"]["operator_match_threshold"], float)
    assert body["version"] == hashlib.sha256(canonical(body["settings"])).hexdigest()
    # Another policy, another version (the station's cue to sync).
    other = registrykit.registry_settings(world.tmp / "other", station_policy={"min_age_years": 15})
    from central.station_sync import policy_document

    changed = policy_document(other.station_policy)
    assert changed["settings"]["min_age_years"] == 15
    assert changed["version"] != body["version"]


def test_the_registrys_defaults_are_the_stations_own() -> None:
    """A station applies what the registry sends over its built-in defaults: with the
    registry's defaults the same, the first sync changes nothing a station measured."""
    from central.station_sync import StationPolicySettings
    from station.capture.tenprint import TenPrintSettings
    from station.operators import OperatorPolicy
    from station.policy import StationPolicy

    registry = StationPolicySettings()
    station = StationPolicy()
    for name in POLICY_FIELDS - {"operator_match_threshold", "same_finger_threshold"}:
        assert getattr(registry, name) == getattr(station, name), name
    assert registry.operator_match_threshold == OperatorPolicy().operator_match_threshold
    assert registry.same_finger_threshold == TenPrintSettings().same_finger_threshold


# --- operator credentials ---------------------------------------------------------------


def test_operator_credentials_reach_the_office_stations(world: World) -> None:
    site, elsewhere = world.site(), world.site()
    world.operator(site, "hong.le")
    world.operator(site, "binh.tran", "supervisor")
    world.operator(elsewhere, "an.pham")
    before = world.client.get("/v1/station/operators", auth=site.auth).json()
    assert [o["operator_id"] for o in before["operators"]] == ["binh.tran", "hong.le"]
    assert before["operators"][1]["pin_hash"] is None
    fingers = [
        {"position": 2, "template": template(2, 1)},
        {"position": 7, "template": template(7, 2)},
    ]
    r = world.client.put(
        "/v1/operators/hong.le/credentials",
        json={"pin": "4826", "password": "ba đình phúc xá 2021", "fingers": fingers},
        headers=world.admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["fingers"] == [2, 7]
    assert r.json()["pin"]
    assert r.json()["password"]

    listed = world.client.get("/v1/station/operators", auth=site.auth).json()
    assert listed["version"] != before["version"]
    assert listed["version"] == hashlib.sha256(canonical(listed["operators"])).hexdigest()
    hong = next(o for o in listed["operators"] if o["operator_id"] == "hong.le")
    assert set(hong) == {
        "operator_id",
        "full_name",
        "role",
        "pin_hash",
        "password_hash",
        "fingers",
        "disabled",
    }
    assert hong["role"] == "officer"
    assert hong["disabled"] is False
    # What a station does offline: argon2-cffi on the PHC strings, the 19794-2 decoder.
    hasher = PasswordHasher()
    assert hong["pin_hash"].startswith("$argon2id$")
    assert hasher.verify(hong["pin_hash"], "4826")
    assert hasher.verify(hong["password_hash"], "ba đình phúc xá 2021")
    with pytest.raises(VerifyMismatchError):
        hasher.verify(hong["pin_hash"], "4827")
    assert [f["position"] for f in hong["fingers"]] == [2, 7]
    for sent, got in zip(fingers, hong["fingers"], strict=True):
        assert got["template"] == sent["template"]
        assert len(decode_minutiae(base64.b64decode(got["template"]))) == 30
    # Only the station's own office; the same list again has the same version.
    assert "an.pham" not in {o["operator_id"] for o in listed["operators"]}
    again = world.client.get("/v1/station/operators", auth=site.auth).json()
    assert again["version"] == listed["version"]
    # Audited, without the secrets.
    with Session(world.registry.engine) as session:
        entry = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.subject == "operator:hong.le")
            .order_by(AuditEntry.seq.desc())
        ).first()
    assert entry is not None
    assert entry.action == "operator.credentials_set"
    assert entry.details == {"pin": True, "password": True, "fingers": [2, 7]}
    assert "4826" not in json.dumps(entry.details)
    # PUT replaces: a PIN alone clears the password and the fingers.
    r = world.client.put(
        "/v1/operators/hong.le/credentials", json={"pin": "90817263"}, headers=world.admin
    )
    assert r.status_code == 200, r.text
    hong = next(
        o
        for o in world.client.get("/v1/station/operators", auth=site.auth).json()["operators"]
        if o["operator_id"] == "hong.le"
    )
    assert hong["password_hash"] is None
    assert hong["fingers"] == []
    assert hasher.verify(hong["pin_hash"], "90817263")


def _garbage_template() -> str:
    return base64.b64encode(b"FMR\x00 20\x00" + b"\x00" * 40).decode()


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"pin": "12a4"}, 422, "bad_pin"),
        ({"pin": "123"}, 422, "bad_pin"),
        ({"fingers": [{"position": 2, "template": template(2, 3)}]}, 422, "no_secret"),
        ({"password": "short"}, 422, "weak_password"),
        (
            {"pin": "4826", "fingers": [{"position": 2, "template": "not base64!"}]},
            422,
            "bad_template",
        ),
        (
            {"pin": "4826", "fingers": [{"position": 2, "template": _garbage_template()}]},
            422,
            "bad_template",
        ),
        (
            {"pin": "4826", "fingers": [{"position": 3, "template": template(2, 4)}]},
            422,
            "bad_template",
        ),
        (
            {"pin": "4826", "fingers": [{"position": 2, "template": template(2, 5, count=3)}]},
            422,
            "bad_template",
        ),
        (
            {
                "pin": "4826",
                "fingers": [
                    {"position": 2, "template": template(2, 6)},
                    {"position": 2, "template": template(2, 7)},
                ],
            },
            422,
            "bad_template",
        ),
    ],
    ids=[
        "pin-letters",
        "pin-short",
        "no-secret",
        "weak-password",
        "not-base64",
        "garbage",
        "wrong-position",
        "too-few-minutiae",
        "position-twice",
    ],
)
def test_bad_credentials_are_refused_and_change_nothing(
    world: World, body: dict[str, Any], status: int, error: str
) -> None:
    site = world.site()
    username = f"refused.{next(world.counter)}"
    world.operator(site, username)
    ok = world.client.put(
        f"/v1/operators/{username}/credentials", json={"pin": "5555"}, headers=world.admin
    )
    assert ok.status_code == 200, ok.text
    before = world.client.get("/v1/station/operators", auth=site.auth).json()
    r = world.client.put(f"/v1/operators/{username}/credentials", json=body, headers=world.admin)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error, r.text
    assert r.json()["detail"]
    assert world.client.get("/v1/station/operators", auth=site.auth).json() == before


def test_unknown_operator_and_disabled_operator(world: World) -> None:
    site = world.site()
    r = world.client.put(
        "/v1/operators/nobody/credentials", json={"pin": "1357"}, headers=world.admin
    )
    assert r.status_code == 404
    assert r.json()["error"] == "unknown_operator"
    world.operator(site, "cuong.do")
    before = world.client.get("/v1/station/operators", auth=site.auth).json()
    r = world.client.post("/v1/operators/cuong.do/disable", headers=world.admin)
    assert r.status_code == 200, r.text
    after = world.client.get("/v1/station/operators", auth=site.auth).json()
    # Still listed, so that the station learns of it; a new version tells it to sync.
    assert [o["disabled"] for o in after["operators"]] == [True]
    assert after["version"] != before["version"]
    world.client.post("/v1/operators/cuong.do/enable", headers=world.admin).raise_for_status()
    assert world.client.get("/v1/station/operators", auth=site.auth).json() == before


# --- resident lists -----------------------------------------------------------------------


def test_import_reports_bad_rows_by_line_and_imports_the_good(world: World) -> None:
    site = world.site()
    nfd = unicodedata.normalize("NFD", "Nguyễn Thị Bình")
    text = "\ufeff" + "\n".join(
        [
            HEADER,
            f"R1,{nfd},1990-02-03,Nữ,012345678,HK-12,Nguyễn Văn Ba,Lê Thị Tư,"
            "Số 5 phố Hàng Bông,00004,Xóm Chùa",
            'R2,"Trần Văn Cường",1985,nam,,,,,"Ngõ 12,\nngách 3",,',  # a quoted line break
            "R3,Phạm Văn Dũng,1990-02-30,M,,,,,,,",  # line 5: no such day
            "R4,Hoàng Thị E,2001,X,,,,,,,",
            "R5,Vũ Văn G,1970,M,12345,,,,,,",
            "R1,Đỗ Văn H,1960,M,,,,,,,",
            "R7,Bùi Thị K,1999-07,F,,,,,,99999,",
            "R8,,1999,F,,,,,,,",
            "R9,Ngô Văn L\u200b,1980,M,,,,,,,",
            "",
            "R10,Đặng Thị M,1975-12-31,female,,,,,,,",
        ]
    )
    result = world.import_csv(site, text)
    assert (result["created"], result["updated"], result["rejected"]) == (3, 0, 7)
    errors = {(e["line"], e["ref"]): e["error"] for e in result["errors"]}
    assert set(errors) == {
        (5, "R3"),
        (6, "R4"),
        (7, "R5"),
        (8, "R1"),
        (9, "R7"),
        (10, "R8"),
        (11, "R9"),
    }
    assert "date_of_birth" in errors[(5, "R3")]
    assert "sex" in errors[(6, "R4")]
    assert "old_id_number" in errors[(7, "R5")]
    assert "line 2" in errors[(8, "R1")]
    assert "origin_commune" in errors[(9, "R7")]
    assert "full_name" in errors[(10, "R8")]
    assert "U+200B" in errors[(11, "R9")]
    page = world.page(site)
    rows = {r["ref"]: r for r in page["residents"]}
    assert set(rows) == {"R1", "R2", "R10"}
    for row in rows.values():  # what the station's resident list takes in
        StationResidentRow.model_validate(row)
    r1 = rows["R1"]
    assert set(r1) == RESIDENT_FIELDS
    assert r1["full_name"] == "Nguyễn Thị Bình"  # NFC
    assert (r1["sex"], r1["status"], r1["old_id_number"]) == ("female", "pending", "012345678")
    assert (r1["father_name"], r1["household_number"]) == ("Nguyễn Văn Ba", "HK-12")
    residence = Address.model_validate(r1["permanent_residence"])
    area = residence.area(DivisionScheme.pre_2025)
    assert area is not None
    assert area.commune_code == site.commune
    assert residence.detail == "Số 5 phố Hàng Bông"
    assert residence.area(DivisionScheme.y2025) is not None  # the commune's successor too
    origin = Address.model_validate(r1["place_of_origin"])
    assert origin.areas[0].commune_name == "Phường Trúc Bạch"
    assert origin.detail == "Xóm Chùa"
    assert rows["R2"]["place_of_origin"] is None
    assert rows["R2"]["permanent_residence"]["detail"] == "Ngõ 12, ngách 3"
    assert rows["R10"]["date_of_birth"] == "1975-12-31"


def test_a_file_that_cannot_be_read_is_refused_whole(world: World) -> None:
    site = world.site()
    post = world.client.post
    url = f"/v1/offices/{site.office_id}/residents"

    def refused(content: bytes, status: int, error: str, **headers: str) -> str:
        r = post(url, content=content, headers={**world.admin, **headers})
        assert r.status_code == status, r.text
        assert r.json()["error"] == error, r.text
        return str(r.json()["detail"])

    latin1 = (HEADER + "\nR1,A,1990,M,,,,,,,\nR2,Tr\xe2n,1990,M,,,,,,,\n").encode("latin-1")
    assert "line 3" in refused(latin1, 422, "bad_file")
    assert "missing sex" in refused(b"ref,full_name,date_of_birth\nR1,A,1990\n", 422, "bad_file")
    assert "unknown 'phone'" in refused((HEADER + ",phone\n").encode(), 422, "bad_file")
    refused(b"x" * (64 * 1024 + 1), 413, "too_large")
    refused(HEADER.encode(), 415, "unsupported_media_type", **{"Content-Type": "application/json"})
    r = post("/v1/offices/424242/residents", content=HEADER.encode(), headers=world.admin)
    assert r.status_code == 404
    assert r.json()["error"] == "unknown_office"
    assert world.page(site)["residents"] == []


def test_a_station_pages_through_its_own_commune_only(world: World) -> None:
    site, other = world.site(), world.site()
    rows = [f"P{i},Người Số {i},19{50 + i},M,,,,,,," for i in range(7)]
    world.import_csv(site, "\n".join([HEADER, *rows[:4]]))
    world.import_csv(other, "\n".join([HEADER, "P0,Người Khác,1960,F,,,,,,,"]))
    world.import_csv(site, "\n".join([HEADER, *rows]))  # three more, after the other commune's
    seen: list[dict[str, Any]] = []
    cursor, pages = 0, 0
    while True:
        page = world.page(site, cursor, limit=3)
        pages += 1
        seen += page["residents"]
        assert page["next"] >= cursor
        cursor = page["next"]
        if page["complete"]:
            break
    assert pages == 3
    assert [r["ref"] for r in seen] == [f"P{i}" for i in range(7)]
    seqs = [r["seq"] for r in seen]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 7
    assert cursor == seqs[-1]
    # Nothing new: an empty page, the same cursor, complete.
    assert world.page(site, cursor) == {"residents": [], "next": cursor, "complete": True}
    # The other commune's list is its own.
    assert [r["full_name"] for r in world.page(other)["residents"]] == ["Người Khác"]
    for bad in ({"after": -1}, {"limit": 0}, {"limit": 5001}, {"after": "x"}):
        r = world.client.get("/v1/station/residents", params=bad, auth=site.auth)
        assert r.status_code == 422, (bad, r.text)


def test_reimport_changes_only_what_changed(world: World) -> None:
    site = world.site()
    base = [
        "Q1,Lý Văn An,1980,M,,,,,,,",
        "Q2,Mai Thị Bích,1982-04,F,,,,,,,",
        "Q3,Hồ Văn Châu,1979,M,,,,,,,",
    ]
    first = world.import_csv(site, "\n".join([HEADER, *base]))
    cursor = first["next"]
    # The same file again: nothing changes, no seq moves.
    again = world.import_csv(site, "\n".join([HEADER, *base]))
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 3)
    assert again["next"] == cursor
    assert world.page(site, cursor)["residents"] == []
    # One row changed: only it comes in the delta, with a higher seq.
    changed = [base[0], "Q2,Mai Thị Bích,1982-04-17,F,,,,,,,", base[2]]
    result = world.import_csv(site, "\n".join([HEADER, *changed]))
    assert (result["created"], result["updated"], result["unchanged"]) == (0, 1, 2)
    delta = world.page(site, cursor)["residents"]
    assert [(r["ref"], r["date_of_birth"]) for r in delta] == [("Q2", "1982-04-17")]
    cursor = delta[-1]["seq"]
    # check=true validates and counts, writes nothing.
    dry = world.import_csv(site, "\n".join([HEADER, "Q4,Tạ Văn Dũng,1990,M,,,,,,,"]), check="true")
    assert dry["created"] == 1
    assert dry["checked_only"] is True
    assert world.page(site, cursor)["residents"] == []
    # replace: rows absent from the file are removed (and say so); a bad row is not.
    replaced = world.import_csv(
        site, "\n".join([HEADER, base[0], "Q3,Hồ Văn Châu,1979,Z,,,,,,,"]), replace="true"
    )
    assert (replaced["removed"], replaced["rejected"]) == (1, 1)
    delta = world.page(site, cursor)["residents"]
    assert [(r["ref"], r["status"]) for r in delta] == [("Q2", "removed")]
    cursor = delta[-1]["seq"]
    # Back in a later list: pending again, in the next delta.
    world.import_csv(site, "\n".join([HEADER, *changed]))
    delta = world.page(site, cursor)["residents"]
    assert [(r["ref"], r["status"]) for r in delta] == [("Q2", "pending")]


def _upload_for(world: World, site: Site, person: int, ref: str | None) -> str:
    record, tx = registrykit.citizen(person, 0, station_id=site.station_id, fingers=FINGERS)
    demographics = record.demographics.model_copy(update={"resident_list_ref": ref})
    record = record.model_copy(update={"demographics": demographics})
    built = build_package(
        record, tx, signer=site.signer, recipient=world.registry.keys.package_public_key()
    )
    for expected in (201, 200):  # the retry of a lost answer changes nothing
        r = world.client.put(f"/v1/packages/{built.package_id}", content=built.data, auth=site.auth)
        assert r.status_code == expected, r.text
    return built.package_id


def test_resident_status_follows_its_package(world: World) -> None:
    site = world.site()
    listed = world.import_csv(
        site, "\n".join([HEADER, "S1,Chu Văn Sơn,1988,M,,,,,,,", "S2,Kiều Thị Tâm,1991,F,,,,,,,"])
    )
    cursor = listed["next"]
    package_id = _upload_for(world, site, 41, "S1")
    _upload_for(world, site, 42, "NOT-ON-THE-LIST")  # entered as new: no resident changes
    delta = world.page(site, cursor)["residents"]
    assert [(r["ref"], r["status"]) for r in delta] == [("S1", "in_progress")]
    cursor = delta[0]["seq"]
    heartbeat = world.client.post("/v1/station/heartbeat", json=_beat(), auth=site.auth)
    assert heartbeat.json()["residents_next"] == cursor
    world.registry.make_worker("w").drain()
    state = world.client.get(f"/v1/packages/{package_id}", auth=site.auth).json()
    assert state["state"] == "issued", state
    delta = world.page(site, cursor)["residents"]
    assert [(r["ref"], r["status"]) for r in delta] == [("S1", "enrolled")]
    # A re-import of the list keeps the status (and changes nothing).
    again = world.import_csv(
        site, "\n".join([HEADER, "S1,Chu Văn Sơn,1988,M,,,,,,,", "S2,Kiều Thị Tâm,1991,F,,,,,,,"])
    )
    assert again["unchanged"] == 2
    assert world.page(site)["residents"][1]["status"] == "enrolled"


# --- heartbeats ---------------------------------------------------------------------------


def _devices() -> list[dict[str, object]]:
    """Device cells exactly as a station's health board reports them."""
    board = DeviceHealthBoard()
    scanner = board.register(HealthCell("scanner", DeviceKind.FINGERPRINT, "uart"))
    scanner.present(serial="TP5-0042", firmware="2.4.1", model="VN-TP500 R1", baud="57600")
    camera = board.register(HealthCell("camera", DeviceKind.CAMERA, "v4l2"))
    camera.present(model="UVC")
    camera.error("no frame for 5 s")
    return board.as_json()


def _beat(**changes: Any) -> dict[str, Any]:
    beat: dict[str, Any] = {
        "sent_at": "2026-12-01T03:00:00.000Z",
        "software_version": "0.6.0",
        "image_version": "2026.11-rc2",
        "devices": _devices(),
        "queue": {"pending": 12, "oldest_pending_s": 5400.0, "refused": 1},
        "disk": {"free_bytes": 20 * 2**30, "total_bytes": 32 * 2**30},
        "last_sync_at": "2026-12-01T02:55:00Z",
    }
    beat.update(changes)
    return beat


def test_heartbeat_is_kept_and_answers_the_versions(world: World) -> None:
    site = world.site()
    world.operator(site, "heartbeat.officer")
    listed = world.import_csv(site, "\n".join([HEADER, "H1,Lương Văn Hải,1970,M,,,,,,,"]))
    beat = _beat()
    r = world.client.post("/v1/station/heartbeat", json=beat, auth=site.auth)
    assert r.status_code == 200, r.text
    answer = r.json()
    with Session(world.registry.engine) as session:
        kept = session.get_one(Station, site.station_id).last_heartbeat
    assert kept is not None
    assert kept["devices"] == beat["devices"]  # the board's cells, kept as the station sent them
    config = world.client.get("/v1/station/config", auth=site.auth).json()
    staff = world.client.get("/v1/station/operators", auth=site.auth).json()
    assert answer["config_version"] == config["version"]
    assert answer["operators_version"] == staff["version"]
    assert answer["residents_next"] == listed["next"]
    server_time = datetime.fromisoformat(answer["server_time"])
    assert abs((server_time - datetime.now(UTC)).total_seconds()) < 60
    station = world.client.get(f"/v1/stations/{site.station_id}", headers=world.admin).json()
    assert station["last_heartbeat_at"] is not None
    last = station["last_heartbeat"]
    assert last["software_version"] == "0.6.0"
    assert last["image_version"] == "2026.11-rc2"
    assert last["devices_not_ok"] == ["camera"]
    assert last["queue"] == {"pending": 12, "oldest_pending_s": 5400.0, "refused": 1}
    listing = world.client.get("/v1/stations", headers=world.admin).json()
    assert next(s for s in listing if s["id"] == site.station_id)["last_heartbeat"] == last
    metrics = world.client.get("/metrics").text
    assert f'registry_station_heartbeat_age_seconds{{station="{site.station_id}"}}' in metrics
    # The latest replaces the previous one; here, the body the station's own code makes.
    sources = HeartbeatSources(
        software_version="0.6.1",
        image_version=lambda: "x" * 100,
        devices=_devices,
        queue=lambda: {"pending": 0, "oldest_pending_s": None, "refused": 0},
        disk_path=world.tmp,
        last_sync_at=lambda: None,
    )
    world.client.post(
        "/v1/station/heartbeat", json=payload(sources, datetime.now(UTC)), auth=site.auth
    ).raise_for_status()
    station = world.client.get(f"/v1/stations/{site.station_id}", headers=world.admin).json()
    assert station["last_heartbeat"]["software_version"] == "0.6.1"
    for bad in (
        _beat(sent_at="yesterday"),
        _beat(sent_at="2026-12-01T03:00:00"),  # no zone
        _beat(disk={"free_bytes": 2, "total_bytes": 1}),
        _beat(queue={"pending": -1}),
        {"software_version": "0.6.0"},
    ):
        r = world.client.post("/v1/station/heartbeat", json=bad, auth=site.auth)
        assert r.status_code == 422, r.text


def test_a_suspended_station_is_refused_its_sync(world: World) -> None:
    site = world.site()
    world.client.post(
        f"/v1/stations/{site.station_id}/suspend", json={}, headers=world.admin
    ).raise_for_status()
    for path in ("/v1/station/config", "/v1/station/operators", "/v1/station/residents"):
        r = world.client.get(path, auth=site.auth)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "station_suspended", r.text


# --- the command line ---------------------------------------------------------------------


def _cli(world: World, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    settings = world.registry.settings
    env = {
        **os.environ,
        "REGISTRY_DATABASE__URL": settings.database.url.get_secret_value(),
        "REGISTRY_KEYS__PATH": str(settings.keys.path),
        "REGISTRY_BLOBS__PATH": str(world.tmp / "blobs"),
        "REGISTRY_AUTH__JWT_SECRET_FILE": str(world.tmp / "jwt-secret"),
        "REGISTRY_AUTH__ARGON2_TIME_COST": "1",
        "REGISTRY_AUTH__ARGON2_MEMORY_KIB": "1024",
        "REGISTRY_AUTH__ARGON2_PARALLELISM": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "central", "--log-format", "text", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_command_line_imports_residents_and_sets_credentials(world: World) -> None:
    site = world.site()
    csv_file = world.tmp / "dc01.csv"
    csv_file.write_text(
        "\n".join([HEADER, "C1,Đinh Văn Chiến,1966,M,,,,,,,", "C2,Đinh Thị,19xx,F,,,,,,,"]),
        encoding="utf-8",
    )
    done = _cli(world, "residents", "import", str(csv_file), "--office", str(site.office_id))
    assert done.returncode == 1, done.stderr  # one row refused, the other imported
    assert f"{csv_file}:3 (ref C2): date_of_birth" in done.stderr
    assert "1 new" in done.stdout
    assert [r["ref"] for r in world.page(site)["residents"]] == ["C1"]

    world.operator(site, "chien.dinh")
    finger = world.tmp / "right-index.iso"
    finger.write_bytes(base64.b64decode(template(2, 9)))
    done = _cli(
        world,
        "operators",
        "credentials",
        "chien.dinh",
        "--pin",
        "--finger",
        f"2={finger}",
        stdin="7391\n",
    )
    assert done.returncode == 0, done.stderr
    assert "7391" not in done.stdout + done.stderr
    staff = world.client.get("/v1/station/operators", auth=site.auth).json()["operators"]
    chien = next(o for o in staff if o["operator_id"] == "chien.dinh")
    assert PasswordHasher().verify(chien["pin_hash"], "7391")
    assert chien["fingers"] == [{"position": 2, "template": template(2, 9)}]


# --- the change sequence under concurrent writers ----------------------------------------


def _site_rows(engine: Engine) -> tuple[str, str]:
    """An office and a station in commune 00001, written straight to the database."""
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        office = Office(
            name="Công an phường Phúc Xá",
            province_code="01",
            province_name="Thành phố Hà Nội",
            district_code="001",
            district_name="Quận Ba Đình",
            commune_code="00001",
            commune_name="Phường Phúc Xá",
            created_at=now,
        )
        session.add(office)
        session.flush()
        session.add(
            Station(
                id="HN-SEQ-001", office_id=office.id, status=StationStatus.active, created_at=now
            )
        )
    return "HN-SEQ-001", "00001"


def test_a_reader_following_next_never_misses_a_change(engine: Engine) -> None:
    """Writers of every kind at once (imports, ingest-like status marks after an audit
    entry, slow transactions holding a number before they commit) while a station-like
    reader follows ``next``: at the end the reader holds every row at its latest ``seq``.
    A sequence that commits out of order (a database sequence, max + 1 without the lock)
    makes the reader skip rows; locks taken in two orders deadlock on PostgreSQL."""
    station_id, commune = _site_rows(engine)
    office_id = 1
    refs = [f"Z{i}" for i in range(40)]
    lines = [HEADER, *(f"{r},Người {r},1980,M,,,,,,," for r in refs)]
    import_residents(engine, office_id, "\n".join(lines).encode(), datetime.now(UTC), "test")
    stop = threading.Event()
    failures: list[BaseException] = []

    def slow_touch(rng: random.Random) -> None:
        with engine.begin() as connection:
            with resident_sequence(connection) as seq:
                connection.execute(
                    update(Resident)
                    .where(Resident.ref == rng.choice(refs))
                    .values(seq=seq.next(), updated_at=datetime.now(UTC))
                )
            time.sleep(rng.uniform(0, 0.01))  # committed late, holding its number

    def reimport(rng: random.Random) -> None:
        changed = [
            f"{r},Người {r}{'' if rng.random() < 0.8 else ' Mới'},1980,M,,,,,,," for r in refs
        ]
        import_residents(
            engine, office_id, "\n".join([HEADER, *changed]).encode(), datetime.now(UTC), "t"
        )

    def mark(rng: random.Random) -> None:
        with engine.begin() as connection:  # as the ingest: audit entry, then the resident
            append_audit(connection, datetime.now(UTC), "test", "package.received", "x", {})
            status = rng.choice((ResidentStatus.in_progress, ResidentStatus.enrolled))
            mark_resident(connection, station_id, rng.choice(refs), status, datetime.now(UTC))

    def writer(index: int) -> None:
        rng = random.Random(index)
        try:
            for _ in range(15):
                rng.choice((slow_touch, slow_touch, reimport, mark))(rng)
        except BaseException as exc:
            failures.append(exc)

    seen: dict[str, int] = {}
    cursor = 0

    def catch_up() -> None:
        nonlocal cursor
        reader = engine.execution_options(sqlite_begin="DEFERRED")
        while True:
            with Session(reader) as session:
                page = residents_page(session, commune, cursor, 7)
            for row in page["residents"]:
                assert row["seq"] > seen.get(row["ref"], 0)
                seen[row["ref"]] = row["seq"]
            cursor = page["next"]
            if page["complete"]:
                return

    def reader_loop() -> None:
        try:
            while not stop.is_set():
                catch_up()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    reading = threading.Thread(target=reader_loop)
    reading.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    reading.join(timeout=60)
    assert not failures, failures
    catch_up()
    with Session(engine) as session:
        truth = {ref: seq for ref, seq in session.execute(select(Resident.ref, Resident.seq))}
        last = session.execute(select(Resident.seq).order_by(Resident.seq.desc())).first()
    assert seen == truth
    assert last is not None
    assert cursor == last[0]
