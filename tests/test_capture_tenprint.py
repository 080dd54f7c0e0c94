"""The ten-print capture against the scanner simulator process (a real pty, the real
driver, unpaced): a full run resumed from its serialised state halfway, the record's
parts, a low-quality finger kept after three attempts, the same finger twice, an
exception a supervisor approves, swapped hands, and the scanner's faults as outcomes.

The simulator's person (seed 3, person 0) was chosen for the hand checks: its right hand
reads right loop, right loop, arch, right loop, right loop and its left hand whorl, left
loop, left loop, whorl, left loop (log ratios -11 and -7.9: far from a warning); its left
fingers rolled in the right hand's boxes give +7.9 (a warning at ln 20 = 3.0). Its rolls
score 40-47 with the station's quality model, dry ones alike.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest

from biometrics.fingerprint.iso19794 import decode_minutiae
from biometrics.fingerprint.quality import StationQuality
from enrollment import ansi_nist
from enrollment.images import decode_wsq
from station.capture.tenprint import (
    AttemptOutcome,
    FingerResult,
    TenPrintCapture,
    TenPrintSettings,
)
from station.drivers.fingerprint.scanner import FingerprintScanner
from station.drivers.fingerprint.sim_control import SimulatorProcess

SEED = 3
PERSON = 0
SETTINGS = TenPrintSettings(min_quality=35)  # every roll of this person scores 40 or more

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    link = tmp_path_factory.mktemp("tenprint") / "ttyFP0"
    with SimulatorProcess(link, seed=SEED, person=PERSON, pace=False) as process:
        yield process


@pytest.fixture(scope="module")
def scanner(sim: SimulatorProcess) -> Iterator[FingerprintScanner]:
    with FingerprintScanner(str(sim.link), timeout=2.0) as s:
        s.set_stream_packet_size(4096)
        yield s


@pytest.fixture(scope="module")
def quality() -> StationQuality:
    return StationQuality()


@pytest.fixture(autouse=True)
def fresh_script(sim: SimulatorProcess) -> None:
    sim.control.reset()


@dataclass
class Run:
    capture: TenPrintCapture
    outcomes: list[AttemptOutcome]
    stored: dict[int, dict[str, object]]
    """What the workflow persisted, finger by finger, as JSON."""


@pytest.fixture(scope="module")
def ten(sim: SimulatorProcess, scanner: FingerprintScanner, quality: StationQuality) -> Run:
    """The ten fingers in order; after the fifth the session is rebuilt from the stored
    fingers alone, as after a power cut, and the second hand goes on with the new one."""
    sim.control.reset()
    capture = TenPrintCapture(scanner, quality, SETTINGS)
    outcomes: list[AttemptOutcome] = []
    stored: dict[int, dict[str, object]] = {}
    for position in range(1, 11):
        if position == 6:
            rebuilt = [FingerResult.from_dict(json.loads(json.dumps(v))) for v in stored.values()]
            capture = TenPrintCapture(scanner, quality, SETTINGS, results=rebuilt)
        assert capture.next_position() == position
        sim.control.present(finger=position)
        outcome = capture.attempt(position, timeout=5)
        outcomes.append(outcome)
        if outcome.done:
            assert outcome.result is not None
            stored[position] = outcome.result.to_dict()
    return Run(capture, outcomes, stored)


def test_full_ten_print_run_resumes_from_its_stored_fingers(ten: Run) -> None:
    assert [o.code for o in ten.outcomes] == ["accepted"] * 10, [o.detail for o in ten.outcomes]
    assert [o.position for o in ten.outcomes] == list(range(1, 11))
    capture = ten.capture
    assert capture.complete()
    assert capture.remaining() == []
    assert capture.next_position() is None
    assert capture.pending_approvals() == []
    for outcome in ten.outcomes:
        result = outcome.result
        assert result is not None
        assert result.status == "captured"
        assert result.attempts == 1
        assert result.scores == (outcome.quality,)
        assert result.quality is not None
        assert result.quality >= SETTINGS.min_quality
        assert not result.low_quality
        assert not result.needs_approval
        assert result.pattern is not None
        assert outcome.message("en") == f"{result.name.capitalize()} captured."
    # The whole session round-trips too, and the rebuilt one equals the one that ran.
    again = TenPrintCapture.from_dict(
        json.loads(json.dumps(capture.to_dict())), capture.scanner, capture.quality, SETTINGS
    )
    assert again.results() == capture.results()
    assert [r.to_dict() for r in capture.results()] == [ten.stored[p] for p in range(1, 11)]


def test_samples_give_the_records_parts(ten: Run) -> None:
    prints = []
    for idc, result in enumerate(ten.capture.samples(), start=1):
        sample = result.biometric_sample(idc)
        assert (sample.modality, sample.position, sample.idc) == ("finger", result.position, idc)
        assert sample.quality is not None
        assert sample.quality.score == result.quality
        assert sample.exception is None
        assert sample.attempts == 1
        image = result.fingerprint_image(idc, date(2026, 12, 1), "HN-BD-001")
        assert image is not None
        assert image.impression == 1
        assert image.position == result.position
        pixels = decode_wsq(image.data)
        assert pixels.shape == (result.height, result.width)
        assert 600 <= result.width <= 800
        assert 600 <= result.height <= 750
        assert result.template is not None
        minutiae = decode_minutiae(result.template)
        assert len(minutiae) >= 40
        prints.append(image)
    # The ten Type-14 records build into a transaction (the parts are consistent).
    header = ansi_nist.TransactionHeader(
        tot="ENR",
        dat=date(2026, 12, 1),
        dai="VN-EID-REGISTRY",
        ori="HN-BD-001",
        tcn="test",
        gmt=datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
    )
    tx = ansi_nist.EnrollmentTransaction(
        header=header, type2={3: "test"}, fingerprints=prints, faces=[], other_records=[]
    )
    assert len(ansi_nist.build_transaction(tx)) > 10 * 10_000


def test_correct_hands_raise_no_warning(ten: Run) -> None:
    assert ten.capture.hand_check() == []


def test_the_same_finger_twice_is_refused_and_not_counted(
    ten: Run, sim: SimulatorProcess, scanner: FingerprintScanner, quality: StationQuality
) -> None:
    capture = TenPrintCapture(scanner, quality, SETTINGS, results=ten.capture.results())
    capture.reset(3)
    assert capture.remaining() == [3]
    sim.control.present(finger=2)  # the right index again, in the middle finger's box
    refused = capture.attempt(3, timeout=5)
    assert refused.code == "same_finger"
    assert refused.same_as == 2
    assert refused.similarity is not None
    assert refused.similarity >= SETTINGS.same_finger_threshold
    assert refused.result is None
    assert capture.result(3) is None
    assert refused.message("en") == (
        "This is the same finger as the right index: roll the right middle."
    )
    assert "ngón trỏ tay phải" in refused.message("vi")
    sim.control.present(finger=3)
    right = capture.attempt(3, timeout=5)
    assert right.code == "accepted"
    assert right.result is not None
    assert right.result.attempts == 1
    assert capture.complete()


def test_a_low_quality_finger_gets_three_attempts_and_keeps_the_best(
    sim: SimulatorProcess, scanner: FingerprintScanner, quality: StationQuality
) -> None:
    # No roll of this person reaches 60: each attempt is scored and the best kept.
    capture = TenPrintCapture(scanner, quality, TenPrintSettings(min_quality=60))
    outcomes = []
    for fault in ("dry", "none", "smeared", "dry"):
        sim.control.present(finger=1, fault=fault)  # (each goes to the head of the queue)
        outcomes.append(capture.attempt(1, timeout=5))
    assert [o.code for o in outcomes] == ["low_quality", "low_quality", "smeared", "kept_best"]
    scores = tuple(o.quality for o in outcomes if o.quality is not None)
    assert len(scores) == 3
    assert len(set(scores)) > 1
    kept = capture.result(1)
    assert kept is not None
    assert kept.status == "captured"
    assert kept.done
    assert kept.attempts == 3
    assert kept.scores == scores
    assert kept.quality == max(scores)
    assert kept.failed_rolls == 1  # the smeared roll: shown, not counted
    assert kept.low_quality
    assert kept.needs_approval
    smeared = outcomes[2].result
    assert smeared is not None
    assert outcomes[1].result is not None
    assert (smeared.failed_rolls, smeared.attempts) == (1, 2)
    assert "slipped" in outcomes[2].message("en")
    assert capture.pending_approvals() == [1]
    with pytest.raises(ValueError, match="already captured"):
        capture.attempt(1)
    approved = capture.approve(1, "GS-0007")
    assert (approved.needs_approval, approved.approved_by) == (False, "GS-0007")
    assert capture.pending_approvals() == []


def test_an_exception_needs_a_supervisors_approval(
    ten: Run, scanner: FingerprintScanner, quality: StationQuality
) -> None:
    capture = TenPrintCapture(scanner, quality, SETTINGS, results=ten.capture.results())
    with pytest.raises(ValueError, match="amputated"):
        capture.mark_exception(5, "missing", "no such code")
    with pytest.raises(ValueError, match="nothing to approve"):
        capture.approve(4, "GS-0007")
    result = capture.mark_exception(5, "amputated", "lost in 2019")
    assert (result.status, result.wsq, result.template) == ("exception", None, None)
    assert result.needs_approval
    assert not capture.complete()
    with pytest.raises(ValueError, match="awaiting approval"):
        capture.samples()
    capture.approve(5, "GS-0007")
    assert capture.complete()
    fifth = capture.samples()[4]
    sample = fifth.biometric_sample(None)
    assert sample.idc is None
    assert sample.exception is not None
    assert (sample.exception.code, sample.exception.reason, sample.exception.approved_by) == (
        "amputated",
        "lost in 2019",
        "GS-0007",
    )
    assert fifth.fingerprint_image(1, date(2026, 12, 1), "HN-BD-001") is None
    assert FingerResult.from_dict(json.loads(json.dumps(fifth.to_dict()))) == fifth


def test_swapped_hands_are_reported(
    sim: SimulatorProcess, scanner: FingerprintScanner, quality: StationQuality
) -> None:
    """The left hand's fingers rolled in the right hand's boxes: once the right hand is
    done, its check speaks (the left hand, not begun, says nothing)."""
    capture = TenPrintCapture(scanner, quality, SETTINGS)
    for position in range(1, 6):
        assert capture.hand_check() == []  # nothing to say until the hand is done
        sim.control.present(finger=position + 5)
        assert capture.attempt(position, timeout=5).code == "accepted"
    warnings = capture.hand_check()
    assert [w.hand for w in warnings] == ["right"]
    assert warnings[0].log_ratio > SETTINGS.swap_log_ratio
    assert warnings[0].fingers >= 3
    assert "look like a left hand" in warnings[0].message("en")
    assert "tay trái" in warnings[0].message("vi")


def test_scanner_faults_come_back_as_outcomes(
    sim: SimulatorProcess, scanner: FingerprintScanner, quality: StationQuality
) -> None:
    capture = TenPrintCapture(scanner, quality, SETTINGS)
    sim.control.present(finger=4, fault="no_finger", ms=900)
    nobody = capture.attempt(4, timeout=0.5)
    assert (nobody.code, nobody.result, nobody.quality) == ("no_finger", None, None)
    assert nobody.message("en") == "No finger detected: place the right ring on the glass."
    sim.control.present(finger=4, fault="too_fast")
    assert capture.attempt(4, timeout=5).code == "too_fast"
    # Cancel from another thread while the finger is rolling.
    sim.control.present(finger=4)
    timer = threading.Timer(0.4, capture.cancel)
    started = time.monotonic()
    timer.start()
    try:
        cancelled = capture.attempt(4, timeout=5)
    finally:
        timer.cancel()
    assert cancelled.code == "cancelled"
    assert time.monotonic() - started < 2.0
    assert capture.result(4) is None
    # The scanner is usable again at once.
    sim.control.reset()
    sim.control.present(finger=4)
    assert capture.attempt(4, timeout=5).code == "accepted"


def test_bad_input_is_refused(scanner: FingerprintScanner, quality: StationQuality) -> None:
    capture = TenPrintCapture(scanner, quality, SETTINGS)
    with pytest.raises(ValueError, match="1-10"):
        capture.attempt(11)
    with pytest.raises(ValueError, match="base64"):
        FingerResult.from_dict({"position": 1, "status": "captured", "wsq": "***"})
    with pytest.raises(ValueError, match="needs its image"):
        FingerResult.from_dict({"position": 1, "status": "captured"})
    with pytest.raises(ValueError, match="exception code"):
        FingerResult(position=2, status="exception", exception_code="lost")
    with pytest.raises(ValueError, match="not a finger result"):
        FingerResult.from_dict({"status": "captured"})
    with pytest.raises(ValueError, match="pattern class"):
        FingerResult(position=2, status="exception", exception_code="bandaged", pattern="spiral")
