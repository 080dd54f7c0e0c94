"""The kiosk in a real browser: a registry process, a station runtime with its simulated
devices served over real HTTP (uvicorn in a thread), and Debian's Chromium driven by
Playwright (its own browser download is not used).

One world per test session (starting it takes ~20 s): tests share the registry, the
station and the officers, so each test opens its own enrollments and must not depend on
another's. Screenshots go to build/ui/<width>x<height>/ (CI artefacts); the accessibility
check is axe-core (shipped by axe-playwright-python).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from station.api import create_app
from station.drivers.camera.sim_control import CameraControl
from station.drivers.card.bay import pcscd_unavailable
from station.runtime import StationRuntime
from tests import processkit, stationkit

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "build" / "ui"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIZES = {"small": (800, 480), "large": (1280, 800)}
"""The two screens the kiosk is made for: a 7-inch and a 10-inch panel."""

ADJUDICATOR = stationkit.ADJUDICATOR
OFFICER, SUPERVISOR = stationkit.staff("00001")
STATION_ID = "HN-BD-UI"
TECHNICIAN_PIN = "24681357"
"""The kiosk world's technician PIN (its argon2 hash is in the station's settings)."""


def technician_settings(**overrides: Any) -> dict[str, Any]:
    """The ``technician`` settings section with :data:`TECHNICIAN_PIN`."""
    from station.technician import hash_pin

    return {"pin_hash": hash_pin(TECHNICIAN_PIN), **overrides}


def ui_tests_required() -> bool:
    """``UI_TESTS_REQUIRED=1`` (``make test`` sets it: its bootstrap installs Chromium and
    pcscd): a kiosk test that cannot run fails instead of skipping, so that a CI machine
    without a browser does not pass with the whole kiosk untested."""
    return os.environ.get("UI_TESTS_REQUIRED") == "1"


def cannot_run(reason: str) -> NoReturn:
    """Skip the kiosk tests for ``reason``, or fail them where they are required."""
    if ui_tests_required():
        pytest.fail(f"the kiosk tests are required (UI_TESTS_REQUIRED=1): {reason}", pytrace=False)
    pytest.skip(reason)


def browser_unavailable() -> str | None:
    if not Path(CHROMIUM).exists():
        return "Chromium is not installed (apt install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (make bootstrap)"
    return pcscd_unavailable()


@dataclass
class Kiosk:
    """The running world a browser test drives."""

    url: str
    registry_url: str
    registry: httpx.Client
    admin: dict[str, str]
    runtime: StationRuntime
    camera: CameraControl
    central: stationkit.Registry
    """The registry process (:meth:`stationkit.Registry.restart` changes its settings)."""
    officer: tuple[str, str, int, str] = OFFICER
    supervisor: tuple[str, str, int, str] = SUPERVISOR
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scanner(self) -> Any:
        """The scanner simulator's control: ``present(finger=, person=)`` lays a finger."""
        return stationkit.scanner_control(self.runtime)


class _Server(threading.Thread):
    """uvicorn serving the station app on 127.0.0.1:port, in this process (the tests
    reach into the runtime for the simulators)."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        super().__init__(name="kiosk-http", daemon=True)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        self.server.run()

    def wait_started(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the kiosk's HTTP server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.join(10)


@pytest.fixture(scope="session")
def kiosk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiosk]:
    reason = browser_unavailable()
    if reason is not None:
        cannot_run(reason)
    tmp = tmp_path_factory.mktemp("kiosk")
    with contextlib.ExitStack() as stack:
        try:
            world = stack.enter_context(
                stationkit.world(tmp, STATION_ID, technician=technician_settings())
            )
        except pytest.skip.Exception as skipped:  # no private pcscd here
            cannot_run(str(skipped.msg))
        runtime = world.runtime
        server = _Server(create_app(runtime), processkit.free_port())
        server.start()
        stack.callback(server.stop)
        server.wait_started()
        url = f"http://127.0.0.1:{server.server.config.port}"
        with httpx.Client(base_url=url, timeout=60) as station:
            stationkit.provision(station, world)
        central = world.registry
        assert runtime.devices is not None
        camera = CameraControl(runtime.devices.camera_control_path)
        yield Kiosk(url, central.url, central.client, central.admin, runtime, camera, central)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    reason = browser_unavailable()
    if reason is not None:
        cannot_run(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(browser: Any, kiosk: Kiosk, size: str = "large", lang: str = "vi") -> Any:
    """A fresh browser context (no cookies) at one of the kiosk's screen sizes."""
    width, height = SIZES[size]
    context = browser.new_context(
        viewport={"width": width, "height": height},
        base_url=kiosk.url,
        locale="vi-VN" if lang == "vi" else "en-US",
        timezone_id="Asia/Ho_Chi_Minh",
    )
    if lang != "vi":
        context.add_cookies([{"name": "station_lang", "value": lang, "url": kiosk.url}])
    context.set_default_timeout(30_000)
    return context.new_page()


def screenshot(page: Any, name: str) -> Path:
    """Save the page as build/ui/<w>x<h>/<name>.png (a test artefact) and return the path."""
    size = page.viewport_size
    folder = ARTIFACTS / f"{size['width']}x{size['height']}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{re.sub(r'[^a-z0-9_-]+', '-', name.lower())}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def screenshots(page: Any, name: str) -> None:
    """The screen at both kiosk sizes (the page resized and put back), each checked by
    axe: for screens a test reaches only once."""
    size = dict(page.viewport_size)
    for width, height in sorted(SIZES.values(), key=lambda s: s != (size["width"], size["height"])):
        page.set_viewport_size({"width": width, "height": height})
        screenshot(page, name)
        assert serious_violations(page) == [], (name, width, height)
    page.set_viewport_size(size)


