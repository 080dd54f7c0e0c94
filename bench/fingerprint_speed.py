"""Fingerprint extraction and matching speed: mindtct, LEADER, templates, 1:1 and 1:N on one
core.

    .venv/bin/python bench/fingerprint_speed.py [--sizes 10000,100000,1000000]
        [--probes 50] [--workers 2] [--cache DIR] [--seed 1] [--leader 6]
        [--only-extraction]

LEADER (``biometrics.fingerprint.leader``, one onnxruntime thread) and mindtct run on the
same synthetic impressions (``biometrics.fingerprint.synth``: one rolled 800x750 and one
flat 400x500 of each of ``--leader`` masters); mindtct on those images is LEADER's baseline,
and the notes compare the two extractors' minutiae (counts, how many LEADER minutiae have a
mindtct one within 8 px, the median direction difference of those pairs). LEADER's CPU
time is also compared across onnxruntime's graph optimisation levels (interleaved).

Templates for the 1:N runs are synthesized in bulk from simulated minutia sets
(``biometrics.fingerprint.simulate``): gallery rows and probes are two independent
impressions of random masters (each with rotation up to 25 degrees, translation up to 40
px, elastic distortion, jitter, 15 % missed and 10 % spurious minutiae, cropping, mindtct
direction steps); the probes' mates sit at known rows, so the same run also reports the
rank-1 hit rate. The gallery is built once for the largest size, in ``--workers`` processes, and
each smaller size is its first rows; everything timed runs pinned to one core with
single-threaded BLAS.

Baselines measured in the same run, for ratios that survive a noisy shared machine:
``gemv`` multiplies a float32 matrix with as many bytes per row as a gallery row by a
vector (the least any method that reads every template once can cost), and ``popcount``
is the pre-filter's AND + bitwise_count pass alone.
"""

from __future__ import annotations

import os

# One thread in BLAS and friends: the target is one core. Must precede the numpy import.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from timing import med, p90, timed  # noqa: E402
from tqdm import tqdm  # noqa: E402

from biometrics.fingerprint import iso19794, mcc, prefilter  # noqa: E402
from biometrics.fingerprint.leader import LeaderExtractor  # noqa: E402
from biometrics.fingerprint.matcher import (  # noqa: E402
    FingerTemplate,
    Gallery,
    make_template,
    search,
    verify,
)
from biometrics.fingerprint.minutiae import MindtctExtractor, MinutiaSet  # noqa: E402
from biometrics.fingerprint.simulate import impression, random_minutiae  # noqa: E402
from biometrics.fingerprint.synth import ImpressionKind, master_finger  # noqa: E402
from biometrics.fingerprint.synth import impression as synth_impression  # noqa: E402
from biometrics.placeholder import finger_image  # noqa: E402

Row = tuple[str, str, str, str, str]


def master(seed: int, k: int) -> MinutiaSet:
    return random_minutiae(np.random.default_rng([seed, k]))


def build_chunk(seed: int, start: int, count: int) -> Gallery:
    """Gallery rows ``start .. start+count``: an impression of master ``k`` at row k."""
    g = Gallery(capacity=count)
    for k in range(start, start + count):
        ms = impression(master(seed, k), np.random.default_rng([seed, k, 0]))
        g.add(make_template(ms), label=k)
    return g


def build_gallery(size: int, seed: int, workers: int, cache: Path | None) -> Gallery:
    """The gallery for the largest size, from the cache when there is one."""
    path = cache / f"fingers2_{size}_{seed}.npz" if cache else None
    if path is not None and path.exists():
        g = Gallery(capacity=size)
        with np.load(path) as data:
            for k in g.columns():
                getattr(g, k)[:] = data[k]
        g.size = size
        print(f"gallery of {size:,} loaded from {path}", file=sys.stderr)
        return g
    chunk = 2000
    starts = list(range(0, size, chunk))
    g = Gallery(capacity=size)
    with (
        ProcessPoolExecutor(max_workers=workers) as pool,
        tqdm(total=size, desc="building templates", unit="tpl", file=sys.stderr) as bar,
    ):
        parts = [pool.submit(build_chunk, seed, s, min(chunk, size - s)) for s in starts]
        for part in parts:  # in order, so that row k holds master k
            piece = part.result()
            g.extend(piece)
            bar.update(len(piece))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{k: getattr(g, k)[:size] for k in g.columns()})
    return g


