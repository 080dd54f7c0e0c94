"""Registry dedup: identify latency against galleries of 10k and 100k people, memory per
person, and FPIR / FNIR at the review thresholds.

    .venv/bin/python bench/dedup.py [--sizes 10000,100000] [--probes 100] [--workers 2]
        [--seed 1] [--cache DIR]

Each person has ten fingers and a face. Fingers are simulated minutia sets
(``biometrics.fingerprint.simulate``: gallery and probe are two independent impressions of
one master, 25-degree rotation, elastic distortion, missed and spurious minutiae); faces
are synthetic 128-D unit vectors with SFace's measured statistics (impostor cosine mean
~0.11, sd ~0.08; genuine 0.6-0.9). The gallery holds what ``central.abis`` holds: compact
templates of the searched fingers (right and left index) and the face matrix; the other
fingers are verified on the shortlist from full templates, which the registry reads from
the database and this benchmark generates on demand (that generation is timed apart and
taken out of the latency).

``identify`` is the registry's own code path (``central.abis.scoring.identify`` over a
``GalleryShard``), run pinned to one core with single-threaded BLAS. Baseline in the same
run: one finger's 1:N search (``matcher.search``) against the same gallery. Probes: half
mated (their person is in the gallery), half not; FPIR is the share of non-mated probes
in review, FNIR the share of mated probes whose mate is not in review.
"""

from __future__ import annotations

import os

# One thread in BLAS and friends: the target is one core. Must precede the numpy import.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from tqdm import tqdm  # noqa: E402

from biometrics.fingerprint.fusion import ZNorm  # noqa: E402
from biometrics.fingerprint.matcher import Gallery, make_template, search, verify  # noqa: E402
from biometrics.fingerprint.minutiae import MinutiaSet  # noqa: E402
from biometrics.fingerprint.simulate import impression, random_minutiae  # noqa: E402
from central.abis.demographics import Demographics  # noqa: E402
from central.abis.gallery import EntryInfo, GalleryShard  # noqa: E402
from central.abis.scoring import (  # noqa: E402
    DedupCandidate,
    VerificationTemplates,
    identify,
    search_probe,
)
from central.abis.settings import AbisSettings, ImpostorStats  # noqa: E402
from central.abis.templates import EnrollmentTemplates, FingerRecord, unit  # noqa: E402

POSITIONS = tuple(range(1, 11))
FACE_MODEL = "synthetic-128"
FACE_DIM = 128
NOBODY = Demographics()
THRESHOLDS = (4.0, 5.0, 6.0, 7.0, 8.0, 10.0)


def minutiae(seed: int, person: int, position: int, index: int) -> MinutiaSet:
    master = random_minutiae(np.random.default_rng([seed, person, position]))
    return impression(master, np.random.default_rng([seed, person, position, index + 1]))


def build_chunk(
    seed: int, start: int, count: int, positions: tuple[int, ...]
) -> dict[int, Gallery]:
    """Compact templates of persons ``start..start+count`` (entry id = person + 1)."""
    out = {p: Gallery(capacity=count) for p in positions}
    for k in range(start, start + count):
        for p in positions:
            out[p].add(make_template(minutiae(seed, k, p, 0)), label=k + 1)
    return out


