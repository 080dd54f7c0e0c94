"""The station's queue: slots, numbered tickets, call-next order, no-shows, hourly figures
(all on an injected clock in Viet Nam time)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest

from station.appointments import (
    APPOINTMENTS_SCHEMA,
    VIETNAM,
    Appointments,
    HourStats,
    QueueError,
)
from station.store.database import StationDatabase

DAY = date(2021, 3, 1)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.combine(DAY, time(7, 0), VIETNAM)

    def __call__(self) -> datetime:
        return self.now

    def at(self, hh: int, mm: int, day: date = DAY) -> None:
        moment = datetime.combine(day, time(hh, mm), VIETNAM)
        assert moment >= self.now, "the clock only moves forward"
        self.now = moment


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StationDatabase]:
    database = StationDatabase(tmp_path / "station.db")
    database.migrate(APPOINTMENTS_SCHEMA)
    yield database
    database.close()


@pytest.fixture
def queue(db: StationDatabase, clock: Clock) -> Appointments:
    return Appointments(db, clock)


def at(hh: int, mm: int, day: date = DAY) -> datetime:
    return datetime.combine(day, time(hh, mm), VIETNAM)


# --- slots and tickets ---------------------------------------------------------------------


def test_plan_day_makes_slots_around_the_break(queue: Appointments) -> None:
    slots = queue.plan_day(
        DAY,
        time(7, 30),
        time(16, 30),
        slot_minutes=60,
        capacity=8,
        breaks=[(time(11, 30), time(13, 30))],
    )
    assert [f"{s.start:%H:%M}-{s.end:%H:%M}" for s in slots] == [
        "07:30-08:30",
        "08:30-09:30",
        "09:30-10:30",
        "10:30-11:30",
        "13:30-14:30",
        "14:30-15:30",
        "15:30-16:30",
    ]
    assert [s.id for s in queue.slots(DAY)] == [s.id for s in slots]
    with pytest.raises(QueueError, match="overlaps 07:30-08:30"):
        queue.add_slot(at(8, 0), at(8, 15), 2)
    with pytest.raises(QueueError, match="before it starts"):
        queue.add_slot(at(18, 0), at(17, 0), 2)
    with pytest.raises(QueueError, match="capacity"):
        queue.add_slot(at(18, 0), at(19, 0), 0)
    with pytest.raises(QueueError, match="time zone"):
        queue.add_slot(datetime(2021, 3, 1, 18), datetime(2021, 3, 1, 19), 2)


def test_tickets_are_numbered_per_day_and_slots_fill_up(queue: Appointments, clock: Clock) -> None:
    slot = queue.add_slot(at(8, 0), at(8, 30), 2)
    tomorrow = queue.add_slot(
        at(8, 0, DAY + timedelta(days=1)), at(9, 0, DAY + timedelta(days=1)), 5
    )
    a1 = queue.book(slot.id, "Nguyễn  Văn An", phone="0912 345 678")
    a2 = queue.book(slot.id, "Trần Thị Bích", resident_ref="DC01-000042")
    assert (a1.number, a2.number, a1.name, a1.state) == (
        "A-001",
        "A-002",
        "Nguyễn Văn An",
        "booked",
    )
    with pytest.raises(QueueError, match="full"):
        queue.book(slot.id, "Lê Văn Cường")
    queue.cancel("A-002")
    assert queue.book(slot.id, "Lê Văn Cường").number == "A-003"  # the place came free
    assert queue.slots(DAY)[0].booked == 2
    assert queue.book(tomorrow.id, "Phạm Văn Dũng").number == "A-001"  # a new day, a new count
    w1 = queue.walk_in("Hồ Thị Em", priority="pregnant")
    assert (w1.number, w1.state, w1.priority) == ("W-001", "waiting", "pregnant")
    with pytest.raises(QueueError, match="priority"):
        queue.walk_in("X", priority="vip")
    with pytest.raises(QueueError, match="phone"):
        queue.walk_in("X", phone="call me")
    with pytest.raises(QueueError, match="name"):
        queue.walk_in("  ")
    clock.at(8, 31)
    with pytest.raises(QueueError, match="over"):
        queue.book(slot.id, "Late Booker")
    with pytest.raises(QueueError, match="no ticket A-009"):
        queue.check_in("A-009")


# --- who is called next --------------------------------------------------------------------


def test_call_next_order(queue: Appointments, clock: Clock) -> None:
    s730 = queue.add_slot(at(7, 30), at(8, 0), 4)
    s800 = queue.add_slot(at(8, 0), at(8, 30), 4)
    a1 = queue.book(s730.id, "Appointment at 7:30")
    a2 = queue.book(s800.id, "Appointment at 8:00")
    a3 = queue.book(s730.id, "Late for 7:30")
    clock.at(7, 20)
    queue.check_in(a2.number)  # early
    queue.check_in(a1.number)  # early
    clock.at(7, 22)
    queue.walk_in("Walk-in one")
    # Before 7:30 no slot has started: the walk-in goes first, the early ones after it
    # (in slot order), so the machine does not idle while people are there.
    assert [t.name for t in queue.waiting()] == [
        "Walk-in one",
        "Appointment at 7:30",
        "Appointment at 8:00",
    ]
    first = queue.call_next("Quầy 1")
    assert first is not None
    assert (first.number, first.counter, first.state) == ("W-001", "Quầy 1", "called")
    with pytest.raises(QueueError, match="still has ticket W-001"):
        queue.call_next("Quầy 1")
    queue.finish(first.number)

    clock.at(7, 35)  # the 7:30 slot started: its checked-in holder is due
    queue.walk_in("Walk-in two")
    clock.at(7, 40)
    queue.walk_in("Elderly walk-in", priority="elderly")
    assert [t.name for t in queue.waiting()] == [
        "Elderly walk-in",  # priority first
        "Appointment at 7:30",  # due appointments in slot order
        "Walk-in two",  # walk-ins by arrival
        "Appointment at 8:00",  # early, not due yet
    ]
    clock.at(8, 5)  # late check-in: the 7:30 slot is over, A-003 queues as a walk-in
    queue.check_in(a3.number)
    assert [t.name for t in queue.waiting()] == [
        "Elderly walk-in",
        "Appointment at 7:30",
        "Appointment at 8:00",  # due now: before the walk-ins
        "Walk-in two",
        "Late for 7:30",
    ]
    called = []
    while (t := queue.call_next("Quầy 1")) is not None:
        called.append(t.name)
        queue.finish(t.number)
    assert called == [
        "Elderly walk-in",
        "Appointment at 7:30",
        "Appointment at 8:00",
        "Walk-in two",
        "Late for 7:30",
    ]
    assert queue.call_next("Quầy 1") is None


def test_no_show_requeues_once_then_closes(queue: Appointments, clock: Clock) -> None:
    slot = queue.add_slot(at(8, 0), at(9, 0), 5)
    never = queue.book(slot.id, "Never came")
    clock.at(8, 0)
    queue.walk_in("Absent-minded")
    queue.walk_in("Patient")
    t = queue.call_next("1")
    assert t is not None
    assert t.name == "Absent-minded"
    back = queue.no_show(t.number)
    assert (back.state, back.requeued, back.counter) == ("waiting", True, None)
    assert [w.name for w in queue.waiting()] == ["Patient", "Absent-minded"]  # at the back
    t2 = queue.call_next("1")
    assert t2 is not None
    queue.start_service(t2.number, "case-1")
    queue.finish(t2.number)
    t3 = queue.call_next("1")
    assert t3 is not None
    assert t3.name == "Absent-minded"
    assert queue.no_show(t3.number).state == "no_show"  # the second time closes it
    assert queue.waiting() == []
    assert queue.no_show(never.number).state == "no_show"  # booked, never checked in
    with pytest.raises(QueueError, match="only a called or a booked"):
        queue.no_show(t2.number)


def test_state_transitions_are_checked(queue: Appointments, clock: Clock) -> None:
    w = queue.walk_in("Citizen")
    with pytest.raises(QueueError, match="call it first"):
        queue.start_service(w.number, "case-1")
    with pytest.raises(QueueError, match="nothing to finish"):
        queue.finish(w.number)
    called = queue.call_next("1")
    assert called is not None
    with pytest.raises(QueueError, match="case id"):
        queue.start_service(called.number, "")
    serving = queue.start_service(called.number, "case-7")
    assert (serving.state, serving.case_id) == ("serving", "case-7")
    with pytest.raises(QueueError, match="cannot be cancelled"):
        queue.cancel(called.number)
    done = queue.finish(called.number)
    assert done.state == "done"
    assert done.finished_at == clock()
    with pytest.raises(QueueError, match="not booked"):
        queue.check_in(called.number)
    with pytest.raises(QueueError, match="name the counter"):
        queue.call_next(" ")


def test_yesterdays_waiting_tickets_are_not_called_today(queue: Appointments, clock: Clock) -> None:
    queue.walk_in("Stayed past closing")
    clock.at(7, 0, DAY + timedelta(days=1))
    assert queue.call_next("1") is None
    assert [t.number for t in queue.tickets(DAY)] == ["W-001"]


# --- the figures ---------------------------------------------------------------------------


def hour(stats: list[HourStats], hh: int) -> HourStats:
    return next(s for s in stats if s.hour.hour == hh)


def test_throughput_shows_who_waits_for_whom(queue: Appointments, clock: Clock) -> None:
    queue.add_slot(at(8, 0), at(10, 0), 10)
    clock.at(8, 0)
    w1 = queue.walk_in("One")
    clock.at(8, 10)
    assert queue.call_next("1") is not None  # waited 10 min, the machine idle meanwhile
    clock.at(8, 20)
    w2 = queue.walk_in("Two")
    clock.at(8, 30)
    queue.finish(w1.number)
    assert queue.call_next("1") is not None  # waited 10 min while the machine was busy
    clock.at(8, 50)
    queue.finish(w2.number)
    clock.at(9, 0)
    w3 = queue.walk_in("Three")
    clock.at(9, 5)
    queue.call_next("1")
    clock.at(9, 10)
    queue.no_show(w3.number)  # re-queued
    clock.at(9, 20)
    queue.call_next("1")
    queue.start_service(w3.number, "case-3")
    clock.at(9, 40)
    queue.finish(w3.number)
    clock.at(12, 0)

    stats = queue.throughput(DAY)
    assert [s.hour.hour for s in stats] == [8, 9]  # the slot's hours: 8:00-10:00
    h8, h9 = hour(stats, 8), hour(stats, 9)
    assert (h8.arrived, h8.called, h8.served, h8.no_shows) == (2, 2, 2, 0)
    assert (h8.mean_wait, h8.max_wait, h8.mean_service) == (10, 10, 20)
    # 8:00-8:10 idle, One waiting; 8:10-8:20 busy, nobody; 8:20-8:30 busy, Two waiting;
    # 8:30-8:50 busy, nobody; 8:50-9:00 idle, nobody.
    assert (
        h8.idle_nobody_waiting,
        h8.busy_people_waiting,
        h8.idle_people_waiting,
        h8.busy_nobody_waiting,
        h8.person_wait,
    ) == (10, 10, 10, 30, 20)
    assert h8.verdict == "-"
    assert (h9.arrived, h9.called, h9.served, h9.no_shows) == (1, 2, 1, 1)
    assert (h9.mean_wait, h9.max_wait, h9.mean_service) == (7.5, 10, 20)
    assert (
        h9.idle_nobody_waiting,
        h9.busy_people_waiting,
        h9.idle_people_waiting,
        h9.busy_nobody_waiting,
        h9.person_wait,
    ) == (20, 0, 15, 25, 15)
    assert h9.verdict == "machine waits for people"


def test_throughput_with_two_counters_and_a_queue(queue: Appointments, clock: Clock) -> None:
    clock.at(8, 0)
    tickets = [queue.walk_in(f"Citizen {i}") for i in range(4)]
    assert queue.call_next("1") is not None
    assert queue.call_next("2") is not None
    clock.at(8, 30)
    queue.finish(tickets[0].number)
    queue.finish(tickets[1].number)
    assert queue.call_next("1") is not None
    assert queue.call_next("2") is not None
    clock.at(8, 45)  # today, still serving: the figures run up to now
    (h8,) = queue.throughput()
    # Both counters busy all along; two people waited the first half hour.
    assert h8.busy_people_waiting == 2 * 30
    assert h8.busy_nobody_waiting == 2 * 15
    assert h8.idle_nobody_waiting == h8.idle_people_waiting == 0
    assert h8.person_wait == 2 * 30
    assert (h8.mean_wait, h8.max_wait, h8.served) == (15, 30, 2)
    assert h8.verdict == "people wait for the machine"


def test_no_activity_no_figures(queue: Appointments) -> None:
    assert queue.throughput(DAY) == []
