"""Access control of the registry API (central.auth) through a small FastAPI app built here:
people's password flow and tokens, every endpoint against every role, stations' signed
requests (software and SoftHSM keys; forged, replayed, stale, oversized), the nonce store on
SQLite and PostgreSQL, audit verification, and the users / audit commands."""

from __future__ import annotations

import argparse
import io
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from central.auth.access import Access
from central.auth.audit import verify_audit_log
from central.auth.cli import add_audit_parser, add_users_parser, run_audit, run_users
from central.auth.deps import Principal, require_user
from central.auth.routers import install
from central.auth.settings import AuthSettings, signing_secret
from central.auth.stations import StationPrincipal, remember_nonce, require_station
from central.auth.users import Passwords, create_user, ensure_admin, password_hasher
from central.config import RegistrySettings
from central.db import migrate
from central.db.engine import DatabaseSettings, make_engine
from central.db.models import (
    AuditEntry,
    Office,
    RequestNonce,
    Station,
    StationStatus,
    User,
    UserRole,
)
from central.db.ops import append_audit
from enrollment.keys import Signer, key_id
from enrollment.keys.pkcs11 import Pkcs11Signer
from enrollment.keys.software import SoftwareKeySigner
from enrollment.pki import issue_station_certificate, make_station_ca
from enrollment.request_signing import (
    StationRequestAuth,
    content_digest,
    content_digest_of_chunks,
    sign_request,
)
from tests.conftest import SoftHsmToken

PASSWORD = "correct horse battery staple"
# Cheap Argon2 for tests (the parameters, not the algorithm, set the cost).
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 64, "argon2_parallelism": 1}
SECRET = SecretStr("s" * 48)
MAX_BODY = 1024


class Clock:
    """The registry's clock: real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


# --- The app under test: sample endpoints that follow docs/registry-access.md -----------

A, S, J, U, R = (
    UserRole.admin,
    UserRole.supervisor,
    UserRole.adjudicator,
    UserRole.auditor,
    UserRole.reporting,
)
ENDPOINTS: dict[tuple[str, str], frozenset[UserRole]] = {
    ("GET", "/t/packages"): frozenset({A, S, U}),
    ("GET", "/t/stations"): frozenset({A, S, U}),
    ("POST", "/t/stations/HN-BD-001/suspend"): frozenset({A, S}),
    ("POST", "/t/stations"): frozenset({A}),
    ("POST", "/t/offices"): frozenset({A}),
    ("GET", "/t/cases"): frozenset({A, J, U}),
    ("POST", "/t/cases/1/decision"): frozenset({J}),
    ("GET", "/t/reports/progress"): frozenset({A, S, U, R}),
    ("GET", "/v1/users"): frozenset({A, U}),
    ("POST", "/v1/users/nobody/disable"): frozenset({A}),
    ("GET", "/v1/audit/entries"): frozenset({A, U}),
    ("GET", "/v1/audit/verify"): frozenset({A, U}),
    ("GET", "/v1/auth/me"): frozenset(UserRole),
}


def build_app(access: Access) -> FastAPI:
    app = FastAPI()
    install(app)
    app.state.access = access

    def sample(method: str, path: str, *roles: UserRole) -> None:
        # A default, not Annotated: the annotation is a string evaluated at module level.
        def endpoint(who: Principal = Depends(require_user(*roles))) -> dict[str, str]:  # noqa: B008
            return {"user": who.username}

        app.add_api_route(path, endpoint, methods=[method])

    for (method, path), roles in ENDPOINTS.items():
        if path.startswith("/t/"):
            sample(method, path, *roles)

    @app.post("/t/station/ping")
    def ping(
        station: Annotated[StationPrincipal, Depends(require_station(verify_body=True))],
    ) -> dict[str, Any]:
        assert station.body is not None
        return {"station": station.station_id, "size": len(station.body)}

    @app.put("/t/station/upload")
    async def upload(
        request: Request, station: Annotated[StationPrincipal, Depends(require_station())]
    ) -> dict[str, Any]:
        # A streamed endpoint checks the bytes it received against the signed digest.
        check = station.body_check(limit=MAX_BODY)
        async for chunk in request.stream():
            check.update(chunk)
        check.verify()
        return {"station": station.station_id, "size": check.size}

    return app


@dataclass
class Registry:
    engine: Engine
    access: Access
    client: TestClient
    clock: Clock
    ca_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def add_user(self, username: str, *roles: UserRole) -> None:
        with self.session() as s, s.begin():
            create_user(s, self.access.passwords, username, PASSWORD, roles, self.clock())

    def login(self, username: str, password: str = PASSWORD) -> httpx.Response:
        response: httpx.Response = self.client.post(
            "/v1/auth/token", data={"username": username, "password": password}
        )
        return response

    def token(self, username: str) -> dict[str, str]:
        response = self.login(username)
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def add_station(
        self,
        station_id: str,
        signer: Signer,
        *,
        status: StationStatus = StationStatus.active,
        issued: datetime | None = None,
        ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None,
    ) -> None:
        ca_key, ca_cert = ca or (self.ca_key, self.ca)
        cert = issue_station_certificate(
            ca_key, ca_cert, station_id, signer.public_key(), days=30, now=issued
        )
        now = self.clock()
        with self.session() as s, s.begin():
            office = s.execute(select(Office.id)).scalar()
            if office is None:
                row = Office(
                    name="Cong an phuong Dien Bien",
                    province_code="01",
                    province_name="Ha Noi",
                    district_code="001",
                    district_name="Ba Dinh",
                    commune_code="00001",
                    commune_name="Phuc Xa",
                    created_at=now,
                )
                s.add(row)
                s.flush()
                office = row.id
            s.add(
                Station(
                    id=station_id,
                    office_id=office,
                    status=status,
                    created_at=now,
                    certificate_pem=cert.public_bytes(Encoding.PEM).decode(),
                    certificate_serial=format(cert.serial_number, "x"),
                    public_key_sha256=key_id(signer.public_key()).hex(),
                    certificate_issued_at=now,
                )
            )


def make_registry(url: str, tmp_path: Path, **settings: Any) -> Iterator[Registry]:
    migrate.upgrade(url)
    engine = make_engine(url)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = make_station_ca(ca_key)
    clock = Clock()
    auth = AuthSettings(jwt_secret=SECRET, **{**FAST, **settings})
    access = Access(engine, auth, [ca], clock)
    try:
        with TestClient(build_app(access)) as client:
            yield Registry(engine, access, client, clock, ca_key, ca)
    finally:
        engine.dispose()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    yield from make_registry(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """The registry on SQLite, then on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = str(request.getfixturevalue("postgres_db"))
    yield from make_registry(url, tmp_path)