def extraction_rows(repeat: int) -> list[Row]:
    rows: list[Row] = []
    ex = MindtctExtractor()
    for w, h in ((500, 500), (800, 750)):
        images = [finger_image(i, width=w, height=h) for i in range(repeat)]
        counts = []
        samples = []
        for img in images:
            t = time.perf_counter()
            counts.append(len(ex.extract(img)))
            samples.append((time.perf_counter() - t) * 1000)
        rows.append(
            (f"mindtct {w}x{h} (placeholder)", f"{med(samples):.1f} ms", f"{p90(samples):.1f} ms",
             "", f"{statistics.mean(counts):.0f} minutiae")
        )  # fmt: skip
    sets = [impression(master(99, k), np.random.default_rng(k)) for k in range(repeat * 10)]
    it = iter(sets * 2)
    samples = timed(lambda: make_template(next(it)), len(sets))
    n_min = statistics.mean(len(s) for s in sets)
    rows.append(
        ("template (MCC + signature)", f"{med(samples):.2f} ms", f"{p90(samples):.2f} ms", "",
         f"{n_min:.0f} minutiae in")
    )  # fmt: skip
    tpl = make_template(sets[0])
    rows.append(("template size", "", "", "", f"{len(tpl.to_bytes())} bytes"))
    iso = iso19794.encode_minutiae(sets[0])
    enc = timed(lambda: iso19794.encode_minutiae(sets[0]), 200)
    dec = timed(lambda: iso19794.decode_minutiae(iso), 200)
    rows.append(
        ("ISO 19794-2 encode / decode", f"{med(enc) * 1000:.0f} / {med(dec) * 1000:.0f} us",
         "", "", f"{len(iso)} bytes")
    )  # fmt: skip
    return rows


def _timed_extract(
    ex: LeaderExtractor | MindtctExtractor, images: list[NDArray[np.uint8]]
) -> tuple[list[float], list[float], list[MinutiaSet]]:
    """Wall and CPU milliseconds per image, and the minutiae."""
    ex.extract(images[0])  # warm up: session, buffers
    wall, cpu, found = [], [], []
    for img in images:
        t, c = time.perf_counter(), time.process_time()
        found.append(ex.extract(img))
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - t) * 1000)
    return wall, cpu, found


def _agreement(a: list[MinutiaSet], b: list[MinutiaSet]) -> tuple[float, float]:
    """Share of ``a``'s minutiae with a ``b`` minutia within 8 px (mutually nearest), and
    the median direction difference of those pairs in degrees."""
    paired, total, turns = 0, 0, []
    for x, y in zip(a, b, strict=True):
        total += len(x)
        if not len(x) or not len(y):
            continue
        d = np.hypot(x.x[:, None] - y.x[None, :], x.y[:, None] - y.y[None, :])
        j, i = d.argmin(axis=1), d.argmin(axis=0)
        k = np.flatnonzero((i[j] == np.arange(len(x))) & (d[np.arange(len(x)), j] <= 8))
        paired += len(k)
        turns.append(np.abs(np.mod(x.angle[k] - y.angle[j[k]] + math.pi, 2 * math.pi) - math.pi))
    med_turn = math.degrees(float(np.median(np.concatenate(turns)))) if turns else math.nan
    return paired / max(total, 1), med_turn


