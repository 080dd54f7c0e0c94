"""Touch and keyboard on the kiosk's other screens, in a real browser.

The capture screens have their own touch-target test (tests/test_ui_capture.py); here
every other screen an officer or a technician uses is measured at 800x480 and 1280x800:
each visible button, link and field at least 48 x 48 CSS px. Then the keyboard alone:
on each enrollment screen Tab reaches every control (a radio group once), each one it
lands on is on screen and shows where the focus is, and an officer logs in, gives
consent and chooses and rolls a finger without touching the screen.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests import stationkit, uikit
from tests.test_ui_capture import SMALL_TARGETS, TARGET_PX
from tests.uikit import Kiosk

PERSON = 53
"""This file's citizen (face and fingers): nobody else's, so the registry issues it."""
FORM = stationkit.walk_in_form("Phan Thị Ngọc Ánh", "1983-06-21", "F", "Số 13 phố Phúc Xá")
BANDAGED = 4
"""The finger left as an exception: the review asks for a supervisor."""


def _small_targets(page: Any, screen: str) -> list[str]:
    uikit.htmx_idle(page)
    found: list[str] = page.evaluate(SMALL_TARGETS, TARGET_PX)
    size = page.viewport_size
    return [f"{screen} at {size['width']}x{size['height']}: {target}" for target in found]


def _at_both_sizes(page: Any, screen: str) -> list[str]:
    """The page measured at each kiosk size (resized, then put back)."""
    before = dict(page.viewport_size)
    found: list[str] = []
    for width, height in uikit.SIZES.values():
        page.set_viewport_size({"width": width, "height": height})
        found += _small_targets(page, screen)
    page.set_viewport_size(before)
    return found


def _captured_case(kiosk: Kiosk, api: httpx.Client) -> str:
    """A case with demographics, consent, the portrait and nine fingers (one bandaged)."""
    case_id = stationkit.open_case(api, FORM)
    stationkit.capture_face(api, kiosk.camera, case_id, PERSON)
    stationkit.capture_fingers(api, kiosk.scanner, case_id, PERSON, bandaged=BANDAGED)
    return case_id


def test_every_touch_target_of_the_other_screens_is_48_px(browser: Any, kiosk: Kiosk) -> None:
    with httpx.Client(base_url=kiosk.url, timeout=120) as api:
        uikit.api_login(kiosk, api, kiosk.officer)
        case_id = _captured_case(kiosk, api)
    small: list[str] = []
    page = uikit.new_page(browser, kiosk, "large")
    page.goto("/login")
    small += _at_both_sizes(page, "login")
    page.goto("/devices")
    small += _at_both_sizes(page, "devices, logged out")
    page.goto("/technician/unlock")
    small += _at_both_sizes(page, "technician PIN")
    page.fill("#pin", uikit.TECHNICIAN_PIN)
    page.click("button[type=submit]")
    page.wait_for_url("**/technician")
    small += _at_both_sizes(page, "technician")
    page.click("text=Khóa")

    uikit.login(page, kiosk)  # (this ends the API client's session)
    for url, screen in (
        ("/", "start"),
        ("/queue", "queue"),
        ("/queue/walk-in", "walk-in ticket"),
        ("/queue/throughput", "queue figures"),
        ("/residents?q=le+van+cuong", "residents, found"),
        ("/residents?q=zzz+qqq", "residents, nobody"),
        (f"/cases/{case_id}/demographics", "demographics"),
        (f"/cases/{case_id}/consent", "consent"),
        (f"/cases/{case_id}/cancel", "cancel"),
        (f"/cases/{case_id}/review", "review, approval needed"),
        ("/outbox", "outbox"),
        ("/devices", "devices"),
        ("/cards", "cards"),
    ):
        page.goto(url)
        small += _at_both_sizes(page, screen)

    # The demographics refused: its messages and the summary's links to the fields.
    page.goto(f"/cases/{case_id}/demographics")
    page.fill("#dob", "31/02/1983")
    page.click("button[type=submit]:has-text('Lưu và tiếp tục')")
    page.wait_for_selector(".error-summary")
    page.keyboard.press("Escape")  # the on-screen keyboard away
    small += _at_both_sizes(page, "demographics, mistakes")

    # The supervisor approves at the review; submitted, the done page and its slip.
    page.goto(f"/cases/{case_id}/review")
    page.fill("#supervisor_id", kiosk.supervisor[0])
    page.fill("#supervisor_secret", kiosk.supervisor[3])
    kiosk.scanner.present(finger=2, person=kiosk.supervisor[2])
    page.click("button:has-text('Phê duyệt')")
    page.wait_for_selector(".badge-ok")
    small += _at_both_sizes(page, "review, ready")
    page.click("button:has-text('Gửi hồ sơ')")
    page.wait_for_url(re.compile(r"/done$"), timeout=60_000)
    small += _at_both_sizes(page, "done")
    page.context.close()
    assert small == [], "\n".join(small)


# --- the keyboard alone -------------------------------------------------------------------

# Every control a keyboard user should reach on the page as it is now, each marked with
# data-kbd (a radio group shares its first member's mark: Tab enters a group once).
_MARK_CONTROLS = """() => {
  const out = [];
  const groups = {};
  const all = document.querySelectorAll(
    "a[href], button, input:not([type=hidden]), select, textarea, summary");
  for (const el of all) {
    if (el.closest("#osk") || el.disabled || el.getAttribute("tabindex") === "-1") continue;
    if (!el.getClientRects().length || getComputedStyle(el).visibility === "hidden") continue;
    // Inside a closed <details> (Chromium keeps its boxes): only its summary is there.
    const closed = el.closest("details:not([open])");
    if (closed && !(el.tagName === "SUMMARY" && el.parentElement === closed)) continue;
    let mark = String(out.length);
    if (el.type === "radio") {
      if (el.name in groups) { el.dataset.kbd = groups[el.name]; continue; }
      groups[el.name] = mark;
    }
    el.dataset.kbd = mark;
    const name = (el.getAttribute("aria-label") || el.textContent || el.name || el.id || "");
    out.push(`${el.tagName.toLowerCase()} "${name.trim().slice(0, 40)}"`);
  }
  return out;
}"""

# Where the focus is now: its mark, whether it is on screen, whether it shows the focus
# (the kiosk's outline, or the hand diagram's thick stroke on the finger's shape).
_FOCUS = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const box = el.getBoundingClientRect();
  const onScreen = box.width > 0 && box.height > 0 && box.right > 0 && box.bottom > 0
    && box.left < window.innerWidth && box.top < window.innerHeight;
  const style = getComputedStyle(el);
  let shown = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2;
  const shape = el.querySelector && el.querySelector(".shape");
  if (!shown && shape) shown = parseFloat(getComputedStyle(shape).strokeWidth) >= 5;
  const name = (el.getAttribute("aria-label") || el.textContent || el.name || el.id || "");
  return {mark: el.dataset.kbd ?? null, onScreen, shown,
          name: `${el.tagName.toLowerCase()} "${name.trim().slice(0, 40)}"`};
}"""


