"""The station's own screens in a real browser: outbox and sync, device health, cards to
encode (a spoiled card, then a good one), the technician screen behind its PIN (and the
lockout), and first-boot setup on a second, bare station provisioned against the world's
registry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from station.api import create_app
from station.drivers.card.emulator import Faults
from station.runtime import StationRuntime
from tests import processkit, stationkit, uikit
from tests.uikit import Kiosk

PERSON = 47
"""This file's citizen (fingers and face): nobody else's, so the registry issues it."""


def _api_login(kiosk: Kiosk, client: httpx.Client) -> dict[str, str]:
    who = kiosk.officer
    r = client.post("/api/login/secret", json={"operator_id": who[0], "pin": who[3]})
    assert r.status_code == 200, r.text
    kiosk.scanner.present(finger=2, person=who[2])
    r = client.post("/api/login/finger", json={"challenge": r.json()["challenge"]})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _enroll(kiosk: Kiosk, api: httpx.Client, auth: dict[str, str]) -> str:
    """A whole enrollment through the JSON API; the case id."""
    r = api.post("/api/cases", json={}, headers=auth)
    assert r.status_code == 201, r.text
    case_id = r.json()["id"]
    area = {"province_code": "01", "district_code": "001", "commune_code": "00001"}
    form = {
        "full_name": "Đỗ Thị Hồng Nhung",
        "date_of_birth": "1991-09-14",
        "sex": "F",
        "ethnicity": "01",
        "place_of_origin": {"areas": [area]},
        "permanent_residence": {"detail": "Số 7 ngõ Trạm", "areas": [area]},
    }
    r = api.put(f"/api/cases/{case_id}/demographics", json=form, headers=auth)
    assert r.status_code == 200, r.text
    assert api.post(f"/api/cases/{case_id}/consent", headers=auth).status_code == 200
    kiosk.camera.sit(PERSON, ["walk_in:1", "good:600"])
    r = api.post(f"/api/cases/{case_id}/face/start", json={"timeout_s": 60}, headers=auth)
    assert r.status_code == 202, r.text
    face: dict[str, Any] = {}
    for _ in range(20):
        face = api.get(f"/api/cases/{case_id}/face", params={"wait_s": 5}, headers=auth).json()
        if face["state"] != "running":
            break
    assert face["state"] == "stored", face
    for position in range(1, 11):
        outcome: dict[str, Any] = {}
        for _attempt in range(3):
            kiosk.scanner.present(finger=position, person=PERSON)
            r = api.post(f"/api/cases/{case_id}/fingers/{position}/roll", json={}, headers=auth)
            assert r.status_code == 200, r.text
            outcome = r.json()
            if outcome["done"]:
                break
        assert outcome["stored"], outcome
    review = api.get(f"/api/cases/{case_id}/review", headers=auth).json()
    assert review["can_submit"], review
    r = api.post(f"/api/cases/{case_id}/submit", headers=auth)
    assert r.status_code == 200, r.text
    return str(case_id)


@pytest.fixture(scope="module")
def issued(kiosk: Kiosk) -> str:
    """The package id of this file's citizen once the registry issued it and the card's
    chip data is on the station."""
    with httpx.Client(base_url=kiosk.url, timeout=120) as api:
        auth = _api_login(kiosk, api)
        case_id = _enroll(kiosk, api, auth)
        deadline = time.monotonic() + 120
        while True:
            case = api.get(f"/api/cases/{case_id}", headers=auth).json()
            package = case.get("package_id")
            if package and case.get("registry_state") in ("issued", "card_encoded"):
                job = api.get(f"/api/cards/{package}", headers=auth)
                if job.status_code == 200 and job.json()["state"] == "fetched":
                    break
            assert time.monotonic() < deadline, case
            time.sleep(0.5)
    return str(package)


def _page(browser: Any, kiosk: Kiosk, size: str) -> Any:
    page = uikit.new_page(browser, kiosk, size)
    uikit.login(page, kiosk)
    return page


@pytest.mark.parametrize("size", ["small", "large"])
def test_outbox(browser: Any, kiosk: Kiosk, issued: str, size: str, tmp_path: Path) -> None:
    page = _page(browser, kiosk, size)
    page.goto("/outbox")
    page.wait_for_selector("#outbox-panel .table")
    text = page.inner_text("main")
    assert "Kết nối hệ thống trung tâm" in text
    assert "Đồng bộ gần nhất" in text
    assert "Nếu không đồng bộ, việc thu nhận hồ sơ sẽ tạm dừng sau" in text
    assert issued[-8:] in text  # this file's package is listed with its state
    uikit.screenshot(page, "outbox")
    assert uikit.serious_violations(page) == []
    if size == "large":
        page.click("text=Đồng bộ ngay")
        page.wait_for_selector("#outbox-result .message-ok")
        assert "Đã đồng bộ" in page.inner_text("#outbox-result")
        page.fill("#export-path", str(tmp_path))
        page.click("text=Xuất ra USB")
        page.wait_for_selector("#outbox-result:has-text('Không có gì để xuất')")
        page.fill("#receipts-path", str(tmp_path / "nothing-here"))
        page.click("text=Nhập biên nhận")
        page.wait_for_selector("#flash .message-error")
        assert "Không dùng được thiết bị lưu trữ" in page.inner_text("#flash")
    page.context.close()


@pytest.mark.parametrize("size", ["small", "large"])
def test_devices(browser: Any, kiosk: Kiosk, size: str) -> None:
    page = uikit.new_page(browser, kiosk, size)
    page.goto("/devices")  # no login needed to look
    page.wait_for_selector("#devices-panel .tile")
    text = page.inner_text("main")
    for name in ("Máy quét vân tay", "Máy ảnh", "Máy ghi thẻ", "Dung lượng ổ đĩa"):
        assert name in text
    uikit.screenshot(page, "devices")
    assert uikit.serious_violations(page) == []
    page.click("text=Thử lại thiết bị")  # not logged in: the login first
    page.wait_for_url("**/login?next=/devices")
    page.context.close()
    page = _page(browser, kiosk, size)
    page.goto("/devices")
    page.click("text=Thử lại thiết bị")
    page.wait_for_selector("text=Đã thử lại.")
    page.context.close()


def _lay_card(kiosk: Kiosk, faults: Faults | None = None) -> Any:
    assert kiosk.runtime.devices is not None
    assert kiosk.runtime.devices.card_bay is not None
    card = kiosk.runtime.devices.card_bay.card(f"ui-{time.monotonic_ns()}", faults=faults)
    card.insert()
    return card


def _take_card(kiosk: Kiosk, card: Any) -> None:
    card.remove()
    assert kiosk.runtime.devices is not None
    kiosk.runtime.devices.encoder.wait_for_removal(10)


@pytest.mark.parametrize("size", ["large", "small"])
def test_cards_spoiled_then_encoded(
    browser: Any,
    kiosk: Kiosk,
    issued: str,
    size: str,
) -> None:
    page = _page(browser, kiosk, size)
    page.goto("/cards")
    assert page.locator(f"a[href='/cards/{issued}']").count() == 1
    uikit.screenshot(page, "cards")
    assert uikit.serious_violations(page) == []
    page.goto(f"/cards/{issued}")
    if size == "small":  # the large run encoded it first: its result shows on reload
        page.wait_for_selector("#card-serial")
        assert "đã được ghi chip và kiểm tra" in page.inner_text("#encode")
        uikit.screenshot(page, "cards-encode-done")
        assert uikit.serious_violations(page) == []
        page.context.close()
        return
    page.wait_for_selector("#encode-form")
    uikit.screenshots(page, "cards-encode")
    assert uikit.serious_violations(page) == []
    # A card pulled off mid-write is spoiled: the officer is told to put it aside.
    card = _lay_card(kiosk, Faults(pull_after_writes=3))
    try:
        page.click("#encode-form button[type=submit]")
        page.wait_for_selector("#progress:not([hidden])")
        page.wait_for_selector("#encode-failure", timeout=90_000)
    finally:
        _take_card(kiosk, card)
    failure = page.inner_text("#encode-failure")
    assert "đã hỏng" in failure, failure
    assert "khay thẻ hỏng" in failure, failure
    uikit.screenshots(page, "cards-encode-spoiled")
    assert uikit.serious_violations(page) == []
    # A good blank card: encoded, read back, verified.
    card = _lay_card(kiosk)
    try:
        page.click("#encode-form button[type=submit]")
        page.wait_for_selector("#card-serial", timeout=90_000)
    finally:
        _take_card(kiosk, card)
    result = page.inner_text("#encode")
    assert "Đã ghi chip và kiểm tra thẻ" in result
    assert "Xác thực thụ động" in result
    assert "Đạt" in result
    uikit.screenshot(page, "cards-encode-done")
    assert uikit.serious_violations(page) == []
    page.goto("/cards")
    assert "1 thẻ hỏng" in page.inner_text("main")
    page.context.close()


@pytest.mark.parametrize("size", ["small", "large"])
def test_technician_behind_its_pin(browser: Any, kiosk: Kiosk, size: str) -> None:
    page = uikit.new_page(browser, kiosk, size)
    page.goto("/technician")
    page.wait_for_url("**/technician/unlock")
    uikit.screenshot(page, "technician-pin")
    assert uikit.serious_violations(page) == []
    page.fill("#pin", kiosk.officer[3])  # an officer's PIN is not the technician's
    page.click("button[type=submit]")
    assert "Sai mã PIN kỹ thuật viên" in page.inner_text("#pin-error")
    page.fill("#pin", uikit.TECHNICIAN_PIN)
    page.click("button[type=submit]")
    page.wait_for_url("**/technician")
    text = page.inner_text("main")
    assert uikit.STATION_ID in text
    assert kiosk.registry_url in text
    assert "technician.unlocked" in text  # the journal
    assert "lo" in page.inner_text("main table")  # the network: the loopback at least
    cookie = next(c for c in page.context.cookies() if c["name"] == "station_technician")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert cookie["expires"] > 0
    uikit.screenshot(page, "technician")
    assert uikit.serious_violations(page) == []
    page.click("text=Thử lại thiết bị")
    page.wait_for_selector("#tech-result .message-ok")
    page.click("text=Khóa")
    page.goto("/technician")
    page.wait_for_url("**/technician/unlock")
    page.context.close()


def test_technician_api_needs_its_own_token(kiosk: Kiosk) -> None:
    with httpx.Client(base_url=kiosk.url, timeout=60) as api:
        auth = _api_login(kiosk, api)
        r = api.get("/api/technician/overview", headers=auth)  # an officer's session: no
        assert r.status_code == 401
        assert r.json()["error"] == "technician_required"
        media = api.get("/api/outbox/media", headers=auth)
        assert media.status_code == 200
        assert isinstance(media.json(), list)
        outbox = api.get("/api/outbox", params={"poll": 1}, headers=auth).json()
        assert {"by_state", "link", "next_due", "file_problems"} <= set(outbox)


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[str]:
    """A second station, never provisioned, served over HTTP (no devices needed)."""
    settings = stationkit.station_settings(
        tmp_path / "bare",
        technician=uikit.technician_settings(lockout_minutes=5),
        service={"allowed_hosts": ["127.0.0.1", "localhost"]},
    )
    runtime = StationRuntime(settings).start()
    server = uikit._Server(create_app(runtime), processkit.free_port())
    server.start()
    try:
        server.wait_started()
        port = server.server.config.port
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        runtime.stop()


def test_setup_then_locked_technician(browser: Any, kiosk: Kiosk, bare: str) -> None:
    assert kiosk.runtime.online is not None
    office = kiosk.runtime.online.identity.office_id
    token = stationkit.station_token(kiosk.registry, kiosk.admin, office, "HN-BD-UI2")
    for size in ("small", "large"):
        width, height = uikit.SIZES[size]
        context = browser.new_context(
            viewport={"width": width, "height": height}, base_url=bare, locale="vi-VN"
        )
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.goto("/login")  # unprovisioned: nobody can log in, the setup comes first
        page.wait_for_url("**/setup")
        uikit.screenshot(page, "setup")
        assert uikit.serious_violations(page) == []
        if size == "small":
            context.close()
    # A wrong address, nothing at the address, a wrong token: each says what to do.
    for url, secret, expected in (
        ("registry.local", token, "bắt đầu bằng https://"),
        (f"http://127.0.0.1:{processkit.free_port()}", token, "Không có phản hồi"),
        (kiosk.registry_url, "not-the-token", "từ chối mã kích hoạt"),
    ):
        page.fill("#registry_url", url)
        page.fill("#token", secret)
        page.click("button[type=submit]")
        page.wait_for_selector(f"#setup-error:has-text('{expected}')")
    page.fill("#registry_url", kiosk.registry_url)
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/login", timeout=60_000)
    page.goto("/setup")
    assert "Trạm này đã được thiết lập" in page.inner_text("main")
    r = httpx.post(
        f"{bare}/api/provision", json={"registry_url": kiosk.registry_url, "token": token}
    )
    assert r.status_code == 409
    # Five wrong technician PINs lock the technician screen, the right one included.
    page.goto("/technician/unlock")
    for _ in range(5):
        page.fill("#pin", "11111111")
        page.click("button[type=submit]")
        page.wait_for_selector("#pin-error")
    assert "bị khóa đến" in page.inner_text("#pin-error")
    assert page.is_disabled("#pin")
    r = httpx.post(f"{bare}/api/technician/unlock", json={"pin": uikit.TECHNICIAN_PIN})
    assert r.status_code == 423
    assert r.json()["error"] == "technician_locked"
    context.close()