# --- People: the password flow and tokens ----------------------------------------------


def test_password_flow_end_to_end(registry: Registry) -> None:
    registry.add_user("lan.nguyen", UserRole.adjudicator)
    response = registry.login("lan.nguyen")
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    claims = jwt.decode(
        body["access_token"],
        SECRET.get_secret_value(),
        algorithms=["HS256"],
        issuer="vn-eid-registry",
    )
    assert claims["sub"] == "lan.nguyen"
    assert claims["roles"] == ["adjudicator"]
    assert claims["exp"] - claims["iat"] == 900
    assert len(claims["jti"]) >= 16
    me = registry.client.get("/v1/auth/me", headers=registry.token("lan.nguyen"))
    assert me.json()["username"] == "lan.nguyen"
    assert me.json()["roles"] == ["adjudicator"]
    with registry.session() as s:
        actions = s.execute(select(AuditEntry.action, AuditEntry.actor)).all()
    assert ("user.login", "user:lan.nguyen") in actions


def test_wrong_password_and_unknown_user_look_the_same(registry: Registry) -> None:
    registry.add_user("minh.tran", UserRole.reporting)
    wrong = registry.login("minh.tran", "not the password at all")
    unknown = registry.login("nobody.here", "not the password at all")
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_grant"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert wrong.json() == unknown.json()


class CountingHasher(PasswordHasher):
    calls = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        CountingHasher.calls += 1
        return super().verify(hash, password)


def test_unknown_user_costs_a_hash_check(registry: Registry) -> None:
    settings = registry.access.settings
    registry.access.passwords = Passwords(
        CountingHasher(settings.argon2_time_cost, settings.argon2_memory_kib, 1)
    )
    CountingHasher.calls = 0
    assert registry.login("ghost", "whatever password").status_code == 401
    assert CountingHasher.calls == 1


def test_failed_logins_are_throttled_per_username(registry: Registry) -> None:
    registry.add_user("hoa.le", UserRole.auditor)
    registry.add_user("bao.pham", UserRole.auditor)
    for _ in range(5):
        assert registry.login("hoa.le", "guess guess guess").status_code == 401
    throttled = registry.login("hoa.le")  # even the right password waits
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "too_many_attempts"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 301
    assert registry.login("bao.pham").status_code == 200  # other users unaffected
    registry.clock.offset += timedelta(seconds=301)
    assert registry.login("hoa.le").status_code == 200