def leader_rows(masters: int, seed: int) -> list[Row]:
    """LEADER against mindtct on the same synthetic impressions, one thread."""
    rows: list[Row] = []
    t = time.perf_counter()
    leader = LeaderExtractor()
    leader.extract(np.full((64, 64), 255, np.uint8))
    rows.append(("LEADER session (verify + load)", f"{time.perf_counter() - t:.2f} s", "", "",
                 "once per process"))  # fmt: skip
    mindtct = MindtctExtractor()
    fingers = [(p, 1 + p % 10) for p in range(masters)]
    shots: dict[ImpressionKind, list[NDArray[np.uint8]]] = {kind: [] for kind in ImpressionKind}
    for p, f in fingers:
        m = master_finger(seed, p, f)
        for kind in ImpressionKind:
            shots[kind].append(synth_impression(m, seed, p, f, 0, kind).image)
    for kind, images in shots.items():
        h, w = images[0].shape
        lw, lc, lf = _timed_extract(leader, images)
        mw, mc, mf = _timed_extract(mindtct, images)
        share, turn = _agreement(lf, mf)
        n_l = statistics.mean(len(s) for s in lf)
        n_m = statistics.mean(len(s) for s in mf)
        n_m20 = statistics.mean(int((s.quality >= 20).sum()) for s in mf)
        rows.append(
            (f"LEADER {kind.value} {w}x{h} (synthetic)", f"{med(lw):.0f} ms", f"{p90(lw):.0f} ms",
             f"{med(lw) / med(mw):.0f}x",
             f"cpu {med(lc):.0f} ms; {n_l:.0f} minutiae, {share:.0%} within 8 px of mindtct's, "
             f"median direction difference {turn:.1f} deg")
        )  # fmt: skip
        rows.append(
            ("  baseline: mindtct, same images", f"{med(mw):.0f} ms", f"{p90(mw):.0f} ms", "1x",
             f"cpu {med(mc):.0f} ms; {n_m:.0f} minutiae ({n_m20:.0f} of quality >= 20)")
        )  # fmt: skip
    rows += _level_rows(shots)
    return rows


def _level_rows(shots: dict[ImpressionKind, list[NDArray[np.uint8]]]) -> list[Row]:
    """LEADER's CPU time under onnxruntime's graph optimisation levels, interleaved image
    by image (alternating the order) so that a busy neighbour weighs on all alike."""
    levels = ("all", "basic", "disable")
    extractors = {level: LeaderExtractor(optimization=level) for level in levels}
    rows: list[Row] = []
    for kind, images in shots.items():
        cpu: dict[str, list[float]] = {level: [] for level in levels}
        for level in levels:
            extractors[level].extract(images[0])  # warm up
        for i, img in enumerate(images[:4]):
            for level in levels if i % 2 == 0 else levels[::-1]:
                c = time.process_time()
                extractors[level].extract(img)
                cpu[level].append((time.process_time() - c) * 1000)
        base = med(cpu["all"])
        for level in levels:
            note = f"interleaved, {len(cpu[level])} images" if level == "all" else "vs 'all'"
            rows.append(
                (f"  LEADER {kind.value}, graph optimisation {level!r}",
                 f"cpu {med(cpu[level]):.0f} ms", "", f"{med(cpu[level]) / base:.2f}x", note)
            )  # fmt: skip
    return rows


