"""The on-screen keyboard and its Vietnamese input methods, in Debian's Chromium.

The Telex / VNI engine (static/vietnamese.js) is checked against an independent
implementation, bogo (the engine of ibus-bogo), on key sequences derived from >= 2,000
real words: names and addresses from faker's vi_VN locale, the administrative unit names,
and the kiosk's own Vietnamese translations. Then the keyboard itself: tapping a name in
Telex and in VNI, the PIN on the numeric pad and a login; a physical keyboard user keeps
focus, composes, leaves with Tab and hides the keys with Escape.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterator
from functools import cache
from typing import Any

import bogo
import bogo.validation
import pytest
from babel.messages.pofile import read_po
from faker import Faker

from enrollment import divisions
from station.ui import i18n
from tests import uikit
from tests.uikit import Kiosk

# ---------------------------------------------------------------------------------------
# The corpus and its key sequences (derived here from Unicode, not from the engine)

_TONES = {"\u0301": 1, "\u0300": 2, "\u0309": 3, "\u0303": 4, "\u0323": 5}  # VNI numbers
_MARKS = {"\u0302": "hat", "\u0306": "breve", "\u031b": "horn"}
_TELEX_TONE = " sfrxj"
_VNI_MARK = {"hat": "6", "horn": "7", "breve": "8", "bar": "9"}
_VOWELS = "aeiouy"


def _letter(ch: str) -> tuple[str, str | None, int]:
    """A letter as (base letter, mark, tone): "ễ" -> ("e", "hat", 4)."""
    if ch in "đĐ":
        return ("d" if ch == "đ" else "D"), "bar", 0
    decomposed = unicodedata.normalize("NFD", ch)
    mark, tone = None, 0
    for c in decomposed[1:]:
        if c in _TONES:
            tone = _TONES[c]
        elif c in _MARKS:
            mark = _MARKS[c]
    return decomposed[0], mark, tone


def telex(word: str, tone_at_end: bool = True) -> str:
    """The keys a Telex typist presses for ``word``: marks right after their letter, the
    tone at the end of the word (Nguyeenx) or right after its vowel (Nguyeexn)."""
    out: list[str] = []
    tone = 0
    shout = word.isupper() and len(word) > 1
    letters = [_letter(c) for c in word]
    for i, (base, mark, t) in enumerate(letters):
        low = base.lower()
        prev = letters[i - 1] if i else None
        # a plain a/e/o after the same plain letter would be a circumflex: type it twice
        if mark is None and low in "aeo" and prev and prev[0].lower() == low and prev[1] is None:
            out.append(base)
        out.append(base)
        # a Telex key meant as a letter (r of Cuôr, w of Wang): twice, the second undoes
        seen_vowel = any(b.lower() in _VOWELS for b, _, _ in letters[:i])
        after_vowel = prev is not None and prev[0].lower() in _VOWELS
        if mark is None and ((low in "sfrxjz" and seen_vowel) or (low == "w" and not after_vowel)):
            out.append(base)
        if mark in ("hat", "bar"):
            out.append(base)
        elif mark in ("horn", "breve"):
            out.append("W" if base.isupper() else "w")
        if t:
            tone = t
            if not tone_at_end:
                out.append(_TELEX_TONE[t].upper() if shout else _TELEX_TONE[t])
    if tone and tone_at_end:
        out.append(_TELEX_TONE[tone].upper() if shout else _TELEX_TONE[tone])
    return "".join(out)


def vni(word: str, tone_at_end: bool = True) -> str:
    """The keys a VNI typist presses for ``word`` (Nguye64n, or Nguye6n4)."""
    out: list[str] = []
    tone = 0
    for ch in word:
        base, mark, t = _letter(ch)
        out.append(base)
        if mark:
            out.append(_VNI_MARK[mark])
        if t:
            tone = t
            if not tone_at_end:
                out.append(str(t))
    if tone and tone_at_end:
        out.append(str(tone))
    return "".join(out)


@cache
def corpus() -> tuple[str, ...]:
    """Real words with at least one vowel: administrative units, faker vi_VN names and
    addresses (fixed seed), and every Vietnamese translation of the kiosk."""
    words: set[str] = set()

    def add(text: str | None) -> None:
        for w in re.findall(r"[^\W\d_]+", unicodedata.normalize("NFC", text or "")):
            if any(_letter(c)[0].lower() in _VOWELS for c in w):
                words.add(w)

    for communes in divisions.load().communes.values():
        for c in communes.values():
            add(c.name)
            add(c.province_name)
            add(c.district_name)
    fake = Faker("vi_VN")
    fake.seed_instance(7)
    for _ in range(2000):
        add(fake.name())
        add(fake.address())
    for path in sorted((i18n.LOCALE_DIR / "vi").glob("*.po")):
        with path.open("rb") as fh:
            for message in read_po(fh):
                if message.id and isinstance(message.string, str):
                    add(message.string)
    return tuple(sorted(words))


def reference(sequence: str, mode: str) -> str:
    """bogo's result for ``sequence``. Its VNI table lacks a "w" entry its undo code reads
    (a KeyError on "o7o7"): an empty one changes nothing else."""
    rules = bogo.get_telex_definition() if mode == "telex" else bogo.get_vni_definition()
    rules.setdefault("w", [])
    return str(bogo.process_sequence(sequence, rules=rules))


def is_vietnamese(word: str) -> bool:
    """Standard Vietnamese spelling, by bogo's own rules (onset, vowel cluster, ending)."""
    return bool(bogo.validation.is_valid_string(word.lower()))


