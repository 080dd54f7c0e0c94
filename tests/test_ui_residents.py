"""Resident search in a real browser: results as the officer types, by name without
diacritics, by date of birth typed dd/mm/yyyy, by the old 9-digit ID; an empty result says
what to try next; the search survives a reload; "Start enrollment" opens the case for the
row found. Plus the date parsing and display without a browser."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from station.ui import i18n
from station.ui.pages.residents import address_line, dob_to_iso, show_date
from tests import uikit
from tests.uikit import Kiosk


def results(page: Any) -> Any:
    return page.locator("#results .resident")


def type_into(page: Any, selector: str, text: str) -> None:
    """Type as a finger would (input events, so the as-you-type trigger fires)."""
    page.fill(selector, "")
    page.locator(selector).press_sequentially(text, delay=20)


@pytest.mark.parametrize("size", ["small", "large"])
def test_search_as_you_type(browser: Any, kiosk: Kiosk, size: str) -> None:
    i18n.forget_missing()
    page = uikit.new_page(browser, kiosk, size)
    uikit.login(page, kiosk)
    page.goto("/residents")
    assert page.locator(".residents-hint").is_visible()
    for selector, keyboard in (("#q", "vi"), ("#dob", "digits"), ("#old_id", "digits")):
        assert page.locator(selector).get_attribute("data-osk") == keyboard

    # A name without diacritics finds "Lê Văn Cường" as it is typed, without pressing Search.
    type_into(page, "#q", "le van cuong")
    row = results(page).filter(has_text="Lê Văn Cường")
    row.wait_for()
    text = row.inner_text()
    for fact in ("12/04/1985", "Nam", "012345678", "HK-101", "Số 5 phố Phúc Xá"):
        assert fact in text
    assert row.locator("button", has_text="Bắt đầu làm hồ sơ").count() == 1
    assert "q=le+van+cuong" in page.url  # the address follows the search
    page.keyboard.press("Escape")  # the on-screen keyboard away: the results in view
    uikit.screenshot(page, "residents-search")
    assert uikit.serious_violations(page) == []
    page.reload()
    results(page).filter(has_text="Lê Văn Cường").wait_for()
    assert page.input_value("#q") == "le van cuong"

    # Date of birth as written on papers; the name field cleared.
    type_into(page, "#q", "")
    page.locator("#q").dispatch_event("input")
    type_into(page, "#dob", "03/11/1992")
    results(page).filter(has_text="Phạm Thị Hoa").wait_for()
    assert results(page).count() == 1
    assert "03/11/1992" in results(page).first.inner_text()
    # Half a date is not searched yet: it says how to type it.
    type_into(page, "#dob", "03/11/19")
    page.wait_for_selector("#results-problems .field-error")
    assert "dd/mm/yyyy" in page.inner_text("#results-problems")

    # The old ID (CMND); a year-only date of birth shows as the year.
    type_into(page, "#dob", "")
    page.locator("#dob").dispatch_event("input")
    type_into(page, "#old_id", "034567890")
    row = results(page).filter(has_text="Vũ Thị Lan")
    row.wait_for()
    assert "Sinh ngày 1978" in row.inner_text()
    assert "Nữ" in row.inner_text()

    # Nobody: what to try next, and the way to a new record.
    type_into(page, "#old_id", "")
    page.locator("#old_id").dispatch_event("input")
    # Words no name in the shared world starts with, and no Telex keys (typed as they
    # stand): a partial match (rank 4) on a word another test added ("Lâm Gia Bảo" for
    # "bao") would fill the results instead.
    type_into(page, "#q", "qyk tulp")
    page.wait_for_selector("#no-match")
    assert "không dấu" in page.inner_text("#no-match")
    page.keyboard.press("Escape")
    assert page.locator(".residents-new button").is_visible()
    uikit.screenshot(page, "residents-empty")
    assert uikit.serious_violations(page) == []
    assert i18n.missing("vi") == set()
    page.context.close()


def test_start_enrollment_opens_the_case_for_the_row(browser: Any, kiosk: Kiosk) -> None:
    # A resident of this test's own (the world is shared: nobody else opens a case for it).
    old_id = f"{uuid.uuid4().int % 10**9:09d}"
    name = "Phan Thị Ngọc Diệp"
    ref = uikit.add_resident(kiosk, name, "1993-07-21", "female", old_id=old_id)
    page = uikit.new_page(browser, kiosk, "large")
    uikit.login(page, kiosk)
    page.goto(f"/residents?old_id={old_id}")
    row = results(page).filter(has_text=name)
    row.wait_for()
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "station_session")
    api = httpx.Client(base_url=kiosk.url, headers={"authorization": f"Bearer {token}"})
    case_id = None
    try:
        start = row.locator("button", has_text="Bắt đầu làm hồ sơ")
        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/cases")) as sent:
            start.click()
        assert sent.value.post_data == f"resident_ref={ref}"
        page.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}/"))
        case_id = re.search(r"/cases/([0-9a-f]{32})/", page.url)[1]  # type: ignore[index]
        # Back in the search, the row says an enrollment is open and leads to it.
        page.goto(f"/residents?old_id={old_id}")
        row = results(page).filter(has_text=name)
        assert "Đang có hồ sơ mở tại trạm này" in row.inner_text()
        assert row.locator(f"a[href='/cases/{case_id}']").count() == 1
        assert row.locator("button", has_text="Bắt đầu làm hồ sơ").count() == 0
    finally:
        if case_id:
            api.post(f"/api/cases/{case_id}/cancel", json={"reason": "test"})
        api.close()
        page.context.close()


def test_dates_typed_and_shown() -> None:
    assert dob_to_iso("12/04/1985") == "1985-04-12"
    assert dob_to_iso("1/4/1985") == "1985-04-01"
    assert dob_to_iso("12041985") == "1985-04-12"
    assert dob_to_iso("04/1985") == "1985-04"
    assert dob_to_iso("1985") == "1985"
    assert dob_to_iso("12/04/19") is None
    assert dob_to_iso("32/01/1985") is None
    assert show_date("1985-04-12") == "12/04/1985"
    assert show_date("1985-04") == "04/1985"
    assert show_date("1978") == "1978"
    area = {
        "province_code": "01",
        "district_code": "001",
        "commune_code": "00001",
        "commune_name": "Phúc Xá",
        "district_name": "Ba Đình",
        "province_name": "Hà Nội",
    }
    assert address_line({"detail": "Số 5", "areas": [area]}) == "Số 5, Phúc Xá, Ba Đình, Hà Nội"
