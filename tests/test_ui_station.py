"""The station's own screens in a real browser: outbox and sync, device health, cards to
encode (a spoiled card, then a good one), the technician screen behind its PIN (and the
lockout), and first-boot setup on a second, bare station provisioned against the world's
registry."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
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
    return {"Authorization": f"Bearer {stationkit.api_login(client, kiosk.scanner, kiosk.officer)}"}


def _enroll(kiosk: Kiosk, api: httpx.Client, auth: dict[str, str]) -> str:
    """A whole enrollment through the JSON API; the case id."""
    form = stationkit.walk_in_form("Đỗ Thị Hồng Nhung", "1991-09-14", "F", "Số 7 ngõ Trạm")
    case_id = stationkit.open_case(api, form, headers=auth)
    stationkit.capture_face(api, kiosk.camera, case_id, PERSON, headers=auth)
    stationkit.capture_fingers(api, kiosk.scanner, case_id, PERSON, headers=auth)
    stationkit.submit(api, case_id, headers=auth)
    return case_id


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


def _plug(kiosk: Kiosk, label: str) -> Path:
    """A USB stick as the station's detection sees one: a folder under its media root,
    listed in its mounts file (escaped as the kernel writes it). The stick's folder."""
    media = kiosk.runtime.settings.media
    stick = Path(media.roots[0]) / label
    stick.mkdir(parents=True, exist_ok=True)
    with media.mounts.open("a") as fh:
        fh.write(f"/dev/sdz1 {str(stick).replace(' ', chr(92) + '040')} vfat rw 0 0\n")
    return stick


def _unplug_all(kiosk: Kiosk) -> None:
    kiosk.runtime.settings.media.mounts.write_text("")


@pytest.mark.parametrize("size", ["small", "large"])
def test_outbox(browser: Any, kiosk: Kiosk, issued: str, size: str) -> None:
    page = _page(browser, kiosk, size)
    page.goto("/outbox")
    page.wait_for_selector("#outbox-panel .table")
    text = page.inner_text("main")
    assert "Kết nối hệ thống trung tâm" in text
    assert "Đồng bộ gần nhất" in text
    assert "Nếu không đồng bộ, việc thu nhận hồ sơ sẽ tạm dừng sau" in text
    assert issued[-8:] in text  # this file's package is listed with its state
    # No stick: said so, with what to do; nothing to type a path into.
    assert "Không phát hiện thấy USB nào" in page.inner_text("#media-none")
    assert "bấm Làm mới" in page.inner_text("#media-none")
    assert (
        page.locator("#outbox-media input[type=text], #outbox-media input:not([type])").count() == 0
    )
    uikit.screenshot(page, "outbox")
    assert uikit.serious_violations(page) == []
    if size == "large":
        with _media_replaced(page):  # a sync refreshes the media section too
            page.click("text=Đồng bộ ngay")
        page.wait_for_selector("#outbox-result .message-ok")
        assert "Đã đồng bộ" in page.inner_text("#outbox-result")
        try:
            _outbox_media(page, kiosk)
        finally:
            _unplug_all(kiosk)
    page.context.close()


@contextlib.contextmanager
def _media_replaced(page: Any) -> Iterator[None]:
    """Wait until the media section has been swapped for a fresh one after an action that
    refreshes it (htmx's outbox-changed): a click on the old section while the swap is in
    flight lands on a form that is about to be removed."""
    page.eval_on_selector("#outbox-media", "e => { e.dataset.stale = '1'; }")
    yield
    page.wait_for_selector("#outbox-media:not([data-stale])", state="attached")


def _hold(page: Any, *urls: str) -> list[Any]:
    """Hold the page's requests to ``urls`` (Playwright routes) until the test continues
    them: the list they arrive in."""
    held: list[Any] = []

    def hold(route: Any) -> None:
        held.append(route)

    for url in urls:
        page.route(url, hold)
    return held


