"""The enrollment's case screens in a real browser: opening a case (and a refusal that says
what to do), the demographics form (prefilled from the resident list, validation messages
next to the fields, cascading province / district / commune pickers, a half-typed form that
survives a reload and a new browser), consent and its refusal, the review with a
supervisor's approval, submit, and the done page following the registry to "issued".

The captures (face, fingers) are driven through the JSON API as the capture screens would;
each test adds its own residents to the office's list (the world is shared)."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
from playwright.sync_api import expect

from station.ui import i18n
from tests import stationkit, uikit
from tests.uikit import Kiosk

PERSON = 71
"""The synthetic citizen whose face and fingers this file's submitted enrollment uses."""


# --- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _api(world: Kiosk, who: tuple[str, str, int, str] | None = None) -> Iterator[httpx.Client]:
    """An API client logged in (PIN, then a finger on the simulator) as ``who``."""
    who = who or world.officer
    with httpx.Client(base_url=world.url, timeout=120) as client:
        yield uikit.api_login(world, client, who)


def _open_in_browser(page: Any, resident_ref: str = "", ticket: str = "") -> None:
    """Post the "new enrollment" form as the queue and search screens do."""
    with page.expect_navigation():
        page.evaluate(
            """([ref, ticket]) => {
            const form = document.createElement("form");
            form.method = "post";
            form.action = "/cases";
            for (const [k, v] of [["resident_ref", ref], ["ticket", ticket]]) {
                const input = document.createElement("input");
                input.type = "hidden"; input.name = k; input.value = v;
                form.appendChild(input);
            }
            document.body.appendChild(form);
            form.submit();
        }""",
            [resident_ref, ticket],
        )


def _case_id(page: Any) -> str:
    m = re.search(r"/cases/([0-9a-f]{32})/", page.url)
    assert m, page.url
    return m[1]


def _look(page: Any, name: str) -> None:
    uikit.screenshot(page, name)
    assert uikit.serious_violations(page) == []


def _capture(world: Kiosk, api: httpx.Client, case_id: str, person: int, skip: int) -> None:
    """Face and fingers through the API (finger ``skip`` bandaged: an exception)."""
    stationkit.capture_face(api, world.camera, case_id, person)
    stationkit.capture_fingers(api, world.scanner, case_id, person, bandaged=skip)


# --- API: divisions and the form's draft --------------------------------------------------------


def test_division_lists_and_the_form_draft_api(kiosk: Kiosk) -> None:
    with _api(kiosk) as api:
        provinces = api.get("/api/divisions").json()
        assert provinces["level"] == "province"
        assert len(provinces["items"]) == 63
        assert {"code": "01", "name": "Thành phố Hà Nội"} in provinces["items"]
        districts = api.get("/api/divisions", params={"province": "01"}).json()
        assert districts["level"] == "district"
        assert {"code": "001", "name": "Quận Ba Đình"} in districts["items"]
        communes = api.get("/api/divisions", params={"province": "01", "district": "001"}).json()
        assert communes["level"] == "commune"
        assert {"code": "00001", "name": "Phường Phúc Xá"} in communes["items"]
        new = api.get("/api/divisions", params={"scheme": "2025"}).json()
        assert len(new["items"]) == 34
        new_communes = api.get("/api/divisions", params={"scheme": "2025", "province": "01"})
        assert new_communes.json()["level"] == "commune"
        r = api.get("/api/divisions", params={"province": "99"})
        assert r.status_code == 404
        assert r.json()["error"] == "division_not_found"
        successor = api.get("/api/divisions/successor/00001").json()
        assert successor["scheme"] == "2025"
        assert successor["province_code"] == "01"
        assert successor["commune_code"] in {c["code"] for c in new_communes.json()["items"]}
        assert httpx.get(f"{kiosk.url}/api/divisions").status_code == 401

        case_id = api.post("/api/cases", json={}).json()["id"]
        assert api.get(f"/api/cases/{case_id}/demographics/draft").json() is None
        r = api.put(f"/api/cases/{case_id}/demographics/draft", json={"fields": {"x": "Lê"}})
        assert r.status_code == 200, r.text
        draft = api.get(f"/api/cases/{case_id}/demographics/draft").json()
        assert draft["fields"] == {"x": "Lê"}
        assert draft["saved_at"]
        area = {"province_code": "01", "district_code": "001", "commune_code": "00001"}
        form = {
            "full_name": "Lý Thị Mai",
            "date_of_birth": "1990",
            "sex": "F",
            "ethnicity": "01",
            "place_of_origin": {"areas": [area]},
            "permanent_residence": {"areas": [area]},
        }
        assert api.put(f"/api/cases/{case_id}/demographics", json=form).status_code == 200
        # Saved: the draft is no news any more.
        assert api.get(f"/api/cases/{case_id}/demographics/draft").json() is None
        api.post(f"/api/cases/{case_id}/cancel", json={"reason": "test"})
        r = api.put(f"/api/cases/{case_id}/demographics/draft", json={"fields": {"x": "y"}})
        assert r.status_code == 409
        assert r.json()["error"] == "case_not_editable"


