"""The station outbox: package files and rows that commit with the case, recovery after a
power cut, the state machine the uploader and the UI rely on, and the disk guard."""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from enrollment.package import BuiltPackage, build_package
from station.outbox import (
    OUTBOX_SCHEMA,
    LinkState,
    Outbox,
    OutboxError,
    OutboxFileError,
)
from station.store.database import Schema, StationDatabase
from tests import pkgkit, tmpfskit

REPO = Path(__file__).resolve().parent.parent
CASES = Schema("testcase", ("CREATE TABLE testcase_case (case_id TEXT PRIMARY KEY, state TEXT)",))


@dataclasses.dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Maker:
    """Real packages (small images), a new id each, a few ms apiece."""

    def __init__(self) -> None:
        self.kit = pkgkit.make_kit()
        self.record, self.tx = pkgkit.example(1)

    def build(self, created: datetime | None = None) -> BuiltPackage:
        return build_package(
            self.record,
            self.tx,
            signer=self.kit.signer,
            recipient=self.kit.registry_key.public_key(),
            created=created,
        )


@pytest.fixture(scope="module")
def maker() -> Maker:
    return Maker()


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StationDatabase]:
    database = StationDatabase(tmp_path / "station.db")
    database.migrate(OUTBOX_SCHEMA, CASES)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def outbox(db: StationDatabase, tmp_path: Path, clock: Clock) -> Outbox:
    return Outbox(db, tmp_path / "outbox", clock=clock)


def enqueue(outbox: Outbox, built: BuiltPackage, case_id: str) -> None:
    """What the workflow does: stage the file, then the case's state and the row at once."""
    outbox.stage(built)
    with outbox.db.write() as conn:
        conn.execute("INSERT INTO testcase_case VALUES (?, 'packaged')", (case_id,))
        outbox.record(conn, built, case_id)


def test_packages_are_queued_with_their_case_oldest_first(
    outbox: Outbox, maker: Maker, clock: Clock
) -> None:
    t0 = clock.now - timedelta(hours=3)
    built = [maker.build(created=t0 + timedelta(minutes=m)) for m in (20, 0, 10)]
    for i, b in enumerate(built):
        enqueue(outbox, b, f"case-{i}")
    pending = outbox.pending()
    assert [e.package_id for e in pending] == [built[i].package_id for i in (1, 2, 0)]
    first = pending[0]
    assert (first.state, first.case_id, first.size) == ("queued", "case-1", len(built[1].data))
    assert outbox.path_of(first.package_id).read_bytes() == built[1].data
    assert outbox.read(first.package_id) == built[1].data
    counts = outbox.counts()
    assert counts.by_state == {"queued": 3}
    assert counts.heartbeat() == {"pending": 3, "oldest_pending_s": 3 * 3600.0, "refused": 0}
    assert [e.package_id for e in outbox.list(limit=2)] == [
        built[0].package_id,
        built[2].package_id,
    ]
    assert outbox.for_case("case-2")[0].package_id == built[2].package_id
    assert outbox.get("0190c0de-0000-7000-8000-000000000000") is None


def test_a_rolled_back_case_leaves_a_staged_file_that_recovery_removes(
    outbox: Outbox, maker: Maker
) -> None:
    kept, lost = maker.build(), maker.build()
    enqueue(outbox, kept, "case-kept")
    outbox.stage(lost)

    def interrupted() -> None:
        with outbox.db.write() as conn:
            conn.execute("INSERT INTO testcase_case VALUES ('case-lost', 'packaged')")
            outbox.record(conn, lost, "case-lost")
            raise RuntimeError("power cut (stand-in) before the commit")

    with pytest.raises(RuntimeError):
        interrupted()
    assert outbox.get(lost.package_id) is None
    (outbox.folder / f".{kept.package_id}.vnpkg.tmp-999").write_bytes(b"half")
    report = outbox.recover()
    assert report.orphans_removed == (lost.package_id,)
    assert report.temporaries_removed == 1
    assert report.missing == ()
    assert sorted(p.name for p in outbox.folder.iterdir()) == [f"{kept.package_id}.vnpkg"]
    assert outbox.recover().orphans_removed == ()


