"""The day's queue and the start screen in a real browser: a walk-in ticket issued, called
to this kiosk's counter, marked a no-show (back in the queue), called again and let go; the
hourly figures with their verdict; "Start enrollment" carries the ticket to the search and
into a new case; the start screen lists the open enrollments at their step. Plus the
figures' arithmetic and the plan form's parsing without a browser."""

from __future__ import annotations

import re
from datetime import date, time
from typing import Any

import httpx
import pytest

from station.ui import i18n
from station.ui.pages.queue import parse_day, parse_time, queue_view, throughput_view
from tests import uikit
from tests.uikit import Kiosk


def station_api(world: Kiosk, page: Any) -> httpx.Client:
    """The station API with the browser's officer session (for setup and clean-up)."""
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "station_session")
    return httpx.Client(
        base_url=world.url, headers={"authorization": f"Bearer {token}"}, timeout=30
    )


def set_counter(page: Any, name: str) -> None:
    page.goto("/queue")
    page.fill("#counter", name)
    page.click(".queue-counter button")
    page.wait_for_selector(f".queue-counter-card h2:has-text('{name}')")


def issue_walk_in(page: Any, name: str, priority: str = "") -> str:
    page.goto("/queue")
    page.click("a[href='/queue/walk-in']")
    page.wait_for_url("**/queue/walk-in")
    page.fill("#name", name)
    page.check(f"input[name=priority][value='{priority}']")
    page.click("form button[type=submit].btn-primary")
    page.wait_for_url(re.compile(r"/queue\?issued="))
    number = str(page.url.rsplit("=", 1)[1])
    assert number in page.inner_text(".queue-issued")
    return number


@pytest.mark.parametrize("size", ["small", "large"])
def test_walk_in_call_next_no_show_and_figures(browser: Any, kiosk: Kiosk, size: str) -> None:
    page = uikit.new_page(browser, kiosk, size)
    uikit.login(page, kiosk)
    counter = f"Q-{size}"
    set_counter(page, counter)

    # A walk-in ticket: its own screen, the name and a priority (the elderly go first).
    page.goto("/queue/walk-in")
    uikit.screenshot(page, "queue-walk-in")
    assert uikit.serious_violations(page) == []
    page.click("form button[type=submit].btn-primary")  # no name: the form says so
    assert "Nhập họ tên công dân" in page.inner_text(".field-error")
    name = f"Hoàng Văn Thụ {size}"
    number = issue_walk_in(page, name, "elderly")
    row = page.locator("#waiting tr", has_text=number)
    assert name in row.inner_text()
    assert "Người cao tuổi" in row.inner_text()
    try:
        # Call next: the ticket comes to this counter, Call next waits until it is dealt with.
        page.click("#q-call")
        card = page.locator(".queue-counter-card")
        card.locator(".queue-number", has_text=number).wait_for()
        assert name in card.inner_text()
        assert page.locator("#q-call").count() == 0  # until this ticket is dealt with
        assert page.locator("#q-start").get_attribute("href") == f"/residents?ticket={number}"
        uikit.screenshot(page, "queue")
        assert uikit.serious_violations(page) == []

        # Did not come: back to the end of the queue, the counter free again.
        page.click("#q-no-show")
        card.locator(".queue-free").wait_for()
        assert number in page.inner_text("#waiting")
        # Called again; this time the citizen leaves without enrolling.
        page.click("#q-call")
        card.locator(".queue-number", has_text=number).wait_for()
        page.click("#q-finish")
        card.locator(".queue-free").wait_for()
        assert page.locator("#waiting tr", has_text=number).count() == 0
        # A reload shows the same (the state is the server's).
        page.reload()
        page.locator(".queue-counter-card .queue-free").wait_for()

        # The figures: a table and a bar per hour, and the verdict in words: the API's
        # figures (here seconds of work: any verdict may come out; events all within one
        # second make no hour at all, and the screen says so).
        page.click("a[href='/queue/throughput']")
        page.wait_for_url("**/queue/throughput")
        with station_api(kiosk, page) as api:
            hours = api.get("/api/queue/throughput").json()
        i18n.use("vi")
        if hours:
            assert sum(h["served"] for h in hours) >= 1
            expected = throughput_view(hours)["advice"]
            assert expected in page.inner_text("#verdict .message-text")
            assert page.locator(".queue-figures tbody tr").count() == len(hours)
            assert page.locator(".queue-figures .queue-bar .queue-seg").count() >= 1
        else:
            assert "chưa có số liệu" in page.inner_text("main")
        uikit.screenshot(page, "queue-throughput")
        assert uikit.serious_violations(page) == []
    finally:
        _close(kiosk, number)
        page.context.close()


