"""Synthetic fingerprint generator: throughput, per-stage cost and realism figures.

    .venv/bin/python bench/fingerprint_synth.py [--masters 40] [--impressions 60]
        [--workers 2] [--quality 20]

Speed (issue 3 target: >= 20 master fingers per second on the 2-core machine, impressions
faster still): masters/s in one process and with a pool of ``--workers`` processes; rolled
and flat impressions/s likewise; per-stage milliseconds. Every process is set up as the
CLI sets up its workers (``tune_process``: one OpenCV thread, freed memory kept in the
heap).
The baseline, measured in the same run, is a plain numpy rfft2 + irfft2 round trip at the
master's full size (768x810, float32, pocketfft via scipy.fft, one thread): the machine
is shared and noisy, so read the ratios.

Realism (``--quality N``, N masters of all ten finger positions): mindtct minutiae counts,
NFIQ 2 per skin condition, Bozorth3 genuine vs impostor scores (nbis-py).
"""

from __future__ import annotations

import argparse
import io
import itertools
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray
from PIL import Image
from timing import med, timed

from biometrics.fingerprint.synth import (
    ImpressionKind,
    MasterConfig,
    MasterFinger,
    SkinCondition,
    finger_rng,
    impression,
    impression_rng,
    master_finger,
)
from biometrics.fingerprint.synth_impression import (
    points_to_image,
    render_impression,
    sample_impression,
)
from biometrics.fingerprint.synth_master import (
    draw_class,
    fft_upsample,
    gabor_bank,
    grow_ridges,
    orientation_field,
    period_map,
    place_singularities,
)
from biometrics.synth.fingers import encode, tune_process

SEED = 1


# --- Speed -----------------------------------------------------------------------------------


def baseline_fft_ms(shape: tuple[int, int], repeat: int = 50) -> float:
    """One float32 rfft2 + irfft2 round trip (pocketfft through scipy.fft, one thread)."""
    a = np.random.default_rng(0).random(shape, dtype=np.float32)
    return med(timed(lambda: sfft.irfft2(sfft.rfft2(a, workers=1), s=shape, workers=1), repeat))


def master_stages(n: int) -> dict[str, float]:
    """Median ms of each stage of generate_master, on n masters."""
    cfg = MasterConfig()
    master_finger(SEED, 10_000, 1)  # builds the filter banks, once per process
    stages: dict[str, list[float]] = {}

    def add(name: str, t0: float) -> float:
        t1 = time.perf_counter()
        stages.setdefault(name, []).append((t1 - t0) * 1000)
        return t1

    for person in range(n):
        t = time.perf_counter()
        rng = finger_rng(SEED, person, 1 + person % 10)
        cls = draw_class(rng, 1 + person % 10)
        sing = place_singularities(rng, cls, cfg)
        theta = orientation_field(rng, cls, sing, cfg)
        t = add("orientation (Sherlock-Monro + VG)", t)
        period = period_map(rng, sing, cfg)
        t = add("ridge-period map", t)
        coarse = grow_ridges(rng, theta, period, sing, cfg)
        t = add("ridge growth (Gabor iterations)", t)
        fft_upsample(coarse, (cfg.height, cfg.width))
        add("band-limited upsampling", t)
    # The share of the growth that is FFT filtering: the same transforms (every bin used,
    # as for loops and whorls), without the rest.
    h, w = cfg.grid_shape
    img = np.random.default_rng(0).random((h, w), dtype=np.float32)
    bank = gabor_bank(cfg)

    def filtering() -> None:
        for _ in range(cfg.iterations):
            spec = sfft.rfft2(img, workers=1)
            for b in range(bank.shape[0]):
                sfft.irfft2(spec * bank[b], s=(h, w), workers=1)

    stages["  of which FFT filter bank"] = timed(filtering, 5)
    return {k: med(v) for k, v in stages.items()}


