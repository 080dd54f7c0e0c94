"""Face pipeline cost per stage on one core, and what each quality check measures on the
real photos and their capture defects.

    .venv/bin/python bench/face.py [--repeat N] [--no-timing] [--checks] [--variations 8]
        [--dedup 200]

Timing: a 768x960 camera frame (a real photo framed as the station camera sees a seated
citizen), every model on one thread, the process pinned to one core. Baseline in the
same run: cv2.resize of the frame to half size (INTER_AREA), a fixed amount of memory-
bound pixel work, so the "vs base" column stays comparable on a noisy shared machine.
The station needs >= 10 frames/s of live feedback: "tracked frame" is the steady state
(mesh from the last frame, no detector), "new face" the frame where the detector runs.

--checks prints, for three subjects, the value of the check each defect targets before
and after the defect, and whether it was flagged (the tests assert the same).

--variations S renders each capture kind of the synthetic population S times per
source photo and counts how often the check it targets flags it.

--dedup N renders a synthetic population of about N enrollments with faces
(``biometrics.synth.faces``: a real source photo per person, a capture variation per
sitting), embeds each with SFace and prints the cosine similarity of every pair by
relation (same source photo; same real person, another photo; different people), and
of each variation kind against good captures of the same source: whether the variations
keep a face matchable.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image
from timing import timed

from biometrics.face import variations as var
from biometrics.face.crop import TOKEN_480, crop_portrait
from biometrics.face.detect import FaceDetector
from biometrics.face.embed import SFaceEmbedder, align_face, five_points
from biometrics.face.landmarks import FaceLandmarker, eye_centres, roi_from_detection, roi_from_mesh
from biometrics.face.pipeline import FaceAnalyzer
from biometrics.face.quality import Criterion, FaceAssessment, assess, luma
from biometrics.synth import faces, population

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "data" / "assets"
FRAME_W, FRAME_H = 768, 960
RGB = NDArray[np.uint8]
BACKDROP = (225, 225, 220)


def load_assets() -> dict[str, RGB]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fetch_assets.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench/face.py needs the face photos: {proc.stderr.strip()}")
    return {p.name: np.asarray(Image.open(p).convert("RGB")) for p in sorted(ASSETS.iterdir())}


def station_frame(photo: RGB, analyzer: FaceAnalyzer) -> RGB:
    """``photo`` framed as the station camera: eyes 160 px apart, centred, eyes at 40%."""
    a = analyzer.analyze(photo)
    assert a.mesh is not None
    right, left = eye_centres(a.mesh, a.irises)
    scale = 160.0 / float(np.linalg.norm(left - right))
    mid = (right + left) / 2
    m = np.array(
        [[scale, 0, FRAME_W / 2 - scale * mid[0]], [0, scale, FRAME_H * 0.4 - scale * mid[1]]]
    )
    frame = cv2.warpAffine(photo, m, (FRAME_W, FRAME_H), borderMode=cv2.BORDER_REFLECT)
    return np.asarray(frame, dtype=np.uint8)


def timing_table(frame: RGB, repeat: int) -> None:
    detector = FaceDetector("short")
    full_range = FaceDetector("full")
    landmarker = FaceLandmarker()
    analyzer = FaceAnalyzer()
    embedder = SFaceEmbedder()
    detection = detector.detect(frame)[0]
    roi = roi_from_detection(detection)
    mesh = landmarker.mesh(frame, roi)
    refined_roi = roi_from_mesh(mesh.points)
    mesh = landmarker.mesh(frame, refined_roi)
    irises = landmarker.irises(frame, mesh)
    grey = luma(frame)
    right, left = eye_centres(mesh, irises)
    first = analyzer.analyze(frame)

    stages: list[tuple[str, Callable[[], object]]] = [
        (
            "baseline cv2.resize 1/2",
            lambda: cv2.resize(frame, (384, 480), interpolation=cv2.INTER_AREA),
        ),
        ("detect (short range)", lambda: detector.detect(frame)),
        ("detect (full range)", lambda: full_range.detect(frame)),
        ("mesh (one pass)", lambda: landmarker.mesh(frame, refined_roi)),
        ("iris (both eyes)", lambda: landmarker.irises(frame, mesh)),
        ("luma of the frame", lambda: luma(frame)),
        ("quality checks", lambda: assess(frame, mesh, irises, grey=grey)),
        ("crop 480x640", lambda: crop_portrait(frame, right, left, TOKEN_480)),
        (
            "align 112 + SFace embed",
            lambda: embedder.embed(align_face(frame, five_points(mesh, irises))),
        ),
        ("new face (det+2 mesh+iris+QA)", lambda: analyzer.analyze(frame)),
        ("tracked frame (mesh+iris+QA)", lambda: analyzer.analyze(frame, previous=first)),
    ]
    results = {name: timed(fn, repeat, warm_up=True) for name, fn in stages}
    base = statistics.median(results[stages[0][0]])
    print("| stage | median ms | p90 ms | vs base | frames/s |")
    print("|---|---|---|---|---|")
    for name, samples in results.items():
        med = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1] if len(samples) >= 2 else med
        fps = f"{1000 / med:.0f}" if name.startswith(("new", "tracked")) else ""
        print(f"| {name} | {med:.2f} | {p90:.2f} | {med / base:.1f}x | {fps} |")


DEFECTS: list[tuple[str, Callable[[RGB, FaceAssessment], RGB], Criterion]] = [
    ("roll +15 deg", lambda im, a: var.rotate(im, 15, BACKDROP), Criterion.ROLL),
    ("mirror (yaw sign)", lambda im, a: var.mirror(im), Criterion.YAW),
    ("shift 15% right", lambda im, a: var.shift(im, 0.15, 0, BACKDROP), Criterion.CENTRE_X),
    ("shift 20% up", lambda im, a: var.shift(im, 0, -0.2, BACKDROP), Criterion.EYE_LINE),
    ("zoom 0.6", lambda im, a: var.zoom(im, 0.6, BACKDROP), Criterion.HEAD_HEIGHT),
    ("zoom 1.5", lambda im, a: var.zoom(im, 1.5, BACKDROP), Criterion.HEAD_WIDTH),
    ("zoom 0.6", lambda im, a: var.zoom(im, 0.6, BACKDROP), Criterion.EYE_DISTANCE),
    ("gain 0.3", lambda im, a: var.gain(im, 0.3), Criterion.EXPOSURE),
    ("gain 2.2", lambda im, a: var.gain(im, 2.2), Criterion.EXPOSURE),
    ("gain 2.2", lambda im, a: var.gain(im, 2.2), Criterion.CLIPPING),
    (
        "side light 0.2-1.0",
        lambda im, a: var.side_light(im, 0.2, 1.0, _span(a)),
        Criterion.LIGHTING,
    ),
    (
        "side light 1.0-0.2",
        lambda im, a: var.side_light(im, 1.0, 0.2, _span(a)),
        Criterion.LIGHTING,
    ),
    ("blur sigma 1", lambda im, a: var.blur(im, 1.0), Criterion.SHARPNESS),
    ("blur sigma 2", lambda im, a: var.blur(im, 2.0), Criterion.SHARPNESS),
    (
        "clutter patch 120x200",
        lambda im, a: var.clutter(im, (8, 8, 128, 208)),
        Criterion.BACKGROUND_CLUTTER,
    ),
    (
        "backdrop gradient",
        lambda im, a: var.side_light(im, 0.55, 1.0),
        Criterion.BACKGROUND_UNIFORMITY,
    ),
]


# The synthetic population's variations (no jitter), on the same studio portraits.
CAPTURES: list[tuple[str, faces.Capture, Criterion]] = [
    ("turn 20 deg (yaw warp)", faces.Capture("yaw", (("degrees", 20.0), ("toward", "left"))),
     Criterion.YAW),
    ("sunglasses, tint 30", faces.Capture("sunglasses", (("tint", 30.0), ("size", 1.05))),
     Criterion.OCCLUSION),
    ("mask, light blue", faces.Capture("mask", (("colour", "light_blue"), ("top", 0.4))),
     Criterion.OCCLUSION),
    ("mask, black", faces.Capture("mask", (("colour", "black"), ("top", 0.4))),
     Criterion.OCCLUSION),
    ("hand over the mouth", faces.Capture("hand", (("side", "right"), ("tone", 1.0),
                                                   ("angle", 0.0))), Criterion.OCCLUSION),
]  # fmt: skip


def _span(a: FaceAssessment) -> tuple[float, float]:
    cx, half = float(a.geometry.eye_mid[0]), a.geometry.head_width / 2
    return cx - half, cx + half


def checks_table(photos: dict[str, RGB], analyzer: FaceAnalyzer) -> None:
    subjects = ["biden.jpg", "obama.jpg", "astronaut.png"]
    sources: dict[str, faces.SourceFace] = {}
    studio: dict[str, tuple[RGB, FaceAssessment]] = {}
    for name in subjects:
        # The population's studio portrait: ICAO crop, background painted the backdrop.
        source = faces.studio_source(name, faces.SOURCE_PHOTOS[name], photos[name], analyzer)
        a = analyzer.analyze(source.image).assessment
        assert a is not None
        sources[name], studio[name] = source, (source.image, a)
    print("\nOn the real photos as given (* = fails):\n")
    names = [c.value for c in Criterion]
    print("| photo | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for name, image in photos.items():
        a = analyzer.analyze(image).assessment
        assert a is not None
        cells = [f"{c.value:.3g}{'' if c.passed else '*'}" for c in a.checks]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nStudio portraits (ICAO crop on a plain backdrop), then one defect each:\n")
    print("| defect | check | " + " | ".join(f"{s} base -> defect" for s in subjects) + " |")
    print("|---|---|" + "---|" * len(subjects))
    for label, make, criterion in DEFECTS:
        cells = [
            _defect_cell(studio[n][1], analyzer.analyze(make(*studio[n])).assessment, criterion)
            for n in subjects
        ]
        print(f"| {label} | {criterion.value} | " + " | ".join(cells) + " |")
    for label, capture, criterion in CAPTURES:
        cells = [
            _defect_cell(
                studio[n][1],
                analyzer.analyze(faces.render(sources[n], capture)).assessment,
                criterion,
            )
            for n in subjects
        ]
        print(f"| {label} | {criterion.value} | " + " | ".join(cells) + " |")


def _defect_cell(base: FaceAssessment, after: FaceAssessment | None, criterion: Criterion) -> str:
    """'base -> defect' value of one check, and whether the defect was flagged."""
    if after is None:
        return "no face"
    b, d = base.check(criterion), after.check(criterion)
    flag = f"FLAGGED ({d.hint})" if not d.passed else "passed"
    return f"{b.value:.3g} -> {d.value:.3g} {flag}"


def variations_table(photos: dict[str, RGB], analyzer: FaceAnalyzer, seeds: int) -> None:
    """Each capture kind forced, ``seeds`` captures of each source photo: how often its
    target check flags it, the occlusion value, and how often it passes every capture
    check (JPEG round trip and mark included, as the population folder holds them)."""
    sources = faces.prepare_sources(photos, analyzer)
    print(
        f"\nCapture variations, {seeds} seeds x {len(sources)} source photos each "
        "(occlusion: pass >= 0.22):\n"
    )
    print("| kind | captures | no face | flagged by its check | occlusion min-max | "
          "passed every capture check |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for kind in faces.CAPTURE_MIX:
        n, lost, flagged, clean, occl = 0, 0, 0, 0, []
        for seed in range(seeds):
            for source in sources.values():
                capture = faces.capture_for(seed, 1, kind)
                data = faces.encode_jpeg(faces.synthetic_face(source, capture))
                image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                a = analyzer.analyze(image).assessment
                n += 1
                if a is None:
                    lost += 1
                    continue
                occl.append(a.check(Criterion.OCCLUSION).value)
                flagged += capture.target is not None and not a.check(capture.target).passed
                clean += all(a.check(c).passed for c in CAPTURE_CHECKS)
        target = faces.TARGETS[kind]
        hit = f"{flagged} ({target.value})" if target is not None else ""
        print(f"| {kind} | {n} | {lost} | {hit} | {min(occl):.2f}-{max(occl):.2f} | {clean} |")


def _summary(scores: list[float], threshold: float) -> str:
    if not scores:
        return "0 | | | | | |"
    v = np.array(scores)
    p5, p50 = np.percentile(v, [5, 50])
    above = int(np.sum(v >= threshold))
    return (
        f"{len(v)} | {v.min():.2f} | {p5:.2f} | {p50:.2f} | {v.max():.2f} | "
        f"{above} ({above / len(v):.1%}) |"
    )


# Checks that follow the capture, not the person (the source photos' own yaw, pitch and
# smiles stay with them in every capture).
CAPTURE_CHECKS = [
    c
    for c in Criterion
    if c not in (Criterion.YAW, Criterion.PITCH, Criterion.EYES_OPEN, Criterion.MOUTH_CLOSED)
]


# OpenCV's suggested SFace cosine threshold (its face_recognition_sface sample).
SFACE_THRESHOLD = 0.363


def dedup_table(photos: dict[str, RGB], analyzer: FaceAnalyzer, enrollments: int) -> None:
    """SFace similarity over a synthetic population's faces, by pair relation."""
    people = max(2, round(enrollments / 1.35))
    pop = population.generate(people, seed=1, duplicate_fraction=0.35)
    sources = faces.prepare_sources(photos, analyzer)
    embedder = SFaceEmbedder()
    seeds = {p.person_id: p.face_seed for p in pop.people}
    rows: list[tuple[str, str, str, NDArray[np.float32]]] = []  # person, source, kind, vector
    sitting: dict[str, int] = {}
    lost: dict[str, int] = {}
    # kind -> [captures, flagged by the target check, passed every capture check]
    checked: dict[str, list[int]] = {k: [0, 0, 0] for k in faces.CAPTURE_MIX}
    for e in pop.enrollments:
        sitting[e.person_id] = sitting.get(e.person_id, 0) + 1
        seed = seeds[e.person_id]
        source = faces.source_for(seed)
        capture = faces.capture_for(seed, sitting[e.person_id])
        data = faces.encode_jpeg(faces.synthetic_face(sources[source], capture))
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        a = analyzer.analyze(image)
        if a.mesh is None or a.assessment is None:
            lost[capture.kind] = lost.get(capture.kind, 0) + 1
            continue
        tally = checked[capture.kind]
        tally[0] += 1
        tally[1] += capture.target is not None and not a.assessment.check(capture.target).passed
        tally[2] += all(a.assessment.check(c).passed for c in CAPTURE_CHECKS)
        vector = embedder.embed(align_face(image, five_points(a.mesh, a.irises)))
        rows.append((e.person_id, source, capture.kind, vector))
    groups: dict[str, list[float]] = {}
    by_kind: dict[str, list[float]] = {}
    for (p1, s1, k1, v1), (p2, s2, k2, v2) in itertools.combinations(rows, 2):
        score = float(np.dot(v1, v2))
        if p1 == p2:
            relation = "same person, two sittings"
        elif s1 == s2:
            relation = "same source photo, different people"
        elif faces.SOURCE_PHOTOS[s1] == faces.SOURCE_PHOTOS[s2]:
            relation = "same real person, another photo"
        else:
            relation = "different real people"
        groups.setdefault(relation, []).append(score)
        if s1 == s2 and "good" in (k1, k2):
            by_kind.setdefault(k2 if k1 == "good" else k1, []).append(score)
    t = SFACE_THRESHOLD
    print(
        f"\nFace dedup sanity: {len(pop.enrollments)} enrollments of {len(pop.people)} "
        f"people, {len(rows)} embedded (no face found: {lost or 'none'}); SFace cosine, "
        f"share >= {t} (OpenCV's suggested threshold)\n"
    )
    print(f"| pairs | count | min | p5 | median | max | >= {t} |")
    print("|---|---|---|---|---|---|---|")
    for relation in (
        "same person, two sittings",
        "same source photo, different people",
        "same real person, another photo",
        "different real people",
    ):
        print(f"| {relation} | " + _summary(groups.get(relation, []), t))
    print("\nSame source photo, a good capture against each kind; and the checks:\n")
    print(
        f"| kind | pairs | min | p5 | median | max | >= {t} | captures | flagged by its "
        "check | passed every capture check |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in faces.CAPTURE_MIX:
        n, flagged, clean = checked[kind]
        target = faces.TARGETS[kind]
        hit = f"{flagged} ({target.value})" if target is not None else ""
        print(f"| {kind} | " + _summary(by_kind.get(kind, []), t) + f" {n} | {hit} | {clean} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--checks", action="store_true", help="also print the check table")
    parser.add_argument(
        "--dedup", type=int, default=0, metavar="N", help="also the face-dedup table, N faces"
    )
    parser.add_argument(
        "--variations", type=int, default=0, metavar="SEEDS", help="also the variations table"
    )
    parser.add_argument("--no-timing", action="store_true", help="skip the timing table")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    photos = load_assets()
    analyzer = FaceAnalyzer()
    frame = station_frame(photos["obama.jpg"], analyzer)
    print(
        f"# bench/face.py  {datetime.now(UTC):%Y-%m-%d}  {platform.machine()} "
        f"{platform.python_implementation()} {platform.python_version()}  one core, "
        f"{args.repeat} runs, frame {FRAME_W}x{FRAME_H}\n"
    )
    if not args.no_timing:
        timing_table(frame, args.repeat)
    if args.checks:
        checks_table(photos, analyzer)
    if args.variations:
        variations_table(photos, analyzer, args.variations)
    if args.dedup:
        dedup_table(photos, analyzer, args.dedup)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