def _close(world: Kiosk, number: str) -> None:
    """Take a test's ticket out of the shared queue, whatever state it was left in."""
    queue = world.runtime.appointments
    state = queue.get(number).state
    if state in ("booked", "waiting"):
        queue.cancel(number)
    elif state in ("called", "serving"):
        queue.finish(number)


def test_start_enrollment_carries_the_ticket_into_a_new_case(browser: Any, kiosk: Kiosk) -> None:
    page = uikit.new_page(browser, kiosk, "small")
    uikit.login(page, kiosk)
    set_counter(page, "Q-case")
    number = issue_walk_in(page, "Người Mới Chuyển Đến", "pregnant")
    api = station_api(kiosk, page)
    case_id = None
    try:
        # A ticket still waiting (not called to a counter) opens no case.
        before = len(api.get("/api/cases").json())
        refused = api.post("/api/cases", json={"ticket": number})
        assert (refused.status_code, refused.json()["error"]) == (409, "queue_error")
        assert len(api.get("/api/cases").json()) == before
        page.click("#q-call")
        page.locator(".queue-counter-card .queue-number", has_text=number).wait_for()
        page.click("#q-start")
        page.wait_for_url(f"**/residents?ticket={number}")
        # The search knows the ticket and starts from the name it was issued under.
        assert number in page.inner_text("#held-ticket")
        assert page.input_value("#q") == "Người Mới Chuyển Đến"
        page.wait_for_selector("#no-match")
        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/cases")) as sent:
            page.click(".residents-new button")
        assert sent.value.post_data == f"ticket={number}"
        page.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}/"))
        case_id = re.search(r"/cases/([0-9a-f]{32})/", page.url)[1]  # type: ignore[index]
        ticket = kiosk.runtime.appointments.get(number)
        assert (ticket.state, ticket.case_id) == ("serving", case_id)
        # The queue says the citizen is being enrolled here, and leads back to the case.
        page.goto("/queue")
        assert "Đang làm hồ sơ" in page.inner_text(".queue-counter-card")
        assert page.locator("#q-case").get_attribute("href") == f"/cases/{case_id}"

        # The start screen: the open enrollment with the citizen's name and its step.
        page.goto("/")
        item = page.locator(f".home-list a[href='/cases/{case_id}']")
        assert "Người Mới Chuyển Đến" in item.inner_text()
        assert "Tiếp theo:" in item.inner_text()
        assert number in page.inner_text("#queue-glance")
    finally:
        if case_id:
            api.post(f"/api/cases/{case_id}/cancel", json={"reason": "test"})
        _close(kiosk, number)
        api.close()
        page.context.close()


@pytest.mark.parametrize("size", ["small", "large"])
def test_start_screen(browser: Any, kiosk: Kiosk, size: str) -> None:
    i18n.forget_missing()
    page = uikit.new_page(browser, kiosk, size)
    uikit.login(page, kiosk)
    api = station_api(kiosk, page)
    case = api.post("/api/cases", json={}).json()
    try:
        page.goto("/")
        item = page.locator(f".home-list a[href='/cases/{case['id']}']")
        assert "Tiếp theo:" in item.inner_text()
        # The main ways in are on screen without scrolling, even at 800x480.
        height = page.viewport_size["height"]
        for selector in ("a.btn-large[href='/queue']", "a.btn-large[href='/residents']"):
            box = page.locator(selector).bounding_box()
            assert box is not None
            assert box["y"] + box["height"] <= height
            assert box["height"] >= 48
        for target in ("/outbox", "/devices", "/cards", "/technician"):
            assert page.locator(f".home-station a[href='{target}']").count() == 1
        uikit.screenshot(page, "home")
        assert uikit.serious_violations(page) == []
        assert i18n.missing("vi") == set()
    finally:
        api.post(f"/api/cases/{case['id']}/cancel", json={"reason": "test"})
        api.close()
        page.context.close()