def one_to_one_rows(seed: int, pairs: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    a = [make_template(impression(master(seed, k), rng)) for k in range(pairs)]
    b = [make_template(impression(master(seed, k), rng)) for k in range(pairs)]
    jobs = [(a[i], b[(i + j) % pairs]) for i in range(pairs) for j in (0, 1)]
    rows: list[Row] = []
    base_a = np.random.rand(475).astype(np.float32)
    base_b = np.random.rand(475).astype(np.float32)
    base = timed(lambda: [float(base_a @ base_b) for _ in range(len(jobs))], 5)
    base_per = med(base) / len(jobs)

    def lss(x: FingerTemplate, y: FingerTemplate) -> float:
        return mcc.score(x.cylinders, y.cylinders)

    def lss_r(x: FingerTemplate, y: FingerTemplate) -> float:
        return mcc.score(x.cylinders, y.cylinders, relaxation=True)

    def run_all(fn: Callable[[FingerTemplate, FingerTemplate], float]) -> list[float]:
        return [fn(x, y) for x, y in jobs]

    for name, fn in (
        ("1:1 MCC (LSS)", lss),
        ("1:1 MCC (LSS-R)", lss_r),
        ("1:1 verify (MCC + re-scoring)", verify),
    ):
        runs = timed(partial(run_all, fn), 3)
        per = med(runs) / len(jobs)
        rows.append(
            (name, f"{1000 / per:,.0f} /s", f"{per * 1000:.0f} us", f"{per / base_per:.0f}x", "")
        )
    rows.append(
        ("baseline: np.dot, 475 float32", f"{1000 / base_per:,.0f} /s",
         f"{base_per * 1000:.1f} us", "1x", "1.9 KB a side, like a template")
    )  # fmt: skip
    return rows


def one_to_many_rows(g: Gallery, sizes: list[int], seed: int, n_probes: int) -> list[Row]:
    rows: list[Row] = []
    cols = g.bytes_per_template // 4
    for size in sizes:
        view = g.head(size)
        rng = np.random.default_rng([seed, size])
        mates = rng.choice(size, n_probes, replace=False)
        probes = [
            make_template(
                impression(master(seed, int(k)), np.random.default_rng([seed, int(k), 1]))
            )
            for k in mates
        ]
        times, stages, ranks, sig_ranks = [], [], [], []
        sig_counts = view.signature_counts[:size]
        search(probes[0], view)  # warm up caches and allocator
        for k, probe in tqdm(
            list(zip(mates, probes, strict=True)), desc=f"1:N {size:,}", file=sys.stderr
        ):
            timing: dict[str, float] = {}
            t = time.perf_counter()
            found = search(probe, view, top=10, timings=timing)
            times.append((time.perf_counter() - t) * 1000)
            stages.append(timing)
            labels = [c.label for c in found]
            ranks.append(labels.index(int(k)) + 1 if int(k) in labels else math.inf)
            # Untimed: where stage 1 put the mate (row k holds master k), for the margin.
            sig = prefilter.signature_scores(probe.signature, view.signatures[:size], sig_counts)
            sig_ranks.append(int((sig > sig[k]).sum()) + 1)
        mat = rng.random((size, cols), dtype=np.float32)
        vec = rng.random(cols, dtype=np.float32)
        gemv = timed(partial(np.matmul, mat, vec), 5)
        del mat
        pop = timed(
            partial(
                prefilter.signature_scores,
                probes[0].signature,
                view.signatures[:size],
                view.signature_counts[:size],
            ),
            5,
        )
        m = med(times)
        hit = sum(r == 1 for r in ranks) / len(ranks)
        stage = {k: med([s[k] * 1000 for s in stages]) for k in ("prefilter", "mcc", "rescore")}
        cand = med([s["mcc_candidates"] for s in stages])
        rows.append(
            (f"1:N search, {size:,} templates", f"{size / m * 1000:,.0f} cmp/s",
             f"{m:.0f} ms (p90 {p90(times):.0f})", f"{m / med(gemv):.1f}x",
             f"rank-1 {hit:.1%} of {len(ranks)}")
        )  # fmt: skip
        rows.append(
            ("  stages: signatures / MCC / re-score", "",
             f"{stage['prefilter']:.0f} / {stage['mcc']:.0f} / {stage['rescore']:.0f} ms", "",
             f"MCC on {cand:,.0f} ({cand / size:.1%}); mate's worst stage-1 rank "
             f"{max(sig_ranks):,}")
        )  # fmt: skip
        rows.append(
            ("  baseline: gemv, same bytes", f"{size / med(gemv) * 1000:,.0f} rows/s",
             f"{med(gemv):.1f} ms", "1x", f"{cols} float32 per row")
        )  # fmt: skip
        rows.append(
            ("  baseline: signature popcount", f"{size / med(pop) * 1000:,.0f} rows/s",
             f"{med(pop):.1f} ms", f"{med(pop) / med(gemv):.2f}x", "stage 1 alone")
        )  # fmt: skip
        rows.append(
            ("  memory", "", "", "",
             f"{view.bytes_per_template} B/template, {view.nbytes / 2**20:,.0f} MiB")
        )  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="gallery sizes, comma-separated")
    ap.add_argument("--probes", type=int, default=50, help="searches per gallery size")
    ap.add_argument("--pairs", type=int, default=200, help="1:1 pairs (genuine + impostor)")
    ap.add_argument("--images", type=int, default=10, help="images per extraction size")
    ap.add_argument("--workers", type=int, default=2, help="processes building the gallery")
    ap.add_argument("--cache", type=Path, default=None, help="directory to keep galleries in")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--leader", type=int, default=6, help="synthetic masters for LEADER (0: skip)")
    ap.add_argument("--only-extraction", action="store_true", help="skip 1:1 and 1:N")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    if not args.only_extraction:
        gallery = build_gallery(sizes[-1], args.seed, args.workers, args.cache)
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})

    rows = extraction_rows(args.images)
    if args.leader > 0:
        rows += leader_rows(args.leader, args.seed)
    if not args.only_extraction:
        rows += one_to_one_rows(args.seed, args.pairs)
        rows += one_to_many_rows(gallery, sizes, args.seed, args.probes)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}, pinned to core {core}, "
        f"peak RSS {rss:,.0f} MiB\n"
    )
    print("| what | rate | time | vs base | notes |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