def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} -> "
        + "; ".join(n["target"][0] if n.get("target") else "?" for n in v["nodes"][:5])
        for v in results.response["violations"]
        if v.get("impact") in ("serious", "critical")
    ]


def api_login(kiosk: Kiosk, client: httpx.Client, who: tuple[str, str, int, str]) -> httpx.Client:
    """Log ``client`` in to the station API as ``who`` (PIN, then a finger on the
    simulator). One officer has one session: this ends that officer's browser session."""
    token = stationkit.api_login(client, kiosk.scanner, who)
    client.headers["authorization"] = f"Bearer {token}"
    return client


def add_resident(kiosk: Kiosk, name: str, dob: str, sex: str = "male", *, old_id: str = "") -> str:
    """A new row in the office's resident list (at the registry), synced to the station;
    its reference. Tests share the world: each makes the residents it enrolls."""
    ref = f"DC01-U{uuid.uuid4().hex[:8].upper()}"
    assert kiosk.runtime.online is not None
    office = kiosk.runtime.online.identity.office_id
    csv = (
        "ref,full_name,date_of_birth,sex,old_id_number,household_number,father_name,"
        "mother_name,residence_detail,origin_commune,origin_detail\n"
        f"{ref},{name},{dob},{sex},{old_id},HK-{ref[-4:]},,,Số 3 phố Phúc Xá,00001,\n"
    )
    r = kiosk.registry.post(
        f"/v1/offices/{office}/residents",
        content=csv.encode(),
        headers={**kiosk.admin, "content-type": "text/csv"},
    )
    assert r.status_code == 200, r.text
    assert httpx.post(f"{kiosk.url}/api/sync", timeout=60).status_code == 200
    return ref


@contextlib.contextmanager
def registry_settings(kiosk: Kiosk, env: dict[str, str]) -> Iterator[None]:
    """The world's registry restarted with ``env`` (``REGISTRY_*`` variables) for the
    block, then with its own settings again; the station syncs after each restart (its
    link is back before the test goes on). Tests run one at a time in a world, so no
    other test sees the change; a restart takes a few seconds."""
    kiosk.central.restart(env)
    try:
        assert httpx.post(f"{kiosk.url}/api/sync", timeout=60).status_code == 200
        yield
    finally:
        kiosk.central.restart()
        assert httpx.post(f"{kiosk.url}/api/sync", timeout=60).status_code == 200


def htmx_idle(page: Any, timeout: float = 30_000) -> None:
    """Wait until htmx has no request in flight and has settled what it swapped in (its
    handlers are attached to new content only then: a change fired at a select that was
    swapped in a moment ago is otherwise lost; a person never taps that fast)."""
    page.wait_for_function(
        "() => window.htmx && !document.querySelector("
        "'.htmx-request, .htmx-settling, .htmx-swapping, .htmx-added')",
        timeout=timeout,
    )


def current_finger(page: Any) -> int | None:
    """The finger the fingers screen asks for now (None: all done)."""
    element = page.query_selector("svg.hands a.finger.is-current")
    return None if element is None else int(element.get_attribute("data-position"))


def finger_states(page: Any) -> dict[int, str]:
    """Each finger's state in the hand diagram: todo, captured, low or exception."""
    return {
        int(a.get_attribute("data-position")): a.get_attribute("data-state")
        for a in page.query_selector_all("svg.hands a.finger")
    }


def roll(page: Any, kiosk: Kiosk, person: int, position: int, fault: str = "none") -> str:
    """Roll on the fingers screen: ``person``'s finger laid on the scanner simulator (with
    ``fault``), Roll pressed, the panel swapped; the outcome's code."""
    assert current_finger(page) == position
    kiosk.scanner.present(finger=position, person=person, fault=fault)
    before = page.get_attribute("#fingers-panel", "data-swap") or ""
    page.click("#roll-form button")
    page.wait_for_function(
        f"() => document.getElementById('fingers-panel').dataset.swap !== {json.dumps(before)}"
    )
    return str(page.get_attribute(".roll-said", "data-code") or "")


def wait_stage(page: Any, stage: str, timeout: float = 180) -> None:
    """Wait until the done page shows the registry's answer at ``stage`` (queued,
    received, adjudication, recapture, issued...)."""
    page.wait_for_selector(f"#progress.progress-{stage}", timeout=timeout * 1000)


def issue_walk_in(page: Any, name: str) -> str:
    """On the walk-in screen: ``name`` typed, no priority, the ticket issued; its number."""
    page.fill("#name", name)
    page.check("input[name=priority][value='']")
    page.click("form button[type=submit].btn-primary")
    page.wait_for_url(re.compile(r"/queue\?issued="))
    return str(page.url.rsplit("=", 1)[1])


def login(page: Any, kiosk: Kiosk, who: tuple[str, str, int, str] | None = None) -> None:
    """Log in through the login screen: ID and PIN typed, a finger on the simulator."""
    who = who or kiosk.officer
    page.goto("/login")
    page.fill("#operator_id", who[0])
    page.fill("#secret", who[3])
    kiosk.scanner.present(finger=2, person=who[2])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"^(?!.*/login).*$"))


__all__ = [
    "ARTIFACTS",
    "SIZES",
    "TECHNICIAN_PIN",
    "Kiosk",
    "add_resident",
    "api_login",
    "browser",
    "browser_unavailable",
    "cannot_run",
    "current_finger",
    "finger_states",
    "htmx_idle",
    "issue_walk_in",
    "kiosk",
    "login",
    "new_page",
    "registry_settings",
    "roll",
    "screenshot",
    "screenshots",
    "serious_violations",
    "technician_settings",
    "ui_tests_required",
    "wait_stage",
]
