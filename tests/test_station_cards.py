"""Card issuance at the station, with the real card encoder driver through a real pcscd
and vpcd to our card emulator, and a real registry process for the HTTP side.

Most tests take chip data built in-test exactly as the registry builds it
(``central.chipdata.build_chip_data`` under a software CSCA and Document Signer) and a
:class:`Desk` standing in for the registry's two card calls: that is what keeps them fast.
The tests marked ``registry`` run ``python -m central serve`` with its in-process worker,
upload real packages, and go through ``GET /v1/packages/{id}/issuance`` and
``POST /v1/packages/{id}/card`` over signed HTTP.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from central.chipdata import ChipSource, build_chip_data
from central.db.models import SignerCertificate, SignerKind
from enrollment.icao.chip_data import ChipData
from enrollment.icao.pki import SoftwarePki
from enrollment.ids import new_package_id
from enrollment.keys.software import SoftwareKeySigner
from enrollment.request_signing import StationRequestAuth
from station.cards import (
    AlreadyEncoded,
    CardIssuer,
    CardRefused,
    CardSpoiled,
    ChipDataUnusable,
    NotIssued,
    aes_gcm_sealing,
)
from station.drivers.card import profile
from station.drivers.card.emulator import CardEmulator, Faults
from station.drivers.card.errors import CardEncoderError
from station.issuance_client import (
    Issuance,
    IssuanceClient,
    RegistryRefused,
    RegistryUnavailable,
)
from station.store.database import StationDatabase
from tests import cardkit, pkgkit, processkit, registrykit
from tests.cardkit import CardBay
from tests.registrykit import ADMIN

pytestmark = pytest.mark.timeout(300)

pcscd = cardkit.pcscd
card_bay = cardkit.card_bay

STATION = "HN-BD-001"
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------- chip data, as central does


@functools.cache
def issuing_pki() -> SoftwarePki:
    return SoftwarePki.generate(now=datetime.now(UTC) - timedelta(days=1))


def chip_for(person: int, pki: SoftwarePki | None = None) -> ChipData:
    """The chip of ``person`` (pkgkit's example record), built by the registry's own code."""
    pki = pki or issuing_pki()
    record, tx = pkgkit.example(person)
    source = ChipSource(
        record,
        tx.faces[0].data,
        {f.position: f.data for f in tx.fingerprints if f.position in (2, 7)},
    )
    now = datetime.now(UTC)
    row = SignerCertificate(
        id=1,
        kind=SignerKind.ds,
        certificate_pem=pki.ds.public_bytes(serialization.Encoding.PEM).decode(),
        key_ref="test-ds",
        not_before=now,
        not_after=now,
        signs_until=now,
        created_at=now,
    )
    number = f"001090{person:06d}"
    return build_chip_data(source, number, date.today(), row, SoftwareKeySigner(pki.ds_key, pki.ds))


@dataclass
class Desk:
    """The registry's two card calls over a dict (the semantics of ``/issuance`` and
    ``/card``, idempotent report included), able to go away."""

    issued: dict[str, ChipData] = field(default_factory=dict)
    cards: dict[str, str] = field(default_factory=dict)
    down: bool = False
    calls: list[str] = field(default_factory=list)

    def fetch(self, package_id: str) -> Issuance | None:
        self.calls.append(f"fetch {package_id}")
        if self.down:
            raise RegistryUnavailable("the registry cannot be reached: connection refused")
        chip = self.issued.get(package_id)
        if chip is None:
            return None
        if package_id in self.cards:
            chip = chip.without_secrets()
        return Issuance(
            package_id, chip.personal_number, chip.document_number, datetime.now(UTC), chip
        )

    def report(self, package_id: str, serial: str) -> str:
        self.calls.append(f"report {package_id} {serial}")
        if self.down:
            raise RegistryUnavailable("the registry cannot be reached: connection refused")
        if self.cards.setdefault(package_id, serial) != serial:
            raise RegistryRefused(409, "card_already_recorded", "another card is recorded")
        return "card_encoded"


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 3, 1, 8, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def printed(chip: ChipData) -> str:
    """The MRZ as an MRZ reader reads it off the card body: three lines."""
    return "\n".join(chip.mrz[i : i + 30] for i in (0, 30, 60))


@dataclass
class Station:
    db: StationDatabase
    key: bytes
    desk: Desk
    clock: Clock
    path: Path

    def issuer(
        self,
        encoder: Any,
        *,
        anchors: list[x509.Certificate] | None = None,
        fetch: Any = None,
        report: Any = None,
    ) -> CardIssuer:
        seal, unseal = aes_gcm_sealing(self.key)
        anchors = anchors or [issuing_pki().csca]
        return CardIssuer(
            self.db,
            encoder,
            fetch or self.desk.fetch,
            report or self.desk.report,
            lambda: anchors,
            seal=seal,
            unseal=unseal,
            clock=self.clock,
        )


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Station]:
    path = tmp_path / "station.db"
    db = StationDatabase(path)
    try:
        yield Station(db, os.urandom(32), Desk(), Clock(), path)
    finally:
        db.close()


def card_state(card: CardEmulator) -> dict[str, Any]:
    return dict(json.loads(card.state_path.read_text())["state"])


def issued_job(station: Station, encoder: Any, package_id: str, person: int) -> CardIssuer:
    station.desk.issued[package_id] = chip_for(person)
    issuer = station.issuer(encoder)
    issuer.on_issued(package_id)
    assert issuer.sync_once()["fetched"] == 1
    return issuer


# ------------------------------------------------------------------ the chip data codec


def test_the_chip_data_codec_is_shared_and_stable() -> None:
    import central.chipdata

    assert central.chipdata.ChipData is ChipData  # every old import keeps working
    chip = chip_for(1)
    data = chip.to_bytes()
    again = ChipData.from_bytes(data)
    assert again == chip
    assert again.to_bytes() == data  # deterministic: one chip, one byte string
    secrets = chip.secrets()
    assert secrets.active_auth_key is not None
    assert secrets.chip_auth_key is not None
    assert chip.without_secrets().secrets().active_auth_key is None
    view = chip.to_json()
    assert view["files"]["DG1"]["fid"] == "0101"
    assert base64.b64decode(view["active_auth_key"]) == chip.active_auth_key


# ------------------------------------------------------------------------ the chip serial


def test_the_chip_serial_is_fixed_per_chip_and_readable_after_lock(card_bay: CardBay) -> None:
    first = card_bay.card("first")
    first.insert()
    encoder = card_bay.encoder()
    encoder.wait_for_card(5)
    serial = encoder.chip_serial()
    assert serial.startswith("564E-454D-")  # the emulator's IC fabricator and type
    assert len(serial) == 4 + 1 + 4 + 1 + 4 + 1 + 8
    first.remove()
    encoder.wait_for_removal(5)
    first.insert()  # the same chip again: the same serial (saved at first insertion)
    encoder.wait_for_card(5)
    assert encoder.chip_serial() == serial
    chip = chip_for(2)
    encoder.personalise(chip, chip.secrets())
    assert encoder.chip_serial() == serial  # locked: still tells its serial
    first.remove()
    encoder.wait_for_removal(5)
    other = card_bay.card("other")
    other.insert()
    encoder.wait_for_card(5)
    assert encoder.chip_serial() != serial


# --------------------------------------------------------------- station, fast registry


def test_encode_verify_report_and_the_secrets_are_gone(card_bay: CardBay, station: Station) -> None:
    encoder = card_bay.encoder()
    issuer = issued_job(station, encoder, "pkg-1", 1)
    chip = station.desk.issued["pkg-1"]
    job = issuer.job("pkg-1")
    assert (job.state, job.personal_number, job.has_chip_data) == (
        "fetched",
        chip.personal_number,
        True,
    )
    with sqlite3.connect(station.path) as raw:  # sealed at rest: no MRZ or key in clear
        sealed = raw.execute("SELECT chip_sealed FROM card_job").fetchone()[0]
    assert chip.mrz.encode() not in sealed
    assert chip.active_auth_key is not None
    assert chip.active_auth_key not in sealed
    card = card_bay.card()
    card.insert()
    done = issuer.encode("pkg-1", printed(chip))
    assert done.reported
    assert done.registry_state == "card_encoded"
    assert done.active_authentication is True
    assert set(done.verified_groups) == {1, 2, 13, 14, 15}
    assert done.not_readable == (3,)
    assert done.access == "pace"
    assert station.desk.cards == {"pkg-1": done.card_serial}
    job = issuer.job("pkg-1")
    assert (job.state, job.card_serial, job.has_chip_data) == ("reported", done.card_serial, False)
    assert job.cards_tried == 1
    assert job.cards_spoiled == 0
    record = issuer.chip(done.card_serial)
    assert record is not None
    assert record.outcome == "encoded"
    state = card_state(card)
    assert state["lifecycle"] == profile.LC_OPERATIONAL
    assert [e.event for e in issuer.history("pkg-1")] == [
        "enqueued",
        "fetched",
        "encoding",
        "encoded",
        "reported",
    ]
    with pytest.raises(AlreadyEncoded, match=done.card_serial):
        issuer.encode("pkg-1")
    assert issuer.counts()["reported"] == 1


def test_a_card_pulled_mid_write_is_spoiled_never_reused_and_a_new_card_works(
    card_bay: CardBay, station: Station
) -> None:
    encoder = card_bay.encoder()
    issuer = issued_job(station, encoder, "pkg-1", 1)
    issued_job(station, encoder, "pkg-2", 2)
    pulled = card_bay.card("pulled", faults=Faults(pull_after_writes=8))
    pulled.insert()
    with pytest.raises(CardSpoiled) as spoiled:
        issuer.encode("pkg-1")
    assert spoiled.value.code == "card_removed"
    assert "must not be used again" in str(spoiled.value)
    serial = spoiled.value.serial
    record = issuer.chip(serial)
    assert record is not None
    assert (record.outcome, record.code) == ("spoiled", "card_removed")
    job = issuer.job("pkg-1")
    assert (job.state, job.card_serial, job.cards_spoiled) == ("fetched", None, 1)
    assert job.has_chip_data  # another blank card needs the data again
    half = card_state(pulled)
    assert half["lifecycle"] == profile.LC_INITIALISATION
    assert len(half["files"]) > 0
    encoder.wait_for_removal(5)

    # The same card again (no fault now), for this person and for another: refused as it is.
    again = card_bay.card("pulled")
    again.insert()
    for package_id in ("pkg-1", "pkg-2"):
        with pytest.raises(CardRefused) as refused:
            issuer.encode(package_id)
        assert refused.value.code == "card_spoiled_before"
        assert refused.value.serial == serial
        assert "never be used" in str(refused.value)
    assert card_state(again) == half  # not one byte written
    again.remove()
    encoder.wait_for_removal(5)

    fresh = card_bay.card("fresh")
    fresh.insert()
    done = issuer.encode("pkg-1")
    assert done.card_serial != serial
    assert done.reported
    assert issuer.job("pkg-1").cards_tried == 2
    assert [c.serial for c in issuer.chips("spoiled")] == [serial]
    events = [(e.event, e.code) for e in issuer.history("pkg-1")]
    assert events == [
        ("enqueued", None),
        ("fetched", None),
        ("encoding", None),
        ("spoiled", "card_removed"),
        ("card_refused", "card_spoiled_before"),
        ("encoding", None),
        ("encoded", None),
        ("reported", None),
    ]


def test_the_printed_mrz_must_be_this_persons(card_bay: CardBay, station: Station) -> None:
    encoder = card_bay.encoder()
    issuer = issued_job(station, encoder, "pkg-1", 1)
    chip = station.desk.issued["pkg-1"]
    someone_else = chip_for(2)
    card = card_bay.card()
    card.insert()
    with pytest.raises(CardRefused) as wrong:
        issuer.encode("pkg-1", printed(someone_else))
    assert wrong.value.code == "printed_mrz_mismatch"
    message = str(wrong.value)
    assert "not printed for this person" in message
    assert "document number" in message
    assert "name" in message
    assert someone_else.mrz[60:].rstrip("<") not in message  # no personal data in the text
    garbled = printed(chip).replace(chip.mrz[5], "X" if chip.mrz[5] != "X" else "Y", 1)
    with pytest.raises(CardRefused) as unreadable:
        issuer.encode("pkg-1", garbled)
    assert unreadable.value.code == "printed_mrz_unreadable"
    assert "check digit" in str(unreadable.value)
    assert card_state(card)["files"] == {}  # refused untouched: still a blank card
    assert issuer.chip(wrong.value.serial or "") is None
    done = issuer.encode("pkg-1", printed(chip))
    assert done.card_serial == wrong.value.serial  # the right body, the same blank chip
    codes = [e.code for e in issuer.history("pkg-1") if e.event == "card_refused"]
    assert codes == ["printed_mrz_mismatch", "printed_mrz_unreadable"]


def test_a_card_of_the_wrong_type_is_refused_untouched(card_bay: CardBay, station: Station) -> None:
    encoder = card_bay.encoder()
    issuer = issued_job(station, encoder, "pkg-1", 1)
    card_bay.card(card_type="wrong").insert()
    with pytest.raises(CardRefused) as refused:
        issuer.encode("pkg-1")
    assert refused.value.code == "wrong_card_type"
    assert refused.value.serial is None
    assert "blank national ID card" in str(refused.value)
    assert issuer.chips() == []
    assert issuer.job("pkg-1").state == "fetched"


def test_registry_down_at_report_time_is_retried_later(card_bay: CardBay, station: Station) -> None:
    encoder = card_bay.encoder()
    issuer = issued_job(station, encoder, "pkg-1", 1)
    station.desk.down = True
    card_bay.card().insert()
    done = issuer.encode("pkg-1")
    assert not done.reported
    job = issuer.job("pkg-1")
    assert (job.state, job.sync_attempts) == ("encoded", 1)
    assert not job.has_chip_data  # the keys went with the card, whatever the registry does
    assert "cannot be reached" in (job.last_error or "")
    assert job.next_sync_at is not None
    assert job.next_sync_at >= station.clock()
    station.clock.advance(issuer.settings.retry_base_s * 2 + 1)
    assert issuer.sync_once()["postponed"] == 1  # still down: the next wait is longer
    assert issuer.job("pkg-1").sync_attempts == 2
    station.desk.down = False
    assert issuer.sync_once() == {"fetched": 0, "reported": 0, "postponed": 0, "refused": 0}
    station.clock.advance(issuer.settings.retry_cap_s + 1)
    assert issuer.sync_once()["reported"] == 1
    job = issuer.job("pkg-1")
    assert (job.state, job.registry_state, job.last_error) == ("reported", "card_encoded", None)
    assert station.desk.cards == {"pkg-1": done.card_serial}


def test_a_report_the_registry_refuses_needs_a_person(card_bay: CardBay, station: Station) -> None:
    encoder = card_bay.encoder()
    issuer = issued_job(station, encoder, "pkg-1", 1)
    station.desk.cards["pkg-1"] = "SOME-OTHER-CARD"
    card_bay.card().insert()
    done = issuer.encode("pkg-1")
    assert not done.reported
    job = issuer.job("pkg-1")
    assert job.state == "refused"
    assert "card_already_recorded" in (job.last_error or "")
    assert issuer.history("pkg-1")[-1].event == "report_refused"
    assert issuer.sync_once()["reported"] == 0  # not retried blindly
    assert [c for c in station.desk.calls if c.startswith("report")] == [
        f"report pkg-1 {done.card_serial}"
    ]


def test_a_power_cut_mid_write_spoils_that_card_at_restart(
    card_bay: CardBay, station: Station, tmp_path: Path
) -> None:
    """The station process is SIGKILLed while the chip is being written: at restart the
    card (still on the encoder) is recorded as spoiled (interrupted) and refused, and a new
    card is written."""
    encoder = card_bay.encoder()
    issued_job(station, encoder, "pkg-1", 1)
    csca = tmp_path / "csca.pem"
    csca.write_bytes(issuing_pki().csca.public_bytes(serialization.Encoding.PEM))
    card = card_bay.card("cut")
    card.insert()
    child = subprocess.Popen(
        [
            *(sys.executable, "-c", _CHILD),
            *(str(station.path), station.key.hex(), card_bay.reader, str(csca), "pkg-1"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while card.apdus < 30:  # CPLC, SELECT, then writes: cut in the middle of them
            assert child.poll() is None, (child.stdout.read() if child.stdout else b"").decode()
            assert time.monotonic() < deadline, "the child never started writing"
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
        child.wait(10)
    if child.stdout is not None:
        child.stdout.close()
    with sqlite3.connect(station.path) as raw:
        state, serial = raw.execute("SELECT state, card_serial FROM card_job").fetchone()
    assert state == "encoding"
    assert card_state(card)["lifecycle"] == profile.LC_INITIALISATION
    # pcscd releases the dead process's exclusive connection in its own time: the card
    # is ours again once it answers us.
    deadline = time.monotonic() + 20
    while True:
        try:
            assert encoder.chip_serial() == serial  # the same card, still on the encoder
            break
        except CardEncoderError:
            assert time.monotonic() < deadline, "pcscd kept the killed process's connection"
            time.sleep(0.1)

    issuer = station.issuer(encoder)  # the restart: recover() runs
    record = issuer.chip(serial)
    assert record is not None
    assert (record.outcome, record.code) == ("spoiled", "interrupted")
    assert issuer.job("pkg-1").state == "fetched"
    assert issuer.recover() == []  # once
    with pytest.raises(CardRefused, match="spoiled"):
        issuer.encode("pkg-1")
    card_bay.close()
    card_bay.card("new").insert()
    assert issuer.encode("pkg-1").reported


_CHILD = """
import sys
from pathlib import Path
from cryptography import x509
from station.cards import CardIssuer, aes_gcm_sealing
from station.drivers.card.encoder import CardEncoder, EncoderSettings
from station.issuance_client import RegistryUnavailable
from station.store.database import StationDatabase

