"""Fingerprint quality: the station's NFIQ 2 predictor against the real NFIQ 2.

    .venv/bin/python bench/fingerprint_quality.py [--runs 30] [--masters 12] [--seed 7301]

Latency per image on one core (LiteRT one thread, OpenCV one thread) for a rolled
(800 x 750) and a flat (400 x 500) impression: the station model (canvas + LiteRT) and
real NFIQ 2 (nbis-py, PNG in), against a baseline measured in the same run: cv2.resize of
the same image to half size (INTER_AREA). For scale, the model's Gabor bank alone done by
OpenCV (17 x filter2D at full stride on the 250 ppi canvas) is timed too. The machine is
shared and noisy: read the ratios.

Agreement on a fresh held-out set: ``--masters`` master fingers x 8 images drawn by
biometrics.fingerprint.quality_set with ``--seed`` (not the training seed, so neither
the fingers nor the images were seen in training), scored by both; Pearson r and mean
absolute error overall, per kind and per condition group.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from timing import med, p90, timed

from biometrics.fingerprint.quality import Nfiq2, StationQuality
from biometrics.fingerprint.quality_model import gabor_bank, to_canvas
from biometrics.fingerprint.quality_set import Defect, Sample, master_for, plan, render
from biometrics.fingerprint.synth import ImpressionKind, SkinCondition
from biometrics.models import spec

F64 = NDArray[np.float64]


def clean(seed: int, kind: ImpressionKind) -> NDArray[np.uint8]:
    sample = Sample(0, 2, 0, kind, SkinCondition.NORMAL, False, Defect.NONE, 0.0, True)
    return render(seed, sample)


def latency(runs: int, seed: int) -> None:
    station, nfiq2 = StationQuality(), Nfiq2()
    print("| image | what | median ms | p90 ms | vs baseline |\n|---|---|---|---|---|")
    for kind in (ImpressionKind.ROLLED, ImpressionKind.FLAT):
        image = clean(seed, kind)
        h, w = image.shape
        rows = kind_rows(image, station, nfiq2, runs)
        base = med(rows[0][1])
        for name, ms in rows:
            print(
                f"| {kind} {w}x{h} | {name} | {med(ms):8.2f} | {p90(ms):8.2f} "
                f"| {med(ms) / base:7.1f}x |"
            )


_BANK = gabor_bank()


def bank_in_opencv(half: NDArray[Any]) -> list[NDArray[Any]]:
    """The model's costliest layer done by OpenCV: a yardstick for LiteRT's speed."""
    return [cv2.filter2D(half, cv2.CV_32F, k[:, :, 0]) for k in _BANK]


def kind_rows(
    image: NDArray[np.uint8], station: StationQuality, nfiq2: Nfiq2, runs: int
) -> list[tuple[str, list[float]]]:
    h, w = image.shape
    half = cv2.resize(to_canvas(image)[0, :, :, 0], None, fx=0.5, fy=0.5,
                      interpolation=cv2.INTER_AREA)  # fmt: skip
    return [
        ("baseline: cv2.resize to half (INTER_AREA)",
         timed(lambda: cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
               runs, warm_up=True)),
        ("reference: the Gabor bank alone in OpenCV (17 x filter2D, 250 ppi, float32)",
         timed(lambda: bank_in_opencv(half), runs, warm_up=True)),
        ("station: to_canvas only", timed(lambda: to_canvas(image), runs, warm_up=True)),
        ("station: score (canvas + LiteRT)",
         timed(lambda: station.score(image), runs, warm_up=True)),
        ("NFIQ 2 (nbis-py, PNG encode + score)",
         timed(lambda: nfiq2.score(image), max(runs // 5, 3), warm_up=True)),
    ]  # fmt: skip


def agreement_row(name: str, pred: F64, truth: F64) -> str:
    mae = float(np.mean(np.abs(pred - truth)))
    constant = np.ptp(pred) == 0 or np.ptp(truth) == 0
    r = "-" if constant else f"{np.corrcoef(pred, truth)[0, 1]:.3f}"
    return (
        f"| {name} | {len(truth)} | {truth.mean():5.1f} | {pred.mean():5.1f} | {r} | {mae:5.2f} |"
    )


def agreement(masters: int, seed: int) -> None:
    station, nfiq2 = StationQuality(), Nfiq2()
    samples = plan(seed, masters, 8)
    truth, pred = [], []
    master = None
    for i, sample in enumerate(samples):
        if i % 8 == 0:
            master = master_for(seed, sample)
        image = render(seed, sample, master)
        truth.append(nfiq2.score(image))
        pred.append(station.score(image))
        print(f"\r  scored {i + 1}/{len(samples)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    t, p = np.array(truth, float), np.array(pred, float)
    print(f"\n### Agreement: {len(samples)} held-out images ({masters} masters, seed {seed})\n")
    print("| subset | n | mean NFIQ 2 | mean station | r | MAE |\n|---|---|---|---|---|---|")
    print(agreement_row("all", p, t))
    for kind in ("rolled", "flat"):
        sel = np.array([str(s.kind) == kind for s in samples])
        print(agreement_row(kind, p[sel], t[sel]))
    for group in sorted({s.group for s in samples}):
        sel = np.array([s.group == group for s in samples])
        print(agreement_row(group, p[sel], t[sel]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--masters", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7301)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    entry = spec("nfiq2_station")
    print(
        f"### {datetime.now(UTC):%Y-%m-%d}, {platform.processor() or platform.machine()}, "
        f"CPython {platform.python_version()}, one core, load {os.getloadavg()[0]:.2f}, "
        f"{args.runs} runs\n"
    )
    print(f"model {entry.relpath} sha256 {entry.sha256[:16]}...\n")
    latency(args.runs, args.seed)
    agreement(args.masters, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