def impression_stages(kind: ImpressionKind, n: int) -> dict[str, float]:
    master = master_finger(SEED, 0, 2)
    stages: dict[str, list[float]] = {}
    for i in range(n):
        rng = impression_rng(SEED, 0, 2, kind, i)
        t0 = time.perf_counter()
        params = sample_impression(rng, master, kind)
        t1 = time.perf_counter()
        image = render_impression(master, params, rng)
        t2 = time.perf_counter()
        points_to_image(
            params,
            np.array([s.x for s in master.singularities]),
            np.array([s.y for s in master.singularities]),
        )
        t3 = time.perf_counter()
        encode(image, "png")
        t4 = time.perf_counter()
        for name, a, b in (
            ("sample parameters", t0, t1),
            ("render (geometry, skin, noise)", t1, t2),
            ("map singular points", t2, t3),
            ("PNG encode (CLI only)", t3, t4),
        ):
            stages.setdefault(name, []).append((b - a) * 1000)
    return {k: med(v) for k, v in stages.items()}


def _init() -> None:
    tune_process()  # what the CLI's workers do: one OpenCV thread, heap kept for reuse


def _one_master(person: int) -> int:
    return int(master_finger(SEED, person, 1 + person % 10).ridges.shape[0])


def _one_impression(task: tuple[str, int]) -> int:
    kind, i = ImpressionKind(task[0]), task[1]
    return int(impression(_MASTER[0], SEED, 0, 2, i, kind).image.shape[0])


_MASTER: list[MasterFinger] = []  # per worker process


def _init_impressions() -> None:
    _init()
    _MASTER.append(master_finger(SEED, 0, 2))


def rate(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    """Items per wall-clock second of fn over range(n) in this process, and the CPU ms
    per item (which other load on a shared machine disturbs less)."""
    fn(10_000)  # warm caches (filter bank, imports)
    t, c = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t), (time.process_time() - c) * 1000 / n


def pool_rate(
    fn: Callable[..., object], tasks: list[object], workers: int, init: Callable[[], None]
) -> float:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=init) as pool:
        pool.map(fn, tasks[: 2 * workers])  # start-up and warm-up are not measured
        t = time.perf_counter()
        pool.map(fn, tasks, chunksize=1)
        return len(tasks) / (time.perf_counter() - t)


# --- Realism -------------------------------------------------------------------------------


def quality(n: int) -> None:
    import nbis

    def extractor(nfiq2: bool) -> object:
        settings = nbis.NbisExtractorSettings(
            min_quality=0.0,
            get_center=False,
            check_fingerprint=False,
            compute_nfiq2=nfiq2,
            ppi=500.0,
        )
        return nbis.new_nbis_extractor(settings)

    plain, with_q = extractor(False), extractor(True)

    def png(image: NDArray[np.uint8]) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "PNG")
        return buf.getvalue()

    def nfiq2(image: NDArray[np.uint8]) -> int:
        try:
            return int(with_q.extract_minutiae(png(image)).quality().score)  # type: ignore[attr-defined]
        except nbis.NbisError:
            return 0  # NFIQ 2 could not assess the image

    def dist(xs: Sequence[float]) -> str:
        q = statistics.quantiles(xs, n=10)
        return f"{med(xs):6.1f} | {statistics.mean(xs):6.1f} | {q[0]:6.1f} | {q[-1]:6.1f}"

    masters = [(p, 1 + p % 10, master_finger(SEED, p, 1 + p % 10)) for p in range(n)]
    classes = [m.finger_class.value for _, _, m in masters]
    print(f"\n### Realism: {n} masters (fingers 1-10), seed {SEED}\n")
    print("classes drawn:", ", ".join(f"{c} {classes.count(c)}" for c in sorted(set(classes))))
    print("\n| measure | median | mean | p10 | p90 |\n|---|---|---|---|---|")
    templates: dict[tuple[str, int, int], object] = {}
    for kind in ImpressionKind:
        counts = []
        for p, f, m in masters:
            for i in range(2):
                shot = impression(m, SEED, p, f, i, kind, condition=SkinCondition.NORMAL)
                t = plain.extract_minutiae(png(shot.image))  # type: ignore[attr-defined]
                templates[(kind.value, p, i)] = t
                counts.append(len(t.get()))
        print(f"| mindtct minutiae, {kind} normal (nbis caps at 150) | {dist(counts)} |")
    for kind, condition, partial in [
        (ImpressionKind.FLAT, SkinCondition.NORMAL, False),
        (ImpressionKind.FLAT, SkinCondition.DRY, False),
        (ImpressionKind.FLAT, SkinCondition.WET, False),
        (ImpressionKind.FLAT, SkinCondition.NORMAL, True),
        (ImpressionKind.FLAT, None, None),
        (ImpressionKind.ROLLED, SkinCondition.NORMAL, False),
        (ImpressionKind.ROLLED, None, None),
    ]:
        scores = [
            nfiq2(impression(m, SEED, p, f, 5, kind, condition=condition, partial=partial).image)
            for p, f, m in masters
        ]
        label = "drawn mix" if condition is None else f"{condition}{' partial' if partial else ''}"
        fails = sum(s == 0 for s in scores)
        print(f"| NFIQ 2, {kind} {label} ({fails} not assessable) | {dist(scores)} |")
    for kind in ImpressionKind:
        k = kind.value
        genuine = [
            templates[(k, p, 0)].compare(templates[(k, p, 1)])  # type: ignore[attr-defined]
            for p, _, _ in masters
        ]
        impostor = [
            templates[(k, p, 0)].compare(templates[(k, q, 1)])  # type: ignore[attr-defined]
            for (p, _, _), (q, _, _) in itertools.permutations(masters, 2)
        ]
        print(f"| Bozorth3 genuine, {kind} normal skin, partial drawn | {dist(genuine)} |")
        print(f"| Bozorth3 impostor, {kind} ({len(impostor)} pairs) | {dist(impostor)} |")
        above = sum(s >= 40 for s in genuine) / len(genuine)
        false = sum(s >= 40 for s in impostor)
        print(f"| {kind}: genuine >= 40 {above:.0%}, impostor >= 40: {false} | | | | |")


