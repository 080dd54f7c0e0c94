"""The day's queue at the station, as the provinces ran it in 2021: booked time slots with
numbered tickets, walk-ins, call-next, no-shows, and the hourly figures that show where the
time goes.

    queue = Appointments(db)                                 # clock: now, in Viet Nam time
    queue.plan_day(date(2021, 3, 1), time(7, 30), time(11, 30), slot_minutes=30, capacity=8)
    t = queue.book(slot.id, "Nguyễn Văn An", phone="0912345678")      # -> "A-001"
    queue.check_in(t.number)                                 # the citizen arrived
    w = queue.walk_in("Lê Thị Hoa", priority="elderly")      # -> "W-001"
    nxt = queue.call_next("Quầy 1")                          # who goes to counter 1 now
    queue.start_service(nxt.number, case_id)                 # the enrollment case opens
    queue.finish(nxt.number)
    queue.throughput(date(2021, 3, 1))                       # per hour, see below

Tickets are numbered per day: ``A-007`` is the seventh appointment booked for that day,
``W-012`` the twelfth walk-in. A ticket goes booked -> waiting (checked in) -> called ->
serving -> done; or no_show / cancelled.

Who is called next (``call_next``), among the tickets waiting today:

1. anyone with a priority flag (``elderly``, ``disabled``, ``pregnant``, ``child``; the
   officer sets it at booking, check-in or walk-in) first, by arrival: the rule posted in
   every commune office;
2. then checked-in appointments whose slot has started, in slot order (then by check-in);
3. then walk-ins by arrival, together with appointments checked in after their slot had
   ended (a late citizen lost the slot and queues as a walk-in) and re-queued no-shows;
4. last, appointments checked in early whose slot has not started: called only when
   nobody else is waiting, so the machine never stands idle while someone is present.

A called citizen who does not come to the counter is marked ``no_show``: the first time
the ticket goes back to the end of the queue (rule 3, its new arrival is the re-queue
time), the second time it is closed. A booked ticket whose holder never checked in can be
closed as a no-show directly. A counter must finish (or mark no-show) its current ticket
before it calls the next: the figures rely on knowing when the machine was busy.

``throughput(day)`` gives per hour: how many arrived, were called, were served and did not
show (a re-queue counts); the wait from arrival (or re-queue) to the call, mean and max;
the service time from call to finish, mean; and where the counters' time went, in
counter-minutes over the opening hours (per counter that called anyone that day), split by
whether the counter was busy (a ticket called and not yet finished) and whether anybody
was waiting: ``idle_nobody_waiting`` (the machine waits for people),
``busy_people_waiting`` (people wait for the machine), ``idle_people_waiting`` (a free
counter while someone waits: the call is slow, the officer is busy with something else)
and ``busy_nobody_waiting`` (the ideal); the four add up to 60 a counter. ``person_wait``
adds the person-minutes spent waiting. An office with long ``busy_people_waiting`` needs
another machine or its bookings spread out; one with long ``idle_nobody_waiting`` can
book more people.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from itertools import pairwise
from typing import Literal, get_args

from station.store.database import Schema, StationDatabase

APPOINTMENTS_SCHEMA = Schema(
    "appointments",
    (
        """
        CREATE TABLE appointments_slots (
            id INTEGER PRIMARY KEY,
            day TEXT NOT NULL,
            start TEXT NOT NULL,
            end TEXT NOT NULL,
            capacity INTEGER NOT NULL CHECK (capacity >= 1),
            UNIQUE (day, start)
        );
        CREATE TABLE appointments_tickets (
            id INTEGER PRIMARY KEY,
            day TEXT NOT NULL,
            number TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('appointment', 'walk_in')),
            seq INTEGER NOT NULL,
            slot_id INTEGER REFERENCES appointments_slots (id),
            name TEXT NOT NULL,
            phone TEXT,
            resident_ref TEXT,
            priority TEXT,
            state TEXT NOT NULL,
            booked_at TEXT NOT NULL,
            arrived_at TEXT,
            queue_group INTEGER,
            queue_at TEXT,
            queue_order INTEGER,
            called_at TEXT,
            counter TEXT,
            case_id TEXT,
            finished_at TEXT,
            requeued INTEGER NOT NULL DEFAULT 0,
            UNIQUE (day, number),
            UNIQUE (day, kind, seq)
        );
        CREATE INDEX appointments_tickets_queue ON appointments_tickets (day, state);
        CREATE TABLE appointments_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ticket_id INTEGER NOT NULL REFERENCES appointments_tickets (id),
            day TEXT NOT NULL,
            at TEXT NOT NULL,
            event TEXT NOT NULL,
            counter TEXT
        );
        CREATE INDEX appointments_events_day ON appointments_events (day, at);
        """,
    ),
)

#: Viet Nam keeps one offset all year (no daylight saving): a fixed zone needs no tzdata.
VIETNAM = timezone(timedelta(hours=7), "ICT")

TicketState = Literal["booked", "waiting", "called", "serving", "done", "no_show", "cancelled"]
Priority = Literal["elderly", "disabled", "pregnant", "child"]
_PREFIX = {"appointment": "A", "walk_in": "W"}
# Queue groups (see the module docstring): the order call_next uses after priority.
_DUE, _WALK_IN, _EARLY = 0, 1, 2


class QueueError(ValueError):
    """A queue action that does not fit the ticket's state (or an unknown ticket)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Slot:
    id: int
    day: date
    start: datetime
    end: datetime
    capacity: int
    booked: int
    """Tickets booked into it that were not cancelled."""