def test_password_is_rehashed_when_parameters_change(registry: Registry) -> None:
    old = Passwords(PasswordHasher(time_cost=1, memory_cost=32, parallelism=1))
    with registry.session() as s, s.begin():
        create_user(s, old, "an.vo", PASSWORD, [UserRole.reporting], registry.clock())
        before = s.execute(select(User.password_hash)).scalar_one()
    assert "m=32," in before
    assert registry.login("an.vo").status_code == 200
    with registry.session() as s:
        after = s.execute(select(User.password_hash)).scalar_one()
    assert "m=64," in after
    assert registry.access.passwords.hasher.verify(after, PASSWORD)


def test_expired_forged_and_foreign_tokens_are_refused(registry: Registry) -> None:
    registry.add_user("quan.do", UserRole.admin)
    headers = registry.token("quan.do")
    token = headers["Authorization"].split()[1]
    me = "/v1/auth/me"
    none = registry.client.get(me)
    assert none.status_code == 401
    assert none.json()["error"] == "not_authenticated"
    assert none.headers["WWW-Authenticate"] == "Bearer"

    claims = jwt.decode(token, options={"verify_signature": False})
    foreign = jwt.encode(claims, "another registry's secret, 32+ bytes long", algorithm="HS256")
    unsigned = jwt.encode(claims, "", algorithm="none")
    header, _payload, signature = token.split(".")
    elevated = jwt.encode({**claims, "sub": "someone.else"}, "x" * 32, algorithm="HS256")
    spliced = ".".join([header, elevated.split(".")[1], signature])
    for bad in (foreign, unsigned, spliced, "not-a-jwt"):
        response = registry.client.get(me, headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401, bad
        assert response.json()["error"] == "invalid_token"
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]

    assert registry.client.get(me, headers=headers).status_code == 200
    registry.clock.offset += timedelta(seconds=901)
    expired = registry.client.get(me, headers=headers)
    assert expired.status_code == 401
    assert "expired" in expired.json()["detail"]


def test_disabled_user_is_refused_at_the_next_request(registry: Registry) -> None:
    registry.add_user("admin", UserRole.admin)
    registry.add_user("thu.bui", UserRole.supervisor)
    headers = registry.token("thu.bui")
    assert registry.client.get("/t/packages", headers=headers).status_code == 200
    disabled = registry.client.post("/v1/users/thu.bui/disable", headers=registry.token("admin"))
    assert disabled.status_code == 200
    refused = registry.client.get("/t/packages", headers=headers)
    assert refused.status_code == 401
    assert refused.json()["error"] == "account_disabled"
    assert registry.login("thu.bui").status_code == 401


def test_role_taken_away_counts_at_once(registry: Registry) -> None:
    registry.add_user("khanh.ho", UserRole.supervisor)
    headers = registry.token("khanh.ho")
    assert registry.client.get("/t/packages", headers=headers).status_code == 200
    with registry.session() as s, s.begin():
        s.execute(update(User).values(roles=["reporting"]))
    assert registry.client.get("/t/packages", headers=headers).status_code == 403


# --- Every endpoint against every role -------------------------------------------------


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, dict[str, Any]]]:
    path = tmp_path_factory.mktemp("matrix")
    for reg in make_registry(f"sqlite:///{path / 'registry.db'}", path):
        headers = {}
        for role in UserRole:
            reg.add_user(f"user.{role.value}", role)
            headers[role.value] = reg.token(f"user.{role.value}")
        yield reg, headers


@pytest.mark.parametrize("role", [r.value for r in UserRole])
@pytest.mark.parametrize(("method", "path"), list(ENDPOINTS))
def test_role_matrix(
    matrix: tuple[Registry, dict[str, Any]], method: str, path: str, role: str
) -> None:
    registry, headers = matrix
    response = registry.client.request(method, path, headers=headers[role])
    if UserRole(role) in ENDPOINTS[(method, path)]:
        # allowed: the endpoint itself answers (404: the user to disable is made up)
        expected = 404 if path.endswith("/disable") else 200
        assert response.status_code == expected, response.text
    else:
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "forbidden"
    anonymous = registry.client.request(method, path)
    assert anonymous.status_code == 401


# --- Stations ---------------------------------------------------------------------------


def station_key() -> SoftwareKeySigner:
    return SoftwareKeySigner(ec.generate_private_key(ec.SECP256R1()))


