"""Translations for the kiosk: gettext catalogs (PO files) read with Babel, Vietnamese by
default, English as the msgids themselves.

Catalogs are kept as several PO files per language (``locale/<lang>/<area>.po``, one per
group of screens) and merged at load time; the same msgid in two files must translate
the same way. No compiled MO files: reading a few hundred entries at start costs
milliseconds and leaves nothing built to go stale.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po
from babel.numbers import format_decimal

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("vi", "en")
DEFAULT_LANGUAGE = "vi"
SOURCE_LANGUAGE = "en"  # msgids are English: English needs no catalog

log = logging.getLogger(__name__)


class CatalogError(RuntimeError):
    """A catalog file that cannot be used (unreadable, or contradicting another)."""


@dataclass(frozen=True)
class Catalog:
    """One language's translations: msgid -> msgstr, and plural msgids -> forms."""

    language: str
    singular: dict[str, str] = field(default_factory=dict)
    plural: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __contains__(self, msgid: str) -> bool:
        return msgid in self.singular or msgid in self.plural


def read_catalog(language: str, files: Iterable[Path]) -> Catalog:
    """Merge PO files into one catalog. Untranslated and fuzzy entries are left out (they
    count as missing); a msgid translated two ways is an error."""
    catalog = Catalog(language)
    origin: dict[str, Path] = {}
    for path in sorted(files):
        with path.open("rb") as fh:
            try:
                po = read_po(fh, locale=language)
            except Exception as exc:  # babel raises various errors for a broken file
                raise CatalogError(f"{path}: {exc}") from exc
        for message in po:
            if not message.id or message.fuzzy:
                continue
            value: str | tuple[str, ...]
            if isinstance(message.id, tuple):
                value = tuple(str(s) for s in message.string or ())
                if not all(value):
                    continue
                key = str(message.id[0])
                known: object = catalog.plural.get(key)
                target: dict[str, Any] = catalog.plural
            else:
                if not message.string:
                    continue
                key, value = str(message.id), str(message.string)
                known = catalog.singular.get(key)
                target = catalog.singular
            if known is not None and known != value:
                raise CatalogError(
                    f"{key!r} is translated differently in {origin[key].name} and {path.name}"
                )
            target[key] = value
            origin[key] = path
    return catalog


@cache
def catalog(language: str) -> Catalog:
    if language not in LANGUAGES:
        raise CatalogError(f"no such language {language!r}")
    if language == SOURCE_LANGUAGE:
        return Catalog(language)
    return read_catalog(language, (LOCALE_DIR / language).glob("*.po"))


# msgids a page asked for that its language's catalog lacks; the tests read this after
# walking every screen (a missing entry must fail a test, not show English to an officer).
_missing: dict[str, set[str]] = {}


def missing(language: str) -> set[str]:
    return set(_missing.get(language, ()))


def forget_missing() -> None:
    _missing.clear()


class Translator:
    """gettext for one language; records what its catalog lacks."""

    def __init__(self, language: str) -> None:
        self.language = language
        self._catalog = catalog(language)

    def _miss(self, msgid: str) -> None:
        seen = _missing.setdefault(self.language, set())
        if msgid not in seen:
            seen.add(msgid)
            log.warning("untranslated (%s): %r", self.language, msgid)

    def gettext(self, msgid: str, **values: Any) -> str:
        if self.language == SOURCE_LANGUAGE:
            text = msgid
        else:
            text = self._catalog.singular.get(msgid, "")
            if not text:
                self._miss(msgid)
                text = msgid
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values: Any) -> str:
        values.setdefault("num", n)
        if self.language == SOURCE_LANGUAGE:
            text = singular if n == 1 else plural
        else:
            forms = self._catalog.plural.get(singular)
            if forms is None:
                self._miss(singular)
                text = singular if n == 1 else plural
            else:
                # Vietnamese has one form (nplurals=1); English-like catalogs have two.
                text = forms[0] if len(forms) == 1 or n == 1 else forms[1]
        return text % values


_current: contextvars.ContextVar[Translator] = contextvars.ContextVar("translator")


def use(language: str) -> Translator:
    """Make ``language`` the current one for this request (task/thread context)."""
    translator = Translator(language if language in LANGUAGES else DEFAULT_LANGUAGE)
    _current.set(translator)
    return translator


def current() -> Translator:
    try:
        return _current.get()
    except LookupError:
        return use(DEFAULT_LANGUAGE)


def gettext(msgid: str, **values: Any) -> str:
    """Translate in the current request's language (``_`` in Python and templates)."""
    return current().gettext(msgid, **values)


def ngettext(singular: str, plural: str, n: int, **values: Any) -> str:
    return current().ngettext(singular, plural, n, **values)


_ = gettext


def format_number(value: float, digits: int = 0) -> str:
    """A number as the current language writes it: 73,9 in Vietnamese, 73.9 in English."""
    locale = "vi_VN" if current().language == "vi" else "en_US"
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(value, format=pattern, locale=locale)


def format_date(value: date | datetime | str | None) -> str:
    """dd/mm/yyyy, as Vietnamese documents write dates (in both languages)."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
    if isinstance(value, datetime):
        value = value.date()
    return value.strftime("%d/%m/%Y")


# Viet Nam's time (no daylight saving), whatever the machine's own zone is set to: an
# officer reads the hall's clock, and the queue keeps its times in this zone too.
VIETNAM = timezone(timedelta(hours=7), "ICT")


def format_datetime(value: datetime | str | None) -> str:
    """dd/mm/yyyy HH:MM in Viet Nam's time."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(VIETNAM)
    return value.strftime("%d/%m/%Y %H:%M")


__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "Catalog",
    "CatalogError",
    "Translator",
    "_",
    "catalog",
    "current",
    "forget_missing",
    "format_date",
    "format_datetime",
    "format_number",
    "gettext",
    "missing",
    "ngettext",
    "read_catalog",
    "use",
]