# --- Main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masters", type=int, default=40)
    parser.add_argument("--impressions", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quality", type=int, default=0, help="realism figures on N masters")
    parser.add_argument("--no-speed", action="store_true", help="only the realism figures")
    args = parser.parse_args()
    _init()
    cfg = MasterConfig()
    load = os.getloadavg()[0]
    print(
        f"### {datetime.now(UTC):%Y-%m-%d}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, CPython {platform.python_version()}, "
        f"load average {load:.2f} at start\n"
    )
    print(
        f"master {cfg.width}x{cfg.height} px, grown on {cfg.grid_shape[1]}x{cfg.grid_shape[0]}: "
        f"{cfg.iterations} iterations x {cfg.n_orientations} orientations x "
        f"{len(cfg.periods)} periods; rolled 800x750, flat 400x500\n"
    )
    if args.no_speed:
        quality(args.quality)
        return 0
    base = baseline_fft_ms((cfg.height, cfg.width))
    print("| what | per second | wall ms each | CPU ms each | vs base |\n|---|---|---|---|---|")
    print(
        f"| baseline: rfft2+irfft2 {cfg.width}x{cfg.height} | {1000 / base:8.1f} "
        f"| {base:7.2f} | | 1.0x |"
    )
    rows: list[tuple[str, float, float | None]] = []
    rows.append(("masters, 1 process", *rate(_one_master, args.masters)))
    rows.append(
        (
            f"masters, {args.workers} workers",
            pool_rate(_one_master, list(range(args.masters * 2)), args.workers, _init),
            None,
        )
    )
    master = master_finger(SEED, 0, 2)
    for kind in ImpressionKind:
        k = kind.value

        def one(i: int, kind: ImpressionKind = kind) -> object:
            return impression(master, SEED, 0, 2, i, kind)

        rows.append((f"{k} impressions, 1 process", *rate(one, args.impressions)))
        tasks: list[object] = [(k, i) for i in range(args.impressions * 2)]
        rows.append(
            (
                f"{k} impressions, {args.workers} workers",
                pool_rate(_one_impression, tasks, args.workers, _init_impressions),
                None,
            )
        )
    for name, per_s, cpu_ms in rows:
        ms = 1000 / per_s
        cpu = f"{cpu_ms:7.2f}" if cpu_ms is not None else ""
        print(f"| {name} | {per_s:8.1f} | {ms:7.2f} | {cpu} | {ms / base:5.1f}x |")
    print("\n| stage (1 process) | median ms |\n|---|---|")
    for name, ms in master_stages(min(args.masters, 20)).items():
        print(f"| master: {name} | {ms:7.2f} |")
    for kind in ImpressionKind:
        for name, ms in impression_stages(kind, min(args.impressions, 30)).items():
            print(f"| {kind}: {name} | {ms:7.2f} |")
    if args.quality:
        quality(args.quality)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