def ping(
    registry: Registry, signer: Signer, station_id: str, body: bytes = b"{}"
) -> httpx.Response:
    response: httpx.Response = registry.client.post(
        "/t/station/ping", content=body, auth=StationRequestAuth(signer, station_id)
    )
    return response


def signed(
    signer: Signer,
    station_id: str,
    body: bytes,
    *,
    method: str = "POST",
    path: str = "/t/station/ping",
    created: datetime | None = None,
) -> httpx.Request:
    request = httpx.Request(method, f"http://testserver{path}", content=body)
    request.headers["Content-Digest"] = content_digest(body)
    sign_request(request, signer, station_id, created=created)
    return request


def test_signed_request_with_software_key(registry: Registry) -> None:
    key = station_key()
    registry.add_station("HN-BD-001", key)
    response = ping(registry, key, "HN-BD-001", b'{"hello": "world"}')
    assert response.status_code == 200, response.text
    assert response.json() == {"station": "HN-BD-001", "size": 18}


@pytest.mark.hsm
def test_signed_request_with_softhsm_key(registry: Registry, softhsm_token: SoftHsmToken) -> None:
    t = softhsm_token
    label = f"station-auth-{uuid.uuid4().hex[:8]}"
    with Pkcs11Signer.generate(t.module_path, t.label, t.pin, label) as hsm:
        registry.add_station("HN-BD-002", hsm)
        response = ping(registry, hsm, "HN-BD-002")
    assert response.status_code == 200, response.text