def untypable(word: str) -> str | None:
    """Why no typing method gives ``word`` from its derived keys, or None.

    - Foreign words in plain Latin letters (Version, Alexandre, Ana): their s, r, w, aa
      are Telex keys; officers type them with the method off.
    - The same vowel twice (Êê, Lêê, Pơơ, Ê Đê names): the second mark key cannot tell
      which of the two it marks (bogo and we both mark one, differently).
    - "uơ" before another letter (Nguơn, a misspelling in faker's list): both engines
      write ươ there, as the dictionary does; uơ only ends a word (huơ, thuở).
    """
    if word.isascii() and not is_vietnamese(word):
        return "foreign word"
    letters = [_letter(c) for c in word]
    for (a, mark_a, _), (b, mark_b, _) in itertools.pairwise(letters):
        if a.lower() == b.lower() and a.lower() in _VOWELS and (mark_a or mark_b):
            return "same vowel twice"
    if re.search("uơ.", word, re.IGNORECASE):
        return "uơ before a letter"
    return None


def sequences() -> Iterator[tuple[str, str, str]]:
    for word in corpus():
        for mode, derive in (("telex", telex), ("vni", vni)):
            for seq in sorted({derive(word), derive(word, tone_at_end=False)}):
                yield word, mode, seq


def test_key_derivation() -> None:
    assert telex("Nguyễn") == "Nguyeenx"
    assert telex("Nguyễn", tone_at_end=False) == "Nguyeexn"
    assert telex("Đường") == "DDuwowngf"
    assert telex("NGUYỄN") == "NGUYEENX"
    assert telex("Noong") == "Nooong"
    assert telex("Cuôr") == "Cuoorr"
    assert vni("Việt") == "Vie6t5"
    assert vni("Đức", tone_at_end=False) == "D9u71c"
    assert len(corpus()) >= 2000
    assert untypable("Version") == "foreign word"
    assert untypable("Lêê") == "same vowel twice"
    assert untypable("Noong") is None
    assert untypable("Nguyễn") is None