def test_an_autosave_handled_after_the_save_never_comes_back(browser: Any, kiosk: Kiosk) -> None:
    """Issue 7's race, made deterministic: the form's autosave sent just before its save and
    handled just after it. The API refuses it by the form page's token (409 draft_stale),
    while a new form page (a new token) autosaves again; the kiosk drops the refused one
    without a word, and the form reopens as saved."""
    area = {"province_code": "01", "district_code": "001", "commune_code": "00001"}
    form = {
        "full_name": "Lý Thị Mai",
        "date_of_birth": "1990-05-06",
        "sex": "F",
        "ethnicity": "01",
        "place_of_origin": {"areas": [area]},
        "permanent_residence": {"areas": [area]},
    }
    first, second = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    with _api(kiosk) as api:
        case_id = api.post("/api/cases", json={}).json()["id"]
        draft_url = f"/api/cases/{case_id}/demographics/draft"
        late = {"fields": {"dob": "6/5/1990"}, "token": first}
        assert api.put(draft_url, json=late).status_code == 200
        r = api.put(f"/api/cases/{case_id}/demographics", json=form, params={"form_token": first})
        assert r.status_code == 200, r.text
        assert api.get(draft_url).json() is None
        r = api.put(draft_url, json=late)
        assert (r.status_code, r.json()["error"]) == (409, "draft_stale")
        assert api.get(draft_url).json() is None
        # The form opened again is a new page: its autosave is kept.
        r = api.put(draft_url, json={"fields": {"dob": "7/5/1990"}, "token": second})
        assert r.status_code == 200, r.text
        assert api.get(draft_url).json()["fields"] == {"dob": "7/5/1990"}
        # Saved again: both pages' late autosaves are stale now.
        r = api.put(f"/api/cases/{case_id}/demographics", json=form, params={"form_token": second})
        assert r.status_code == 200, r.text
        for token in (first, second):
            r = api.put(draft_url, json={"fields": {"dob": "8/5/1990"}, "token": token})
            assert (r.status_code, r.json()["error"]) == (409, "draft_stale")
        assert api.get(draft_url).json() is None
        # Without a token (a script) a draft is kept as before; a malformed token is refused.
        assert api.put(draft_url, json={"fields": {"dob": "9/5/1990"}}).status_code == 200
        assert api.put(draft_url, json={"fields": {}, "token": "x"}).status_code == 422
        assert api.delete(draft_url).status_code == 204

    # The kiosk: every rendering of the form is a new page with its own token; the save
    # names it, and that page's autosave posted afterwards is answered with nothing to show.
    page = uikit.new_page(browser, kiosk, "large")
    uikit.login(page, kiosk)
    page.goto(f"/cases/{case_id}/demographics")
    token = page.input_value("input[name=form_token]")
    page.reload()
    assert page.input_value("input[name=form_token]") not in ("", token)
    token = page.input_value("input[name=form_token]")
    entries = page.evaluate(
        "() => [...new FormData(document.getElementById('demographics')).entries()]"
    )
    page.click("button[type=submit]:has-text('Lưu và tiếp tục')")
    page.wait_for_url(re.compile(r"/consent$"))
    post = """([url, entries]) =>
        fetch(url, {method: "POST", body: new URLSearchParams(entries)}).then(r => r.status)"""
    typed = [[k, "6/5/1990" if k == "dob" else v] for k, v in entries]
    assert page.evaluate(post, [f"/cases/{case_id}/demographics/draft", typed]) == 204
    page.goto(f"/cases/{case_id}/demographics")
    assert page.input_value("#dob") == "06/05/1990"
    assert not page.is_visible(".restored")
    # The page opened again autosaves: what it types comes back after a reload.
    fresh = page.input_value("input[name=form_token]")
    assert fresh != token
    typed = [[k, fresh if k == "form_token" else v] for k, v in typed]
    assert page.evaluate(post, [f"/cases/{case_id}/demographics/draft", typed]) == 200
    page.reload()
    assert page.input_value("#dob") == "6/5/1990"
    assert page.is_visible(".restored")
    with _api(kiosk) as api:
        api.post(f"/api/cases/{case_id}/cancel", json={"reason": "test done"})
    page.context.close()


