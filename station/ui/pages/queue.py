"""The day's queue at this counter: the ticket being served, who waits (polled), call-next,
walk-in tickets, check-in of booked citizens, no-shows, the supervisor's day plan and the
hourly figures (is the machine waiting for people, or people for the machine?).

The counter's name is a setting of this kiosk (a cookie), not of the officer: whoever logs
in at the second machine calls to counter 2.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import Response

from station.ui import errors
from station.ui.client import StationApiError
from station.ui.i18n import _
from station.ui.web import PageDep

router = APIRouter()

COUNTER_COOKIE = "station_counter"
DEFAULT_COUNTER = "1"
TICKET = r"^[A-Za-z]-\d{1,6}$"

# queue_error has a general message (errors.py); this screen answers it itself, in the
# board's context (the board again, with the reason).
errors.register(
    supervisor_only=lambda: _("Only a supervisor can do this. Ask a supervisor to log in."),
)

_STATES: dict[str, Callable[[], str]] = {
    "booked": lambda: _("Booked, not arrived"),
    "waiting": lambda: _("Waiting"),
    "called": lambda: _("Called"),
    "serving": lambda: _("Being enrolled"),
    "done": lambda: _("Done"),
    "no_show": lambda: _("Did not come"),
    "cancelled": lambda: _("Cancelled"),
}
_PRIORITIES: dict[str, Callable[[], str]] = {
    "elderly": lambda: _("Elderly"),
    "disabled": lambda: _("Disabled"),
    "pregnant": lambda: _("Pregnant"),
    "child": lambda: _("With a small child"),
}
PRIORITIES = tuple(_PRIORITIES)
"""What ``station.appointments.Priority`` accepts (called first, by arrival)."""


def state_label(state: str) -> str:
    label = _STATES.get(state)
    return label() if label else state


def priority_label(priority: str | None) -> str:
    label = _PRIORITIES.get(priority or "")
    return label() if label else ""


def counter_of(request: Request) -> str:
    """This kiosk's counter name (cookie), ``1`` until someone changes it."""
    value = " ".join((request.cookies.get(COUNTER_COOKIE) or "").split())[:20]
    return value or DEFAULT_COUNTER


def hhmm(value: str | None) -> str:
    """The wall-clock time of a stored moment, as the station wrote it (Viet Nam time)."""
    return datetime.fromisoformat(value).strftime("%H:%M") if value else ""


