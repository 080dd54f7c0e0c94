"""The whole enrollment as an officer does it on the kiosk, in one browser, on the
simulators: log in, a walk-in ticket called to the counter, the resident found in the
office's list, the form, consent, the photo (retaken once), ten fingers (one slipped and
rolled again, one bandaged: an exception a supervisor overrides on the spot), review,
submit, the slip, and the registry's answer arriving on the done page. The page is
reloaded at every step (and the browser restarted once, mid-fingers): each time the
kiosk comes back to the same step with nothing lost.

Then the citizen comes back under another name: the second enrollment's done page shows
the registry's duplicate check (nothing for the officer to do), until an adjudicator links
it and it is issued under the first number."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from station.ui import i18n
from tests import stationkit, uikit
from tests.uikit import Kiosk

PERSON = 81
"""The synthetic citizen (face and fingers) of this journey."""
NAME = "Lương Thị Hạnh"


def _reload_here(page: Any, check: str) -> None:
    """Reload: the same URL, and ``check`` (a selector of the step's state) is back."""
    url = page.url
    page.reload()
    page.wait_for_selector(check)
    assert page.url == url


@pytest.mark.timeout(600)
def test_a_whole_enrollment_on_the_kiosk(browser: Any, kiosk: Kiosk) -> None:
    i18n.forget_missing()
    ref = uikit.add_resident(kiosk, NAME, "1979-11-23", "female")
    page = uikit.new_page(browser, kiosk, "large")
    uikit.login(page, kiosk)

    # The queue: a walk-in ticket, called to this counter; the citizen sits down.
    page.goto("/queue")
    page.click("a[href='/queue/walk-in']")
    ticket = uikit.issue_walk_in(page, NAME)
    page.click("#q-call")
    page.locator(".queue-counter-card .queue-number", has_text=ticket).wait_for()
    _reload_here(page, f".queue-counter-card .queue-number:has-text('{ticket}')")
    page.click("#q-start")

    # The resident list: found without diacritics, the enrollment opened with the ticket.
    page.wait_for_url(f"**/residents?ticket={ticket}")
    page.fill("#q", "")
    page.type("#q", "luong thi hanh")
    row = page.locator("#results .resident").filter(has_text=NAME)
    row.wait_for()
    row.locator("button", has_text="Bắt đầu làm hồ sơ").click()
    page.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}/demographics"))
    case_id = re.search(r"/cases/([0-9a-f]{32})/", page.url)[1]  # type: ignore[index]
    assert kiosk.runtime.appointments.get(ticket).case_id == case_id
    assert kiosk.runtime.workflow().get(case_id).resident_ref == ref

    # The form: prefilled from the list; a half-typed field survives a reload.
    assert page.input_value("#full_name") == NAME
    page.select_option("#ethnicity", "01")
    uikit.htmx_idle(page)
    with page.expect_response(lambda r: r.url.endswith("/demographics/draft")):
        page.fill("#father_name", "Lương Văn Tâm")
    _reload_here(page, "#full_name")
    assert page.input_value("#father_name") == "Lương Văn Tâm"
    assert page.input_value("#ethnicity") == "01"
    page.click("button:has-text('Lưu và tiếp tục')")
    page.wait_for_url(re.compile(r"/consent$"))
    _reload_here(page, "button:has-text('Công dân đồng ý')")
    page.click("button:has-text('Công dân đồng ý')")

    # The photo: live guidance, taken by itself; retaken once, kept the second time.
    page.wait_for_url(re.compile(r"/face$"))
    for button in ("Bật máy ảnh", "Chụp lại ảnh"):
        kiosk.camera.sit(PERSON, ["walk_in:1", "good:600"])
        page.click(f"button:has-text('{button}')")
        page.wait_for_selector("#face[data-mode=live]")
        if button == "Bật máy ảnh":
            # A reload mid-capture joins the running capture again.
            _reload_here(page, "#face[data-mode=live]")
        page.wait_for_selector("img.face-portrait", timeout=60_000)
    _reload_here(page, "img.face-portrait")
    page.click("a:has-text('Tiếp tục: lấy vân tay'), button:has-text('Tiếp tục: lấy vân tay')")

    # Ten fingers: the right index slips and is rolled again; the left middle is bandaged.
    page.wait_for_url(re.compile(r"/fingers"))
    for position in range(1, 11):
        if position == 2:
            assert uikit.roll(page, kiosk, PERSON, 2, fault="smeared") == "smeared"
            assert uikit.current_finger(page) == 2
        if position == 8:
            page.click(".exception-box summary")
            page.check("input[name=code][value=bandaged]")
            page.fill("#exception-reason", "Băng bó sau tai nạn")
            page.click(".exception-form button[type=submit]")
            page.wait_for_selector("svg.hands a.finger[data-position='8'][data-state=exception]")
            continue
        assert uikit.roll(page, kiosk, PERSON, position) in ("accepted", "kept_best")
        if position == 5:
            # Mid-way, the browser restarts (a kiosk crash): the same cookies, same place.
            state = page.context.storage_state()
            page.context.close()
            page = browser.new_context(
                storage_state=state, base_url=kiosk.url, viewport={"width": 1280, "height": 800}
            ).new_page()
            page.goto(f"/cases/{case_id}")
            page.wait_for_url(re.compile(r"/fingers"))
            assert uikit.current_finger(page) == 6
    _reload_here(page, "svg.hands")
    # The supervisor overrides the exception here and now: ID, PIN, their finger.
    page.fill("#supervisor_id", kiosk.supervisor[0])
    page.fill("#supervisor_secret", kiosk.supervisor[3])
    kiosk.scanner.present(finger=2, person=kiosk.supervisor[2])
    page.click("button:has-text('Phê duyệt')")
    page.wait_for_function("() => !document.querySelector('#supervisor_id')", timeout=60_000)
    page.click("a:has-text('Tiếp tục: kiểm tra hồ sơ')")

    # Review: everything there, nothing waiting for approval; submit; the slip.
    page.wait_for_url(re.compile(r"/review$"))
    _reload_here(page, "button:has-text('Gửi hồ sơ')")
    assert page.locator(".approval").count() == 0
    assert page.is_enabled("button:has-text('Gửi hồ sơ')")
    page.click("button:has-text('Gửi hồ sơ')")
    page.wait_for_url(re.compile(r"/done$"), timeout=60_000)
    _reload_here(page, "#receipt")
    receipt = page.inner_text("#receipt").strip()
    assert receipt
    slip = page.request.get(f"/cases/{case_id}/slip.pdf")
    assert slip.ok
    assert slip.body().startswith(b"%PDF")
    assert kiosk.runtime.appointments.get(ticket).state == "done"
    uikit.wait_stage(page, "issued")

    # The citizen comes back as a walk-in under another name: a new record, the same
    # fingers. Its done page says the registry is checking a possible duplicate.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "station_session")
    api = httpx.Client(
        base_url=kiosk.url, headers={"authorization": f"Bearer {token}"}, timeout=120
    )
    try:
        walk_in = stationkit.walk_in_form("Lương Thị Hành", "1979-11-23", "F", "Số 9 phố Phúc Xá")
        dup_id = stationkit.open_case(api, walk_in)
        stationkit.capture_face(api, kiosk.camera, dup_id, PERSON)
        stationkit.capture_fingers(api, kiosk.scanner, dup_id, PERSON)
        dup_package = stationkit.submit(api, dup_id)["package_id"]
    finally:
        api.close()
    page.goto(f"/cases/{dup_id}/done")
    uikit.wait_stage(page, "adjudication")
    uikit.screenshots(page, "case-done-duplicate-check")
    _reload_here(page, "#progress.progress-adjudication")

    # The adjudicator links it to the first enrollment: issued, under the same number.
    stationkit.adjudicate_same(kiosk.registry, dup_package)
    uikit.wait_stage(page, "issued")
    page.context.close()
    assert i18n.missing("vi") == set()