def test_sigkill_between_stage_and_record(tmp_path: Path, maker: Maker) -> None:
    """A real process killed after staging its second package, before recording it."""
    first, second = maker.build(), maker.build()
    (tmp_path / "first.pickle").write_bytes(pickle.dumps(first))
    (tmp_path / "second.pickle").write_bytes(pickle.dumps(second))
    script = textwrap.dedent(
        f"""
        import pickle, sys, time
        from pathlib import Path
        from station.outbox import OUTBOX_SCHEMA, Outbox
        from station.store.database import StationDatabase
        base = Path({str(tmp_path)!r})
        db = StationDatabase(base / "station.db")
        db.migrate(OUTBOX_SCHEMA)
        outbox = Outbox(db, base / "outbox")
        outbox.add(pickle.loads((base / "first.pickle").read_bytes()), "case-1")
        outbox.stage(pickle.loads((base / "second.pickle").read_bytes()))
        print("staged", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"staged"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()
    db = StationDatabase(tmp_path / "station.db")
    try:
        db.migrate(OUTBOX_SCHEMA)
        outbox = Outbox(db, tmp_path / "outbox")
        report = outbox.recover()
        assert report.orphans_removed == (second.package_id,)
        assert [e.package_id for e in outbox.pending()] == [first.package_id]
        assert outbox.read(first.package_id) == first.data
    finally:
        db.close()


def test_a_row_without_its_file_is_flagged_not_fatal(
    outbox: Outbox, maker: Maker, caplog: pytest.LogCaptureFixture
) -> None:
    gone, fine = maker.build(), maker.build()
    enqueue(outbox, gone, "case-1")
    enqueue(outbox, fine, "case-2")
    saved = outbox.path_of(gone.package_id).read_bytes()
    outbox.path_of(gone.package_id).unlink()  # a damaged disk; this code never does it
    report = outbox.recover()
    assert report.missing == (gone.package_id,)
    assert "has a row but no file" in caplog.text
    entry = outbox.get(gone.package_id)
    assert entry is not None
    assert entry.file_problem == "missing"
    assert [e.package_id for e in outbox.pending()] == [fine.package_id]
    assert [e.package_id for e in outbox.exportable()] == [fine.package_id]
    assert outbox.counts().file_problems == 1
    # A technician puts the file back: the next start clears the flag.
    outbox.path_of(gone.package_id).write_bytes(saved)
    assert outbox.recover().missing == ()
    assert len(outbox.pending()) == 2


def test_a_damaged_file_is_caught_when_read(outbox: Outbox, maker: Maker) -> None:
    built = maker.build()
    enqueue(outbox, built, "case-1")
    path = outbox.path_of(built.package_id)
    data = bytearray(path.read_bytes())
    data[500] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(OutboxFileError, match="SHA-256"):
        outbox.read(built.package_id)
    entry = outbox.get(built.package_id)
    assert entry is not None
    assert entry.file_problem == "corrupt"
    assert outbox.pending() == []


def test_the_upload_states(outbox: Outbox, maker: Maker, clock: Clock) -> None:
    built = maker.build()
    pid = built.package_id
    enqueue(outbox, built, "case-1")
    assert outbox.mark_sending(pid)
    outbox.mark_progress(pid, 65536)
    assert outbox.mark_retry(pid, "ConnectError: refused", clock.now + timedelta(seconds=30))
    entry = outbox.get(pid)
    assert entry is not None
    assert (entry.state, entry.attempts, entry.upload_offset) == ("queued", 1, 65536)
    assert entry.last_error == "ConnectError: refused"
    assert outbox.pending() == []  # not due yet
    assert outbox.next_due() == clock.now + timedelta(seconds=30)
    clock.advance(30)
    assert [e.package_id for e in outbox.pending()] == [pid]
    assert outbox.mark_sending(pid)
    assert outbox.mark_acknowledged(pid, "R-0001", "received")
    assert not outbox.mark_acknowledged(pid, "R-0001", "received")  # twice: no change
    assert not outbox.mark_retry(pid, "late", clock.now)  # a late failure changes nothing
    assert not outbox.mark_refused(pid, "late", "late")
    entry = outbox.get(pid)
    assert entry is not None
    assert (entry.state, entry.receipt_number, entry.registry_state) == (
        "acknowledged",
        "R-0001",
        "received",
    )
    assert entry.next_attempt_at is None
    assert outbox.pending() == []
    assert outbox.counts().heartbeat() == {"pending": 0, "oldest_pending_s": None, "refused": 0}
    assert outbox.next_due() is None


def test_status_mirror_and_retire(outbox: Outbox, maker: Maker, clock: Clock) -> None:
    built = maker.build()
    pid = built.package_id
    enqueue(outbox, built, "case-1")
    assert not outbox.mark_status(pid, "verified")  # not acknowledged yet: ignored
    outbox.mark_acknowledged(pid, "R-1")
    assert outbox.status_due(clock.now) == [outbox.get(pid)]
    assert outbox.status_due(clock.now - timedelta(seconds=1)) == []
    clock.advance(60)
    assert outbox.mark_status(pid, "verified")
    assert not outbox.mark_status(pid, "verified")  # the same answer again
    assert not outbox.retire(pid)  # not final: the file stays
    assert outbox.path_of(pid).exists()
    reasons = [{"what": "finger", "position": 2, "code": "low-quality", "text": "right index"}]
    assert outbox.mark_status(
        pid,
        "rejected",
        reject_code="recapture-needed",
        reject_text="recapture",
        recapture=reasons,
    )
    entry = outbox.get(pid)
    assert entry is not None
    assert (entry.state, entry.reject_code, entry.recapture) == (
        "rejected",
        "recapture-needed",
        reasons,
    )
    assert outbox.status_due(clock.now + timedelta(days=1)) == []  # final: not asked again
    assert outbox.retire(pid)
    assert not outbox.retire(pid)
    assert not outbox.path_of(pid).exists()
    entry = outbox.get(pid)
    assert entry is not None
    assert entry.retired_at == clock.now
    assert entry.receipt_number == "R-1"
    assert outbox.recover().missing == ()  # a retired row needs no file
    with pytest.raises(OutboxError, match="unknown registry state"):
        outbox.mark_status(pid, "lost")


def test_refused_then_requeued_by_a_technician(outbox: Outbox, maker: Maker) -> None:
    built = maker.build()
    pid = built.package_id
    enqueue(outbox, built, "case-1")
    assert outbox.mark_refused(pid, "signer_not_station", "signed by another station")
    entry = outbox.get(pid)
    assert entry is not None
    assert (entry.state, entry.refused_code) == ("refused", "signer_not_station")
    assert outbox.pending() == []
    assert outbox.counts().refused == 1
    assert outbox.requeue(pid, "certificate renewed")
    entry = outbox.get(pid)
    assert entry is not None
    assert (entry.state, entry.attempts, entry.last_error) == ("queued", 0, "certificate renewed")


def test_exported_packages_stay_pending(outbox: Outbox, maker: Maker) -> None:
    a, b = maker.build(), maker.build()
    enqueue(outbox, a, "case-a")
    enqueue(outbox, b, "case-b")
    outbox.mark_acknowledged(b.package_id, "R-b")
    with outbox.db.write() as conn:
        assert outbox.mark_exported(conn, [a.package_id, b.package_id], "exp-1") == 1
    entry = outbox.get(a.package_id)
    assert entry is not None
    assert (entry.state, entry.export_id) == ("exported", "exp-1")
    assert [e.package_id for e in outbox.pending()] == [a.package_id]
    assert outbox.mark_sending(a.package_id)
    assert outbox.get(a.package_id).state == "exported"  # type: ignore[union-attr]
    assert outbox.counts().pending == 1


def test_bad_use_is_refused_clearly(outbox: Outbox, maker: Maker) -> None:
    built = maker.build()
    with outbox.db.write() as conn, pytest.raises(OutboxError, match="stage"):
        outbox.record(conn, built, "case-1")
    enqueue(outbox, built, "case-1")
    assert outbox.stage(built) == outbox.path_of(built.package_id)  # same bytes: a no-op
    with outbox.db.write() as conn, pytest.raises(OutboxError, match="already"):
        outbox.record(conn, built, "case-1")
    other = dataclasses.replace(maker.build(), package_id=built.package_id)
    with pytest.raises(OutboxError, match="other content"):
        outbox.stage(other)
    with pytest.raises(OutboxError, match="not a package id"):
        outbox.path_of("../../etc/passwd")
    with pytest.raises(OutboxError, match="unknown outbox state"):
        outbox.list("lost")


def test_link_state_round_trip(outbox: Outbox, clock: Clock) -> None:
    assert outbox.link_state() == LinkState(0, None, None)
    outbox.set_link_state(LinkState(3, clock.now + timedelta(seconds=8), "ConnectError"))
    assert outbox.link_state() == LinkState(3, clock.now + timedelta(seconds=8), "ConnectError")


def test_space_guard(outbox: Outbox) -> None:
    disk = outbox.disk()
    assert 0 < disk.free_bytes <= disk.total_bytes
    assert outbox.space_ok(0)
    assert outbox.space_ok(disk.free_bytes // 2)
    assert not outbox.space_ok(disk.total_bytes + 1)


FULL_DISK = """
import pickle
from station.outbox import OUTBOX_SCHEMA, Outbox, OutboxFullError
from station.store.database import StationDatabase
db = StationDatabase(base / "station.db")
db.migrate(OUTBOX_SCHEMA)
outbox = Outbox(db, base / "outbox")
first = pickle.loads((base / "first.pickle").read_bytes())
second = pickle.loads((base / "second.pickle").read_bytes())
assert outbox.space_ok(len(first.data)), outbox.disk()
outbox.add(first, "case-1")
assert not outbox.space_ok(len(second.data)), outbox.disk()
try:
    outbox.stage(second)
except OutboxFullError as exc:
    print("full:", exc)
else:
    raise SystemExit("staged on a full disk")
names = sorted(p.name for p in (base / "outbox").iterdir())
assert names == [first.package_id + ".vnpkg"], names
assert outbox.read(first.package_id) == first.data
assert [e.package_id for e in outbox.pending()] == [first.package_id]
print("ok")
"""


def test_a_full_disk_stops_staging_with_nothing_half_written(tmp_path: Path, maker: Maker) -> None:
    """A real full file system: a 128 KiB tmpfs in a private mount namespace."""
    first, second = maker.build(), maker.build()
    assert len(first.data) + len(second.data) > 128 * 1024 > len(first.data)
    (tmp_path / "first.pickle").write_bytes(pickle.dumps(first))
    (tmp_path / "second.pickle").write_bytes(pickle.dumps(second))
    out = tmpfskit.run_on_tmpfs(FULL_DISK, tmp_path, "outbox", "128k")
    assert "full: no room for package" in out
    assert "disk is full" in out
    assert out.strip().endswith("ok")
