"""Every kiosk screen in English: no Vietnamese word may show unless it is data.

An officer who switched the kiosk to English must not meet a Vietnamese sentence that a
template, a page or the station API forgot to translate. The walk goes through the
screens in English (the ``station_lang`` cookie) with an enrollment from the search to
"issued", and on each screen reads every text node, every text-bearing attribute
(labels, titles, placeholders, confirmations, the texts scripts show later) and the
page's title, hidden parts included (they show later). A word written with Vietnamese
letters (a tone mark, ă â ê ô ơ ư, đ) fails the test unless it is part of the data on the
station: the residents, citizens, operators and tickets it holds, the administrative
divisions, the record's code lists (ethnic groups, religions) and the office. Text marked
``lang="vi"`` (the language switch says "Tiếng Việt") is left alone, as are the
on-screen keyboard's keys (they are the letters it types).

The same check in Vietnamese is the catalogue's: the UI tests (the journey among them)
assert ``i18n.missing("vi")`` is empty after their walk.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest

from enrollment.divisions import load as load_divisions
from enrollment.record import DivisionScheme
from enrollment.reference import ETHNIC_GROUPS
from station.ui.pages.case import RELIGIONS
from tests import stationkit, uikit
from tests.uikit import Kiosk

PERSON = 67
"""This file's citizen (face and fingers): nobody else's, so the registry issues it."""
NAME = "Trương Thị Mỹ Duyên"

SHOWN_ON_PURPOSE = {
    # The form's hint names the legal term its English label ("Place of origin") stands for.
    "Quê quán",
    # Marks are written on the record in Vietnamese, so the example of one is too.
    "Nốt ruồi C:1cm trên trước mép phải",
}
"""Vietnamese that the English screens show on purpose (taken out like data)."""

# Text of the page as its reader meets it: text nodes (not of scripts, styles, the
# on-screen keyboard's keys or parts marked with another language) and the attributes that
# carry words; a select's options are text nodes too.
_PAGE_TEXTS = """() => {
  const lang = document.documentElement.lang;
  const skip = (el) => el.closest("script, style, #osk") !== null
    || el.closest(`[lang]:not([lang="${lang}"])`) !== null;
  const out = [document.title];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement && !skip(n.parentElement)) out.push(n.textContent);
  }
  const words = /^(title|alt|placeholder|aria-.*|data-.*|hx-confirm|hx-prompt)$/;
  for (const el of document.querySelectorAll("*")) {
    if (el.closest(`[lang]:not([lang="${lang}"])`) !== null) continue;
    for (const a of el.attributes) {
      if (words.test(a.name)) out.push(a.value);
    }
    if (el.matches("input[type=submit], input[type=button]")) out.push(el.value);
  }
  return out;
}"""


def is_vietnamese(word: str) -> bool:
    """Written with Vietnamese letters: a tone mark or a vowel's hat, horn or breve (a
    combining mark once decomposed), or đ."""
    return "đ" in word.lower() or any(
        unicodedata.combining(c) for c in unicodedata.normalize("NFD", word)
    )


def strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON-like value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings(item)


def vietnamese_words(texts: Iterable[str], data: Iterable[str]) -> list[str]:
    """The Vietnamese words of ``texts`` once every occurrence of a ``data`` string is
    taken out (the longest first, so a name is taken out whole)."""
    phrases = sorted(
        {unicodedata.normalize("NFC", d).strip() for d in data if is_vietnamese(d)},
        key=len,
        reverse=True,
    )
    found: list[str] = []
    for text in texts:
        rest = unicodedata.normalize("NFC", text)
        if not is_vietnamese(rest):
            continue
        for phrase in phrases:
            if phrase and phrase in rest:
                rest = rest.replace(phrase, " ")
        found.extend(w for w in re.findall(r"[^\W\d_]+", rest) if is_vietnamese(w))
    return found


def code_lists() -> set[str]:
    """Names the record's code tables hold: divisions (both structures), ethnic groups,
    religions."""
    names: set[str] = {*ETHNIC_GROUPS.values(), *RELIGIONS}
    divisions = load_divisions()
    for scheme in DivisionScheme:
        for commune in divisions.iter_communes(scheme):
            names.update(
                n for n in (commune.name, commune.district_name, commune.province_name) if n
            )
    return names


def station_data(kiosk: Kiosk, api: httpx.Client) -> set[str]:
    """Every string the station holds as data: the resident list, the tickets, the
    operators, each case's demographics and finger exception reasons, the media labels."""
    runtime = kiosk.runtime
    found: set[str] = {stationkit.OFFICE_NAME}
    with runtime.db.read() as c:
        for (data,) in c.execute("SELECT data FROM residents"):
            found.update(strings(json.loads(data)))
        found.update(name for (name,) in c.execute("SELECT name FROM appointments_tickets"))
        found.update(name for (name,) in c.execute("SELECT full_name FROM operators"))
    workflow = runtime.workflow()
    for case in workflow.cases(None, limit=100_000):
        demographics = workflow.demographics(case.id)
        if demographics is not None:
            found.update(strings(demographics.model_dump(mode="json")))
        found.update(
            e.exception_reason for e in workflow.fingers(case.id).values() if e.exception_reason
        )
    media = api.get("/api/outbox/media")
    if media.status_code == 200:
        found.update(strings(media.json()))
    return found


