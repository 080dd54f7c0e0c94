"""First-boot setup by QR code in a real browser: the registry's ``stations token`` command
writes the token sheet's QR code, the technician holds it up to a new station's (simulated)
camera and presses Scan; the setup form fills itself, and Set up provisions the station
against the kiosk world's registry. A receipt slip's code held up by mistake is named as
such."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from enrollment.ids import new_package_id
from enrollment.setup_token import SetupCode, parse_setup_code
from station.api import create_app
from station.drivers.camera.sim_control import CameraControl
from station.runtime import StationRuntime
from station.slip import slip_payload
from tests import cardkit, processkit, stationkit, uikit
from tests.uikit import Kiosk

STATION = "HN-BD-QR"


@dataclass
class Fresh:
    """A station never set up, with a simulated camera, served over HTTP."""

    url: str
    runtime: StationRuntime
    camera: CameraControl


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Fresh]:
    settings = stationkit.station_settings(
        tmp_path / "fresh",
        technician=uikit.technician_settings(),
        service={"allowed_hosts": ["127.0.0.1", "localhost"]},
        # Only the camera: the setup needs nothing else.
        **stationkit.camera_only_devices(tmp_path),
    )
    # The test process's one pcscd: the PC/SC client keeps the first it talks to,
    # and a private one stopped with this station would leave later card tests none.
    runtime = StationRuntime(settings, pcscd=cardkit.shared_pcscd()).start()
    server = uikit._Server(create_app(runtime), processkit.free_port())
    server.start()
    try:
        server.wait_started()
        assert runtime.devices is not None
        camera = CameraControl(runtime.devices.camera_control_path)
        yield Fresh(f"http://127.0.0.1:{server.server.config.port}", runtime, camera)
    finally:
        server.stop()
        runtime.stop()


def _token_sheet(kiosk: Kiosk, folder: Path) -> tuple[SetupCode, bytes]:
    """A new station at the registry, and its token sheet's QR code as the registry's
    command writes it (run as the registry's operator would, on its database)."""
    assert kiosk.runtime.online is not None
    office = kiosk.runtime.online.identity.office_id
    r = kiosk.registry.post(
        "/v1/stations", json={"station_id": STATION, "office_id": office}, headers=kiosk.admin
    )
    assert r.status_code == 201, r.text
    sheet = folder / "sheet.png"
    run = subprocess.run(
        [sys.executable, "-m", "central", "stations", "token", STATION,
         "--registry-url", kiosk.registry_url, "--qr", str(sheet)],
        env=kiosk.central.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    payload = next(
        line.split(": ", 1)[1] for line in run.stdout.splitlines() if line.startswith("setup")
    )
    return parse_setup_code(payload), sheet.read_bytes()


def _qr_png(text: str) -> bytes:
    import io

    import segno

    out = io.BytesIO()
    segno.make(text, error="m", micro=False).save(out, kind="png", scale=8)
    return out.getvalue()


def test_setup_by_scanning_the_token_sheet(
    browser: Any, kiosk: Kiosk, fresh: Fresh, tmp_path: Path
) -> None:
    code, sheet = _token_sheet(kiosk, tmp_path)
    assert code.registry_url == kiosk.registry_url
    width, height = uikit.SIZES["small"]  # the tightest screen
    context = browser.new_context(
        viewport={"width": width, "height": height}, base_url=fresh.url, locale="vi-VN"
    )
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto("/setup")
    page.wait_for_url("**/technician/unlock")
    page.fill("#pin", uikit.TECHNICIAN_PIN)
    page.click("button[type=submit]")
    page.wait_for_url("**/setup")
    button = page.locator("#scan-qr")
    assert button.inner_text() == "Quét mã QR"
    box = button.bounding_box()
    assert box is not None
    assert box["height"] >= 48
    assert box["width"] >= 48

    # A receipt slip's code held up by mistake: said at once, nothing filled in.
    fresh.camera.show(_qr_png(slip_payload(new_package_id(), "210301-ABCDEFGH2345")))
    button.click()
    page.wait_for_selector("#scan-error:has-text('không phải mã thiết lập trạm')")
    assert page.input_value("#registry_url") == ""
    assert page.input_value("#token") == ""

    # Scan pressed first, then the sheet held up: the hint shows while the camera looks.
    fresh.camera.show(None)
    page.click("#scan-qr")
    page.wait_for_selector(".scan-wait", state="visible")
    assert "Đang tìm mã QR" in page.inner_text(".scan-wait")
    assert page.is_disabled("#scan-qr")
    uikit.screenshot(page, "setup-scanning")
    fresh.camera.show(sheet)
    page.wait_for_selector("#scan-done")
    assert page.input_value("#registry_url") == kiosk.registry_url
    assert page.input_value("#token") == code.token
    assert page.locator("#scan-error").count() == 0
    uikit.screenshot(page, "setup-scanned")
    assert uikit.serious_violations(page) == []
    fresh.camera.show(None)

    # The technician checks the address and confirms: the station is set up with it.
    page.click("#setup form button[type=submit]")
    page.wait_for_url("**/login", timeout=60_000)
    assert fresh.runtime.online is not None
    assert fresh.runtime.online.identity.station_id == STATION
    context.close()

    # Once set up, the scan is refused (the setup route's own rule).
    unlock = httpx.post(f"{fresh.url}/api/technician/unlock", json={"pin": uikit.TECHNICIAN_PIN})
    auth = {"authorization": f"Bearer {unlock.json()['token']}"}
    r = httpx.post(
        f"{fresh.url}/api/technician/setup-code/scan", json={"timeout_s": 1}, headers=auth
    )
    assert (r.status_code, r.json()["error"]) == (409, "already_provisioned")
    journal = [
        e.detail["outcome"]
        for e in fresh.runtime.journal.recent(20, action="technician.setup_code_scanned")
    ]
    assert journal == ["failed", "ok", "failed"]  # newest first