class Faces:
    """Synthetic embeddings: a shared direction (impostor cosine mean ~0.11) plus a
    person's own; a probe adds noise (genuine cosine 0.6-0.9)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.common = unit(np.random.default_rng([seed, 99]).standard_normal(FACE_DIM))

    def person(self, k: int) -> NDArray[np.float32]:
        own = unit(np.random.default_rng([self.seed, k, 98]).standard_normal(FACE_DIM))
        return unit(0.35 * self.common + own)

    def people(self, start: int, count: int) -> NDArray[np.float32]:
        return np.stack([self.person(k) for k in range(start, start + count)])

    def probe(self, k: int) -> NDArray[np.float32]:
        rng = np.random.default_rng([self.seed, k, 97])
        noise = unit(rng.standard_normal(FACE_DIM))
        return unit(self.person(k) + rng.uniform(0.5, 1.3) * noise)


class SyntheticSource:
    """Full templates of gallery persons, made on first use (the registry reads them from
    the database); the time spent making them is kept apart so it can be taken out."""

    def __init__(self, seed: int, faces: Faces) -> None:
        self.seed, self.faces = seed, faces
        self.cache: dict[int, VerificationTemplates] = {}
        self.wall = self.cpu = 0.0

    def templates(self, entry_ids: Sequence[int]) -> dict[int, VerificationTemplates]:
        wall, cpu = time.perf_counter(), time.process_time()
        for e in entry_ids:
            if e not in self.cache:
                k = e - 1
                fingers = {
                    p: make_template(minutiae(self.seed, k, p, 0), max_cylinders=0)
                    for p in POSITIONS
                }
                self.cache[e] = VerificationTemplates(fingers, FACE_MODEL, self.faces.person(k))
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        return {e: self.cache[e] for e in entry_ids}


def probe_of(seed: int, k: int, faces: Faces) -> EnrollmentTemplates:
    fingers = {p: FingerRecord.from_minutiae(minutiae(seed, k, p, 1)) for p in POSITIONS}
    return EnrollmentTemplates("simulated", fingers, FACE_MODEL, faces.probe(k))


def impostor_stats(seed: int, pairs: int) -> ImpostorStats:
    """Impostor scores of ``verify`` on full templates of simulated prints (the z-scale the
    thresholds are set on), from persons far beyond any gallery."""
    rng = np.random.default_rng([seed, 7])
    scores = []
    for _ in range(pairs):
        a, b = rng.choice(10_000, 2, replace=False) + 10_000_000
        p = int(rng.integers(1, 11))
        ta = make_template(minutiae(seed, int(a), p, 0), max_cylinders=0)
        tb = make_template(minutiae(seed, int(b), p, 1), max_cylinders=0)
        scores.append(verify(ta, tb))
    z = ZNorm.fit(scores)
    return ImpostorStats(mean=round(z.mean, 4), std=round(z.std, 4))


@dataclass
class Outcome:
    wall_ms: float
    cpu_ms: float
    mate: DedupCandidate | None  # the mate's candidate (mated probes)
    impostor_max: float  # best score of any other entry
    impostor_fingers_max: float  # the same, fingers only
    review: bool


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_shard(
    size: int, seed: int, workers: int, settings: AbisSettings, faces: Faces
) -> tuple[GalleryShard, int, float]:
    shard = GalleryShard(settings.search_positions)
    before = rss_bytes()
    t = time.perf_counter()
    chunk = 2000
    with (
        ProcessPoolExecutor(max_workers=workers) as pool,
        tqdm(total=size, desc=f"gallery {size:,}", unit="person", file=sys.stderr) as bar,
    ):
        parts = [
            (s, pool.submit(build_chunk, seed, s, min(chunk, size - s), settings.search_positions))
            for s in range(0, size, chunk)
        ]
        for start, part in parts:
            packed = part.result()
            n = min(chunk, size - start)
            infos = [
                EntryInfo(k + 1, uuid.UUID(int=k + 1), None, NOBODY)
                for k in range(start, start + n)
            ]
            shard.add_packed(infos, packed, FACE_MODEL, faces.people(start, n))
            bar.update(n)
    return shard, rss_bytes() - before, time.perf_counter() - t


def run_size(
    shard: GalleryShard, size: int, seed: int, n_probes: int, settings: AbisSettings, faces: Faces
) -> tuple[list[Outcome], list[Outcome], list[float]]:
    rng = np.random.default_rng([seed, size])
    mated = [int(k) for k in rng.choice(size, n_probes, replace=False)]
    strangers = [size + 1_000_000 + i for i in range(n_probes)]
    source = SyntheticSource(seed, faces)
    probes = {
        k: probe_of(seed, k, faces) for k in tqdm(mated + strangers, desc="probes", file=sys.stderr)
    }

    def one(k: int) -> Outcome:
        probe = probes[k]
        gen_wall, gen_cpu = source.wall, source.cpu
        wall, cpu = time.perf_counter(), time.process_time()
        part = shard.search(
            search_probe(probe, NOBODY, settings),
            frozenset(),
            settings.finger_shortlist,
            settings.face_shortlist,
            settings.demographic_candidates,
        )
        _, cands = identify(probe, NOBODY, [part], source, settings)
        wall = time.perf_counter() - wall - (source.wall - gen_wall)
        cpu = time.process_time() - cpu - (source.cpu - gen_cpu)
        mate = next((c for c in cands if c.entry_id == k + 1), None)
        others = [c for c in cands if c.entry_id != k + 1]
        return Outcome(
            wall * 1000,
            cpu * 1000,
            mate,
            max((c.score for c in others), default=-np.inf),
            max((c.finger_score or 0.0 for c in others), default=-np.inf),
            any(c.review for c in cands),
        )

    one(mated[0])  # warm up
    mated_out = [one(k) for k in tqdm(mated, desc=f"mated {size:,}", file=sys.stderr)]
    stranger_out = [one(k) for k in tqdm(strangers, desc=f"non-mated {size:,}", file=sys.stderr)]
    baseline = []
    index_fingers = shard.finger_gallery(2)
    assert index_fingers is not None
    for k in mated[:20]:
        t = time.perf_counter()
        search(probes[k].fingers[2].compact, index_fingers, top=10)
        baseline.append((time.perf_counter() - t) * 1000)
    return mated_out, stranger_out, baseline


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--probes", type=int, default=100, help="mated probes (as many non-mated)")
    ap.add_argument("--workers", type=int, default=2, help="processes building the gallery")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--impostor-pairs", type=int, default=2000)
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    started = time.perf_counter()
    stats = impostor_stats(args.seed, args.impostor_pairs)
    print(f"finger impostor stats (full templates, simulated): {stats}", file=sys.stderr)
    # Thresholds as the registry ships them; the z-scale fitted to these prints.
    settings = AbisSettings(finger_impostor=stats, face_impostor=ImpostorStats(mean=0.11, std=0.09))
    faces = Faces(args.seed)
    shard, rss, build_s = build_shard(sizes[-1], args.seed, args.workers, settings, faces)
    packed_per_person = shard.nbytes / len(shard)
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    rows = []
    fp_rows = []
    for size in sizes:
        view = shard if size == sizes[-1] else _head(shard, size, settings, faces)
        mated, strangers, base = run_size(view, size, args.seed, args.probes, settings, faces)
        everyone = mated + strangers
        walls = [o.wall_ms for o in everyone]
        cpus = [o.cpu_ms for o in everyone]
        b = statistics.median(base)
        rows.append(
            f"| {size:,} | {pct(walls, 50):.0f} | {pct(walls, 99):.0f} | {pct(cpus, 50):.0f} | "
            f"{pct(cpus, 99):.0f} | {b:.0f} | {pct(walls, 50) / b:.1f}x |"
        )
        mate_scores = [o.mate.score if o.mate else -np.inf for o in mated]
        mate_fingers = [o.mate.finger_score or 0.0 if o.mate else -np.inf for o in mated]
        imp = [o.impostor_max for o in strangers]
        imp_f = [o.impostor_fingers_max for o in strangers]
        for t in THRESHOLDS:
            fp_rows.append(
                f"| {size:,} | {t:.0f} | {sum(s >= t for s in imp) / len(imp):.1%} | "
                f"{sum(s < t for s in mate_scores) / len(mated):.1%} | "
                f"{sum(s >= t for s in imp_f) / len(imp):.1%} | "
                f"{sum(s < t for s in mate_fingers) / len(mated):.1%} |"
            )
        review = settings.thresholds
        false_pos = sum(o.review for o in strangers)
        false_neg = sum(not (o.mate and o.mate.review) for o in mated)
        at = (
            f"at review >= {review.review}: FPIR {false_pos}/{len(strangers)}, "
            f"FNIR {false_neg}/{len(mated)}; non-mated best score p50 {pct(imp, 50):.2f} "
            f"p99 {pct(imp, 99):.2f} max {max(imp):.2f}; "
            f"mate score min {min(mate_scores):.1f} p1 {pct(mate_scores, 1):.1f}"
        )
        fp_rows.append(f"|  | {at} | | | | |")
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}, "
        f"identify pinned to core {core}; {args.probes} mated + {args.probes} non-mated probes "
        f"per size; searched 1:N: fingers {list(settings.search_positions)} + face; verified: "
        f"ten fingers + face on up to {settings.verify_candidates} + {settings.face_shortlist} "
        f"entries; finger z-norm {stats.mean}/{stats.std}\n"
    )
    print(
        "| gallery (people) | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms "
        "| baseline: one finger 1:N, ms | p50 vs base |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(
        f"\nMemory: {packed_per_person:,.0f} B/person of packed templates and face "
        f"({len(shard):,} people: {shard.nbytes / 2**20:,.0f} MiB); process RSS grew "
        f"{rss / len(shard):,.0f} B/person while loading. Gallery built in {build_s:.0f} s "
        f"with {args.workers} workers.\n"
    )
    print(
        "| gallery | threshold | FPIR (fingers + face) | FNIR (fingers + face) "
        "| FPIR (fingers only) | FNIR (fingers only) |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(fp_rows))
    print(f"\ntotal {time.perf_counter() - started:.0f} s", file=sys.stderr)


def _head(shard: GalleryShard, size: int, settings: AbisSettings, faces: Faces) -> GalleryShard:
    """The first ``size`` people of a built shard, sharing its packed rows."""
    view = GalleryShard(settings.search_positions)
    infos = [EntryInfo(k + 1, uuid.UUID(int=k + 1), None, NOBODY) for k in range(size)]
    packed = {}
    for p in settings.search_positions:
        rows = shard.finger_gallery(p)
        assert rows is not None
        packed[p] = rows.head(size)
    view.add_packed(infos, packed, FACE_MODEL, faces.people(0, size))
    return view


if __name__ == "__main__":
    main()