class Walk:
    """The screens looked at, and the Vietnamese words each showed that are not data."""

    def __init__(self, page: Any, kiosk: Kiosk, api: httpx.Client) -> None:
        self.page, self.kiosk, self.api = page, kiosk, api
        self.codes = code_lists() | SHOWN_ON_PURPOSE
        self.problems: dict[str, list[str]] = {}
        self.seen: list[str] = []

    def look(self, screen: str) -> None:
        uikit.htmx_idle(self.page)
        assert self.page.evaluate("document.documentElement.lang") == "en", screen
        texts = self.page.evaluate(_PAGE_TEXTS)
        data = self.codes | station_data(self.kiosk, self.api)
        words = vietnamese_words(texts, data)
        if words:
            self.problems[f"{screen} ({self.page.url})"] = list(dict.fromkeys(words))
        self.seen.append(screen)


def test_the_word_check() -> None:
    data = ["Nguyễn Văn An", "Phúc Xá"]
    assert vietnamese_words(["Logged in as Nguyễn Văn An"], data) == []
    assert vietnamese_words(["Số 3 phố Phúc Xá"], data) == ["Số", "phố"]
    assert vietnamese_words(["Lưu và tiếp tục"], []) == ["Lưu", "và", "tiếp", "tục"]
    assert vietnamese_words(["Save and continue", "Đ"], []) == ["Đ"]
    # Taken out whole, not word by word: the same word in a sentence still counts.
    assert vietnamese_words(["An Văn"], data) == ["Văn"]


def _approve(page: Any, kiosk: Kiosk, who: tuple[str, str, int, str]) -> None:
    """The approval panel filled in as ``who``: ID, PIN, their finger on the scanner."""
    page.fill("#supervisor_id", who[0])
    page.fill("#supervisor_secret", who[3])
    kiosk.scanner.present(finger=2, person=who[2])
    page.click(".approval button[type=submit]")