@dataclass(frozen=True)
class Ticket:
    id: int
    day: date
    number: str
    kind: Literal["appointment", "walk_in"]
    name: str
    phone: str | None
    resident_ref: str | None
    priority: str | None
    state: TicketState
    slot_id: int | None
    booked_at: datetime
    arrived_at: datetime | None
    called_at: datetime | None
    counter: str | None
    case_id: str | None
    finished_at: datetime | None
    requeued: bool


@dataclass(frozen=True)
class HourStats:
    """One hour of :meth:`Appointments.throughput` (times in minutes)."""

    hour: datetime
    arrived: int
    called: int
    served: int
    no_shows: int
    mean_wait: float | None
    max_wait: float | None
    mean_service: float | None
    idle_nobody_waiting: float
    busy_people_waiting: float
    idle_people_waiting: float
    busy_nobody_waiting: float
    person_wait: float

    @property
    def verdict(self) -> Literal["people wait for the machine", "machine waits for people", "-"]:
        if self.busy_people_waiting > self.idle_nobody_waiting:
            return "people wait for the machine"
        if self.idle_nobody_waiting > self.busy_people_waiting:
            return "machine waits for people"
        return "-"


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


class Appointments:
    """Time slots, tickets and the queue of this station (tables ``appointments_*``)."""

    def __init__(
        self,
        db: StationDatabase,
        clock: Callable[[], datetime] = _utc_now,
        *,
        tz: tzinfo = VIETNAM,
    ) -> None:
        self._db = db
        self._clock = clock
        self._tz = tz

    # --- time ----------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the queue's clock must return timezone-aware datetimes")
        return now.astimezone(self._tz)

    def _local(self, moment: datetime) -> datetime:
        if moment.tzinfo is None:
            raise QueueError(f"{moment} has no time zone; give an aware datetime")
        return moment.astimezone(self._tz)

    def today(self) -> date:
        return self._now().date()

    def _stamp(self, moment: datetime) -> str:
        # One offset for every stored time, so the text sorts as the time does.
        return self._local(moment).isoformat(timespec="seconds")

    # --- slots ---------------------------------------------------------------------------

    def add_slot(self, start: datetime, end: datetime, capacity: int) -> Slot:
        """One bookable slot (aware datetimes; the day is the station's local date)."""
        start, end = self._local(start), self._local(end)
        if end <= start:
            raise QueueError(f"slot ends ({end:%H:%M}) before it starts ({start:%H:%M})")
        if start.date() != end.date():
            raise QueueError("a slot must start and end on the same day")
        if capacity < 1:
            raise QueueError(f"slot capacity must be at least 1, not {capacity}")
        with self._db.write() as c:
            overlap = c.execute(
                "SELECT start, end FROM appointments_slots WHERE day = ? AND start < ? AND end > ?",
                (start.date().isoformat(), self._stamp(end), self._stamp(start)),
            ).fetchone()
            if overlap is not None:
                raise QueueError(
                    f"the slot {start:%H:%M}-{end:%H:%M} overlaps "
                    f"{_dt(overlap['start']):%H:%M}-{_dt(overlap['end']):%H:%M}"
                )
            cur = c.execute(
                "INSERT INTO appointments_slots (day, start, end, capacity) VALUES (?, ?, ?, ?)",
                (start.date().isoformat(), self._stamp(start), self._stamp(end), capacity),
            )
            slot_id = int(cur.lastrowid or 0)
        return Slot(slot_id, start.date(), start, end, capacity, 0)

    def plan_day(
        self,
        day: date,
        opens: time,
        closes: time,
        *,
        slot_minutes: int,
        capacity: int,
        breaks: Sequence[tuple[time, time]] = (),
    ) -> list[Slot]:
        """Slots of ``slot_minutes`` from ``opens`` to ``closes`` (local time), skipping
        any that touch a break (e.g. lunch ``(time(11, 30), time(13, 30))``)."""
        if slot_minutes < 5:
            raise QueueError("slots shorter than 5 minutes make no sense for an enrollment")
        step = timedelta(minutes=slot_minutes)
        start = datetime.combine(day, opens, self._tz)
        last = datetime.combine(day, closes, self._tz)
        pauses = [
            (datetime.combine(day, a, self._tz), datetime.combine(day, b, self._tz))
            for a, b in breaks
        ]
        made: list[Slot] = []
        while start + step <= last:
            end = start + step
            if not any(start < b and end > a for a, b in pauses):
                made.append(self.add_slot(start, end, capacity))
            start = end
        return made

    def slots(self, day: date | None = None) -> list[Slot]:
        """The day's slots (default today) with how many are booked."""
        day = day or self.today()
        with self._db.read() as c:
            rows = c.execute(
                "SELECT s.*, (SELECT COUNT(*) FROM appointments_tickets t WHERE t.slot_id = s.id "
                "AND t.state != 'cancelled') AS booked FROM appointments_slots s "
                "WHERE s.day = ? ORDER BY s.start",
                (day.isoformat(),),
            ).fetchall()
        return [
            Slot(
                int(r["id"]),
                date.fromisoformat(r["day"]),
                datetime.fromisoformat(r["start"]),
                datetime.fromisoformat(r["end"]),
                int(r["capacity"]),
                int(r["booked"]),
            )
            for r in rows
        ]

    # --- tickets -------------------------------------------------------------------------

    @staticmethod
    def _check_person(name: str, phone: str | None, priority: str | None) -> str:
        name = " ".join(name.split())
        if not name:
            raise QueueError("a ticket needs the citizen's name")
        if phone is not None and not phone.replace(" ", "").lstrip("+").isdigit():
            raise QueueError(f"phone number {phone!r}: digits only (a leading + is fine)")
        if priority is not None and priority not in get_args(Priority):
            raise QueueError(f"priority {priority!r}: expected one of {get_args(Priority)}")
        return name

    def _new_ticket(
        self,
        c: sqlite3.Connection,
        day: date,
        kind: Literal["appointment", "walk_in"],
        **columns: object,
    ) -> int:
        seq = int(
            c.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM appointments_tickets "
                "WHERE day = ? AND kind = ?",
                (day.isoformat(), kind),
            ).fetchone()[0]
        )
        columns.update(
            day=day.isoformat(),
            kind=kind,
            seq=seq,
            number=f"{_PREFIX[kind]}-{seq:03d}",
            booked_at=self._stamp(self._now()),
        )
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        # Column names come from this module's own keyword arguments, never from input.
        sql = f"INSERT INTO appointments_tickets ({names}) VALUES ({marks})"  # noqa: S608
        return int(c.execute(sql, tuple(columns.values())).lastrowid or 0)

    def book(
        self,
        slot_id: int,
        name: str,
        *,
        phone: str | None = None,
        resident_ref: str | None = None,
        priority: str | None = None,
    ) -> Ticket:
        """An appointment in a slot -> ticket ``A-nnn`` of the slot's day. Refused when
        the slot is full or over."""
        name = self._check_person(name, phone, priority)
        with self._db.write() as c:
            slot = c.execute("SELECT * FROM appointments_slots WHERE id = ?", (slot_id,)).fetchone()
            if slot is None:
                raise QueueError(f"no slot {slot_id}")
            if datetime.fromisoformat(slot["end"]) <= self._now():
                raise QueueError("that slot is over; book a later one or queue as a walk-in")
            booked = c.execute(
                "SELECT COUNT(*) FROM appointments_tickets WHERE slot_id = ? "
                "AND state != 'cancelled'",
                (slot_id,),
            ).fetchone()[0]
            if booked >= slot["capacity"]:
                raise QueueError(
                    f"the slot {datetime.fromisoformat(slot['start']):%H:%M} is full "
                    f"({slot['capacity']} booked); choose another"
                )
            tid = self._new_ticket(
                c,
                date.fromisoformat(slot["day"]),
                "appointment",
                slot_id=slot_id,
                name=name,
                phone=phone,
                resident_ref=resident_ref,
                priority=priority,
                state="booked",
            )
            return self._ticket(c, tid)

    def walk_in(
        self,
        name: str,
        *,
        phone: str | None = None,
        resident_ref: str | None = None,
        priority: str | None = None,
    ) -> Ticket:
        """A citizen without an appointment, queued now -> ticket ``W-nnn`` of today."""
        name = self._check_person(name, phone, priority)
        now = self._stamp(self._now())
        with self._db.write() as c:
            tid = self._new_ticket(
                c,
                self.today(),
                "walk_in",
                name=name,
                phone=phone,
                resident_ref=resident_ref,
                priority=priority,
                state="waiting",
                arrived_at=now,
                queue_group=_WALK_IN,
                queue_at=now,
            )
            self._enqueued(c, tid)
            self._event(c, tid, "arrived")
            return self._ticket(c, tid)

    def check_in(self, ticket: str, *, priority: str | None = None) -> Ticket:
        """The holder of a booked ticket arrived (on the day of the ticket only)."""
        if priority is not None:
            self._check_person("x", None, priority)
        now = self._now()
        with self._db.write() as c:
            row = self._row(c, ticket, self.today())
            if row["state"] != "booked":
                raise QueueError(f"ticket {ticket} is {row['state']}, not booked")
            slot = c.execute(
                "SELECT start, end FROM appointments_slots WHERE id = ?", (row["slot_id"],)
            ).fetchone()
            if now >= datetime.fromisoformat(slot["end"]):
                group = _WALK_IN  # late: the slot is lost, the ticket queues as a walk-in
            elif now >= datetime.fromisoformat(slot["start"]):
                group = _DUE
            else:
                group = _EARLY
            stamp = self._stamp(now)
            c.execute(
                "UPDATE appointments_tickets SET state = 'waiting', arrived_at = ?, "
                "queue_group = ?, queue_at = ?, priority = COALESCE(?, priority) WHERE id = ?",
                (stamp, group, stamp, priority, row["id"]),
            )
            self._enqueued(c, row["id"])
            self._event(c, row["id"], "arrived")
            return self._ticket(c, row["id"])

    def cancel(self, ticket: str, day: date | None = None) -> Ticket:
        """A booked or waiting ticket is withdrawn (frees its slot place)."""
        with self._db.write() as c:
            row = self._row(c, ticket, day or self.today())
            if row["state"] not in ("booked", "waiting"):
                raise QueueError(f"ticket {ticket} is {row['state']}; it cannot be cancelled")
            c.execute(
                "UPDATE appointments_tickets SET state = 'cancelled' WHERE id = ?", (row["id"],)
            )
            self._event(c, row["id"], "cancelled")
            return self._ticket(c, row["id"])

    # --- the queue -----------------------------------------------------------------------

    def waiting(self, day: date | None = None) -> list[Ticket]:
        """Who is waiting, in the order ``call_next`` would call them (now)."""
        day = day or self.today()
        with self._db.read() as c:
            return [self._from_row(r) for r in self._queue(c, day)]

    def _queue(self, c: sqlite3.Connection, day: date) -> list[sqlite3.Row]:
        now = self._stamp(self._now())
        # An early appointment becomes due when its slot starts; a due one that was not
        # called before its slot ended keeps its place (it was on time).
        return list(
            c.execute(
                "SELECT t.*, s.start AS slot_start FROM appointments_tickets t "
                "LEFT JOIN appointments_slots s ON s.id = t.slot_id "
                "WHERE t.day = ? AND t.state = 'waiting' "
                "ORDER BY t.priority IS NULL, "
                "CASE WHEN t.priority IS NOT NULL THEN t.queue_order END, "
                "CASE WHEN t.queue_group = 2 AND s.start <= ? THEN 0 ELSE t.queue_group END, "
                "CASE WHEN t.queue_group = 1 THEN NULL ELSE s.start END, "
                "t.queue_order",
                (day.isoformat(), now),
            )
        )

    def call_next(self, counter: str) -> Ticket | None:
        """Call the next citizen to ``counter`` (rule in the module docstring); None when
        nobody waits. Refused while the counter still has a called or served ticket."""
        counter = counter.strip()
        if not counter:
            raise QueueError("name the counter that calls")
        with self._db.write() as c:
            day = self.today()
            busy = c.execute(
                "SELECT number FROM appointments_tickets WHERE day = ? AND counter = ? "
                "AND state IN ('called', 'serving')",
                (day.isoformat(), counter),
            ).fetchone()
            if busy is not None:
                raise QueueError(
                    f"counter {counter} still has ticket {busy['number']}: finish it or mark "
                    "it a no-show first"
                )
            queue = self._queue(c, day)
            if not queue:
                return None
            nxt = queue[0]
            c.execute(
                "UPDATE appointments_tickets SET state = 'called', called_at = ?, counter = ? "
                "WHERE id = ?",
                (self._stamp(self._now()), counter, nxt["id"]),
            )
            self._event(c, nxt["id"], "called", counter)
            return self._ticket(c, nxt["id"])

    def no_show(self, ticket: str, day: date | None = None) -> Ticket:
        """The called citizen did not come: back to the end of the queue the first time,
        closed the second time. A booked ticket never checked in is closed directly."""
        with self._db.write() as c:
            row = self._row(c, ticket, day or self.today())
            if row["state"] == "booked":
                c.execute(
                    "UPDATE appointments_tickets SET state = 'no_show' WHERE id = ?", (row["id"],)
                )
                self._event(c, row["id"], "no_show")
            elif row["state"] != "called":
                raise QueueError(
                    f"ticket {ticket} is {row['state']}: only a called or a booked ticket can "
                    "be a no-show"
                )
            elif not row["requeued"]:
                c.execute(
                    "UPDATE appointments_tickets SET state = 'waiting', requeued = 1, "
                    "queue_group = ?, queue_at = ?, counter = NULL, called_at = NULL "
                    "WHERE id = ?",
                    (_WALK_IN, self._stamp(self._now()), row["id"]),
                )
                self._enqueued(c, row["id"])
                self._event(c, row["id"], "requeued", row["counter"])
            else:
                c.execute(
                    "UPDATE appointments_tickets SET state = 'no_show' WHERE id = ?", (row["id"],)
                )
                self._event(c, row["id"], "no_show", row["counter"])
            return self._ticket(c, row["id"])

    def start_service(self, ticket: str, case_id: str) -> Ticket:
        """The called citizen is at the counter and their enrollment case is open."""
        if not case_id:
            raise QueueError("start_service needs the enrollment case id")
        with self._db.write() as c:
            row = self._row(c, ticket, self.today())
            if row["state"] != "called":
                raise QueueError(f"ticket {ticket} is {row['state']}; call it first")
            c.execute(
                "UPDATE appointments_tickets SET state = 'serving', case_id = ? WHERE id = ?",
                (case_id, row["id"]),
            )
            self._event(c, row["id"], "started", row["counter"])
            return self._ticket(c, row["id"])

    def finish(self, ticket: str) -> Ticket:
        """The citizen leaves the counter (enrolled, or turned away: the case says which)."""
        with self._db.write() as c:
            row = self._row(c, ticket, self.today())
            if row["state"] not in ("called", "serving"):
                raise QueueError(f"ticket {ticket} is {row['state']}; nothing to finish")
            c.execute(
                "UPDATE appointments_tickets SET state = 'done', finished_at = ? WHERE id = ?",
                (self._stamp(self._now()), row["id"]),
            )
            self._event(c, row["id"], "finished", row["counter"])
            return self._ticket(c, row["id"])

    def get(self, ticket: str, day: date | None = None) -> Ticket:
        with self._db.read() as c:
            return self._from_row(self._row(c, ticket, day or self.today()))

    def tickets(self, day: date | None = None) -> list[Ticket]:
        """Every ticket of the day, appointments then walk-ins, by number."""
        with self._db.read() as c:
            rows = c.execute(
                "SELECT * FROM appointments_tickets WHERE day = ? ORDER BY kind, seq",
                ((day or self.today()).isoformat(),),
            ).fetchall()
        return [self._from_row(r) for r in rows]

    # --- rows ----------------------------------------------------------------------------

    @staticmethod
    def _enqueued(c: sqlite3.Connection, ticket_id: int) -> None:
        """Give the ticket the next place in arrival order (a counter, not a time: two
        arrivals in one second keep their order)."""
        c.execute(
            "UPDATE appointments_tickets SET queue_order = "
            "(SELECT COALESCE(MAX(queue_order), 0) + 1 FROM appointments_tickets) WHERE id = ?",
            (ticket_id,),
        )

    def _event(
        self, c: sqlite3.Connection, ticket_id: int, event: str, counter: str | None = None
    ) -> None:
        day = c.execute(
            "SELECT day FROM appointments_tickets WHERE id = ?", (ticket_id,)
        ).fetchone()[0]
        c.execute(
            "INSERT INTO appointments_events (ticket_id, day, at, event, counter) "
            "VALUES (?, ?, ?, ?, ?)",
            (ticket_id, day, self._stamp(self._now()), event, counter),
        )

    @staticmethod
    def _row(c: sqlite3.Connection, ticket: str, day: date) -> sqlite3.Row:
        row: sqlite3.Row | None = c.execute(
            "SELECT * FROM appointments_tickets WHERE day = ? AND number = ?",
            (day.isoformat(), ticket.strip().upper()),
        ).fetchone()
        if row is None:
            raise QueueError(f"no ticket {ticket} on {day:%d/%m/%Y}")
        return row

    def _ticket(self, c: sqlite3.Connection, ticket_id: int) -> Ticket:
        row = c.execute("SELECT * FROM appointments_tickets WHERE id = ?", (ticket_id,)).fetchone()
        return self._from_row(row)

    @staticmethod
    def _from_row(r: sqlite3.Row) -> Ticket:
        return Ticket(
            id=int(r["id"]),
            day=date.fromisoformat(r["day"]),
            number=r["number"],
            kind=r["kind"],
            name=r["name"],
            phone=r["phone"],
            resident_ref=r["resident_ref"],
            priority=r["priority"],
            state=r["state"],
            slot_id=r["slot_id"],
            booked_at=datetime.fromisoformat(r["booked_at"]),
            arrived_at=_dt(r["arrived_at"]),
            called_at=_dt(r["called_at"]),
            counter=r["counter"],
            case_id=r["case_id"],
            finished_at=_dt(r["finished_at"]),
            requeued=bool(r["requeued"]),
        )

    # --- figures -------------------------------------------------------------------------

    def throughput(self, day: date | None = None) -> list[HourStats]:
        """Per-hour figures of the day's opening hours (see the module docstring): from
        the first slot or event to the last slot's end or last event (now, for today)."""
        day = day or self.today()
        with self._db.read() as c:
            events = c.execute(
                "SELECT ticket_id, at, event, counter FROM appointments_events WHERE day = ? "
                "ORDER BY at, id",
                (day.isoformat(),),
            ).fetchall()
            bounds = c.execute(
                "SELECT MIN(start), MAX(end) FROM appointments_slots WHERE day = ?",
                (day.isoformat(),),
            ).fetchone()
        times = [datetime.fromisoformat(e["at"]) for e in events]
        starts = [t for t in (_dt(bounds[0]), *times[:1]) if t is not None]
        ends = [t for t in (_dt(bounds[1]), *times[-1:]) if t is not None]
        if not starts or not ends:
            return []
        open_at, close_at = min(starts), max(ends)

        # Replay the events into intervals: waiting (arrival or re-queue -> call or
        # cancel) and busy (call -> finish, no-show or re-queue), per ticket.
        waiting: list[tuple[datetime, datetime]] = []
        busy: list[tuple[str, datetime, datetime]] = []
        waits: list[tuple[datetime, float]] = []  # (called at, minutes waited)
        services: list[tuple[datetime, float]] = []  # (finished at, minutes served)
        counts: dict[str, list[datetime]] = {"arrived": [], "called": [], "no_show": []}
        wait_from: dict[int, datetime] = {}
        called: dict[int, tuple[str, datetime]] = {}
        for e, at in zip(events, times, strict=True):
            tid, kind = int(e["ticket_id"]), e["event"]
            if kind in ("arrived", "requeued"):
                counts["arrived" if kind == "arrived" else "no_show"].append(at)
                if tid in called:
                    counter, since = called.pop(tid)
                    busy.append((counter, since, at))
                wait_from[tid] = at
            elif kind == "called":
                counts["called"].append(at)
                since = wait_from.pop(tid, at)
                waiting.append((since, at))
                waits.append((at, (at - since).total_seconds() / 60))
                called[tid] = (str(e["counter"]), at)
            elif kind in ("finished", "no_show"):
                if kind == "no_show":
                    counts["no_show"].append(at)
                if tid in called:
                    counter, since = called.pop(tid)
                    busy.append((counter, since, at))
                    if kind == "finished":
                        services.append((at, (at - since).total_seconds() / 60))
            elif kind == "cancelled" and tid in wait_from:
                waiting.append((wait_from.pop(tid), at))
        now = self._now()
        if day == now.date():
            # Today: up to now while anyone waits or is served, else up to the last
            # slot's end or event, whichever is later, but never past now.
            last = times[-1] if times else open_at
            close_at = now if (wait_from or called) else max(min(close_at, now), last)
        if close_at <= open_at:
            return []
        for since in wait_from.values():  # still waiting at closing (or now)
            waiting.append((since, max(since, close_at)))
        for counter, since in called.values():  # still at a counter
            busy.append((counter, since, max(since, close_at)))
        counters = max(1, len({counter for counter, _, _ in busy}))

        # Sweep the opening hours: between consecutive change points the number of
        # busy counters and of people waiting is constant.
        points = sorted(
            {open_at, close_at}
            | {t for a, b in waiting for t in (a, b) if open_at < t < close_at}
            | {t for _, a, b in busy for t in (a, b) if open_at < t < close_at}
            | {
                h
                for h in _hours(open_at, close_at)
                if open_at < h < close_at  # hour boundaries split the sums
            }
        )
        first_hour = open_at.replace(minute=0, second=0, microsecond=0)
        hours = list(_hours(first_hour, close_at))
        sums = {h: [0.0, 0.0, 0.0, 0.0, 0.0] for h in hours}
        for a, b in pairwise(points):
            mid = a + (b - a) / 2
            n_wait = sum(1 for s, t in waiting if s <= mid < t)
            n_busy = min(counters, sum(1 for _, s, t in busy if s <= mid < t))
            minutes = (b - a).total_seconds() / 60
            idle = counters - n_busy
            acc = sums[a.replace(minute=0, second=0, microsecond=0)]
            if n_wait == 0:
                acc[0] += idle * minutes
                acc[3] += n_busy * minutes
            else:
                acc[1] += n_busy * minutes
                acc[2] += idle * minutes
            acc[4] += n_wait * minutes

        def within(items: Sequence[datetime], h: datetime) -> int:
            return sum(1 for t in items if h <= t < h + timedelta(hours=1))

        out: list[HourStats] = []
        for h in hours:
            hour_waits = [m for t, m in waits if h <= t < h + timedelta(hours=1)]
            hour_services = [m for t, m in services if h <= t < h + timedelta(hours=1)]
            idle_nobody, busy_waiting, idle_waiting, busy_nobody, person_wait = sums[h]
            out.append(
                HourStats(
                    hour=h,
                    arrived=within(counts["arrived"], h),
                    called=within(counts["called"], h),
                    served=len(hour_services),
                    no_shows=within(counts["no_show"], h),
                    mean_wait=_mean(hour_waits),
                    max_wait=max(hour_waits) if hour_waits else None,
                    mean_service=_mean(hour_services),
                    idle_nobody_waiting=round(idle_nobody, 2),
                    busy_people_waiting=round(busy_waiting, 2),
                    idle_people_waiting=round(idle_waiting, 2),
                    busy_nobody_waiting=round(busy_nobody, 2),
                    person_wait=round(person_wait, 2),
                )
            )
        return out


def _hours(start: datetime, end: datetime) -> list[datetime]:
    """Whole-hour marks from ``start``'s hour up to (not including) ``end``."""
    h = start.replace(minute=0, second=0, microsecond=0)
    marks = []
    while h < end:
        marks.append(h)
        h += timedelta(hours=1)
    return marks


__all__ = [
    "APPOINTMENTS_SCHEMA",
    "VIETNAM",
    "Appointments",
    "HourStats",
    "Priority",
    "QueueError",
    "Slot",
    "Ticket",
    "TicketState",
]
