"""Every string of the kiosk is translated: the catalog against the code (Babel's own
extractors over the Python and the templates), placeholders kept, catalogs consistent."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from station.ui import catalog, i18n


def test_every_kiosk_string_has_a_vietnamese_translation() -> None:
    assert catalog.problems("vi") == []
    assert len(catalog.extract()) >= 50


def test_a_missing_translation_is_reported_and_recorded(tmp_path: Path) -> None:
    po = tmp_path / "x.po"
    po.write_text(
        'msgid ""\nmsgstr ""\n"Language: vi\\n"\n\n'
        'msgid "Hello %(name)s"\nmsgstr "Xin chào %(name)s"\n\n'
        'msgid "Untranslated"\nmsgstr ""\n\n'
        '#, fuzzy\nmsgid "Fuzzy"\nmsgstr "Mờ"\n',
        encoding="utf-8",
    )
    cat = i18n.read_catalog("vi", [po])
    assert cat.singular == {"Hello %(name)s": "Xin chào %(name)s"}
    assert "Untranslated" not in cat
    assert "Fuzzy" not in cat


def test_a_msgid_translated_two_ways_is_refused(tmp_path: Path) -> None:
    for name, text in (("a.po", "Một"), ("b.po", "Hai")):
        (tmp_path / name).write_text(
            f'msgid ""\nmsgstr ""\n"Language: vi\\n"\n\nmsgid "One"\nmsgstr "{text}"\n',
            encoding="utf-8",
        )
    with pytest.raises(i18n.CatalogError, match="translated differently"):
        i18n.read_catalog("vi", sorted(tmp_path.glob("*.po")))


def test_translator_records_what_it_lacks() -> None:
    i18n.forget_missing()
    vi = i18n.Translator("vi")
    assert vi.gettext("Log out") == "Đăng xuất"
    assert vi.gettext("No such string %(n)s", n=3) == "No such string 3"
    assert i18n.missing("vi") == {"No such string %(n)s"}
    en = i18n.Translator("en")
    assert en.gettext("Log out") == "Log out"
    assert en.ngettext("%(num)d package waiting", "%(num)d packages waiting", 2) == (
        "2 packages waiting"
    )
    assert vi.ngettext("%(num)d package waiting", "%(num)d packages waiting", 2) == (
        "2 hồ sơ đang chờ gửi"
    )
    i18n.forget_missing()


def test_dates_are_day_month_year() -> None:
    assert i18n.format_date(date(2021, 3, 9)) == "09/03/2021"
    assert i18n.format_date("2021-03-09") == "09/03/2021"
    assert i18n.format_date(None) == ""
    # In Viet Nam's time, whatever the machine's zone: 20:30 UTC is 03:30 the next morning.
    assert i18n.format_datetime(datetime(2021, 3, 9, 20, 30, tzinfo=UTC)) == "10/03/2021 03:30"
    assert i18n.format_datetime("2021-03-09T20:30:00+07:00") == "09/03/2021 20:30"


_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_CLASS_BLOCK = re.compile(r"\{%-?\s*block body_class\s*%\}.*?\{%-?\s*endblock\s*%\}", re.S)
_TAG = re.compile(r"<(script|style)\b.*?</\1>|<[^>]*>", re.S)
_LABEL_ATTR = re.compile(r'\b(aria-label|title|placeholder|alt|data-label-[a-z-]+)="([^"]*)"')
_WORD = re.compile(r"[A-Za-zÀ-ỹ]{2,}")
# Names that are the same in every language: input methods, a URL scheme.
_NOT_WORDS = {"Telex", "VNI", "https"}


def test_templates_show_no_text_outside_the_catalog() -> None:
    """Every word a template shows (text, and labels in attributes) comes through
    ``_()``: a word written straight into the HTML would stay English (or Vietnamese) in
    both languages, and no catalog check could see it."""
    found: list[str] = []
    for path in sorted((Path(catalog.ROOT) / "templates").rglob("*.html")):
        source = _JINJA.sub(" ", _CLASS_BLOCK.sub(" ", path.read_text(encoding="utf-8")))
        for tag in re.findall(r"<[^>]*>", source):
            for name, value in _LABEL_ATTR.findall(tag):
                words = set(_WORD.findall(value)) - _NOT_WORDS
                if words:
                    found.append(f"{path.name}: {name}={value!r}")
        for word in _WORD.findall(_TAG.sub(" ", source)):
            if word not in _NOT_WORDS:
                found.append(f"{path.name}: {word!r}")
    assert found == []


def test_numbers_are_written_the_languages_way() -> None:
    i18n.use("vi")
    assert i18n.format_number(73.94, 1) == "73,9"
    assert i18n.format_number(12345) == "12.345"
    i18n.use("en")
    assert i18n.format_number(73.94, 1) == "73.9"
    assert i18n.format_number(12345) == "12,345"
    i18n.use("vi")