@pytest.mark.timeout(600)
def test_every_screen_in_english(browser: Any, kiosk: Kiosk) -> None:
    ref = uikit.add_resident(kiosk, NAME, "1994-02-17", "female")
    uikit.add_resident(kiosk, "Lâm Gia Bảo", "2021-05-06")  # a child: refused
    page = uikit.new_page(browser, kiosk, "large", lang="en")
    with httpx.Client(base_url=kiosk.url, timeout=120) as api:
        walk = Walk(page, kiosk, api)
        page.goto("/devices")
        walk.look("devices, not logged in")
        page.goto("/login")
        walk.look("login")
        page.fill("#operator_id", "nobody.here")
        page.fill("#secret", "000000")
        page.click("button[type=submit]")
        page.wait_for_selector("#flash .message-error, .field-error, .message-error")
        walk.look("login refused")
        uikit.login(page, kiosk)
        token = next(c["value"] for c in page.context.cookies() if c["name"] == "station_session")
        api.headers["authorization"] = f"Bearer {token}"
        page.goto("/")
        walk.look("start")

        # The queue: a walk-in ticket called to the counter, then let go.
        page.goto("/queue")
        walk.look("queue")
        page.goto("/queue/walk-in")
        walk.look("walk-in ticket")
        uikit.issue_walk_in(page, NAME)
        walk.look("queue, ticket issued")
        page.click("#q-call")
        page.wait_for_selector("#q-finish")
        walk.look("queue, citizen called")
        page.click("#q-finish")
        page.wait_for_selector("#q-call")
        page.goto("/queue/throughput")
        walk.look("queue figures")

        # The resident list: nobody found, then the citizen; a child is refused.
        page.goto("/residents?q=zzz+qqq")
        page.wait_for_selector("#no-match")
        walk.look("residents, nobody")
        page.goto("/residents?q=lam+gia+bao")
        row = page.locator("#results .resident").filter(has_text="Lâm Gia Bảo")
        row.locator("form button[type=submit]").first.click()
        page.wait_for_load_state()
        walk.look("enrollment refused")
        page.goto("/residents?q=truong+thi+my+duyen")
        row = page.locator("#results .resident").filter(has_text=NAME)
        row.wait_for()
        walk.look("residents, found")
        row.locator("form button[type=submit]").first.click()

        # The form: prefilled, refused with the mistakes, saved.
        page.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}/demographics"))
        case_id = re.search(r"/cases/([0-9a-f]{32})/", page.url)[1]  # type: ignore[index]
        assert kiosk.runtime.workflow().get(case_id).resident_ref == ref
        page.focus("#full_name")  # the on-screen keyboard shows
        walk.look("demographics")
        page.fill("#dob", "31/02/1994")
        page.fill("#old_id_number", "123")
        page.click("form button[type=submit].btn-primary")
        page.wait_for_selector(".error-summary")
        walk.look("demographics, mistakes")
        page.fill("#dob", "17/02/1994")
        page.fill("#old_id_number", "")
        page.select_option("#ethnicity", "01")
        page.click("form button[type=submit].btn-primary")
        page.wait_for_url(re.compile(r"/consent$"))
        walk.look("consent")
        page.goto(f"/cases/{case_id}/cancel?reason=consent_refused")
        walk.look("cancel")
        page.goto(f"/cases/{case_id}/consent")
        page.click("form button[type=submit].btn-primary")

        # The photo: the live guidance (a citizen who needs telling), then the portrait.
        page.wait_for_url(re.compile(r"/face$"))
        walk.look("face, before the camera")
        kiosk.camera.sit(PERSON, ["backlight:12", "good:600"])
        page.click("form button[type=submit].btn-primary")
        page.wait_for_selector("#face[data-mode=live]")
        page.wait_for_function("() => document.getElementById('guide-main').textContent.trim()")
        walk.look("face, live")
        page.wait_for_selector("img.face-portrait", timeout=60_000)
        walk.look("face, taken")

        # The fingers: a slipped roll, then the rest (one bandaged) through the API.
        page.goto(f"/cases/{case_id}/fingers")
        walk.look("fingers")
        assert uikit.roll(page, kiosk, PERSON, 1, fault="smeared") == "smeared"
        walk.look("fingers, a slipped roll")
        assert uikit.roll(page, kiosk, PERSON, 1) in ("accepted", "kept_best")
        walk.look("fingers, a roll kept")
        stationkit.capture_fingers(api, kiosk.scanner, case_id, PERSON, bandaged=7)
        page.goto(f"/cases/{case_id}/fingers?at=7")
        walk.look("fingers, an exception")

        # Review: the approval (refused to the officer, given by the supervisor), submit.
        page.goto(f"/cases/{case_id}/review")
        walk.look("review, approval needed")
        _approve(page, kiosk, kiosk.officer)
        page.wait_for_selector("#flash .message-error")
        walk.look("review, approval refused")
        _approve(page, kiosk, kiosk.supervisor)
        page.wait_for_selector(".badge-ok")
        walk.look("review, ready")
        page.click(".review form[action$='/submit'] button[type=submit]")
        page.wait_for_url(re.compile(r"/done$"), timeout=60_000)
        walk.look("done, sent")
        page.wait_for_selector("#progress.progress-issued", timeout=180_000)
        walk.look("done, issued")
        package = kiosk.runtime.workflow().get(case_id).package_id

        # The station's own screens.
        page.goto("/cards")
        walk.look("cards")
        page.goto(f"/cards/{package}")
        walk.look("card to encode")
        page.goto("/outbox")
        walk.look("outbox")
        page.goto("/devices")
        walk.look("devices")
        page.goto("/technician/unlock")
        walk.look("technician PIN")
        page.fill("#pin", uikit.TECHNICIAN_PIN)
        page.click("form:has(#pin) button[type=submit]")
        page.wait_for_url("**/technician")
        walk.look("technician")
        page.goto(f"/cases/{'0' * 32}")
        walk.look("no such enrollment")
        page.context.close()
    assert walk.problems == {}, "Vietnamese words on English screens:\n" + "\n".join(
        f"  {screen}: {' '.join(words)}" for screen, words in walk.problems.items()
    )
    assert len(walk.seen) >= 30, walk.seen