db_path, key, reader, csca_path, package_id = sys.argv[1:]
csca = x509.load_pem_x509_certificates(Path(csca_path).read_bytes())


def away(*args):
    raise RegistryUnavailable("not in this test")


seal, unseal = aes_gcm_sealing(bytes.fromhex(key))
encoder = CardEncoder(EncoderSettings(reader_pattern=f"^{reader}$", card_timeout_s=10))
issuer = CardIssuer(
    StationDatabase(Path(db_path)), encoder, away, away, lambda: csca, seal=seal, unseal=unseal
)
issuer.encode(package_id)
print("finished before the kill", flush=True)
"""


def test_chip_data_that_does_not_verify_touches_no_card(station: Station) -> None:
    """Signed under a CSCA the station does not trust: refused before any card is asked
    for (the encoder is never used)."""
    station.desk.issued["pkg-1"] = chip_for(1, SoftwarePki.generate())
    issuer = station.issuer(encoder=None)
    issuer.on_issued("pkg-1")
    issuer.sync_once()
    with pytest.raises(ChipDataUnusable, match="No card was touched"):
        issuer.encode("pkg-1")
    assert issuer.history("pkg-1")[-1].code == "untrusted"
    assert issuer.job("pkg-1").state == "fetched"


def test_sealed_chip_data_that_does_not_open_is_fetched_again(station: Station) -> None:
    issuer = issued_job(station, None, "pkg-1", 1)
    issuer.on_issued("pkg-2")
    with station.db.write() as c:  # another row's sealed data moved here
        c.execute(
            "UPDATE card_job SET state = 'fetched', chip_sealed = "
            "(SELECT chip_sealed FROM card_job WHERE package_id = 'pkg-1') "
            "WHERE package_id = 'pkg-2'"
        )
    station.desk.issued["pkg-2"] = chip_for(2)
    with pytest.raises(ChipDataUnusable, match="fetched again"):
        issuer.encode("pkg-2")
    assert issuer.job("pkg-2").state == "waiting"
    assert issuer.fetch("pkg-2").state == "fetched"  # the registry still holds it


def test_not_issued_yet_and_the_registry_away(station: Station) -> None:
    issuer = station.issuer(encoder=None)
    assert issuer.on_issued("pkg-1")
    assert not issuer.on_issued("pkg-1")  # once
    with pytest.raises(NotIssued, match="no chip data"):
        issuer.encode("pkg-1")
    station.desk.down = True
    with pytest.raises(NotIssued, match="cannot be reached"):
        issuer.encode("pkg-1")
    job = issuer.job("pkg-1")
    assert (job.state, job.sync_attempts) == ("waiting", 2)
    assert issuer.sync_once()["fetched"] == 0  # not due yet


def test_on_issued_joins_the_callers_transaction(station: Station) -> None:
    issuer = station.issuer(encoder=None)

    def failing_change() -> None:
        with station.db.write() as c:
            issuer.on_issued("pkg-1", c)
            raise RuntimeError("the outbox's own change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    assert issuer.jobs() == []
    with station.db.write() as c:
        issuer.on_issued("pkg-1", c)
    assert [j.state for j in issuer.jobs()] == ["waiting"]
    with pytest.raises(sqlite3.DatabaseError, match="append-only"), station.db.write() as c:
        c.execute("DELETE FROM card_event")


def test_the_background_thread_fetches_and_stops(station: Station) -> None:
    station.desk.issued["pkg-1"] = chip_for(1)
    issuer = station.issuer(encoder=None)
    issuer.settings = issuer.settings.model_copy(update={"sync_interval_s": 0.05})
    issuer.start()
    try:
        issuer.on_issued("pkg-1")
        deadline = time.monotonic() + 10
        while issuer.job("pkg-1").state != "fetched":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        issuer.stop()
    assert station.desk.calls == ["fetch pkg-1"]


# ------------------------------------------------------------------- the real registry


@dataclass
class Registry:
    url: str
    server: processkit.RegistryProcess
    signer: SoftwareKeySigner
    csca: list[x509.Certificate]
    packages: list[str]

    def client(self) -> IssuanceClient:
        return IssuanceClient(self.url, StationRequestAuth(self.signer, STATION))

    def state(self, package_id: str) -> str:
        r = httpx.get(
            f"{self.url}/v1/packages/{package_id}",
            auth=StationRequestAuth(self.signer, STATION),
            timeout=30,
        )
        r.raise_for_status()
        return str(r.json()["state"])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("registry")
    env = processkit.registry_env(
        tmp,
        f"sqlite:///{tmp / 'registry.db'}",
        ADMIN,
        {
            "REGISTRY_WORKER__IN_PROCESS": "true",
            "REGISTRY_WORKER__IDLE_POLL_SECONDS": "0.1",
            "REGISTRY_QUALITY__FINGER_SCORER": "station-model",
            "REGISTRY_ABIS__FACE_WEIGHT": "0.5",
        },
    )
    port = processkit.free_port()
    url = f"http://127.0.0.1:{port}"
    with processkit.ProcessSet() as procs:
        server = procs.add(
            processkit.RegistryProcess("serve", ["serve", "--port", str(port)], env, tmp / "log")
        )
        server.start()
        server.wait_http(f"{url}/readyz")
        with httpx.Client(base_url=url, timeout=60) as http:
            admin = registrykit.login(http, *ADMIN)
            signer, _ = registrykit.onboard(http, admin, STATION)
            auth = StationRequestAuth(signer, STATION)
            trust = http.get("/v1/station/trust", auth=auth).json()
            recipient = serialization.load_pem_public_key(trust["package_public_key"].encode())
            assert isinstance(recipient, ec.EllipticCurvePublicKey)
            csca = x509.load_pem_x509_certificates(trust["csca_master_list"].encode())
            packages = []
            for person in (6, 10):  # faces from different real photos: no adjudication
                built = registrykit.package(
                    person, 0, signer=signer, station_id=STATION, recipient=recipient
                )
                r = http.put(f"/v1/packages/{built.package_id}", content=built.data, auth=auth)
                assert r.status_code == 201, r.text
                packages.append(built.package_id)
        found = Registry(url, server, signer, csca, packages)
        deadline = time.monotonic() + 240
        for package_id in packages:
            while (state := found.state(package_id)) != "issued":
                assert state not in ("rejected", "adjudication"), state
                assert time.monotonic() < deadline, f"{package_id} stayed {state}"
                time.sleep(0.2)
        yield found
    left = processkit.leftovers(procs.pids())
    assert not left, f"processes left behind: {left}"


def test_against_the_registry_encode_verify_report(
    card_bay: CardBay, station: Station, registry: Registry
) -> None:
    package_id = registry.packages[0]
    client = registry.client()
    try:
        assert client.fetch_issuance(package_id) is not None
        issuer = station.issuer(
            card_bay.encoder(),
            anchors=registry.csca,
            fetch=client.fetch_issuance,
            report=client.report_card,
        )
        issuer.on_issued(package_id)
        assert issuer.sync_once()["fetched"] == 1
        card_bay.card().insert()
        done = issuer.encode(package_id)
        assert done.reported
        assert done.registry_state == "card_encoded"
        assert registry.state(package_id) == "card_encoded"
        # The registry dropped the chip's keys: a station that lost its copy cannot fetch
        # them again (a replacement card needs a new enrollment).
        issuance = client.fetch_issuance(package_id)
        assert issuance is not None
        assert issuance.chip.active_auth_key is None
        assert ChipData.from_bytes(issuance.chip.to_bytes()) == issuance.chip
        assert client.report_card(package_id, done.card_serial) == "card_encoded"  # idempotent
        with pytest.raises(RegistryRefused) as other:
            client.report_card(package_id, "0000-0000-0000-00000000")
        assert other.value.code == "card_already_recorded"
        with pytest.raises(RegistryRefused) as unknown:
            client.fetch_issuance(new_package_id())  # not this station's (nobody's)
        assert unknown.value.status == 404
    finally:
        client.close()
    lost = StationDatabase(station.path.with_name("lost.db"))
    client = registry.client()
    try:
        replay = Station(lost, station.key, station.desk, station.clock, station.path)
        again = replay.issuer(None, anchors=registry.csca, fetch=client.fetch_issuance)
        again.on_issued(package_id)
        again.sync_once()
        assert again.job(package_id).state == "refused"
        assert "chip_keys_gone" in (again.job(package_id).last_error or "")
    finally:
        client.close()
        lost.close()


def test_against_the_registry_down_at_report_time(
    card_bay: CardBay, station: Station, registry: Registry
) -> None:
    package_id = registry.packages[1]
    client = registry.client()
    try:
        issuer = station.issuer(
            card_bay.encoder(),
            anchors=registry.csca,
            fetch=client.fetch_issuance,
            report=client.report_card,
        )
        issuer.on_issued(package_id)
        issuer.sync_once()
        registry.server.kill()
        try:
            card_bay.card().insert()
            done = issuer.encode(package_id)
            assert not done.reported
            job = issuer.job(package_id)
            assert job.state == "encoded"
            assert "cannot be reached" in (job.last_error or "")
        finally:
            registry.server.start()
            registry.server.wait_http(f"{registry.url}/readyz")
        assert registry.state(package_id) == "issued"
        issuer.settings = issuer.settings.model_copy(update={"sync_interval_s": 0.05})
        station.clock.advance(issuer.settings.retry_cap_s + 1)
        issuer.start()
        try:
            issuer.notify()
            deadline = time.monotonic() + 30
            while issuer.job(package_id).state != "reported":
                assert time.monotonic() < deadline, issuer.job(package_id)
                time.sleep(0.05)
        finally:
            issuer.stop()
        assert registry.state(package_id) == "card_encoded"
    finally:
        client.close()


def test_an_unreachable_registry_is_unavailable_not_refused() -> None:
    client = IssuanceClient(f"http://127.0.0.1:{processkit.free_port()}", httpx.Auth())
    try:
        with pytest.raises(RegistryUnavailable, match="cannot be reached"):
            client.fetch_issuance("pkg-1")
        with pytest.raises(RegistryUnavailable):
            client.report_card("pkg-1", "X")
    finally:
        client.close()
