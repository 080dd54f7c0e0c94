"""Face pipeline cost per stage on one core, and what each quality check measures on the
real photos and their capture defects.

    .venv/bin/python bench/face.py [--repeat N] [--checks]

Timing: a 768x960 camera frame (a real photo framed as the station camera sees a seated
citizen), every model on one thread, the process pinned to one core. Baseline in the
same run: cv2.resize of the frame to half size (INTER_AREA), a fixed amount of memory-
bound pixel work, so the "vs base" column stays comparable on a noisy shared machine.
The station needs >= 10 frames/s of live feedback: "tracked frame" is the steady state
(mesh from the last frame, no detector), "new face" the frame where the detector runs.

--checks prints, for three subjects, the value of the check each defect targets before
and after the defect, and whether it was flagged (the tests assert the same).
"""

from __future__ import annotations

import argparse
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
from biometrics.face.quality import Criterion, FaceAssessment, assess, background_mask, luma

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


def _span(a: FaceAssessment) -> tuple[float, float]:
    cx, half = float(a.geometry.eye_mid[0]), a.geometry.head_width / 2
    return cx - half, cx + half


def checks_table(photos: dict[str, RGB], analyzer: FaceAnalyzer) -> None:
    subjects = ["biden.jpg", "obama.jpg", "astronaut.png"]
    studio: dict[str, tuple[RGB, FaceAssessment]] = {}
    for name in subjects:
        portrait = analyzer.portrait(photos[name], analyzer.analyze(photos[name])).image
        first = analyzer.analyze(portrait).assessment
        assert first is not None
        mask = background_mask(portrait.shape[:2], first.geometry, margin=0.0)
        plain = var.replace_background(portrait, mask, BACKDROP)
        a = analyzer.analyze(plain).assessment
        assert a is not None
        studio[name] = (plain, a)
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
        cells = []
        for name in subjects:
            image, base = studio[name]
            after = analyzer.analyze(make(image, base)).assessment
            if after is None:
                cells.append("no face")
                continue
            b, d = base.check(criterion), after.check(criterion)
            flag = f"FLAGGED ({d.hint})" if not d.passed else "passed"
            cells.append(f"{b.value:.3g} -> {d.value:.3g} {flag}")
        print(f"| {label} | {criterion.value} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--checks", action="store_true", help="also print the check table")
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
    timing_table(frame, args.repeat)
    if args.checks:
        checks_table(photos, analyzer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
