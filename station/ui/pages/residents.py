"""Finding the citizen in the office's pre-loaded resident list, with results as the
officer types (name with or without diacritics, date of birth, old 9-digit ID, household
book number), and starting the enrollment from the row found (or a new record).

The search's query is in the page's URL (the results fragment replaces it as the officer
types), so a reload shows the same results.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import Response

from station.ui.client import StationApiError
from station.ui.i18n import _
from station.ui.pages.queue import state_label
from station.ui.web import PageDep

router = APIRouter()

_DMY = re.compile(r"^(\d{1,2})[/.\-\s](\d{1,2})[/.\-\s](\d{4})$")
_MY = re.compile(r"^(\d{1,2})[/.\-\s](\d{4})$")
_Y = re.compile(r"^(\d{4})$")
_DIGITS8 = re.compile(r"^(\d{2})(\d{2})(\d{4})$")
_ISO = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
_OLD_ID = re.compile(r"^\d{9}$")


def dob_to_iso(text: str) -> str | None:
    """What the officer typed as a date of birth, as the API wants it: ``dd/mm/yyyy`` ->
    ``yyyy-mm-dd``, ``mm/yyyy`` -> ``yyyy-mm``, ``yyyy`` alone; ``ddmmyyyy`` (the digits
    keyboard) too. None when it is not (yet) a date."""
    text = text.strip()
    m = _DMY.match(text) or _DIGITS8.match(text)
    if m:
        day, month, year = int(m[1]), int(m[2]), int(m[3])
        if 1 <= day <= 31 and 1 <= month <= 12:
            return f"{year:04d}-{month:02d}-{day:02d}"
        return None
    m = _MY.match(text)
    if m:
        month, year = int(m[1]), int(m[2])
        return f"{year:04d}-{month:02d}" if 1 <= month <= 12 else None
    m = _Y.match(text)
    return m[1] if m else None


def show_date(value: str | None) -> str:
    """A full or partial ISO date as Vietnamese papers write it: dd/mm/yyyy, mm/yyyy, yyyy."""
    if not value or not _ISO.match(value):
        return value or ""
    return "/".join(reversed(value.split("-")))


def address_line(address: Mapping[str, Any] | None) -> str:
    """Street detail, then the commune, district and province names the list carries."""
    if not address:
        return ""
    parts: list[str] = []
    if address.get("detail"):
        parts.append(str(address["detail"]))
    areas = address.get("areas") or []
    if areas:
        area = areas[0]
        for key in ("commune_name", "district_name", "province_name"):
            if area.get(key):
                parts.append(str(area[key]))
        if len(parts) <= 1 and area.get("commune_code"):
            parts.append(_("commune code %(code)s", code=area["commune_code"]))
    return ", ".join(parts)


def status_of(resident: Mapping[str, Any]) -> tuple[str, str] | None:
    """Whether an enrollment is already known for this resident: (css kind, words)."""
    local, listed = resident.get("local_status"), resident.get("status")
    if local == "open":
        return "open", _("An enrollment is open at this station: continue it.")
    if local == "submitted":
        return "done", _("Enrolled at this station; the package has left.")
    if listed == "enrolled":
        return "done", _("Already enrolled: has a card or one is being made.")
    if listed == "in_progress":
        return "warn", _("An enrollment is in progress at another station.")
    return None


@dataclass
class Search:
    """The search form as typed, and what the API is asked."""

    q: str = ""
    dob: str = ""
    old_id: str = ""
    household: str = ""
    problems: dict[str, str] = field(default_factory=dict)

    def params(self) -> dict[str, str]:
        """The API's query parameters; fields not (yet) valid are left out."""
        out: dict[str, str] = {}
        if self.q.strip():
            out["q"] = self.q.strip()
        if self.dob.strip():
            iso = dob_to_iso(self.dob)
            if iso is None:
                self.problems["dob"] = _("Type the date as dd/mm/yyyy, or the year alone.")
            else:
                out["date_of_birth"] = iso
        if self.old_id.strip():
            digits = re.sub(r"\D", "", self.old_id)
            if _OLD_ID.match(digits):
                out["old_id"] = digits
            else:
                self.problems["old_id"] = _("The old ID (CMND) has 9 digits.")
        if self.household.strip():
            out["household"] = self.household.strip()
        return out

    def url(self, ticket: str | None) -> str:
        fields = {"q": self.q, "dob": self.dob, "old_id": self.old_id, "household": self.household}
        query = {k: v for k, v in fields.items() if v.strip()}
        if ticket:
            query["ticket"] = ticket
        return "/residents" + (f"?{urlencode(query)}" if query else "")


async def _results(page: PageDep, search: Search, ticket: str | None) -> dict[str, Any]:
    params = search.params()
    hits: list[dict[str, Any]] = []
    failure: str | None = None
    if params:
        try:
            hits = await page.api.get("/residents", limit=20, **params)
        except StationApiError as exc:
            if exc.code != "bad_request":
                raise
            failure = exc.detail  # a malformed criterion the page did not catch
    open_cases: dict[str, str] = {}
    if any(h.get("local_status") == "open" for h in hits):
        for case in await page.api.get("/cases", state=["open"], limit=200):
            if case.get("resident_ref"):
                open_cases[case["resident_ref"]] = case["id"]
    rows = [
        {
            **h,
            "dob_label": show_date(h.get("date_of_birth")),
            "address_label": address_line(h.get("permanent_residence")),
            "known": status_of(h),
            "open_case": open_cases.get(h["ref"]),
        }
        for h in hits
    ]
    return {
        "searched": bool(params),
        "rows": rows,
        "problems": search.problems,
        "failure": failure,
        "ticket": ticket,
    }


async def _ticket(page: PageDep, number: str | None) -> dict[str, Any] | None:
    """The queue ticket this search is for (from /queue's "Start enrollment")."""
    if not number:
        return None
    number = number.strip().upper()
    data = await page.api.get("/queue")
    found = next((t for t in data["tickets"] if t["number"] == number), None)
    if found is None:
        return {"number": number}
    return {**found, "state_label": state_label(found["state"])}


Text = Annotated[str, Query(max_length=200)]


@router.get("/residents")
async def residents(
    page: PageDep,
    q: Text = "",
    dob: Text = "",
    old_id: Text = "",
    household: Text = "",
    ticket: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    if page.api.token is None:
        return page.to_login()
    held = await _ticket(page, ticket)
    # A ticket whose enrollment was opened already: only "continue" makes sense.
    carry = held["number"] if held and held.get("state") == "called" else None
    if held and not (q or dob or old_id or household) and held.get("name"):
        q = held["name"]  # the name the ticket was issued under: most often it is them
    search = Search(q, dob, old_id, household)
    results = await _results(page, search, carry)
    return await page.render(
        "residents/index.html", search=search, held=held, carry=carry, **results
    )


@router.get("/residents/results")
async def results(
    page: PageDep,
    q: Text = "",
    dob: Text = "",
    old_id: Text = "",
    household: Text = "",
    ticket: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    if page.api.token is None:
        return page.to_login()
    search = Search(q, dob, old_id, household)
    carry = ticket.strip().upper() if ticket else None
    response = await page.render(
        "residents/_results.html", search=search, **await _results(page, search, carry)
    )
    # The page's address follows the search: a reload shows these results again.
    response.headers["hx-replace-url"] = search.url(carry)
    return response