# The rules named in the brief, beyond the corpus: (keys, mode, expected).
EXAMPLES = [
    ("aa aw ee oo ow uw dd", "telex", "â ă ê ô ơ ư đ"),
    ("w tw", "telex", "ư tư"),
    ("as af ar ax aj", "telex", "á à ả ã ạ"),
    ("asz", "telex", "a"),
    ("ass", "telex", "as"),
    ("aaa", "telex", "aa"),
    ("ww", "telex", "w"),
    ("tuow uowng tuowi huow", "telex", "tươ ương tươi huơ"),
    ("Nguyeenx DDD DD Dd", "telex", "Nguyễn DD Đ Đ"),
    ("NGUYEENX", "telex", "NGUYỄN"),
    ("Hoaf hoafn thuyr quys gias gif", "telex", "Hòa hoàn thủy quý giá gì"),
    ("nguwowif muaw hoawcj thuowr", "telex", "người mưa hoặc thuở"),
    ("Tieengs Vieetj", "telex", "Tiếng Việt"),
    ("DDawsk Lawsk", "telex", "Đắk Lắk"),
    ("a1 a2 a3 a4 a5 a6 a7 a8 d9", "vni", "á à ả ã ạ â a7 ă đ"),
    ("a10 a11", "vni", "a a1"),
    ("o7 u7 u7o7 uo7", "vni", "ơ ư ươ uơ"),
    ("Nguye64n Tra62n D9u71c", "vni", "Nguyễn Trần Đức"),
    ("Vie65t", "vni", "Việt"),
]


def test_engine_agrees_with_bogo(browser: Any, kiosk: Kiosk) -> None:
    rows = list(sequences())
    page = uikit.new_page(browser, kiosk)
    page.goto("/login")
    ours: list[str] = page.evaluate(
        "rows => rows.map(r => VietIME.apply(r[0], r[1]))", [[s, m] for _, m, s in rows]
    )
    examples: list[str] = page.evaluate(
        "rows => rows.map(r => VietIME.apply(r[0], r[1]))", [[k, m] for k, m, _ in EXAMPLES]
    )
    new_style: list[str] = page.evaluate(
        "VietIME.apply('Hoaf thuyr khoer hoafn', 'telex', {style: 'new'})"
    ).split()
    page.context.close()

    assert examples == [e for _, _, e in EXAMPLES]
    assert new_style == ["Hoà", "thuỷ", "khoẻ", "hoàn"]

    agree = 0
    differ: list[str] = []  # must stay empty: every difference is understood below
    not_bogo: list[str] = []  # bogo leaves non-standard spellings as typed
    not_round: list[str] = []
    for (word, mode, seq), got in zip(rows, ours, strict=True):
        expected = reference(seq, mode)
        if got == expected:
            agree += 1
        elif is_vietnamese(word):
            differ.append(f"{word}: {mode} {seq!r} gives {got!r}, bogo {expected!r}")
        else:
            # Minority-language and multi-syllable names (Krông, Đắk, Kuêh, Đakrông): bogo's
            # skip_non_vietnamese returns the raw keys for an onset or ending outside
            # standard spelling; we compose them (they are official place and personal
            # names). Checked below by the round trip instead.
            not_bogo.append(word)
        if got != word and untypable(word) is None:
            not_round.append(f"{word}: {mode} {seq!r} gives {got!r}")
    rate = agree / len(rows)
    print(
        f"\n{len(corpus())} words, {len(rows)} key sequences: {agree} the same as bogo "
        f"({rate:.2%}); {len(not_bogo)} differ on spellings bogo does not compose "
        f"({len(set(not_bogo))} words, e.g. {sorted(set(not_bogo))[:8]})"
    )
    assert differ == []
    assert not_round == []
    assert rate > 0.9


# ---------------------------------------------------------------------------------------
# The keyboard in the page

NAME_FIELD = """() => {
  const box = document.createElement('div');
  box.className = 'field';
  box.innerHTML = '<label for="test-name">Họ và tên</label>'
    + '<input id="test-name" name="full_name" data-osk="vi" autocomplete="off">';
  document.querySelector('main form').prepend(box);
  window.oskEvents = {input: 0, change: 0};
  const field = document.getElementById('test-name');
  field.addEventListener('input', () => window.oskEvents.input++);
  field.addEventListener('change', () => window.oskEvents.change++);
}"""