# --- the browser --------------------------------------------------------------------------------


def test_demographics_form_draft_and_consent(browser: Any, kiosk: Kiosk) -> None:
    i18n.forget_missing()
    ref = uikit.add_resident(kiosk, "Hoàng Văn Minh", "1990-05-06")
    for size in ("large", "small"):
        page = uikit.new_page(browser, kiosk, size)
        uikit.login(page, kiosk)
        _open_in_browser(page, ref)
        assert page.url.endswith("/demographics"), page.url
        case_id = _case_id(page)
        # Prefilled from the resident list; what the list lacks is empty.
        assert page.input_value("#full_name") == "Hoàng Văn Minh"
        assert page.input_value("#dob") == "06/05/1990"
        assert page.is_checked("input[name=sex][value=M]")
        assert page.input_value("#origin-old-province") == "01"
        assert page.input_value("#origin-old-commune") == "00001"
        assert page.input_value("#residence-detail") == "Số 3 phố Phúc Xá"
        assert page.input_value("#ethnicity") == ""
        assert page.get_attribute("#dob", "data-osk") == "digits"
        assert page.get_attribute("#full_name", "data-osk") == "vi"
        _look(page, "case-demographics")

        # Invalid input: messages next to the fields, saying how to fix them.
        page.fill("#dob", "31/02/1990")
        page.fill("#old_id_number", "123")
        page.click("button[type=submit]:has-text('Lưu và tiếp tục')")
        page.wait_for_selector(".error-summary")
        assert "/demographics" in page.url
        assert "dd/mm/yyyy" in page.inner_text("#dob-error")
        assert "9 chữ số" in page.inner_text("#old_id_number-error")
        assert "dân tộc" in page.inner_text("#ethnicity-error")
        assert page.get_attribute("#dob", "aria-invalid") == "true"
        assert page.input_value("#dob") == "31/02/1990"  # what was typed stays
        _look(page, "case-demographics-errors")

        if size == "large":
            # The pickers cascade: a province brings its districts, a district its
            # communes, and the 2025 structure follows the old commune.
            page.select_option("#residence-old-province", "02")
            page.wait_for_selector("#residence-old-district option[value='026']", state="attached")
            uikit.htmx_idle(page)
            assert page.input_value("#residence-old-commune") == ""
            page.select_option("#residence-old-district", "026")
            page.wait_for_selector("#residence-old-commune option[value='00712']", state="attached")
            uikit.htmx_idle(page)
            page.select_option("#residence-old-commune", "00712")
            expect(page.locator("#residence-new-commune")).not_to_have_value("")
            # Hà Giang's Đồng Văn became part of Tuyên Quang in 2025.
            assert page.input_value("#residence-new-province") not in ("", "01")
            uikit.htmx_idle(page)
            page.select_option("#residence-old-province", "01")
            page.wait_for_selector("#residence-old-district option[value='001']", state="attached")
            uikit.htmx_idle(page)
            page.select_option("#residence-old-district", "001")
            page.wait_for_selector("#residence-old-commune option[value='00001']", state="attached")
            uikit.htmx_idle(page)
            page.select_option("#residence-old-commune", "00001")

            # Half-typed input survives a reload and a new browser with the same cookies.
            with page.expect_response(
                lambda r: "father_name=Ho" in (r.request.post_data or "")
            ) as saved:
                page.fill("#father_name", "Hoàng Văn Tư")
            assert saved.value.ok
            expect(page.locator("#draft-state")).to_contain_text("nháp")
            # Typed and left at once (before the autosave's pause): it goes as a beacon.
            page.fill("#mark1", "Sẹo chấm C:2cm dưới đuôi mắt trái")
            page.goto("/")
            for _ in range(20):
                page.goto(f"/cases/{case_id}/demographics")
                if page.input_value("#mark1"):
                    break
            assert page.input_value("#mark1") == "Sẹo chấm C:2cm dưới đuôi mắt trái"
            page.goto(f"/cases/{case_id}/demographics")
            assert page.input_value("#father_name") == "Hoàng Văn Tư"
            assert page.input_value("#dob") == "31/02/1990"
            assert page.is_visible(".restored")
            state = page.context.storage_state()
            page.context.close()
            context = browser.new_context(
                storage_state=state, base_url=kiosk.url, viewport={"width": 1280, "height": 800}
            )
            page = context.new_page()
            page.goto(f"/cases/{case_id}")
            assert page.url.endswith("/demographics")
            assert page.input_value("#father_name") == "Hoàng Văn Tư"
            assert page.input_value("#residence-old-commune") == "00001"

        page.fill("#dob", "6/5/1990")
        page.fill("#old_id_number", "")
        page.select_option("#ethnicity", "01")
        page.click("button[type=submit]:has-text('Lưu và tiếp tục')")
        page.wait_for_url(re.compile(r"/consent$"))
        assert "Đồng ý" in page.inner_text("[aria-current=step]")
        _look(page, "case-consent")
        # The saved form comes back as saved (no stale draft).
        page.goto(f"/cases/{case_id}/demographics")
        assert page.input_value("#dob") == "06/05/1990"
        assert not page.is_visible(".restored")
        if size == "large":
            assert page.input_value("#father_name") == "Hoàng Văn Tư"
        page.goto(f"/cases/{case_id}/consent")

        if size == "large":
            # The citizen refuses: confirm, and the enrollment is cancelled.
            page.click("a.btn:has-text('Công dân không đồng ý')")
            page.wait_for_url(re.compile(r"/cancel"))
            assert page.is_checked("input[name=reason][value=consent_refused]")
            uikit.screenshots(page, "case-cancel")
            page.click("button:has-text('Hủy hồ sơ')")
            page.wait_for_url(re.compile(r"/done$"))
            assert "đã bị hủy" in page.inner_text("h1")
            with _api(kiosk) as api:
                assert api.get(f"/api/cases/{case_id}").json()["state"] == "cancelled"
        else:
            page.click("button:has-text('Công dân đồng ý')")
            page.wait_for_url(re.compile(r"/cases/[0-9a-f]+/(face|fingers)"))
            with _api(kiosk) as api:
                case = api.get(f"/api/cases/{case_id}").json()
                assert case["consent_at"]
                api.post(f"/api/cases/{case_id}/cancel", json={"reason": "test done"})
        page.context.close()
    assert i18n.missing("vi") == set()


