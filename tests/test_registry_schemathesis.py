"""Schemathesis against the registry's OpenAPI document: no operation answers a 5xx,
whatever (schema-shaped or not) request it gets.

The people's operations are called as the administrator (bearer token), the stations'
operations signed by an onboarded active station (RFC 9421, a fresh signature for every
generated request), and the stations' operations once more unsigned, where they must
refuse with 401. Requests go through the app's own TestClient (its lifespan already
running), so schemathesis only generates cases and checks responses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from central.app import create_app
from tests import registrykit
from tests.pgkit import create_database, drop_database
from tests.test_registry_security import SIGNED_STATION, TABLE, World, make_world

# Operations only a signed station may call (the table of the role matrix says which).
STATION_PATHS = sorted(
    {path for (_, path), rule in TABLE.items() if rule.allowed == frozenset({SIGNED_STATION})}
)
STATION_PATH_REGEX = (
    "^(" + "|".join(p.replace("{package_id}", "[^/]+") for p in STATION_PATHS) + ")$"
)

BOUNDED = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases every run: a failure here is reproducible
    database=None,
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The registry on SQLite, then on a real PostgreSQL (stricter about strings and
    integers: NUL characters, lengths, 32-bit keys)."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    if request.param == "sqlite":
        yield from make_world(tmp)
        return
    url = create_database(str(request.getfixturevalue("postgres_url")))
    try:
        yield from make_world(tmp, url)
    finally:
        drop_database(url)


def _openapi() -> dict[str, Any]:
    """The app's OpenAPI document, without starting it (building the app opens nothing:
    the registry opens in the lifespan). Loaded at import so that each operation is a
    test item of its own (schemathesis' lazy ``from_fixture`` does not work on pytest 9)."""
    document: dict[str, Any] = create_app(registrykit.registry_settings(Path("unused"))).openapi()
    return document


schema = schemathesis.openapi.from_dict(_openapi())


def send(world: World, case: Any, *, auth: httpx.Auth | None, headers: dict[str, str]) -> Any:
    """Send a generated case through the app's TestClient; the schemathesis transport's
    keyword arguments (requests-style) mapped onto httpx's."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    body: dict[str, Any] = {}
    if "json" in kwargs:
        body["json"] = kwargs["json"]
    data = kwargs.get("data")
    if isinstance(data, (bytes, str)):
        body["content"] = data
    elif data is not None:
        body["data"] = data
    if kwargs.get("files"):
        body["files"] = kwargs["files"]
    sent = {**kwargs.get("headers", {}), **headers}
    if kwargs.get("cookies"):  # as a header: httpx deprecates per-request cookies
        sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in kwargs["cookies"].items())
    return world.client.request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params"),
        headers=sent,
        auth=auth,
        **body,
    )


def is_station_operation(case: Any) -> bool:
    return case.operation.path in STATION_PATHS


@schema.parametrize()
@BOUNDED
def test_no_server_error_as_admin_or_signed_station(case: Any, world: World) -> None:
    if is_station_operation(case):
        response = send(world, case, auth=world.auth(), headers={})
    else:
        response = send(world, case, auth=None, headers=world.admin)
    case.validate_response(response, checks=[not_a_server_error])


@schema.include(path_regex=STATION_PATH_REGEX).parametrize()
@BOUNDED
def test_station_operations_refuse_unsigned_requests(case: Any, world: World) -> None:
    response = send(world, case, auth=None, headers={})
    case.validate_response(response, checks=[not_a_server_error])
    if case.method.upper() != case.operation.method.upper():
        assert response.status_code == 405, response.text  # a method the path lacks
        return
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "signature_missing"