def tap(page: Any, keys: str) -> None:
    """Tap ``keys`` on the on-screen keyboard (capitals with the shift key)."""
    for ch in keys:
        if ch == " ":
            page.click("#osk [data-key=space]")
            continue
        if ch != ch.lower():
            page.click("#osk [data-key=shift]")
        page.click(f'#osk [data-key="{ch.lower()}"]')


def osk_visible(page: Any) -> bool:
    return bool(page.evaluate("!document.getElementById('osk').hidden"))


def field_above_keyboard(page: Any, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    top = page.locator("#osk").bounding_box()["y"]
    return bool(box["y"] >= 0 and box["y"] + box["height"] <= top + 0.5)


@pytest.mark.parametrize("size", ["small", "large"])
def test_tapping_a_name_and_a_pin(browser: Any, kiosk: Kiosk, size: str) -> None:
    page = uikit.new_page(browser, kiosk, size)
    page.goto("/login")
    page.evaluate(NAME_FIELD)
    page.click("#test-name")
    page.wait_for_selector("#osk[data-field=vi]")
    # every key a finger can hit
    sizes = page.evaluate(
        "[...document.querySelectorAll('#osk button')].map(b => b.getBoundingClientRect())"
        ".map(r => Math.min(r.width, r.height))"
    )
    assert min(sizes) >= 48, sizes

    page.click("#osk [data-key=mode-telex]")
    tap(page, "Nguyeenx Thij Asnh Tuyeets")
    assert page.input_value("#test-name") == "Nguyễn Thị Ánh Tuyết"
    assert page.evaluate("window.oskEvents.input") == len("Nguyeenx Thij Asnh Tuyeets")
    assert page.evaluate("document.activeElement.id") == "test-name"
    assert field_above_keyboard(page, "#test-name")
    uikit.screenshot(page, "keyboard-vi")
    assert uikit.serious_violations(page) == []

    for _ in range(len("Nguyễn Thị Ánh Tuyết")):
        page.click("#osk [data-key=backspace]")
    assert page.input_value("#test-name") == ""
    page.click("#osk [data-key=mode-vni]")
    assert page.get_attribute("#osk [data-key=mode-vni]", "aria-pressed") == "true"
    tap(page, "Tra62n Va8n D9u71c")
    assert page.input_value("#test-name") == "Trần Văn Đức"

    # Enter moves on: the officer ID (latin letters), then the PIN on the numeric pad.
    page.click("#osk [data-key=enter]")
    assert page.evaluate("document.activeElement.id") == "operator_id"
    assert page.evaluate("window.oskEvents.change") == 1
    page.wait_for_selector("#osk[data-field=latin]")
    assert page.locator("#osk [data-key=mode-telex]").count() == 0
    tap(page, kiosk.officer[0])
    assert page.input_value("#operator_id") == kiosk.officer[0]
    assert page.inner_text("#osk [data-key=enter]") == "Ô tiếp theo"
    page.click("#osk [data-key=enter]")
    assert page.evaluate("document.activeElement.id") == "secret"
    page.click("#osk [data-key=digits]")
    page.wait_for_selector("#osk[data-layout=pad]")
    tap(page, kiosk.officer[3])
    assert page.input_value("#secret") == kiosk.officer[3]
    assert field_above_keyboard(page, "#secret")
    uikit.screenshot(page, "keyboard-digits")
    assert uikit.serious_violations(page) == []

    kiosk.scanner.present(finger=2, person=kiosk.officer[2])
    assert page.inner_text("#osk [data-key=enter]") == "Xong"
    page.click("#osk [data-key=enter]")
    page.wait_for_selector(".bar-officer")
    assert kiosk.officer[1] in page.inner_text(".bar-officer")
    page.context.close()


def test_digits_field_opens_the_pad(browser: Any, kiosk: Kiosk) -> None:
    page = uikit.new_page(browser, kiosk, "small")
    page.goto("/login")
    page.evaluate(
        "() => { const i = document.getElementById('secret');"
        " i.setAttribute('data-osk', 'digits'); i.maxLength = 4; }"
    )
    page.click("#secret")
    page.wait_for_selector("#osk[data-layout=pad]")
    assert page.locator("#osk [data-key=letters]").count() == 0  # no way out of digits
    tap(page, "123456")
    assert page.input_value("#secret") == "1234"  # maxlength holds
    page.click("#osk [data-key=hide]")
    assert not osk_visible(page)
    assert page.evaluate("document.activeElement.id") == "secret"
    page.click("#secret")  # a touch on the field brings the keys back
    assert osk_visible(page)
    page.context.close()


def test_a_physical_keyboard_keeps_focus_and_composes(browser: Any, kiosk: Kiosk) -> None:
    page = uikit.new_page(browser, kiosk, "small")
    page.goto("/login")
    page.evaluate(NAME_FIELD)
    page.focus("#test-name")
    assert osk_visible(page)
    page.keyboard.type("Vieetj Nam DDawsk Lawsk")
    assert page.input_value("#test-name") == "Việt Nam Đắk Lắk"
    assert page.evaluate("document.activeElement.id") == "test-name"
    assert page.evaluate("window.oskEvents.input") == len("Vieetj Nam DDawsk Lawsk")

    # Escape hides the keys; Tab leaves the field for the next one, never into the keys.
    page.keyboard.press("Escape")
    assert not osk_visible(page)
    assert page.evaluate("document.activeElement.id") == "test-name"
    for _ in range(8):
        page.keyboard.press("Tab")
        assert page.evaluate("!!document.activeElement.closest('#osk')") is False
        assert not osk_visible(page)  # hidden for this keyboard user until a field is touched
    page.focus("#operator_id")
    page.keyboard.type("canbo.an")  # a latin field: no composing
    assert page.input_value("#operator_id") == "canbo.an"

    # The method is remembered by the browser: VNI after a reload, from the keys and a
    # physical keyboard alike.
    page.click("#test-name")
    assert osk_visible(page)
    page.click("#osk [data-key=mode-vni]")
    page.reload()
    page.evaluate(NAME_FIELD)
    page.click("#test-name")
    assert page.get_attribute("#osk [data-key=mode-vni]", "aria-pressed") == "true"
    page.keyboard.type("Vie65t Nam")
    assert page.input_value("#test-name") == "Việt Nam"
    page.click("#osk [data-key=mode-off]")
    page.keyboard.type(" Vieetj")
    assert page.input_value("#test-name") == "Việt Nam Vieetj"
    page.evaluate("localStorage.removeItem('station.osk.mode')")
    page.context.close()


def test_english_labels(browser: Any, kiosk: Kiosk) -> None:
    page = uikit.new_page(browser, kiosk, "large", lang="en")
    page.goto("/login")
    page.click("#operator_id")
    assert page.get_attribute("#osk", "aria-label") == "On-screen keyboard"
    assert page.get_attribute("#osk [data-key=backspace]", "aria-label") == (
        "Delete the last character"
    )
    assert page.get_attribute('#osk [data-key="/"]', "aria-label") == "Slash"
    page.context.close()


def test_a_button_pressed_while_the_keys_close(browser: Any, kiosk: Kiosk) -> None:
    # Pressing the submit button moves focus off the field: the keys close, the page gets
    # shorter and scrolls; the button must still get its click (it did not, once).
    page = uikit.new_page(browser, kiosk, "small")
    page.goto("/login")
    page.fill("#operator_id", kiosk.officer[0])
    page.fill("#secret", kiosk.officer[3])
    assert osk_visible(page)
    kiosk.scanner.present(finger=2, person=kiosk.officer[2])
    page.click("button[type=submit]")
    page.wait_for_selector(".bar-officer")
    assert not osk_visible(page)
    page.context.close()