def test_only_a_supervisor_plans_the_day(browser: Any, kiosk: Kiosk) -> None:
    page = uikit.new_page(browser, kiosk, "large")
    uikit.login(page, kiosk)
    page.goto("/queue")
    assert page.locator("a[href='/queue/plan']").count() == 0
    page.goto("/queue/plan")
    assert "Chỉ cán bộ giám sát" in page.inner_text("main")
    assert page.locator("form.queue-plan").count() == 0
    api = station_api(kiosk, page)
    r = api.post(
        "/api/queue/plan",
        json={"day": "2031-03-01", "opens": "07:30", "closes": "09:00"},
    )
    assert (r.status_code, r.json()["error"]) == (403, "supervisor_only")
    api.close()
    page.context.close()

    page = uikit.new_page(browser, kiosk, "small")
    uikit.login(page, kiosk, kiosk.supervisor)
    page.goto("/queue")
    page.click("a[href='/queue/plan']")
    page.fill("#plan-day", "01/03/2031")
    page.fill("#plan-opens", "7h30")
    page.fill("#plan-closes", "07:00")
    page.click("form.queue-plan button[type=submit]")
    assert "Giờ đóng cửa phải sau giờ mở cửa" in page.inner_text("form.queue-plan")
    page.fill("#plan-closes", "11:30")
    page.fill("#plan-break_from", "09:30")
    page.fill("#plan-break_to", "10:00")
    page.click("form.queue-plan button[type=submit]")
    page.wait_for_url("**/queue/plan?planned=7")
    uikit.screenshots(page, "queue-plan")
    assert uikit.serious_violations(page) == []
    # The same plan again overlaps: the form says so and keeps what was typed.
    page.fill("#plan-day", "01/03/2031")
    page.click("form.queue-plan button[type=submit]")
    assert "trùng với các khung giờ" in page.inner_text("main")
    assert page.input_value("#plan-day") == "01/03/2031"
    page.context.close()


def test_queue_view_and_figures_without_a_browser() -> None:
    i18n.use("en")
    data = {
        "day": "2021-03-01",
        "slots": [
            {"id": 1, "start": "2021-03-01T07:30:00+07:00", "end": "2021-03-01T08:00:00+07:00"}
        ],
        "tickets": [
            {"number": "A-001", "state": "booked", "slot_id": 1, "arrived_at": None,
             "called_at": None, "counter": None, "priority": None, "name": "A"},
            {"number": "W-001", "state": "waiting", "slot_id": None, "priority": "elderly",
             "arrived_at": "2021-03-01T07:40:00+07:00", "called_at": None, "counter": None,
             "name": "B"},
            {"number": "W-002", "state": "called", "slot_id": None, "priority": None,
             "arrived_at": "2021-03-01T07:41:00+07:00",
             "called_at": "2021-03-01T07:50:00+07:00", "counter": "2", "name": "C"},
        ],
        "waiting": ["W-001"],
    }  # fmt: skip
    from datetime import datetime

    now = datetime.fromisoformat("2021-03-01T08:00:30+07:00")
    view = queue_view(data, "1", now)
    assert view.mine is None
    assert [t["number"] for t in view.waiting] == ["W-001"]
    assert view.waiting[0]["waited"] == 20
    assert view.waiting[0]["priority_label"] == "Elderly"
    assert view.booked[0]["slot_label"] == "07:30–08:00"
    assert [t["number"] for t in view.elsewhere] == ["W-002"]
    assert queue_view(data, "2", now).mine is not None

    hour = {
        "hour": "2021-03-01T07:00:00+07:00", "arrived": 3, "called": 2, "served": 2,
        "no_shows": 0, "mean_wait": 4.0, "max_wait": 6.0, "mean_service": 12.0,
        "idle_nobody_waiting": 10.0, "busy_people_waiting": 40.0,
        "idle_people_waiting": 5.0, "busy_nobody_waiting": 5.0, "person_wait": 50.0,
        "verdict": "people wait for the machine",
    }  # fmt: skip
    figures = throughput_view([hour])
    assert figures["verdict"] == "people"
    assert "People are waiting for the machine" in figures["advice"]
    assert figures["rows"][0]["bar"]["busy_people_waiting"] == 65  # 40 of 60, 5 % steps
    assert figures["slow_calls"] == 5
    quiet = throughput_view([{**hour, "idle_nobody_waiting": 50.0, "busy_people_waiting": 0.0}])
    assert quiet["verdict"] == "machine"
    assert throughput_view([])["rows"] == []

    assert parse_time("7h30") == time(7, 30)
    assert parse_time("07:30") == time(7, 30)
    assert parse_time("24:00") is None
    assert parse_day("01/03/2021") == date(2021, 3, 1)
    assert parse_day("31/02/2021") is None