def refused(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.json()["detail"]


def test_forged_requests_are_refused(registry: Registry) -> None:
    key = station_key()
    registry.add_station("HN-BD-001", key)
    client = registry.client

    request = signed(key, "HN-BD-001", b"{}")
    request.method = "PUT"
    request.url = httpx.URL("http://testserver/t/station/upload")
    refused(client.send(request), 401, "bad_signature")  # method and path changed

    request = signed(key, "HN-BD-001", b"{}", method="PUT", path="/t/station/upload")
    request.url = httpx.URL("http://testserver/t/station/upload?x=1")
    refused(client.send(request), 401, "bad_signature")  # query added

    original = signed(key, "HN-BD-001", b'{"n": 1}')
    swapped = httpx.Request("POST", original.url, content=b'{"n": 2}')
    for name in ("Content-Digest", "Signature-Input", "Signature"):
        swapped.headers[name] = original.headers[name]
    refused(client.send(swapped), 400, "content_digest_mismatch")  # body changed

    swapped.headers["Content-Digest"] = content_digest(b'{"n": 2}')
    refused(client.send(swapped), 401, "bad_signature")  # body and digest changed

    refused(ping(registry, station_key(), "HN-BD-001"), 401, "bad_signature")  # wrong key
    refused(ping(registry, key, "HN-XX-404"), 401, "unknown_station")

    unsigned = client.post("/t/station/ping", content=b"{}")
    refused(unsigned, 401, "signature_missing")
    assert "content-digest" in unsigned.headers["Accept-Signature"]


def test_streamed_upload_checks_the_received_bytes(registry: Registry) -> None:
    key = station_key()
    registry.add_station("HN-BD-001", key)
    chunks = [b"a" * 300, b"b" * 300]

    def stream(parts: list[bytes]) -> Iterator[bytes]:
        yield from parts

    auth = StationRequestAuth(key, "HN-BD-001")
    ok = registry.client.put(
        "/t/station/upload",
        content=stream(chunks),
        headers={"Content-Digest": content_digest_of_chunks(chunks)},
        auth=auth,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["size"] == 600
    cut = registry.client.put(
        "/t/station/upload",
        content=stream(chunks[:1]),
        headers={"Content-Digest": content_digest_of_chunks(chunks)},
        auth=auth,
    )
    refused(cut, 400, "content_digest_mismatch")
    big = [b"c" * 600, b"d" * 600]
    too_big = registry.client.put(
        "/t/station/upload",
        content=stream(big),
        headers={"Content-Digest": content_digest_of_chunks(big)},
        auth=auth,
    )
    refused(too_big, 413, "body_too_large")


def test_oversized_bodies_are_refused(registry: Registry) -> None:
    key = station_key()
    registry.add_station("HN-BD-001", key)
    limit = registry.access.settings.max_signed_body_bytes
    refused(ping(registry, key, "HN-BD-001", b"x" * (limit + 1)), 413, "body_too_large")
    assert ping(registry, key, "HN-BD-001", b"x" * limit).status_code == 200
    # A chunked body (no Content-Length) is stopped while it is read.
    body = b"y" * (limit + 10)
    response = registry.client.post(
        "/t/station/ping",
        content=iter([body[:limit], body[limit:]]),
        headers={"Content-Digest": content_digest(body)},
        auth=StationRequestAuth(key, "HN-BD-001"),
    )
    refused(response, 413, "body_too_large")


def test_suspended_and_revoked_stations(registry: Registry) -> None:
    suspended, revoked = station_key(), station_key()
    registry.add_station("HN-BD-010", suspended, status=StationStatus.suspended)
    registry.add_station("HN-BD-011", revoked, status=StationStatus.revoked)
    response = ping(registry, suspended, "HN-BD-010")
    refused(response, 403, "station_suspended")
    assert "station suspended" in response.json()["detail"]
    response = ping(registry, revoked, "HN-BD-011")
    refused(response, 403, "station_revoked")
    assert "station revoked" in response.json()["detail"]
    with registry.session() as s, s.begin():
        s.execute(update(Station).values(status=StationStatus.active))
    assert ping(registry, suspended, "HN-BD-010").status_code == 200


def test_certificates_must_chain_and_be_valid(registry: Registry) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = (other_key, make_station_ca(other_key))
    foreign, expired = station_key(), station_key()
    registry.add_station("HN-BD-020", foreign, ca=other_ca)
    registry.add_station("HN-BD-021", expired, issued=datetime.now(UTC) - timedelta(days=40))
    refused(ping(registry, foreign, "HN-BD-020"), 401, "bad_certificate")
    refused(ping(registry, expired, "HN-BD-021"), 401, "certificate_expired")


def test_stale_and_future_signatures(registry: Registry) -> None:
    key = station_key()
    registry.add_station("HN-BD-001", key)
    now = datetime.now(UTC)
    stale = signed(key, "HN-BD-001", b"{}", created=now - timedelta(seconds=301 + 5))
    refused(registry.client.send(stale), 401, "stale_signature")
    future = signed(key, "HN-BD-001", b"{}", created=now + timedelta(seconds=120))
    refused(registry.client.send(future), 401, "signature_from_future")
    slightly_ahead = signed(key, "HN-BD-001", b"{}", created=now + timedelta(seconds=10))
    assert registry.client.send(slightly_ahead).status_code == 200


def test_replayed_request_is_refused_on_both_backends(any_registry: Registry) -> None:
    registry = any_registry
    key = station_key()
    registry.add_station("HN-BD-001", key)
    request = signed(key, "HN-BD-001", b'{"seq": 1}')
    first = registry.client.send(request)
    assert first.status_code == 200, first.text
    replay = registry.client.send(request)
    refused(replay, 401, "replayed_request")
    assert "replayed request" in replay.json()["detail"]
    # The same nonce from another station is that station's business, not a replay.
    with registry.session() as s, s.begin():
        nonce = s.execute(select(RequestNonce.nonce)).scalar_one()
        assert remember_nonce(s, "HN-BD-999", nonce, registry.clock())
        assert not remember_nonce(s, "HN-BD-001", nonce, registry.clock())


def test_old_nonces_are_pruned(any_registry: Registry) -> None:
    registry = any_registry
    key = station_key()
    registry.add_station("HN-BD-001", key)
    now = registry.clock()
    with registry.session() as s, s.begin():
        s.add(
            RequestNonce(station_id="HN-BD-001", nonce="o" * 32, seen_at=now - timedelta(hours=1))
        )
        s.add(
            RequestNonce(
                station_id="HN-BD-001", nonce="r" * 32, seen_at=now - timedelta(seconds=60)
            )
        )
    assert ping(registry, key, "HN-BD-001").status_code == 200
    with registry.session() as s:
        kept = set(s.execute(select(RequestNonce.nonce)).scalars())
    assert "o" * 32 not in kept  # older than any acceptable signature
    assert "r" * 32 in kept  # a signature of that age could still arrive
    assert len(kept) == 2


# --- Audit log --------------------------------------------------------------------------


def test_audit_verify_finds_the_first_broken_entry(any_registry: Registry) -> None:
    registry = any_registry
    t0 = datetime(2021, 3, 1, 8, 0, tzinfo=UTC)
    with registry.session() as s, s.begin():
        for i in range(5):
            append_audit(s, t0 + timedelta(minutes=i), "system", "test.event", f"s{i}", {"i": i})
    verdict = verify_audit_log(registry.engine)
    assert verdict.intact
    assert verdict.entries_checked == 5
    assert verdict.head_seq == 5
    with registry.session() as s:
        head = s.execute(select(AuditEntry.hash).where(AuditEntry.seq == 5)).scalar_one()
    assert verdict.head_hash == head
    tail = verify_audit_log(registry.engine, after_seq=3, start_hash=_hash_of(registry, 3))
    assert tail.intact
    assert tail.entries_checked == 2
    with registry.session() as s, s.begin():
        s.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(details={"i": 99}))
    broken = verify_audit_log(registry.engine)
    assert not broken.intact
    assert broken.broken_at == 3
    assert broken.entries_checked == 2
    assert broken.head_seq == 2
    assert "changed" in (broken.reason or "")


def _hash_of(registry: Registry, seq: int) -> str:
    with registry.session() as s:
        return s.execute(select(AuditEntry.hash).where(AuditEntry.seq == seq)).scalar_one()


def test_audit_endpoints(registry: Registry) -> None:
    registry.add_user("auditor", UserRole.auditor)
    headers = registry.token("auditor")
    entries = registry.client.get("/v1/audit/entries", headers=headers).json()
    assert [e["action"] for e in entries] == ["user.login"]
    verdict = registry.client.get("/v1/audit/verify", headers=headers).json()
    assert verdict["intact"] is True
    assert verdict["head_hash"] == entries[-1]["hash"]


# --- Bootstrap, secret file and commands ------------------------------------------------


def test_ensure_admin_creates_one_admin_once(registry: Registry) -> None:
    now = registry.clock()
    with registry.session() as s, s.begin():
        assert ensure_admin(s, registry.access.passwords, "root", PASSWORD, now)
    with registry.session() as s, s.begin():
        assert not ensure_admin(s, registry.access.passwords, "root", "a different password", now)
    assert registry.login("root").status_code == 200
    with registry.session() as s:
        assert s.execute(select(func.count()).select_from(User)).scalar_one() == 1


def test_generated_secret_survives_a_restart(tmp_path: Path) -> None:
    settings = AuthSettings(jwt_secret_file=tmp_path / "data" / "jwt-secret")
    first = signing_secret(settings)
    assert len(first) >= 32
    assert stat.S_IMODE(settings.jwt_secret_file.stat().st_mode) == 0o600
    assert signing_secret(settings) == first
    with pytest.raises(ValueError, match="at least 32 bytes"):
        signing_secret(AuthSettings(jwt_secret=SecretStr("short")))


def test_users_and_audit_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate.upgrade(url)
    settings = RegistrySettings(database=DatabaseSettings(url=SecretStr(url)))
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    add_users_parser(commands)
    add_audit_parser(commands)

    def users(*argv: str, stdin: str = "") -> tuple[int, str]:
        out = io.StringIO()
        code = run_users(
            parser.parse_args(["users", *argv]), settings, stdin=io.StringIO(stdin), stdout=out
        )
        return code, out.getvalue()

    assert (
        users(
            "add",
            "mai.dang",
            "--role",
            "auditor",
            "--role",
            "reporting",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )[0]
        == 0
    )
    assert users("add", "mai.dang", "--role", "admin", "--password-stdin", stdin=PASSWORD)[0] == 1
    assert users("add", "short.pw", "--role", "admin", "--password-stdin", stdin="abc\n")[0] == 1
    assert users("disable", "mai.dang")[0] == 0
    code, listing = users("list")
    assert code == 0
    assert "mai.dang" in listing
    assert "disabled" in listing
    assert "auditor,reporting" in listing
    assert users("passwd", "mai.dang", "--password-stdin", stdin="another long password\n")[0] == 0
    engine = make_engine(url)
    with Session(engine) as s:
        stored = s.execute(select(User.password_hash)).scalar_one()
    engine.dispose()
    assert password_hasher(AuthSettings()).verify(stored, "another long password")

    out = io.StringIO()
    assert run_audit(parser.parse_args(["audit", "verify"]), settings, stdout=out) == 0
    assert "3 entries checked" in out.getvalue()  # created, disabled, password changed
    engine = make_engine(url)
    with Session(engine) as s, s.begin():
        s.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(actor="cli:someone"))
    engine.dispose()
    out = io.StringIO()
    assert run_audit(parser.parse_args(["audit", "verify"]), settings, stdout=out) == 1
    assert "BROKEN at entry 2" in out.getvalue()