def minutes_since(value: str | None, now: datetime) -> int | None:
    if not value:
        return None
    return max(0, int((now - datetime.fromisoformat(value)).total_seconds() // 60))


@dataclass(frozen=True)
class QueueView:
    """The day's queue as one counter sees it."""

    day: str
    counter: str
    mine: dict[str, Any] | None
    """The ticket called to (or being enrolled at) this counter."""
    waiting: list[dict[str, Any]]
    """In the order call-next takes them."""
    booked: list[dict[str, Any]]
    elsewhere: list[dict[str, Any]]
    """Tickets called to or served at other counters."""
    finished: int
    no_shows: int
    slots: int


def queue_view(data: Mapping[str, Any], counter: str, now: datetime | None = None) -> QueueView:
    """Shape ``GET /api/queue`` for the screens (labels, slot times, minutes waited)."""
    now = now or datetime.now(UTC)
    slots = {s["id"]: s for s in data["slots"]}
    tickets: dict[str, dict[str, Any]] = {}
    for raw in data["tickets"]:
        t = dict(raw)
        slot = slots.get(t.get("slot_id"))
        t["slot_label"] = f"{hhmm(slot['start'])}–{hhmm(slot['end'])}" if slot else ""
        t["state_label"] = state_label(t["state"])
        t["priority_label"] = priority_label(t.get("priority"))
        t["waited"] = minutes_since(t.get("arrived_at"), now)
        t["called_time"] = hhmm(t.get("called_at"))
        tickets[t["number"]] = t
    at_counters = [t for t in tickets.values() if t["state"] in ("called", "serving")]
    mine = next((t for t in at_counters if t.get("counter") == counter), None)
    return QueueView(
        day=data["day"],
        counter=counter,
        mine=mine,
        waiting=[tickets[n] for n in data["waiting"] if n in tickets],
        booked=[t for t in tickets.values() if t["state"] == "booked"],
        elsewhere=[t for t in at_counters if t is not mine],
        finished=sum(1 for t in tickets.values() if t["state"] == "done"),
        no_shows=sum(1 for t in tickets.values() if t["state"] == "no_show"),
        slots=len(data["slots"]),
    )


async def _view(page: PageDep, poll: bool = False) -> QueueView:
    return queue_view(
        await page.api.get("/queue", poll=1 if poll else None), counter_of(page.request)
    )


async def _board(page: PageDep, notice: str | None = None, detail: str | None = None) -> Response:
    """The part of /queue that changes: this counter's ticket and the lists."""
    return await page.render("queue/_board.html", q=await _view(page), notice=notice, detail=detail)


_NOTICES: dict[str, Callable[[], str]] = {
    "nobody": lambda: _("Nobody is waiting. Issue a walk-in ticket or check in a booked citizen."),
    "refused": lambda: _(
        "The queue refused this (the reason is below); another counter may have dealt with "
        "the ticket. The list is up to date again: look at it, then try again."
    ),
}


async def _queue_action(
    page: PageDep, path: str, body: dict[str, Any] | None = None, *, empty: str | None = None
) -> Response:
    """A queue change through the API, answered with the fresh board (htmx) or a
    redirect to /queue (a plain form post). A refusal (the ticket moved on meanwhile)
    shows the fresh board with the reason; ``empty`` is the notice for an empty answer."""
    notice, detail = None, None
    try:
        answer = await page.api.post(path, body)
    except StationApiError as exc:
        if exc.code != "queue_error":
            raise
        notice, detail = "refused", exc.detail
    else:
        notice = empty if answer is None else None
    if page.is_htmx:
        return await _board(page, _NOTICES[notice]() if notice else None, detail)
    return page.redirect("/queue" + (f"?notice={notice}" if notice else ""))


@router.get("/queue")
async def queue_page(
    page: PageDep, issued: str | None = None, notice: str | None = None
) -> Response:
    if page.api.token is None:
        return page.to_login()
    view = await _view(page)
    me = await page.me()
    ticket = None
    if issued:
        number = issued.strip().upper()
        ticket = next((t for t in view.waiting + view.booked if t["number"] == number), None)
    message = _NOTICES[notice]() if notice in _NOTICES else None
    return await page.render(
        "queue/index.html",
        q=view,
        issued=ticket,
        notice=message,
        detail=None,
        supervisor=bool(me and me.get("role") == "supervisor"),
    )


@router.get("/queue/board")
async def board(page: PageDep) -> Response:
    # Polled every few seconds while the officer is on /queue: a read that is not the
    # officer's activity (?poll=1), so a kiosk left on this screen is still logged out.
    if page.api.token is None:
        return page.to_login()
    return await page.render("queue/_live.html", q=await _view(page, poll=True))


@router.post("/queue/call-next")
async def call_next(page: PageDep) -> Response:
    body = {"counter": counter_of(page.request)}
    return await _queue_action(page, "/queue/call-next", body, empty="nobody")


@router.post("/queue/{ticket}/no-show")
async def no_show(page: PageDep, ticket: Annotated[str, Path(pattern=TICKET)]) -> Response:
    return await _queue_action(page, f"/queue/{ticket}/no-show")


@router.post("/queue/{ticket}/check-in")
async def check_in(page: PageDep, ticket: Annotated[str, Path(pattern=TICKET)]) -> Response:
    return await _queue_action(page, f"/queue/{ticket}/check-in")


@router.post("/queue/{ticket}/finish")
async def finish(page: PageDep, ticket: Annotated[str, Path(pattern=TICKET)]) -> Response:
    return await _queue_action(page, f"/queue/{ticket}/finish")


@router.post("/queue/counter")
async def set_counter(page: PageDep, counter: Annotated[str, Form(max_length=40)] = "") -> Response:
    name = " ".join(counter.split())[:20] or DEFAULT_COUNTER
    response = page.redirect("/queue")
    # A setting of this machine for years, not of a session.
    response.set_cookie(
        COUNTER_COOKIE, name, max_age=10 * 365 * 24 * 3600, samesite="strict", path="/"
    )
    return response


# --- walk-in -----------------------------------------------------------------------------


@router.get("/queue/walk-in")
async def walk_in_form(page: PageDep) -> Response:
    if page.api.token is None:
        return page.to_login()
    return await page.render(
        "queue/walk_in.html", priorities=_priority_choices(), name="", priority="", error=None
    )


def _priority_choices() -> list[tuple[str, str]]:
    return [(p, priority_label(p)) for p in PRIORITIES]


@router.post("/queue/walk-in")
async def walk_in(
    page: PageDep,
    name: Annotated[str, Form(max_length=200)] = "",
    priority: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    name = " ".join(name.split())
    chosen = priority if priority in PRIORITIES else None
    if not name:
        return await page.render(
            "queue/walk_in.html",
            status_code=422,
            priorities=_priority_choices(),
            name=name,
            priority=priority,
            error=_("Type the citizen's name: it is called out and printed on the ticket."),
        )
    ticket = await page.api.post("/queue/walk-in", {"name": name, "priority": chosen})
    return page.redirect(f"/queue?issued={ticket['number']}")


# --- the day's plan (supervisors) --------------------------------------------------------

_TIME = re.compile(r"^\s*(\d{1,2})[:.hH](\d{2})\s*$")
_DAY = re.compile(r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})\s*$")


def parse_time(text: str) -> time | None:
    """``07:30``, ``7.30`` or ``7h30`` -> 07:30; None for anything else."""
    m = _TIME.match(text)
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        return None
    return time(int(m[1]), int(m[2]))


def parse_day(text: str) -> date | None:
    """``dd/mm/yyyy`` -> a date; None for anything else."""
    m = _DAY.match(text)
    if not m:
        return None
    try:
        return date(int(m[3]), int(m[2]), int(m[1]))
    except ValueError:
        return None


_PLAN_DEFAULTS = {
    "opens": "07:30",
    "closes": "17:00",
    "slot_minutes": "30",
    "capacity": "8",
    "break_from": "11:30",
    "break_to": "13:30",
}


async def _plan_page(
    page: PageDep,
    form: Mapping[str, str],
    problems: Mapping[str, str],
    status_code: int = 200,
    planned: int = 0,
) -> Response:
    me = await page.me()
    data = await page.api.get("/queue")
    return await page.render(
        "queue/plan.html",
        status_code=status_code,
        form=form,
        problems=problems,
        allowed=bool(me and me.get("role") == "supervisor"),
        slots=[{"start": hhmm(s["start"]), "end": hhmm(s["end"]), **s} for s in data["slots"]],
        day=data["day"],
        planned=planned,
    )


@router.get("/queue/plan")
async def plan_form(page: PageDep, planned: int = 0) -> Response:
    if page.api.token is None:
        return page.to_login()
    data = await page.api.get("/queue")
    form = {"day": date.fromisoformat(data["day"]).strftime("%d/%m/%Y"), **_PLAN_DEFAULTS}
    return await _plan_page(page, form, {}, planned=planned)


@router.post("/queue/plan")
async def plan(
    page: PageDep,
    day: Annotated[str, Form(max_length=20)] = "",
    opens: Annotated[str, Form(max_length=10)] = "",
    closes: Annotated[str, Form(max_length=10)] = "",
    slot_minutes: Annotated[str, Form(max_length=4)] = "",
    capacity: Annotated[str, Form(max_length=4)] = "",
    break_from: Annotated[str, Form(max_length=10)] = "",
    break_to: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    form = {
        "day": day,
        "opens": opens,
        "closes": closes,
        "slot_minutes": slot_minutes,
        "capacity": capacity,
        "break_from": break_from,
        "break_to": break_to,
    }
    problems: dict[str, str] = {}
    the_day = parse_day(day)
    if the_day is None:
        problems["day"] = _("Type the day as dd/mm/yyyy, e.g. 01/03/2021.")
    times = {k: parse_time(form[k]) for k in ("opens", "closes", "break_from", "break_to")}
    for key in ("opens", "closes"):
        if times[key] is None:
            problems[key] = _("Type a time as HH:MM, e.g. 07:30.")
    has_break = bool(break_from.strip() or break_to.strip())
    if has_break and (times["break_from"] is None or times["break_to"] is None):
        problems["break_from"] = _("Give both ends of the break as HH:MM, or leave both empty.")
    opens_at, closes_at = times["opens"], times["closes"]
    if opens_at and closes_at and closes_at <= opens_at:
        problems["closes"] = _("Closing must come after opening.")
    minutes = int(slot_minutes) if slot_minutes.isdigit() else 0
    if not 5 <= minutes <= 240:
        problems["slot_minutes"] = _("A slot lasts 5 to 240 minutes.")
    seats = int(capacity) if capacity.isdigit() else 0
    if not 1 <= seats <= 200:
        problems["capacity"] = _("Between 1 and 200 citizens a slot.")
    if problems or the_day is None or opens_at is None or closes_at is None:
        return await _plan_page(page, form, problems, status_code=422)
    breaks = []
    if has_break and times["break_from"] and times["break_to"]:
        breaks.append([times["break_from"].isoformat(), times["break_to"].isoformat()])
    try:
        made = await page.api.post(
            "/queue/plan",
            {
                "day": the_day.isoformat(),
                "opens": opens_at.isoformat(),
                "closes": closes_at.isoformat(),
                "slot_minutes": minutes,
                "capacity": seats,
                "breaks": breaks,
            },
        )
    except StationApiError as exc:
        if exc.code != "queue_error":
            raise
        # Slots that overlap what is already planned: say so on the form, keep the input.
        problems["form"] = _(
            "This plan overlaps slots already planned for that day. Choose other times or "
            "another day."
        )
        problems["detail"] = exc.detail
        return await _plan_page(page, form, problems, status_code=409)
    return page.redirect(f"/queue/plan?planned={len(made)}")


# --- figures -----------------------------------------------------------------------------

_PARTS = (
    "busy_nobody_waiting",
    "busy_people_waiting",
    "idle_people_waiting",
    "idle_nobody_waiting",
)


def _share(value: float, total: float) -> int:
    """A bar segment's width in 5 % steps (the CSP allows no style attributes: the widths
    are classes in queue.css)."""
    if total <= 0:
        return 0
    return int(round(100 * value / total / 5) * 5)


def throughput_view(hours: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Rows for the table and bars, and the day's verdict in words."""
    rows = []
    totals = dict.fromkeys(_PARTS, 0.0)
    for h in hours:
        total = sum(float(h[p]) for p in _PARTS)
        for p in _PARTS:
            totals[p] += float(h[p])
        rows.append(
            {
                **h,
                "label": hhmm(h["hour"]),
                "bar": {p: _share(float(h[p]), total) for p in _PARTS},
                "verdict_label": _verdict(str(h["verdict"])),
            }
        )
    people_wait = totals["busy_people_waiting"]
    machine_waits = totals["idle_nobody_waiting"]
    if people_wait > machine_waits:
        verdict = "people"
        advice = _(
            "People are waiting for the machine: for %(people)d counter-minutes the counters "
            "were busy while citizens waited. Another machine, or bookings spread over more "
            "slots, would shorten the wait.",
            people=round(people_wait),
        )
    elif machine_waits > people_wait:
        verdict = "machine"
        advice = _(
            "The machine is waiting for people: for %(idle)d counter-minutes nobody was "
            "waiting. The office can book more citizens.",
            idle=round(machine_waits),
        )
    else:
        verdict = "even"
        advice = _("Neither waits for the other: the counters and the queue are in balance.")
    slow = totals["idle_people_waiting"]
    return {
        "rows": rows,
        "verdict": verdict,
        "advice": advice,
        "slow_calls": round(slow) if slow >= 1 else 0,
        "served": sum(int(h["served"]) for h in hours),
        "arrived": sum(int(h["arrived"]) for h in hours),
    }


def _verdict(code: str) -> str:
    return {
        "people wait for the machine": _("People wait"),
        "machine waits for people": _("Machine waits"),
    }.get(code, "–")


@router.get("/queue/throughput")
async def throughput(page: PageDep) -> Response:
    if page.api.token is None:
        return page.to_login()
    hours = await page.api.get("/queue/throughput")
    return await page.render("queue/throughput.html", t=throughput_view(hours))