def test_a_refused_enrollment_says_what_to_do(browser: Any, kiosk: Kiosk) -> None:
    young = uikit.add_resident(kiosk, "Đỗ Minh Khang", "2020-01-02")
    taken = uikit.add_resident(kiosk, "Vũ Văn Nam", "1970-03-04")
    with _api(kiosk) as api:
        first = api.post("/api/cases", json={"resident_ref": taken}).json()["id"]
    page = uikit.new_page(browser, kiosk, "small")
    uikit.login(page, kiosk)  # (this ends the API client's session: one officer, one screen)
    _open_in_browser(page, young)
    assert "14" in page.inner_text(".reasons")
    uikit.screenshots(page, "case-refused")
    _open_in_browser(page, taken)
    assert "đã có một hồ sơ" in page.inner_text(".reasons")
    page.click("a.btn:has-text('Tiếp tục hồ sơ đó')")
    page.wait_for_url(re.compile(f"/cases/{first}/demographics"))
    page.goto(f"/cases/{first}/cancel")
    page.check("input[value=wrong_citizen]")
    page.click("button:has-text('Hủy hồ sơ')")
    page.wait_for_url(re.compile(r"/done$"))
    page.context.close()


def test_review_approval_submit_and_done(browser: Any, kiosk: Kiosk) -> None:
    i18n.forget_missing()
    ref = uikit.add_resident(kiosk, "Trịnh Văn Phúc", "1988-08-18")
    with _api(kiosk) as api:
        case_id = stationkit.open_case(api, {"ethnicity": "01"}, resident_ref=ref)
        _capture(kiosk, api, case_id, PERSON, skip=4)

    small = uikit.new_page(browser, kiosk, "small")
    uikit.login(small, kiosk)
    # The same browser at the other size (a second login would end the first session).
    large = browser.new_context(
        storage_state=small.context.storage_state(),
        base_url=kiosk.url,
        viewport={"width": 1280, "height": 800},
    ).new_page()
    pages = {"small": small, "large": large}
    for page in pages.values():
        page.goto(f"/cases/{case_id}")
        page.wait_for_url(re.compile(r"/review$"))
        assert "Ngón áp út tay phải" in page.inner_text(".approval")
        assert page.is_disabled("button:has-text('Gửi hồ sơ')")
        assert page.is_visible("img.portrait")
        _look(page, "case-review-approval")

    page = pages["large"]
    # The officer may not approve their own work: the API says so, and the page shows it.
    page.fill("#supervisor_id", kiosk.officer[0])
    page.fill("#supervisor_secret", kiosk.officer[3])
    kiosk.scanner.present(finger=2, person=kiosk.officer[2])
    page.click("button:has-text('Phê duyệt')")
    page.wait_for_selector("#flash .message-error")
    assert page.inner_text("#flash").strip()
    # The supervisor: ID, PIN, finger.
    page.fill("#supervisor_id", kiosk.supervisor[0])
    page.fill("#supervisor_secret", kiosk.supervisor[3])
    kiosk.scanner.present(finger=2, person=kiosk.supervisor[2])
    page.click("button:has-text('Phê duyệt')")
    page.wait_for_selector(".badge-ok")
    assert page.locator(".approval").count() == 0
    assert "đã phê duyệt" in page.inner_text(".finger.is-exception")
    _look(page, "case-review")
    pages["small"].reload()
    _look(pages["small"], "case-review")

    page.click("button:has-text('Gửi hồ sơ')")
    page.wait_for_url(re.compile(r"/done$"), timeout=60_000)
    assert "Đã gửi hồ sơ" in page.inner_text("h1")
    pdf = page.request.get(f"/cases/{case_id}/slip.pdf")
    assert pdf.ok
    assert pdf.body().startswith(b"%PDF")
    # Print slip stays in the kiosk (a window opened in kiosk mode cannot be closed): the
    # PDF loads in a hidden frame of this page, which prints it; no window, no navigation.
    # (Headless Chromium crashes the page when it really prints a PDF frame: the frame's
    # print() only marks that it was called.)
    page.add_init_script("window.print = () => { document.documentElement.dataset.printed = 1; }")
    assert page.get_attribute("#print-slip", "target") is None
    here = page.url
    page.click("#print-slip")
    page.wait_for_selector("#print-said[data-state=printed]", state="attached")
    src = page.get_attribute("#print-frame", "src") or ""
    assert src.endswith(f"/cases/{case_id}/slip.pdf"), src
    # The print frame itself (Chromium's PDF viewer may add an inner frame at the same URL).
    slip = page.locator("#print-frame").element_handle().content_frame()
    assert slip is not None
    assert slip.url.endswith("/slip.pdf"), slip.url
    assert slip.evaluate("document.documentElement.dataset.printed") == "1"
    assert page.evaluate("document.documentElement.dataset.printed") is None
    assert page.url == here
    assert page.context.pages == [page]
    pages["small"].goto(f"/cases/{case_id}/done")
    _look(pages["small"], "case-done")
    # The registry's answer arrives by itself: issued (the card can be encoded).
    page.wait_for_selector("#progress.progress-issued", timeout=120_000)
    assert page.locator("#progress a[href='/cards']").count() == 1
    page.reload()
    assert page.inner_text("#receipt").strip()
    _look(page, "case-done")
    # A submitted case's earlier steps are closed: they lead to the done page.
    page.goto(f"/cases/{case_id}/demographics")
    assert page.url.endswith("/done")
    for p in pages.values():
        p.context.close()
    assert i18n.missing("vi") == set()