def _tab_through(page: Any, screen: str) -> list[str]:
    """Tab from the top of the page until every control was reached (or twice as many
    presses as there are controls); what was wrong, in words."""
    uikit.htmx_idle(page)
    controls: list[str] = page.evaluate(_MARK_CONTROLS)
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); }")
    page.evaluate("() => window.scrollTo(0, 0)")
    reached: set[str] = set()
    problems: list[str] = []
    for _ in range(2 * len(controls) + 4):
        page.keyboard.press("Tab")
        focus = page.evaluate(_FOCUS)
        if focus is None:
            continue
        if not focus["onScreen"]:
            problems.append(f"{screen}: the focus is off screen on {focus['name']}")
        if not focus["shown"]:
            problems.append(f"{screen}: no visible focus on {focus['name']}")
        if focus["mark"] is not None:
            reached.add(focus["mark"])
        if len(reached) == len(controls):
            break
    problems += [
        f"{screen}: Tab never reaches {name}"
        for mark, name in enumerate(controls)
        if str(mark) not in reached
    ]
    page.keyboard.press("Escape")  # the on-screen keyboard (a field had the focus) away
    return problems


def _tab_to(page: Any, selector: str, presses: int = 80) -> None:
    """Press Tab until ``selector`` has the focus."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement === document.querySelector(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_the_keyboard_alone_reaches_every_control_and_enrolls(browser: Any, kiosk: Kiosk) -> None:
    with httpx.Client(base_url=kiosk.url, timeout=120) as api:
        uikit.api_login(kiosk, api, kiosk.officer)
        review_case = _captured_case(kiosk, api)
        form = {**FORM, "full_name": "Phan Văn Khải"}
        r = api.post("/api/cases", json={})
        assert r.status_code == 201, r.text
        fresh = str(r.json()["id"])
        assert api.put(f"/api/cases/{fresh}/demographics", json=form).status_code == 200
        # The fingers come after the photo: a case with its portrait for them.
        photographed = stationkit.open_case(api, {**FORM, "full_name": "Phan Văn Lộc"})
        stationkit.capture_face(api, kiosk.camera, photographed, PERSON)
    problems: list[str] = []
    page = uikit.new_page(browser, kiosk, "small")

    # Log in with the keyboard only: the ID, Tab, the PIN, Enter; then the finger.
    page.goto("/login")
    problems += _tab_through(page, "login")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    _tab_to(page, "#operator_id")
    page.keyboard.type(kiosk.officer[0])
    page.keyboard.press("Tab")
    page.keyboard.type(kiosk.officer[3])
    kiosk.scanner.present(finger=2, person=kiosk.officer[2])
    page.keyboard.press("Enter")
    page.wait_for_selector(".bar-officer")

    page.goto("/")
    problems += _tab_through(page, "start")
    page.goto(f"/cases/{fresh}/demographics")
    problems += _tab_through(page, "demographics")
    page.goto(f"/cases/{review_case}/review")
    problems += _tab_through(page, "review")

    # Consent with the keyboard: Tab to "the citizen agrees", Enter.
    page.goto(f"/cases/{fresh}/consent")
    problems += _tab_through(page, "consent")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    _tab_to(page, "button.btn-primary[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/(face|fingers)$"))
    problems += _tab_through(page, "face")

    # The fingers: the right middle chosen in the hand diagram, rolled, with Enter.
    page.goto(f"/cases/{photographed}/fingers")
    problems += _tab_through(page, "fingers")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    _tab_to(page, "svg.hands a.finger[data-position='3']")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"at=3"))
    assert uikit.current_finger(page) == 3
    _tab_to(page, "#roll-form button")
    kiosk.scanner.present(finger=3, person=PERSON)
    before = page.get_attribute("#fingers-panel", "data-swap") or ""
    page.keyboard.press("Enter")
    page.wait_for_function(
        "(b) => document.getElementById('fingers-panel').dataset.swap !== b", arg=before
    )
    assert page.get_attribute(".roll-said", "data-code") in ("accepted", "kept_best")
    page.context.close()
    assert problems == [], "\n".join(problems)


@pytest.fixture(autouse=True)
def _no_leftover_roll(kiosk: Kiosk) -> Any:
    """A roll or a finger left on the simulator by a failed test is not the next one's."""
    yield
    kiosk.scanner.reset()
