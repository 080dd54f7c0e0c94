"""Station software cost: live face feedback rate, and CPU time per enrollment outside the
citizen's and the officer's actions.

    .venv/bin/python bench/station.py [--quick] [--runs N] [--frames N]
        [--pattern N] [--pattern-seed S] [--hands M] [--hands-seed S]

Pinned to one core, one thread in BLAS and the TFLite models.

(a) Face feedback: frames of the simulated camera at the station's resolutions (640x480,
the default camera mode; 1280x960, a USB camera in the field), rendered up front, each
through ``station.capture.face.FrameJudge.feed``, exactly what the live loop does per
frame (track + analyse, crop to the ICAO portrait, analyse the crop, framing checks,
score, preview JPEG at most 5 a second). Baseline: cv2.resize of the frame to half size.
Target (issue 6): >= 10 feedback frames a second.

(b) One enrollment's software time, median of ``--runs``: for each of the ten rolled
prints (composed from the roll simulator's frames up front; composition, which runs while
the finger rolls, is shown apart) the steps of ``TenPrintCapture.attempt`` after the
roll (crop, station NFIQ 2, mindtct minutiae, MCC template, same-finger checks against
the fingers before it, pattern class, WSQ, ISO 19794-2 template); the portrait (crop,
fresh check, JPEG); the record and ANSI/NIST transaction (station.record_builder) and
``build_package`` (ES256 signature with SoftwareKeySigner + HPKE encryption). A last row
runs the ten through ``TenPrintCapture`` itself (a replaying scanner) as a cross-check of
the per-step sum. Target (issue 6): under 2 s.

(c) ``--pattern N``: the pattern classifier's confusion on N synthetic rolled prints per
class (biometrics.fingerprint.pattern.MEASURED_COUNTS comes from this); ``--hands M``:
the hand vote on M synthetic persons (ten fingers drawn with their natural classes), each
hand as rolled and with the other hand's fingers in its boxes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# One thread in BLAS and friends: the target is one core. Must precede the numpy import.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# This script is named like the package it measures: with its own folder first on the
# path, `import station` would import this file. The repository goes first instead.
# (For the same reason mypy's repo-wide run excludes it; check it with
# `.venv/bin/mypy bench/station.py`.)
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

import argparse  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Literal  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from biometrics.face.pipeline import FaceAnalyzer  # noqa: E402
from biometrics.fingerprint import pattern as pat  # noqa: E402
from biometrics.fingerprint.iso19794 import encode_minutiae  # noqa: E402
from biometrics.fingerprint.matcher import FingerTemplate, make_template, verify  # noqa: E402
from biometrics.fingerprint.minutiae import extract_minutiae  # noqa: E402
from biometrics.fingerprint.quality import StationQuality  # noqa: E402
from biometrics.fingerprint.synth import FingerClass, impression, master_finger  # noqa: E402
from enrollment.examples import example_enrollment  # noqa: E402
from enrollment.images import encode_jpeg, encode_wsq  # noqa: E402
from enrollment.keys.software import SoftwareDecryptor, SoftwareKeySigner  # noqa: E402
from enrollment.package import build_package  # noqa: E402
from enrollment.pki import issue_station_certificate, make_station_ca  # noqa: E402
from station.capture.face import FaceCaptureSettings, FrameJudge, portrait_quality  # noqa: E402
from station.capture.tenprint import (  # noqa: E402
    TenPrintCapture,
    TenPrintSettings,
    contact_box,
)
from station.cases import FaceEntry, FingerEntry  # noqa: E402
from station.drivers.camera import SimulatedCamera, parse_script  # noqa: E402
from station.drivers.camera.frame import Frame  # noqa: E402
from station.drivers.fingerprint.frames import RollFrame  # noqa: E402
from station.drivers.fingerprint.roll_sim import roll_frames  # noqa: E402
from station.drivers.fingerprint.rolled import RolledCapture, compose  # noqa: E402
from station.record_builder import CaptureContext, build_record  # noqa: E402

FACE_SCRIPT = "walk_in:2, good:3, turn_head:3, eyes_closing:2, backlight:2, blur:2, good:2"
"""Every frame has a face: tracking, the detector when the face is new or lost, every
kind of failed check."""
FINGER_SEED, FINGER_PERSON = 3, 0


def med(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def p90(samples: Sequence[float]) -> float:
    return statistics.quantiles(samples, n=10)[-1] if len(samples) > 1 else samples[0]


def progress(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


# --------------------------------------------------------------------------- (a) face


def face_frames(width: int, height: int, count: int) -> list[Frame]:
    camera = SimulatedCamera(parse_script(FACE_SCRIPT), seed=0, width=width, height=height)
    step = max(1.0, camera.script.seconds * camera.fps / count)
    frames = [camera.render(int(i * step)) for i in range(count)]
    return [f for f in frames if f is not None]


def face_table(analyzer: FaceAnalyzer, count: int) -> list[str]:
    lines = [
        row("frames", "per frame median ms", "p90 ms", "feedback frames/s", "vs base", "note"),
        row(*["---"] * 6),
    ]
    for width, height in ((640, 480), (1280, 960)):
        progress(f"face feedback at {width}x{height}: rendering {count} frames")
        frames = face_frames(width, height, count)
        base_frame = frames[0].image
        baseline = []
        for _ in range(30):
            t = time.perf_counter()
            cv2.resize(base_frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
            baseline.append((time.perf_counter() - t) * 1000)
        judge = FrameJudge(analyzer, FaceCaptureSettings())
        judge.feed(frames[0])  # first call: model buffers
        times, passed, found, taken = [], 0, 0, 0
        started = time.perf_counter()
        for frame in frames:
            # One turn of the live loop: judge the frame, take the portrait when ready
            # (the loop would end there; here the next run begins).
            t = time.perf_counter()
            feedback = judge.feed(frame)
            taken += judge.take() is not None
            times.append((time.perf_counter() - t) * 1000)
            passed += feedback.passed
            found += feedback.found
        wall = time.perf_counter() - started
        base = med(baseline)
        lines.append(
            row(
                f"{width}x{height} x{len(frames)}",
                f"{med(times):.1f}",
                f"{p90(times):.1f}",
                f"{len(frames) / wall:.0f}",
                f"{med(times) / base:.0f}x",
                f"face in {found}, passing {passed}, portraits taken {taken}; "
                f"baseline resize 1/2 {base:.2f} ms",
            )
        )
    return lines


# --------------------------------------------------------------------------- (b) enrollment


class ReplayScanner:
    """Hands out pre-composed rolls in order (the bench's stand-in for the rolling)."""

    def __init__(self, captures: list[RolledCapture]) -> None:
        self.captures = list(captures)

    def capture_roll(
        self,
        finger_hint: int,
        timeout: float = 15.0,
        on_frame: Callable[[RollFrame], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> RolledCapture:
        return self.captures.pop(0)

    def cancel(self) -> None:
        pass


@dataclass
class World:
    signer: SoftwareKeySigner
    recipient: ec.EllipticCurvePublicKey


def make_world() -> World:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = make_station_ca(ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_station_certificate(ca_key, ca, "HN-BD-001", key.public_key())
    registry = SoftwareDecryptor(ec.generate_private_key(ec.SECP256R1()))
    return World(SoftwareKeySigner(key, cert), registry.public_key())


STEPS = (
    "crop to the skin",
    "quality (station NFIQ 2)",
    "minutiae (mindtct)",
    "template (MCC)",
    "same-finger checks",
    "pattern class",
    "WSQ encode",
    "ISO 19794-2 template",
)


def one_enrollment(
    rolls: list[RolledCapture],
    quality: StationQuality,
    analyzer: FaceAnalyzer,
    face_frame: Frame,
    world: World,
) -> tuple[dict[str, float], dict[str, float], int]:
    """CPU and wall milliseconds per step for one enrollment; and the package size."""
    ms: dict[str, float] = collections.defaultdict(float)
    wall: dict[str, float] = collections.defaultdict(float)

    @contextlib.contextmanager
    def clock(step: str) -> Iterator[None]:
        t, c = time.perf_counter(), time.thread_time()
        yield
        ms[step] += (time.thread_time() - c) * 1000
        wall[step] += (time.perf_counter() - t) * 1000

    templates: list[FingerTemplate] = []
    entries: dict[int, FingerEntry] = {}
    for position, roll in enumerate(rolls, start=1):
        with clock("crop to the skin"):
            x0, y0, x1, y1 = contact_box(roll.image, 16)
            image = np.ascontiguousarray(roll.image[y0:y1, x0:x1])
        with clock("quality (station NFIQ 2)"):
            score = quality.score(image)
        with clock("minutiae (mindtct)"):
            minutiae = extract_minutiae(image)
        with clock("template (MCC)"):
            template = make_template(minutiae)
        with clock("same-finger checks"):
            for other in templates:
                verify(template, other)
        with clock("pattern class"):
            pat.classify(image)
        with clock("WSQ encode"):
            wsq = encode_wsq(image)
        with clock("ISO 19794-2 template"):
            iso = encode_minutiae(minutiae, position=position, finger_quality=score)
        templates.append(template)
        entries[position] = FingerEntry(
            position=position,
            wsq=wsq,
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            quality=score,
            attempts=1,
            template=iso,
        )
    with clock("portrait: analyse, crop, fresh check, JPEG"):
        analysis = analyzer.analyze(face_frame.image)
        crop = analyzer.portrait(face_frame.image, analysis)
        fresh = analyzer.analyze(crop.image)
        jpeg = encode_jpeg(crop.image, 90)
        h, w = crop.image.shape[:2]
        face = FaceEntry(jpeg, w, h, portrait_quality(fresh.assessment))
    example, _ = example_enrollment(1, [None] * 10, (1, 1), b"", (1, 1))
    now = datetime.now(UTC)
    context = CaptureContext(
        station_id="HN-BD-001",
        operator_id="CB-0042",
        supervisor_id=None,
        software_version="bench",
        devices=tuple(example.capture.devices),
        started_at=now - timedelta(minutes=5),
        consent_at=now - timedelta(minutes=4),
        completed_at=now,
    )
    with clock("record + ANSI/NIST transaction"):
        record, tx = build_record(example.demographics, entries, face, context)
    with clock("build_package (sign ES256 + HPKE encrypt)"):
        package = build_package(record, tx, signer=world.signer, recipient=world.recipient)
    return dict(ms), dict(wall), len(package.data)


def enrollment_table(
    quality: StationQuality, analyzer: FaceAnalyzer, runs: int
) -> tuple[list[str], float]:
    progress("composing ten rolls from the roll simulator")
    compose_ms = []
    rolls = []
    for finger in range(1, 11):
        frames = roll_frames(FINGER_SEED, FINGER_PERSON, finger)
        t = time.perf_counter()
        rolls.append(compose(frames))
        compose_ms.append((time.perf_counter() - t) * 1000)
    face_frame = face_frames(640, 480, 60)[45]  # in the steady good scene
    world = make_world()
    extract_minutiae(rolls[0].image)  # load mindtct
    per_run: list[dict[str, float]] = []
    per_run_wall: list[dict[str, float]] = []
    sizes = []
    for i in range(runs):
        progress(f"enrollment run {i + 1}/{runs}")
        cpu, wall, size = one_enrollment(rolls, quality, analyzer, face_frame, world)
        per_run.append(cpu)
        per_run_wall.append(wall)
        sizes.append(size)
    progress("the same ten through TenPrintCapture (replayed rolls)")
    whole, whole_wall = [], []
    for _ in range(runs):
        capture = TenPrintCapture(ReplayScanner(rolls), quality, TenPrintSettings(min_quality=0))
        t, c = time.perf_counter(), time.thread_time()
        for position in range(1, 11):
            outcome = capture.attempt(position)
            assert outcome.code == "accepted", outcome.code
        whole.append((time.thread_time() - c) * 1000)
        whole_wall.append((time.perf_counter() - t) * 1000)
    steps = list(per_run[0])
    lines = [
        row("step", "CPU ms / enrollment", "wall ms", "CPU ms / finger", "share"),
        row(*["---"] * 5),
    ]
    total = med([sum(r.values()) for r in per_run])
    total_wall = med([sum(r.values()) for r in per_run_wall])
    for step in steps:
        cpu_ms = med([r[step] for r in per_run])
        wall_ms = med([r[step] for r in per_run_wall])
        per_finger = f"{cpu_ms / 10:.1f}" if step in STEPS else ""
        lines.append(
            row(step, f"{cpu_ms:.1f}", f"{wall_ms:.1f}", per_finger, f"{cpu_ms / total:.0%}")
        )
    lines.append(
        row("**total after the rolls**", f"**{total:.0f}**", f"{total_wall:.0f}", "", "100%")
    )
    lines.append(
        row(
            "check: ten attempts through TenPrintCapture",
            f"{med(whole):.0f}",
            f"{med(whole_wall):.0f}",
            f"{med(whole) / 10:.1f}",
            "(the finger steps above)",
        )
    )
    lines.append(
        row(
            "roll composition (while the finger rolls)",
            "",
            f"{sum(compose_ms):.0f}",
            "",
            "not in the total",
        )
    )
    lines.append(row("package size", f"{med(sizes) / 1024:.0f} KB", "", "", ""))
    return lines, total


# --------------------------------------------------------------------------- (c) patterns


def pattern_table(per_class: int, seed: int) -> list[str]:
    counts: dict[FingerClass, collections.Counter[pat.Pattern]] = {
        c: collections.Counter() for c in FingerClass
    }
    times = []
    for finger_class in FingerClass:
        progress(f"pattern: {per_class} {finger_class.value}")
        for i in range(per_class):
            finger = 1 + i % 10
            master = master_finger(seed, i, finger, finger_class=finger_class)
            image = impression(master, seed, i, finger, 0).image
            t = time.perf_counter()
            counts[finger_class][pat.classify(image).pattern] += 1
            times.append((time.perf_counter() - t) * 1000)
    readings = list(pat.Pattern)
    lines = [row("true \\ read", *[r.value for r in readings], "correct"), row(*["---"] * 8)]
    right = 0
    for finger_class in FingerClass:
        c = counts[finger_class]
        hit = c[pat.Pattern(finger_class.value)]
        right += hit
        lines.append(row(finger_class.value, *[c[r] for r in readings], f"{hit / per_class:.0%}"))
    total = per_class * len(FingerClass)
    loops_swapped = (
        counts[FingerClass.LEFT_LOOP][pat.Pattern.RIGHT_LOOP]
        + counts[FingerClass.RIGHT_LOOP][pat.Pattern.LEFT_LOOP]
    )
    lines.append("")
    lines.append(
        f"accuracy {right / total:.1%} of {total} (chance 20 %); loops read as the opposite "
        f"loop: {loops_swapped}; classify median {med(times):.1f} ms"
    )
    lines.append("")
    lines.append("counts for MEASURED_COUNTS:")
    for finger_class in FingerClass:
        lines.append(f"  {finger_class.value}: {dict(counts[finger_class].most_common())}")
    return lines


def hands_table(persons: int, seed: int, threshold: float) -> list[str]:
    own: list[float] = []
    swapped: list[float] = []
    for person in range(persons):
        if person % 10 == 0:
            progress(f"hands: person {person}/{persons}")
        reads = {}
        for finger in range(1, 11):
            master = master_finger(seed, person, finger)
            reads[finger] = pat.classify(impression(master, seed, person, finger, 0).image).pattern
        hand: Literal["right", "left"]
        for hand, offset in (("right", 5), ("left", -5)):
            boxes = pat.HAND_FINGERS[hand]
            own.append(pat.hand_vote(hand, {p: reads[p] for p in boxes}).log_ratio)
            other = {p: reads[p + offset] for p in boxes}
            swapped.append(pat.hand_vote(hand, other).log_ratio)
    ratios = (10, 20, 50, 100)
    lines = [
        row("hands", "n", "median ln ratio", "5 %", "95 %", *[f"warned at {r}:1" for r in ratios]),
        row(*["---"] * (5 + len(ratios))),
    ]
    for name, values in (("as rolled", own), ("other hand in the boxes", swapped)):
        v = np.array(values)
        lines.append(
            row(
                name,
                len(v),
                f"{np.median(v):.1f}",
                f"{np.percentile(v, 5):.1f}",
                f"{np.percentile(v, 95):.1f}",
                *[f"{np.mean(v > math.log(r)):.1%}" for r in ratios],
            )
        )
    lines.append("")
    lines.append(f"the station warns at ln ratio > {threshold:.2f} ({math.exp(threshold):.0f}:1)")
    return lines


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer frames and runs")
    parser.add_argument("--runs", type=int, default=5, help="enrollments timed (median)")
    parser.add_argument("--frames", type=int, default=200, help="face frames per resolution")
    parser.add_argument("--pattern", type=int, default=0, help="prints per class (0: skip)")
    parser.add_argument("--pattern-seed", type=int, default=8000)
    parser.add_argument("--hands", type=int, default=0, help="synthetic persons (0: skip)")
    parser.add_argument("--hands-seed", type=int, default=9000)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.frames = min(args.runs, 2), min(args.frames, 60)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    analyzer = FaceAnalyzer(num_threads=1)
    quality = StationQuality(num_threads=1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(
        f"# bench/station.py  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  {platform.machine()} "
        f"{platform.python_implementation()} {platform.python_version()}  one core, "
        f"load {load:.1f}"
    )
    print()
    print("## face feedback (FrameJudge.feed per frame)")
    for line in face_table(analyzer, args.frames):
        print(line)
    print()
    print(f"## software time per enrollment (median of {args.runs})")
    lines, total = enrollment_table(quality, analyzer, args.runs)
    for line in lines:
        print(line)
    print()
    verdict = "met" if total < 2000 else "NOT met"
    print(f"total {total:.0f} ms of CPU: target < 2000 ms {verdict}")
    if args.pattern:
        print()
        print(
            f"## pattern classes ({args.pattern} rolled prints per class, seed {args.pattern_seed})"
        )
        for line in pattern_table(args.pattern, args.pattern_seed):
            print(line)
    if args.hands:
        print()
        print(f"## hand vote ({args.hands} synthetic persons, seed {args.hands_seed})")
        for line in hands_table(args.hands, args.hands_seed, pat.SWAP_LOG_RATIO):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
