"""Security tests of the real registry app: every route against every kind of caller (a
matrix that fails when a route has no entry), forged and replayed uploads, oversized
bodies.

The app is the one ``python -m central serve`` runs (``create_app`` over
``registrykit.registry_settings``), with real users made through the API (one per role)
and real stations onboarded with one-time tokens and CSRs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.routing import Route

from central.app import create_app
from central.db.models import AuditEntry, Package, UserRole
from central.services import Registry
from enrollment.errors import PackageError
from enrollment.keys.software import SoftwareKeySigner
from enrollment.package import BuiltPackage, build_package
from enrollment.request_signing import (
    StationRequestAuth,
    content_digest,
    content_digest_of_chunks,
    sign_request,
)
from tests import registrykit
from tests.registrykit import ADMIN

PASSWORD = "a long enough password"
STATION = "HN-SEC-001"
OTHER_STATION = "HN-SEC-002"
MAX_PACKAGE = 2 * 1024 * 1024  # above a realistic package (~0.5 MB), small enough to exceed
MAX_CHUNK = 64 * 1024

# --- the registry under test -------------------------------------------------------------


@dataclass
class World:
    """One registry with a user per role and two onboarded, active stations."""

    client: TestClient
    registry: Registry
    tmp: Path
    people: dict[str, dict[str, str]]
    """Role name -> Authorization header of a user holding only that role."""
    signers: dict[str, SoftwareKeySigner] = field(default_factory=dict)
    office_id: int = 0
    held: str = ""
    """A package STATION uploaded (the matrix's requests point at it)."""
    counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def admin(self) -> dict[str, str]:
        return self.people["admin"]

    def auth(self, station_id: str = STATION) -> StationRequestAuth:
        return StationRequestAuth(self.signers[station_id], station_id)

    def unique(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}"

    def add_station(self, station_id: str) -> str:
        """Register a station and return its one-time enrollment token."""
        created = self.client.post(
            "/v1/stations",
            json={"station_id": station_id, "office_id": self.office_id},
            headers=self.admin,
        )
        assert created.status_code == 201, created.text
        token = self.client.post(f"/v1/stations/{station_id}/tokens", json={}, headers=self.admin)
        assert token.status_code == 201, token.text
        return str(token.json()["token"])

    def onboard(self, station_id: str) -> SoftwareKeySigner:
        """Register, enroll (token + CSR) and keep the signer of a new active station."""
        token = self.add_station(station_id)
        key = ec.generate_private_key(ec.SECP256R1())
        enrolled = self.client.post(
            "/v1/enroll", json={"token": token, "csr": registrykit.csr_for(key, station_id)}
        )
        assert enrolled.status_code == 201, enrolled.text
        cert = x509.load_pem_x509_certificate(enrolled.json()["certificate"].encode())
        self.signers[station_id] = SoftwareKeySigner(key, cert)
        return self.signers[station_id]

    def package(
        self,
        station_id: str = STATION,
        *,
        package_id: str | None = None,
        recipient: ec.EllipticCurvePublicKey | None = None,
        signer: SoftwareKeySigner | None = None,
    ) -> BuiltPackage:
        """A realistic package (cached record of person 6) signed afresh: new id, new bytes."""
        record, tx = registrykit.citizen(6, 0, station_id=station_id, fingers=(1, 2))
        return build_package(
            record,
            tx,
            signer=signer or self.signers[station_id],
            recipient=recipient or self.registry.keys.package_public_key(),
            package_id=package_id,
        )


def login(client: TestClient, username: str, password: str) -> dict[str, str]:
    r = client.post("/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def make_world(tmp: Path, database_url: str | None = None) -> Iterator[World]:
    settings = registrykit.registry_settings(
        tmp,
        database_url,
        ingest={"max_package_bytes": MAX_PACKAGE, "max_chunk_bytes": MAX_CHUNK},
    )
    with TestClient(create_app(settings)) as client:
        registry: Registry = client.app.state.registry  # type: ignore[attr-defined]
        admin = login(client, *ADMIN)
        people = {"admin": admin}
        for role in UserRole:
            if role is UserRole.admin:
                continue
            made = client.post(
                "/v1/users",
                json={"username": f"only-{role.value}", "password": PASSWORD, "roles": [role]},
                headers=admin,
            )
            assert made.status_code == 201, made.text
            people[role.value] = login(client, f"only-{role.value}", PASSWORD)
        world = World(client, registry, tmp, people)
        office = client.post(
            "/v1/offices",
            json={"name": "Công an phường Phúc Xá", "commune_code": "00001"},
            headers=admin,
        )
        assert office.status_code == 201, office.text
        world.office_id = int(office.json()["id"])
        world.onboard(STATION)
        world.onboard(OTHER_STATION)
        yield world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("security"))


# --- the role matrix ---------------------------------------------------------------------

ANONYMOUS = "anonymous"
SIGNED_STATION = "station"
ROLES = tuple(r.value for r in UserRole)
CALLERS = (ANONYMOUS, *ROLES, SIGNED_STATION)
EVERYONE = frozenset(CALLERS)
ANY_PERSON = frozenset(ROLES)
READERS = frozenset({"admin", "supervisor", "auditor"})
REPORT_READERS = frozenset({"admin", "supervisor", "auditor", "reporting"})
CASE_READERS = frozenset({"admin", "adjudicator", "auditor"})


@dataclass(frozen=True)
class Call:
    """One request of the matrix (the path already filled in)."""

    path: str
    json: Any = None
    data: Mapping[str, str] | None = None
    content: bytes | None = None


Builder = Callable[[World, str], Call]
"""Makes a request for (world, caller)."""


@dataclass(frozen=True)
class Rule:
    """Who may call an endpoint, how to call it, and what an admitted caller gets."""

    allowed: frozenset[str]
    ok: int
    """The status an admitted caller gets with the request ``build`` makes."""
    build: Builder | None = None
    """Makes the request (fresh bodies, targets); None: the path template as it is."""
    public: str = ""
    """Why an endpoint admits everyone (empty for protected ones)."""


def _fixed(path: str, **kw: Any) -> Builder:
    return lambda w, caller: Call(path, **kw)


def _new_package(w: World, caller: str) -> Call:
    built = w.package()
    return Call(f"/v1/packages/{built.package_id}", content=built.data)


def _same_password(w: World, caller: str) -> Call:
    """Change one's password to itself: the check runs, nothing changes for later calls."""
    password = ADMIN[1] if caller == "admin" else PASSWORD
    return Call("/v1/auth/password", json={"current_password": password, "new_password": password})


def _enroll(w: World, caller: str) -> Call:
    station_id = w.unique("HN-ENR-")
    token = w.add_station(station_id)
    key = ec.generate_private_key(ec.SECP256R1())
    return Call("/v1/enroll", json={"token": token, "csr": registrykit.csr_for(key, station_id)})


def _new_operator(w: World) -> str:
    username = w.unique("matrix-officer-")
    made = w.client.post(
        "/v1/operators",
        json={
            "office_id": w.office_id,
            "username": username,
            "full_name": "Phan Văn Khải",
            "role": "officer",
        },
        headers=w.admin,
    )
    assert made.status_code == 201, made.text
    return username


def _operator_call(action: str, **kw: Any) -> Builder:
    """A request on an operator made for it (so each caller finds the same starting point)."""
    return lambda w, caller: Call(f"/v1/operators/{_new_operator(w)}/{action}", **kw)


HEARTBEAT = {
    "sent_at": "2026-12-01T03:00:00.000Z",
    "software_version": "0.6.0",
    "image_version": None,
    "devices": [{"name": "scanner", "ok": True, "present": True}],
    "queue": {"pending": 0, "oldest_pending_s": None, "refused": 0},
    "disk": {"free_bytes": 1, "total_bytes": 2},
    "last_sync_at": None,
}
RESIDENTS_CSV = "ref,full_name,date_of_birth,sex\nM1,Đoàn Thị Mai,1990-05-06,F\n".encode()

HELD = "/v1/packages/{held}"  # filled with a package the station uploaded at set-up

REPORTS = (
    "enrollments/daily",
    "progress",
    "duplicates",
    "adjudication",
    "stations",
    "pipeline",
    "rejections",
)

# Every route of the app, by (method, path template). A route missing here fails
# test_every_route_has_a_rule: new endpoints must say who may call them.
TABLE: dict[tuple[str, str], Rule] = {
    # Public, and why.
    ("GET", "/healthz"): Rule(EVERYONE, 200, public="liveness probe for the orchestrator"),
    ("GET", "/readyz"): Rule(EVERYONE, 200, public="readiness probe for the load balancer"),
    ("GET", "/metrics"): Rule(
        EVERYONE, 200, public="Prometheus scrape; counts only, no personal data"
    ),
    ("GET", "/openapi.json"): Rule(EVERYONE, 200, public="the API's description"),
    ("GET", "/docs"): Rule(EVERYONE, 200, public="interactive docs of the same description"),
    ("GET", "/docs/oauth2-redirect"): Rule(EVERYONE, 200, public="the docs' OAuth2 helper"),
    ("GET", "/redoc"): Rule(EVERYONE, 200, public="the same description, another viewer"),
    ("POST", "/v1/auth/token"): Rule(
        EVERYONE,
        200,
        _fixed("/v1/auth/token", data={"username": ADMIN[0], "password": ADMIN[1]}),
        public="the login itself: the password is the credential",
    ),
    ("POST", "/v1/enroll"): Rule(
        EVERYONE,
        201,
        _enroll,
        public="a station's first contact: the one-time token is the credential",
    ),
    # Station updates; 404 here: this registry serves no updates folder (the served
    # repository is tested in tests/test_image_release.py).
    ("GET", "/v1/updates/metadata/{name}"): Rule(
        EVERYONE,
        404,
        _fixed("/v1/updates/metadata/timestamp.json"),
        public="station update metadata (TUF): signed, checked by the station",
    ),
    ("GET", "/v1/updates/targets/{name}"): Rule(
        EVERYONE,
        404,
        _fixed("/v1/updates/targets/0.vn-eid-station-1.0.0.raucb"),
        public="station update bundles: their hash is pinned by signed metadata",
    ),
    # Any person.
    ("GET", "/v1/auth/me"): Rule(ANY_PERSON, 200),
    ("POST", "/v1/auth/password"): Rule(
        ANY_PERSON,
        204,
        _same_password,
    ),
    # Accounts and the audit log.
    ("GET", "/v1/users"): Rule(frozenset({"admin", "auditor"}), 200),
    ("POST", "/v1/users"): Rule(
        frozenset({"admin"}),
        201,
        lambda w, caller: Call(
            "/v1/users",
            json={"username": w.unique("new-user-"), "password": PASSWORD, "roles": ["auditor"]},
        ),
    ),
    ("POST", "/v1/users/{username}/disable"): Rule(
        frozenset({"admin"}), 200, _fixed("/v1/users/to-disable/disable")
    ),
    ("GET", "/v1/audit/entries"): Rule(frozenset({"admin", "auditor"}), 200),
    ("GET", "/v1/audit/verify"): Rule(frozenset({"admin", "auditor"}), 200),
    # Onboarding.
    ("POST", "/v1/offices"): Rule(
        frozenset({"admin"}),
        201,
        _fixed("/v1/offices", json={"name": "Công an xã", "commune_code": "00004"}),
    ),
    ("GET", "/v1/offices"): Rule(READERS, 200),
    ("POST", "/v1/stations"): Rule(
        frozenset({"admin"}),
        201,
        lambda w, caller: Call(
            "/v1/stations", json={"station_id": w.unique("HN-NEW-"), "office_id": w.office_id}
        ),
    ),
    ("GET", "/v1/stations"): Rule(READERS, 200),
    ("GET", "/v1/stations/{station_id}"): Rule(READERS, 200, _fixed(f"/v1/stations/{STATION}")),
    ("POST", "/v1/stations/{station_id}/tokens"): Rule(
        frozenset({"admin"}), 201, _fixed("/v1/stations/HN-TARGET-1/tokens", json={})
    ),
    ("POST", "/v1/stations/{station_id}/suspend"): Rule(
        frozenset({"admin", "supervisor"}),
        200,
        _fixed("/v1/stations/HN-TARGET-1/suspend", json={"reason": "matrix"}),
    ),
    ("POST", "/v1/stations/{station_id}/resume"): Rule(
        frozenset({"admin"}), 200, _fixed("/v1/stations/HN-TARGET-1/resume", json={})
    ),
    ("POST", "/v1/stations/{station_id}/revoke"): Rule(
        frozenset({"admin"}), 200, _fixed("/v1/stations/HN-TARGET-2/revoke", json={})
    ),
    ("POST", "/v1/operators"): Rule(
        frozenset({"admin"}),
        201,
        lambda w, caller: Call(
            "/v1/operators",
            json={
                "office_id": w.office_id,
                "username": w.unique("officer-"),
                "full_name": "Nguyễn Văn An",
                "role": "officer",
            },
        ),
    ),
    ("GET", "/v1/operators"): Rule(READERS, 200),
    ("PUT", "/v1/operators/{operator_id}/credentials"): Rule(
        frozenset({"admin"}), 200, _operator_call("credentials", json={"pin": "4826"})
    ),
    ("POST", "/v1/operators/{operator_id}/disable"): Rule(
        frozenset({"admin"}), 200, _operator_call("disable")
    ),
    ("POST", "/v1/operators/{operator_id}/enable"): Rule(
        frozenset({"admin"}), 200, _operator_call("enable")
    ),
    ("POST", "/v1/offices/{office_id}/residents"): Rule(
        frozenset({"admin"}),
        200,
        lambda w, caller: Call(f"/v1/offices/{w.office_id}/residents", content=RESIDENTS_CSV),
    ),
    # Stations' own endpoints: signed requests of an active station only.
    ("GET", "/v1/station/trust"): Rule(frozenset({SIGNED_STATION}), 200),
    ("GET", "/v1/station/config"): Rule(frozenset({SIGNED_STATION}), 200),
    ("GET", "/v1/station/operators"): Rule(frozenset({SIGNED_STATION}), 200),
    ("GET", "/v1/station/residents"): Rule(frozenset({SIGNED_STATION}), 200),
    ("POST", "/v1/station/heartbeat"): Rule(
        frozenset({SIGNED_STATION}), 200, _fixed("/v1/station/heartbeat", json=HEARTBEAT)
    ),
    ("PUT", "/v1/packages/{package_id}"): Rule(frozenset({SIGNED_STATION}), 201, _new_package),
    ("GET", "/v1/packages/{package_id}"): Rule(frozenset({SIGNED_STATION}), 200, _fixed(HELD)),
    ("GET", "/v1/packages/{package_id}/issuance"): Rule(
        frozenset({SIGNED_STATION}), 409, _fixed(HELD + "/issuance")
    ),
    ("POST", "/v1/packages/{package_id}/card"): Rule(
        frozenset({SIGNED_STATION}), 409, _fixed(HELD + "/card", json={"card_serial": "C-1"})
    ),
    # The registry's people on packages and cases.
    ("GET", "/v1/registry/packages"): Rule(READERS, 200),
    ("GET", "/v1/registry/packages/{package_id}"): Rule(
        READERS, 200, _fixed("/v1/registry/packages/{held}")
    ),
    ("GET", "/v1/cases"): Rule(CASE_READERS, 200),
    ("GET", "/v1/cases/{case_id}"): Rule(CASE_READERS, 404, _fixed("/v1/cases/424242")),
    ("POST", "/v1/cases/{case_id}/decision"): Rule(
        frozenset({"adjudicator"}),
        404,
        _fixed("/v1/cases/424242/decision", json={"decision": "different"}),
    ),
    # The work queue: failed jobs and retrying them.
    ("GET", "/v1/registry/jobs"): Rule(READERS, 200),
    ("POST", "/v1/registry/jobs/{job_id}/retry"): Rule(
        frozenset({"admin", "supervisor"}), 404, _fixed("/v1/registry/jobs/424242/retry")
    ),
    # Reports (JSON and CSV).
    **{("GET", f"/v1/reports/{name}"): Rule(REPORT_READERS, 200) for name in REPORTS},
    **{("GET", f"/v1/reports/{name}.csv"): Rule(REPORT_READERS, 200) for name in REPORTS},
}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) the app answers; HEAD comes with GET.

    ``iter_route_contexts`` is how FastAPI's own OpenAPI generator walks included routers
    (app.routes holds them unexpanded); it also yields the routes left out of the schema.
    """
    found: set[tuple[str, str]] = set()
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, Route):  # a Mount would hide its routes
            raise AssertionError(f"{context.original_route!r}: the matrix knows plain routes")
        assert context.path is not None
        for method in context.methods or {"GET"}:
            if method != "HEAD":
                found.add((method, context.path))
    return found


def test_every_route_has_a_rule(world: World) -> None:
    app: FastAPI = world.client.app  # type: ignore[assignment]
    routes = app_routes(app)
    assert not routes - TABLE.keys(), "routes without a rule in TABLE: say who may call them"
    assert not TABLE.keys() - routes, "rules for routes the app no longer has"
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert documented <= routes
    assert len(routes) > len(documented)  # the walk sees the undocumented ones too


@pytest.fixture(scope="module")
def matrix_world(world: World) -> World:
    """The world plus what the matrix's requests point at: an uploaded package, a user
    to disable, two target stations."""
    built = world.package()
    held = world.client.put(
        f"/v1/packages/{built.package_id}", content=built.data, auth=world.auth()
    )
    assert held.status_code == 201, held.text
    world.held = built.package_id
    made = world.client.post(
        "/v1/users",
        json={"username": "to-disable", "password": PASSWORD, "roles": ["reporting"]},
        headers=world.admin,
    )
    assert made.status_code == 201, made.text
    world.add_station("HN-TARGET-1")
    world.add_station("HN-TARGET-2")
    return world


def send(world: World, method: str, call: Call, caller: str) -> httpx.Response:
    path = call.path.replace("{held}", world.held)
    headers: dict[str, str] = {}
    auth: httpx.Auth | None = None
    if caller == SIGNED_STATION:
        auth = world.auth()
    elif caller != ANONYMOUS:
        headers = world.people[caller]
    response: httpx.Response = world.client.request(
        method,
        path,
        json=call.json,
        data=call.data,
        content=call.content,
        headers=headers,
        auth=auth,
    )
    return response


def expected_refusal(rule: Rule, caller: str) -> int:
    """401 without credentials of the kind the endpoint takes, 403 with the wrong role."""
    takes_people = bool(rule.allowed & ANY_PERSON)
    if caller == ANONYMOUS or (caller == SIGNED_STATION) == takes_people:
        return 401
    return 403


@pytest.mark.parametrize("endpoint", sorted(TABLE), ids=lambda e: f"{e[0]} {e[1]}")
def test_role_matrix(matrix_world: World, endpoint: tuple[str, str]) -> None:
    method, template = endpoint
    rule = TABLE[endpoint]
    build = rule.build or _fixed(template)
    for caller in CALLERS:
        response = send(matrix_world, method, build(matrix_world, caller), caller)
        where = f"{method} {template} as {caller}: {response.status_code} {response.text[:300]}"
        if caller in rule.allowed:
            assert response.status_code == rule.ok, where
        else:
            assert response.status_code == expected_refusal(rule, caller), where
            assert response.json()["error"] in {
                "not_authenticated",
                "signature_missing",
                "forbidden",
            }, where


def test_public_endpoints_say_why() -> None:
    for endpoint, rule in TABLE.items():
        assert (rule.allowed == EVERYONE) == bool(rule.public), endpoint


def test_a_station_sees_only_its_own_packages(matrix_world: World) -> None:
    w = matrix_world
    held = w.held
    other = w.auth(OTHER_STATION)
    for path in (f"/v1/packages/{held}", f"/v1/packages/{held}/issuance"):
        response = w.client.get(path, auth=other)
        assert response.status_code == 404, response.text
    card = w.client.post(f"/v1/packages/{held}/card", json={"card_serial": "X-1"}, auth=other)
    assert card.status_code == 404, card.text
    # Its own view of the same package works (the 404 is not a broken endpoint).
    assert w.client.get(f"/v1/packages/{held}", auth=w.auth()).status_code == 200


def test_a_disabled_user_or_a_forged_token_is_refused(world: World) -> None:
    w = world
    made = w.client.post(
        "/v1/users",
        json={"username": "short-lived", "password": PASSWORD, "roles": ["admin"]},
        headers=w.admin,
    )
    assert made.status_code == 201, made.text
    token = login(w.client, "short-lived", PASSWORD)
    assert w.client.get("/v1/stations", headers=token).status_code == 200
    w.client.post("/v1/users/short-lived/disable", headers=w.admin).raise_for_status()
    refused = w.client.get("/v1/stations", headers=token)
    assert refused.status_code == 401
    assert refused.json()["error"] == "account_disabled"
    header, payload, _ = w.admin["Authorization"].removeprefix("Bearer ").split(".")
    forged = {"Authorization": f"Bearer {header}.{payload}.AAAA"}
    refused = w.client.get("/v1/stations", headers=forged)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_token"


# --- forged and replayed uploads ---------------------------------------------------------


def refused(response: httpx.Response, status: int, *errors: str) -> str:
    assert response.status_code == status, response.text
    error = str(response.json()["error"])
    assert error in errors, response.text
    assert response.json()["detail"]
    return error


def stored(world: World, package_id: str) -> tuple[bool, list[str]]:
    """Whether a package row exists, and the blobs held under packages/ for that id."""
    with Session(world.registry.engine) as session:
        row = session.get(Package, uuid.UUID(package_id))
    blobs = [k for k in world.registry.blobs.keys("packages/") if f"/{package_id}/" in k]
    return row is not None, blobs


def audit_of(world: World, package_id: str) -> list[AuditEntry]:
    with Session(world.registry.engine) as session:
        return list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.subject == f"package:{package_id}")
                .order_by(AuditEntry.seq)
            )
        )


def assert_refused_and_nothing_stored(
    world: World, package_id: str, *, audited_code: str | None
) -> None:
    row, blobs = stored(world, package_id)
    assert not row, f"a package row for {package_id}"
    assert not blobs, blobs
    entries = audit_of(world, package_id)
    if audited_code is None:
        assert entries == []
    else:
        assert [e.action for e in entries] == ["package.refused"]
        assert entries[0].details["code"] == audited_code
        assert entries[0].actor == f"station:{STATION}"


def put(world: World, package_id: str, data: bytes, auth: httpx.Auth | None = None) -> Any:
    return world.client.put(f"/v1/packages/{package_id}", content=data, auth=auth or world.auth())


def _error_classes(base: type[PackageError]) -> Iterator[type[PackageError]]:
    yield base
    for sub in base.__subclasses__():
        yield from _error_classes(sub)


# The package format's refusal codes, spelled as the API answers them.
PACKAGE_FORMAT_CODES = {cls.code.replace("-", "_") for cls in _error_classes(PackageError)}


def test_package_signed_by_another_station(world: World) -> None:
    foreign = world.package(OTHER_STATION)  # OTHER_STATION's key, uploaded by STATION
    refused(put(world, foreign.package_id, foreign.data), 403, "signer_not_station")
    assert_refused_and_nothing_stored(world, foreign.package_id, audited_code="signer-not-station")


def test_package_tampered_after_signing(world: World) -> None:
    built = world.package()
    data = bytearray(built.data)
    data[len(data) // 2] ^= 0x01
    code = refused(put(world, built.package_id, bytes(data)), 422, *PACKAGE_FORMAT_CODES)
    assert_refused_and_nothing_stored(world, built.package_id, audited_code=code.replace("_", "-"))


def test_package_encrypted_to_another_registry(world: World) -> None:
    elsewhere = ec.generate_private_key(ec.SECP256R1()).public_key()
    built = world.package(recipient=elsewhere)
    code = refused(
        put(world, built.package_id, built.data), 422, "wrong_recipient", "decryption_failed"
    )
    assert_refused_and_nothing_stored(world, built.package_id, audited_code=code.replace("_", "-"))


def test_package_id_in_the_url_differs_from_the_one_inside(world: World) -> None:
    built = world.package()
    url_id = world.package().package_id  # a valid UUIDv7, not the one inside
    refused(put(world, url_id, built.data), 422, "package_id_mismatch")
    assert_refused_and_nothing_stored(world, url_id, audited_code="package-id-mismatch")
    assert_refused_and_nothing_stored(world, built.package_id, audited_code=None)


def test_request_signed_with_another_key(world: World) -> None:
    built = world.package()
    impostor = SoftwareKeySigner(
        ec.generate_private_key(ec.SECP256R1()), world.signers[STATION].certificate()
    )
    response = put(world, built.package_id, built.data, StationRequestAuth(impostor, STATION))
    refused(response, 401, "bad_signature")
    assert "content-digest" in response.headers["Accept-Signature"]
    assert_refused_and_nothing_stored(world, built.package_id, audited_code=None)


def signed_request(
    world: World, method: str, path: str, body: bytes, station_id: str = STATION
) -> httpx.Request:
    request: httpx.Request = world.client.build_request(method, path, content=body)
    request.headers["Content-Digest"] = content_digest(body)
    sign_request(request, world.signers[station_id], station_id)
    return request


def test_replayed_upload_is_refused(world: World) -> None:
    built = world.package()
    first = signed_request(world, "PUT", f"/v1/packages/{built.package_id}", built.data)
    captured = dict(first.headers)
    accepted = world.client.send(first)
    assert accepted.status_code == 201, accepted.text
    # The exact captured request again: headers, signature, nonce, body.
    replay = world.client.put(
        f"/v1/packages/{built.package_id}", content=built.data, headers=captured
    )
    refused(replay, 401, "replayed_request")
    # And against another endpoint of the same station, a captured GET.
    status = signed_request(world, "GET", f"/v1/packages/{built.package_id}", b"")
    assert world.client.send(status).status_code == 200
    again = world.client.get(f"/v1/packages/{built.package_id}", headers=dict(status.headers))
    refused(again, 401, "replayed_request")
    # The replay stored nothing more: one received entry, one blob.
    _, blobs = stored(world, built.package_id)
    assert len(blobs) == 1
    assert [e.action for e in audit_of(world, built.package_id)] == ["package.received"]


def test_body_not_matching_its_content_digest(world: World) -> None:
    built, other = world.package(), world.package()
    request = signed_request(world, "PUT", f"/v1/packages/{built.package_id}", built.data)
    headers = {k: v for k, v in request.headers.items() if k != "content-length"}
    response = world.client.put(
        f"/v1/packages/{built.package_id}", content=other.data, headers=headers
    )
    refused(response, 400, "content_digest_mismatch")
    assert_refused_and_nothing_stored(world, built.package_id, audited_code=None)


def test_reused_package_id_with_another_body(world: World) -> None:
    first = world.package()
    assert put(world, first.package_id, first.data).status_code == 201
    second = world.package(package_id=first.package_id)  # same id, new bytes
    assert second.data != first.data
    refused(put(world, first.package_id, second.data), 409, "package_id_conflict")
    _, blobs = stored(world, first.package_id)
    assert blobs == [k for k in blobs if k.endswith(hashlib.sha256(first.data).hexdigest())]
    assert len(blobs) == 1
    # The original is untouched: the same body still answers its receipt.
    assert put(world, first.package_id, first.data).status_code == 200


@pytest.mark.parametrize(
    ("action", "error"), [("suspend", "station_suspended"), ("revoke", "station_revoked")]
)
def test_inactive_station_cannot_upload(world: World, action: str, error: str) -> None:
    station_id = world.unique("HN-OFF-")
    world.onboard(station_id)
    built = world.package(station_id)
    changed = world.client.post(f"/v1/stations/{station_id}/{action}", json={}, headers=world.admin)
    assert changed.status_code == 200, changed.text
    response = put(world, built.package_id, built.data, world.auth(station_id))
    refused(response, 403, error)
    row, blobs = stored(world, built.package_id)
    assert not row
    assert not blobs
    assert audit_of(world, built.package_id) == []


# --- oversized bodies --------------------------------------------------------------------


def asgi_put(
    world: World, request: httpx.Request, chunks: list[bytes]
) -> tuple[int, dict[str, Any], int]:
    """Send a signed request straight to the app over ASGI, the body in ``chunks``, and
    count how many chunks the app pulled: (status, JSON body, chunks read)."""
    app = world.client.app
    pulled = 0
    answer: dict[str, Any] = {"status": 0, "body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {
                "type": "http.request",
                "body": chunks[pulled - 1],
                "more_body": pulled < len(chunks),
            }
        return {"type": "http.disconnect"}

    async def send_(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.url.path,
        "raw_path": request.url.raw_path.split(b"?")[0],
        "query_string": request.url.query,
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in request.headers.raw],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    anyio.run(app, scope, receive, send_)  # type: ignore[arg-type]
    return int(answer["status"]), json.loads(answer["body"]), pulled


def test_declared_length_above_the_limit_is_refused_before_reading(world: World) -> None:
    package_id = world.package().package_id
    chunks = [b"x" * (256 * 1024)] * 10  # 2.5 MiB > MAX_PACKAGE
    body = b"".join(chunks)
    request = signed_request(world, "PUT", f"/v1/packages/{package_id}", body)
    assert int(request.headers["content-length"]) > MAX_PACKAGE
    status, answer, pulled = asgi_put(world, request, chunks)
    assert (status, answer["error"]) == (413, "too_large"), answer
    assert pulled == 0, "the body was read before the declared length was refused"
    assert_refused_and_nothing_stored(world, package_id, audited_code=None)


def test_streamed_body_growing_past_the_limit_is_refused_while_reading(world: World) -> None:
    package_id = world.package().package_id
    chunks = [b"y" * (256 * 1024)] * 40  # 10 MiB, no Content-Length
    request = signed_request(world, "PUT", f"/v1/packages/{package_id}", b"")
    request.headers["Content-Digest"] = content_digest_of_chunks(chunks)
    sign_request(request, world.signers[STATION], STATION)  # re-sign over the real digest
    del request.headers["content-length"]
    status, answer, pulled = asgi_put(world, request, chunks)
    assert (status, answer["error"]) == (413, "body_too_large"), answer
    assert pulled <= MAX_PACKAGE // len(chunks[0]) + 1, f"read {pulled} of {len(chunks)} chunks"
    assert_refused_and_nothing_stored(world, package_id, audited_code=None)

    # The same through HTTP (httpx sends a generator as Transfer-Encoding: chunked).
    response = world.client.put(
        f"/v1/packages/{package_id}",
        content=iter(chunks),
        headers={"Content-Digest": content_digest_of_chunks(chunks)},
        auth=world.auth(),
    )
    refused(response, 413, "body_too_large")


def test_resumable_chunks_above_the_limits(world: World) -> None:
    built = world.package()
    whole = hashlib.sha256(built.data).hexdigest()
    base = f"/v1/packages/{built.package_id}"
    chunk = built.data[: MAX_CHUNK + 1]
    response = world.client.put(
        f"{base}?offset=0&length={len(built.data)}&sha256={whole}", content=chunk, auth=world.auth()
    )
    refused(response, 413, "too_large", "body_too_large")
    # A declared total above the package limit, with a chunk of allowed size.
    response = world.client.put(
        f"{base}?offset=0&length={MAX_PACKAGE + 1}&sha256={whole}",
        content=built.data[:1024],
        auth=world.auth(),
    )
    refused(response, 413, "too_large")
    # Within the limits it goes through (the refusals were about size, not the rest).
    offset = 0
    while offset < len(built.data):
        part = built.data[offset : offset + MAX_CHUNK]
        response = world.client.put(
            f"{base}?offset={offset}&length={len(built.data)}&sha256={whole}",
            content=part,
            auth=world.auth(),
        )
        offset += len(part)
        # The last chunk answers the receipt (201: stored now), the others where to continue (202).
        assert response.status_code == (202 if offset < len(built.data) else 201), response.text
    assert response.json()["state"] == "received"


FIVE_MB = "ư" * (5 * 1024 * 1024 // 2)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/offices", {"name": FIVE_MB, "commune_code": "00001"}),
        ("/v1/stations", {"station_id": FIVE_MB, "office_id": 1}),
        (
            "/v1/operators",
            {"office_id": 1, "username": "x1", "full_name": FIVE_MB, "role": "officer"},
        ),
        ("/v1/users", {"username": "huge", "password": FIVE_MB, "roles": ["auditor"]}),
        ("/v1/stations/HN-TARGET-1/suspend", {"reason": FIVE_MB}),
        ("/v1/cases/1/decision", {"decision": "different", "reason": FIVE_MB}),
        ("/v1/enroll", {"token": "t" * 20, "csr": FIVE_MB}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_huge_json_bodies_get_a_4xx(world: World, path: str, body: dict[str, Any]) -> None:
    headers = world.people["adjudicator" if "decision" in path else "admin"]
    response = world.client.post(path, json=body, headers=headers)
    assert 400 <= response.status_code < 500, response.text[:500]


def test_huge_station_json_body_is_refused(world: World) -> None:
    held = world.package()
    response = world.client.post(
        f"/v1/packages/{held.package_id}/card",
        json={"card_serial": FIVE_MB},
        auth=world.auth(),
    )
    refused(response, 413, "body_too_large")


def test_huge_login_form_gets_a_4xx(world: World) -> None:
    response = world.client.post("/v1/auth/token", data={"username": "nobody", "password": FIVE_MB})
    assert 400 <= response.status_code < 500, response.text[:500]


# --- regressions: 5xx found by schemathesis and by probing PostgreSQL --------------------

BIG = 2**64


@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    [
        ("admin", "GET", f"/v1/audit/entries?after_seq={BIG}", None),
        ("admin", "GET", f"/v1/operators?office_id={BIG}", None),
        ("admin", "POST", "/v1/stations", {"station_id": "HN-BIG-1", "office_id": BIG}),
        (
            "admin",
            "POST",
            "/v1/operators",
            {"office_id": BIG, "username": "big1", "full_name": "B", "role": "officer"},
        ),
        ("adjudicator", "GET", f"/v1/cases/{BIG}", None),
        ("adjudicator", "POST", f"/v1/cases/{2**31}/decision", {"decision": "different"}),
    ],
)
def test_huge_integers_are_a_422(
    world: World, role: str, method: str, path: str, body: Any
) -> None:
    """These reached the driver (SQLite: OverflowError; PostgreSQL: integer out of range)."""
    response = world.client.request(method, path, json=body, headers=world.people[role])
    assert response.status_code == 422, response.text


@pytest.fixture
def pg_world(tmp_path: Path, postgres_db: str) -> Iterator[World]:
    yield from make_world(tmp_path, postgres_db)


def test_values_postgresql_refuses_are_a_422(pg_world: World) -> None:
    """PostgreSQL refuses NUL characters in text (psycopg DataError), and a string longer
    than its column; both used to answer 500."""
    w = pg_world
    probes: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/offices", {"json": {"name": "a\x00b", "commune_code": "00001"}}),
        (
            "POST",
            "/v1/users",
            {
                "json": {
                    "username": "nul",
                    "full_name": "a\x00",
                    "password": PASSWORD,
                    "roles": ["auditor"],
                }
            },
        ),
        (
            "POST",
            "/v1/users",
            {
                "json": {
                    "username": "long",
                    "full_name": "x" * 201,
                    "password": PASSWORD,
                    "roles": ["auditor"],
                }
            },
        ),
        (
            "POST",
            "/v1/operators",
            {
                "json": {
                    "office_id": w.office_id,
                    "username": "op1",
                    "full_name": "a\x00",
                    "role": "officer",
                }
            },
        ),
        ("GET", "/v1/audit/entries", {"params": {"subject": "a\x00"}}),
        ("GET", "/v1/stations/A%00B", {}),
        ("POST", "/v1/users/a%00b/disable", {}),
    ]
    for method, path, kw in probes:
        response = w.client.request(method, path, headers=w.admin, **kw)
        assert response.status_code == 422, (method, path, response.text)
    # The login form is anonymous: the most exposed of them.
    login_nul = w.client.post("/v1/auth/token", data={"username": "a\x00", "password": "b"})
    assert login_nul.status_code == 422, login_nul.text
    assert login_nul.json()["error"] == "invalid_value"
    # The registry keeps working after each refusal.
    assert w.client.get("/v1/stations", headers=w.admin).status_code == 200