def _until(page: Any, condition: Callable[[], bool], seconds: float = 10) -> None:
    """Let the browser run (its route handlers are called meanwhile) until ``condition``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the browser did not get there"
        page.wait_for_timeout(20)


def _outbox_media(page: Any, kiosk: Kiosk) -> None:
    """A stick plugged in, found on Refresh, exported to; receipts read from an export
    folder on it; the stick pulled out before the next export: refused in words."""
    stick = _plug(kiosk, "USB DỮ LIỆU")
    forged = stick / "vn-eid" / uikit.STATION_ID / "E-FORGED"  # receipts nobody signed
    forged.mkdir(parents=True, exist_ok=True)
    (forged / "manifest.json").write_text("{}")
    (forged / "receipts.cose").write_bytes(b"not a COSE message")
    with _media_replaced(page):
        page.click("#outbox-media button:has-text('Làm mới')")
    page.wait_for_selector("#outbox-media input[name=medium]:checked")
    assert "USB DỮ LIỆU" in page.inner_text("#outbox-media")
    uikit.screenshot(page, "outbox-usb")
    assert uikit.serious_violations(page) == []
    before = len(kiosk.runtime.journal.recent(500, action="outbox.exported"))
    with _media_replaced(page):
        page.click("text=Xuất ra USB")
    page.wait_for_selector("#outbox-result:has-text('Không có gì để xuất')")
    exported = kiosk.runtime.journal.recent(500, action="outbox.exported")
    assert len(exported) == before + 1
    assert (exported[0].subject, exported[0].detail["device"]) == (str(stick), "/dev/sdz1")
    page.wait_for_selector("#outbox-media input[name=export]:checked")
    # A tap on a form while the section is being refreshed: the tap cancels the refresh,
    # so the form it was made on stays and the refusal reaches the message area (a refresh
    # that replaced the form first left htmx unable to place it, and nothing showed).
    held = _hold(page, "**/outbox/media", "**/outbox/receipts")
    page.click("#outbox-media button:has-text('Làm mới')")
    _until(page, lambda: len(held) == 1)
    with page.expect_event("requestfailed", lambda r: r.url.endswith("/outbox/media")):
        page.click("text=Nhập biên nhận")
    _until(page, lambda: len(held) == 2)
    held[1].continue_()
    page.unroute("**/outbox/media")
    page.unroute("**/outbox/receipts")
    page.wait_for_selector("#flash .message-error")
    assert "Không dùng được USB" in page.inner_text("#flash")
    _unplug_all(kiosk)  # pulled out while the screen still offers it
    page.click("text=Xuất ra USB")
    page.wait_for_selector("#flash:has-text('Không còn phát hiện thấy USB đã chọn')")
    assert len(kiosk.runtime.journal.recent(500, action="outbox.exported")) == before + 1
    page.click("#outbox-media button:has-text('Làm mới')")
    page.wait_for_selector("#media-none")


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
    if size == "small":
        # The large run encodes the card; it may have run before this one in this pytest
        # worker (then the result shows on reload) or not (another worker, another order):
        # either screen must fit the small display.
        page.wait_for_selector("#card-serial, #encode-form")
        if page.locator("#card-serial").count():
            assert "đã được ghi chip và kiểm tra" in page.inner_text("#encode")
            uikit.screenshot(page, "cards-encode-done")
        else:
            assert page.locator("#encode-form button[type=submit]").is_visible()
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
    if size == "large":
        # Each action the technician takes is journalled: who (the session), what, how
        # it ended; the journal on the screen says so.
        page.click(".admin-head button:has-text('Đồng bộ ngay')")
        page.wait_for_selector("#tech-result:has-text('Đã đồng bộ')")
        page.click("text=Gửi các gói dữ liệu ngay")
        page.wait_for_selector("#tech-result:has-text('Trạm gửi ngay')")
        page.reload()
        journal = page.inner_text("main")
        for action in (
            "technician.synced",
            "technician.uploads_retried",
            "technician.devices_retried",
        ):
            assert action in journal
        assert "Đã xong" in journal
    page.click("text=Khóa")
    page.goto("/technician")
    page.wait_for_url("**/technician/unlock")
    page.context.close()


def test_ssh_panel_answers_a_tap_made_during_its_poll(browser: Any, kiosk: Kiosk) -> None:
    """SSH turned on from a stick's keys: the panel waits for root and asks again every
    2 s; a "turn off" with a wrong PIN tapped while one of those polls is on its way
    cancels it, and its refusal shows (a poll that replaced the panel first lost it)."""
    page = uikit.new_page(browser, kiosk, "large")
    page.goto("/technician/unlock")
    page.fill("#pin", uikit.TECHNICIAN_PIN)
    page.click("button[type=submit]")
    page.wait_for_url("**/technician")
    request = kiosk.runtime.settings.ssh.request_path(kiosk.runtime.settings.run_dir)
    stick = _plug(kiosk, "KHOA SSH")
    try:
        (stick / "vn-eid-ssh").mkdir()
        (stick / "vn-eid-ssh" / "authorized_keys").write_text(
            stationkit.ssh_public_key("kt@may") + "\n"
        )
        page.click("#ssh-panel .admin-head button")
        page.wait_for_selector("#ssh-on input[name=medium]:checked")
        page.fill("#ssh-pin-on", uikit.TECHNICIAN_PIN)
        page.click("#ssh-on button[type=submit]")
        page.wait_for_selector("#ssh-pending")  # root (not here) has not answered: polling
        assert request.exists()
        held = _hold(page, "**/technician/ssh")
        _until(page, lambda: len(held) == 1)
        page.fill("#ssh-pin-off", "99999999")
        with page.expect_event("requestfailed", lambda r: r.url.endswith("/technician/ssh")):
            page.click("#ssh-off button[type=submit]")
        page.unroute("**/technician/ssh")
        page.wait_for_selector("#ssh-error")
        assert "Sai mã PIN kỹ thuật viên" in page.inner_text("#ssh-error")
        assert request.exists()  # the "on" still waits for root; no "off" was asked
        assert json.loads(request.read_text())["action"] == "on"
    finally:
        request.unlink(missing_ok=True)  # nothing left waiting for root in this station
        _unplug_all(kiosk)
    page.click("text=Khóa")
    page.context.close()


def test_technician_api_needs_its_own_token(kiosk: Kiosk) -> None:
    with httpx.Client(base_url=kiosk.url, timeout=60) as api:
        auth = _api_login(kiosk, api)
        r = api.get("/api/technician/overview", headers=auth)  # an officer's session: no
        assert r.status_code == 401
        assert r.json()["error"] == "technician_required"
        for route in ("sync", "uploads/retry", "devices/retry", "provision"):
            r = api.post(f"/api/technician/{route}", json={}, headers=auth)
            assert (r.status_code, r.json()["error"]) == (401, "technician_required"), route
        # Nor does the kiosk's page take the officer's session for the technician's.
        officer = {"station_session": auth["Authorization"].split()[1]}
        r = api.post("/technician/sync", headers={"origin": kiosk.url}, cookies=officer)
        assert (r.status_code, r.headers["location"]) == (303, "/technician/unlock")
        # Export: only to a medium the station detected, named by its id; never a path.
        media = api.get("/api/outbox/media", headers=auth)
        assert (media.status_code, media.json()) == (200, [])
        r = api.post("/api/outbox/export", json={"path": "/tmp"}, headers=auth)
        assert r.status_code == 422
        r = api.post("/api/outbox/export", json={"medium": "/tmp"}, headers=auth)
        assert (r.status_code, r.json()["error"]) == (409, "medium_not_detected")
        try:
            stick = _plug(kiosk, "api")
            [medium] = api.get("/api/outbox/media", headers=auth).json()
            assert (medium["path"], medium["label"]) == (str(stick), "api")
            body = {"medium": medium["id"], "path": "/tmp"}
            r = api.post("/api/outbox/export", json=body, headers=auth)
            assert r.status_code == 422  # a path alongside is not taken either
            body = {"medium": medium["id"], "export": "../../etc"}
            r = api.post("/api/outbox/import-receipts", json=body, headers=auth)
            assert (r.status_code, r.json()["error"]) == (409, "export_not_found")
            r = api.post("/api/outbox/export", json={"medium": medium["id"]}, headers=auth)
            assert r.status_code == 200, r.text
        finally:
            _unplug_all(kiosk)
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
        # ... and the setup is the technician's: behind the technician PIN.
        page.wait_for_url("**/technician/unlock")
        assert "Trạm này chưa được thiết lập" in page.inner_text("#setup-note")
        uikit.screenshot(page, "setup-pin")
        assert uikit.serious_violations(page) == []
        page.fill("#pin", uikit.TECHNICIAN_PIN)
        page.click("button[type=submit]")
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
    # The technician's setup is in the journal, each try with how it ended.
    page.goto("/technician")
    journal = page.inner_text("main table >> nth=1")
    assert "technician.provisioned" in journal
    assert "technician.synced" in journal
    assert "Thất bại" in journal  # the wrong address, the wrong token
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
