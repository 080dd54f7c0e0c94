"""Keeps the translation catalogs in step with the code: extracts every translatable string
from the kiosk's Python and templates (Babel's extractors, the standard gettext tooling),
and adds the new ones to the right PO file untranslated.

    python -m station.ui.catalog check [AREA]    # exit 1 and a list when anything is missing
    python -m station.ui.catalog update [AREA]   # add missing msgids (empty) to the PO files

A string belongs to the PO file of its screen group: ``pages/<area>.py`` and
``templates/<area>/`` go to ``<area>.po``; everything else (the frame, errors) to
``base.po``. The test suite runs ``check``: an untranslated string fails it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from babel.messages.catalog import Catalog as PoCatalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from station.ui import i18n

ROOT = Path(__file__).parent
BASE_AREA = "base"
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2.ext:babel_extract")]
OPTIONS = {
    "templates/**.html": {
        "extensions": "jinja2.ext.i18n",
        "trim_blocks": "True",
        "lstrip_blocks": "True",
    }
}
_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


@dataclass(frozen=True)
class Message:
    msgid: str
    plural: str | None
    area: str
    where: str  # file:line, for the translator and for error messages


def area_of(filename: str) -> str:
    parts = Path(filename).parts
    if len(parts) >= 2 and parts[0] == "pages":
        return Path(parts[1]).stem if parts[1] != "__init__.py" else BASE_AREA
    if len(parts) >= 3 and parts[0] == "templates":
        return parts[1]
    return BASE_AREA


def extract() -> dict[str, Message]:
    """Every msgid in the kiosk, with the area that owns it (the frame's own area wins,
    then the first area in name order)."""
    found: dict[str, Message] = {}
    for filename, lineno, msg, _comments, _ctx in extract_from_dir(ROOT, METHODS, OPTIONS):
        if isinstance(msg, tuple):
            msgid, plural = str(msg[0]), str(msg[1])
        else:
            msgid, plural = str(msg), None
        if not msgid:
            continue
        message = Message(msgid, plural, area_of(filename), f"{filename}:{lineno}")
        known = found.get(msgid)
        if known is None or _rank(message.area) < _rank(known.area):
            found[msgid] = message
    return found


def _rank(area: str) -> tuple[int, str]:
    return (0 if area == BASE_AREA else 1, area)


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def problems(language: str = "vi", area: str | None = None) -> list[str]:
    """What is wrong with ``language``'s catalog against the code: missing or untranslated
    msgids, translations whose %(name)s placeholders differ from the msgid's, and (for
    the whole catalog) entries the code no longer uses."""
    catalog = i18n.read_catalog(language, (i18n.LOCALE_DIR / language).glob("*.po"))
    out: list[str] = []
    found = extract()
    if area is None:
        # An entry the code no longer asks for misleads translators (and hides a typo).
        for msgid in sorted((set(catalog.singular) | set(catalog.plural)) - set(found)):
            out.append(f"stale (no longer in the code, remove it): {msgid!r}")
    for msgid, message in sorted(found.items()):
        if area is not None and message.area != area:
            continue
        if message.plural is None:
            text = catalog.singular.get(msgid)
            if text is None:
                out.append(f"untranslated: {msgid!r} ({message.where})")
                continue
            translations: tuple[str, ...] = (text,)
        else:
            forms = catalog.plural.get(msgid)
            if forms is None:
                out.append(f"untranslated plural: {msgid!r} ({message.where})")
                continue
            translations = forms
        wanted = placeholders(msgid) | placeholders(message.plural or "")
        for text in translations:
            if placeholders(text) != wanted:
                out.append(
                    f"placeholders differ: {msgid!r} has {sorted(wanted)}, "
                    f"the translation {sorted(placeholders(text))} ({message.where})"
                )
    return out


def _po_files(language: str) -> Iterator[Path]:
    yield from sorted((i18n.LOCALE_DIR / language).glob("*.po"))


def update(language: str = "vi", area: str | None = None) -> int:
    """Add every missing msgid (of ``area`` only, when given), untranslated, to its area's
    PO file; the number added. Only files that gain entries are written (several people
    may be translating other areas' files at the same time)."""
    have: set[str] = set()
    catalogs: dict[str, PoCatalog] = {}
    for path in _po_files(language):
        with path.open("rb") as fh:
            po = read_po(fh, locale=language)
        catalogs[path.stem] = po
        have.update(str(m.id[0] if isinstance(m.id, tuple) else m.id) for m in po if m.id)
    added = 0
    touched: set[str] = set()
    for msgid, message in sorted(extract().items()):
        if msgid in have or (area is not None and message.area != area):
            continue
        touched.add(message.area)
        if message.area not in catalogs:
            catalogs[message.area] = PoCatalog(
                locale=language,
                header_comment=f"# The station kiosk's {message.area} screens, {language}.",
                project="vn-eid station kiosk",
                version="1",
                copyright_holder="vn-eid",
                msgid_bugs_address="",
                last_translator="vn-eid team",
                language_team=language,
                fuzzy=False,
            )
        po = catalogs[message.area]
        key: str | tuple[str, str] = msgid if message.plural is None else (msgid, message.plural)
        po.add(
            key,
            "" if message.plural is None else ("",),
            locations=[(message.where.rsplit(":", 1)[0], 0)],
        )
        added += 1
    directory = i18n.LOCALE_DIR / language
    directory.mkdir(parents=True, exist_ok=True)
    for name in sorted(touched):
        po = catalogs[name]
        with (directory / f"{name}.po").open("wb") as fh:
            write_po(fh, po, width=100, sort_output=True, include_lineno=False)
    i18n.catalog.cache_clear()
    return added


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    area = argv[1] if len(argv) > 1 else None
    if command == "update":
        added = update(area=area)
        print(f"{added} new msgids added; translate them in {i18n.LOCALE_DIR / 'vi'}")
        return 0
    if command == "check":
        found = problems(area=area)
        for line in found:
            print(line)
        print(f"{len(found)} problems in the vi catalog ({len(extract())} msgids in the code)")
        return 1 if found else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
