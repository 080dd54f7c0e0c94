"""Fingerprint accuracy: EER and FNMR at FMR 1 % and 0.1 % for each extractor + matcher.

    .venv/bin/python bench/fingerprint_accuracy.py [--fingers 500] [--impressions 4]
        [--kind flat|rolled] [--max-rotation 25] [--seed 11] [--extractors mindtct,leader]
        [--matchers bozorth3,mcc,mcc-gallery,mcc-full] [--impostors 30000] [--workers 2]
        [--cache data/bench/accuracy] [--plot docs/img/fingerprint-det-flat.png]
        [--extract-only]

The set: ``--fingers`` synthetic master fingers (person ``i``, ANSI/NIST position
``1 + i % 10``, so the pattern classes come at their per-finger frequencies) with
``--impressions`` impressions each from :mod:`biometrics.fingerprint.synth`: rotation up
to ``--max-rotation`` degrees, translation, Cappelli's elastic distortion, drawn skin
condition (70 % normal, 15 % dry, 15 % wet), 12 % partial contact, sensor noise.

The protocol is FVC's: every pair of impressions of a finger is a genuine comparison
(``F * K * (K - 1) / 2``); the impostor comparisons pair the first impressions of two
different fingers: all ``F * (F - 1) / 2`` of them, or a seeded sample of ``--impostors``.
The thresholds for FMR 1 % and 0.1 % come from the impostor scores; ties at the threshold
count as matches.

Which genuine pairs are *matchable*: the generator knows which skin each impression shows
(:func:`.synth_impression.master_footprint`), so the area two impressions share is ground
truth. A pair sharing at least ``MATCHABLE_AREA`` px^2 (100 mm^2 at 500 ppi, about 10 x
10 mm, room for the ~12 corresponding minutiae a latent examiner asks for) is matchable;
FNMR is reported both over all genuine pairs and over the matchable ones.

Pipelines (extractor x matcher):

- ``bozorth3``: NIST Bozorth3 through nbis-py, on our minutiae written as nbis's
  ISO/IEC 19794-2 variant (any extractor, not only mindtct);
- ``mcc``: MCC with LSS on the 2 KB gallery template (32 cylinders): 1:N stage 2;
- ``mcc-gallery``: LSS + the geometric re-scoring on the 2 KB gallery templates
  (``matcher.verify``, 1:N stage 3 as it runs on the gallery rows);
- ``mcc-full``: the same on templates with every cylinder (no cap): the 1:1 verification
  the registry runs when the full ISO template is at hand (adjudication, re-scoring).

Minutiae are extracted once per set and cached under ``--cache`` (keyed by the set's
parameters, each impression's image sha256 recorded beside them), so a matcher can be
re-scored without re-extracting, and a slow extractor can run elsewhere (``--extract-only``
on a machine with more cores, then copy the cache file back: the hashes say whether that
machine rendered the same images).

Everything runs with single-threaded BLAS: on this 2-core machine a threaded BLAS under
load made one MCC comparison 20x slower.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from tqdm import tqdm  # noqa: E402

from biometrics.fingerprint.iso19794 import encode_minutiae  # noqa: E402
from biometrics.fingerprint.matcher import make_template, verify  # noqa: E402
from biometrics.fingerprint.mcc import score as mcc_score  # noqa: E402
from biometrics.fingerprint.minutiae import MinutiaeExtractor, MinutiaSet  # noqa: E402
from biometrics.fingerprint.synth import ImpressionKind, impression, master_finger  # noqa: E402
from biometrics.fingerprint.synth_impression import master_footprint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MATCHABLE_AREA = 40_000  # px^2 at 500 ppi = 100 mm^2
FOOTPRINT_STEP = 4  # px between the footprint's samples of the master
GATE = 35  # NFIQ 2 an enrolled impression must reach (the station re-captures below it)
GATES = (0, 30, 35, 40, 45, 50)  # the gate sweep
EXTRACTORS = ("mindtct", "leader", "leader@0.3")
MATCHERS = ("bozorth3", "mcc", "mcc-gallery", "mcc-full")
MATCHER_LABEL = {
    "bozorth3": "Bozorth3",
    "mcc": "MCC LSS, 2 KB template",
    "mcc-gallery": "MCC + re-scoring, 2 KB template",
    "mcc-full": "MCC + re-scoring, full template",
}


@dataclass(frozen=True)
class SetSpec:
    """The synthetic set: everything that decides its images."""

    fingers: int
    impressions: int
    kind: str
    max_rotation: float
    seed: int

    def key(self) -> str:
        return (
            f"{self.kind}-f{self.fingers}-k{self.impressions}-r{self.max_rotation:g}-s{self.seed}"
        )

    def finger_position(self, i: int) -> int:
        return 1 + i % 10


def _extractor(name: str) -> MinutiaeExtractor:
    if name == "mindtct":
        from biometrics.fingerprint.minutiae import MindtctExtractor

        return MindtctExtractor()
    if name.startswith("leader"):
        from biometrics.fingerprint.leader import DEFAULT_MIN_SCORE, LeaderExtractor

        # "leader@0.3": a lower detection threshold (more minutiae in dry and wet skin).
        _, _, score = name.partition("@")
        return LeaderExtractor(min_score=float(score) if score else DEFAULT_MIN_SCORE)
    raise ValueError(f"unknown extractor {name!r}; known: {', '.join(EXTRACTORS)}")


# --- extraction (worker side) -----------------------------------------------------------

_W: dict[str, Any] = {}


def _init_extract(spec: SetSpec, names: tuple[str, ...], nfiq2: bool) -> None:
    _W["spec"] = spec
    _W["extractors"] = {n: _extractor(n) for n in names}
    if nfiq2:
        from biometrics.fingerprint.quality import Nfiq2

        _W["nfiq2"] = Nfiq2()


def _extract_finger(i: int) -> dict[str, Any]:
    """Render the impressions of finger ``i`` and extract their minutiae."""
    spec: SetSpec = _W["spec"]
    pos = spec.finger_position(i)
    master = master_finger(spec.seed, i, pos)
    out: dict[str, Any] = {"finger": i, "shots": []}
    for j in range(spec.impressions):
        shot = impression(
            master, spec.seed, i, pos, j, ImpressionKind(spec.kind), max_rotation=spec.max_rotation
        )
        foot = master_footprint(shot.params, master.config.width, master.config.height)
        row: dict[str, Any] = {
            "sha": hashlib.sha256(shot.image.tobytes()).hexdigest(),
            "footprint": np.packbits(foot.ravel()),
            "footprint_shape": foot.shape,
            "condition": str(shot.params.condition),
            "partial": shot.params.partial,
            "minutiae": {},
            "seconds": {},
            "nfiq2": _W["nfiq2"].score(shot.image) if "nfiq2" in _W else -1,
        }
        for name, ex in _W["extractors"].items():
            t = time.process_time()  # CPU time: wall time on a shared machine says little
            ms = ex.extract(shot.image)
            row["seconds"][name] = time.process_time() - t
            row["minutiae"][name] = np.stack(
                [ms.x, ms.y, ms.angle, ms.kind.astype(np.float64), ms.quality.astype(np.float64)],
                axis=1,
            )
            row["size"] = (ms.width, ms.height)
        out["shots"].append(row)
    return out


# --- the cache --------------------------------------------------------------------------


@dataclass
class ExtractedSet:
    """One extractor's minutiae for every impression of a set, plus the ground truth."""

    spec: SetSpec
    extractor: str
    minutiae: list[NDArray[np.float64]]  # index finger * K + impression; (n, 5) each
    size: tuple[int, int]
    seconds: NDArray[np.float64]
    sha: list[str]
    footprints: NDArray[np.uint8]  # (F*K, packed bytes)
    footprint_shape: tuple[int, int]
    condition: list[str]
    partial: NDArray[np.bool_]
    nfiq2: NDArray[np.int16]  # NIST NFIQ 2 of each impression, -1 where not computed
    clock: str = "cpu"  # what ``seconds`` measured: "cpu", or "wall" in early caches

    def path(self, cache: Path) -> Path:
        return cache / self.spec.key() / f"{self.extractor}.npz"

    def save(self, cache: Path) -> Path:
        path = self.path(cache)
        path.parent.mkdir(parents=True, exist_ok=True)
        counts = np.array([len(m) for m in self.minutiae], dtype=np.int64)
        flat = np.concatenate(self.minutiae) if self.minutiae else np.zeros((0, 5))
        meta = {
            "spec": asdict(self.spec),
            "extractor": self.extractor,
            "size": self.size,
            "sha": self.sha,
            "condition": self.condition,
            "footprint_shape": self.footprint_shape,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "clock": self.clock,
        }
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            counts=counts,
            minutiae=flat,
            seconds=self.seconds,
            footprints=self.footprints,
            partial=self.partial,
            nfiq2=self.nfiq2,
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, cache: Path, spec: SetSpec, extractor: str) -> ExtractedSet | None:
        path = cache / spec.key() / f"{extractor}.npz"
        if not path.exists():
            return None
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            counts = data["counts"]
            flat = data["minutiae"]
            splits = np.cumsum(counts)[:-1]
            return cls(
                spec=spec,
                extractor=extractor,
                minutiae=list(np.split(flat, splits)),
                size=tuple(meta["size"]),
                seconds=data["seconds"],
                sha=list(meta["sha"]),
                footprints=data["footprints"],
                footprint_shape=tuple(meta["footprint_shape"]),
                condition=list(meta["condition"]),
                partial=data["partial"],
                nfiq2=data["nfiq2"] if "nfiq2" in data else np.full(len(counts), -1, np.int16),
                clock=meta.get("clock", "wall"),
            )

    def minutia_set(self, index: int) -> MinutiaSet:
        m = self.minutiae[index]
        return MinutiaSet.from_arrays(
            m[:, 0], m[:, 1], m[:, 2], kind=m[:, 3], quality=m[:, 4],
            width=self.size[0], height=self.size[1],
        )  # fmt: skip

    def footprint(self, index: int) -> NDArray[np.bool_]:
        n = self.footprint_shape[0] * self.footprint_shape[1]
        bits = np.unpackbits(self.footprints[index], count=n).astype(bool)
        return bits.reshape(self.footprint_shape)


def extract_set(
    spec: SetSpec, names: Sequence[str], workers: int, cache: Path, nfiq2: bool = False
) -> dict[str, ExtractedSet]:
    """Extract (or load) the minutiae of every impression for each extractor."""
    out: dict[str, ExtractedSet] = {}
    todo = []
    for name in names:
        got = ExtractedSet.load(cache, spec, name)
        if got is not None:
            out[name] = got
        else:
            todo.append(name)
    if not todo:
        return out
    rows: list[dict[str, Any]] = []
    args = (spec, tuple(todo), nfiq2)
    desc = f"render + extract ({', '.join(todo)})"
    with tqdm(total=spec.fingers, unit="finger", desc=desc, file=sys.stderr) as bar:
        if workers <= 1:
            _init_extract(*args)
            for i in range(spec.fingers):
                rows.append(_extract_finger(i))
                bar.update()
        else:
            with ProcessPoolExecutor(workers, initializer=_init_extract, initargs=args) as pool:
                for row in pool.map(_extract_finger, range(spec.fingers), chunksize=2):
                    rows.append(row)
                    bar.update()
    shots = [s for r in sorted(rows, key=lambda r: r["finger"]) for s in r["shots"]]
    for name in todo:
        es = ExtractedSet(
            spec=spec,
            extractor=name,
            minutiae=[s["minutiae"][name] for s in shots],
            size=tuple(shots[0]["size"]),
            seconds=np.array([s["seconds"][name] for s in shots]),
            sha=[s["sha"] for s in shots],
            footprints=np.stack([s["footprint"] for s in shots]),
            footprint_shape=tuple(shots[0]["footprint_shape"]),
            condition=[s["condition"] for s in shots],
            partial=np.array([s["partial"] for s in shots]),
            nfiq2=np.array([s["nfiq2"] for s in shots], dtype=np.int16),
        )
        print(f"cached {es.save(cache)}", file=sys.stderr)
        out[name] = es
    return out


# --- comparisons (worker side) ----------------------------------------------------------


def nbis_record(minutiae: MinutiaSet) -> bytes:
    """Our minutiae in the ISO/IEC 19794-2 variant that nbis-py's loader reads: a 26-byte
    header (no per-view impression/quality bytes, no extended-data length) and qualities
    on 0-63; the 6-byte minutia blocks are the standard's (tests/test_iso19794.py)."""
    record = encode_minutiae(minutiae)
    w, h = struct.unpack(">HH", record[14:18])
    n = record[27]
    blocks = bytearray(record[28 : 28 + 6 * n])
    for k in range(n):
        blocks[6 * k + 5] = min(63, blocks[6 * k + 5] * 63 // 100)
    head = struct.pack(">IHHHHHBBBB", 26 + 6 * n, 0, w, h, 0, 0, 0, 0, 0, n)
    return b"FMR\x00 20\x00" + head + bytes(blocks)


def _bozorth_templates(es: ExtractedSet) -> list[Any]:
    import nbis

    settings = nbis.NbisExtractorSettings(
        min_quality=0.0, get_center=False, check_fingerprint=False, compute_nfiq2=False, ppi=500.0
    )
    loader = nbis.new_nbis_extractor(settings)
    return [
        loader.load_iso_19794_2_2005(nbis_record(es.minutia_set(i)))
        for i in range(len(es.minutiae))
    ]


def _init_match(cache: Path, spec: SetSpec, extractor: str, matcher: str) -> None:
    es = ExtractedSet.load(cache, spec, extractor)
    assert es is not None
    _W.clear()
    _W["matcher"] = matcher
    if matcher == "bozorth3":
        _W["templates"] = _bozorth_templates(es)
    else:
        cap = 0 if matcher == "mcc-full" else None
        _W["templates"] = [
            make_template(es.minutia_set(i), max_cylinders=cap) for i in range(len(es.minutiae))
        ]


def _score_pairs(pairs: NDArray[np.int64]) -> tuple[NDArray[np.float64], float]:
    templates: list[Any] = _W["templates"]
    matcher: str = _W["matcher"]
    fn: Callable[[Any, Any], float]
    if matcher == "bozorth3":
        fn = lambda a, b: float(a.compare(b))  # noqa: E731
    elif matcher == "mcc":
        fn = lambda a, b: mcc_score(a.cylinders, b.cylinders)  # noqa: E731
    else:
        fn = verify
    t = time.process_time()
    out = np.array([fn(templates[a], templates[b]) for a, b in pairs], dtype=np.float64)
    return out, time.process_time() - t


def score_pairs(
    cache: Path, spec: SetSpec, extractor: str, matcher: str, pairs: NDArray[np.int64],
    workers: int, desc: str,
) -> tuple[NDArray[np.float64], float]:  # fmt: skip
    """Scores of ``pairs`` (rows of two impression indices) and the CPU seconds per
    comparison (summed over workers)."""
    chunks = np.array_split(pairs, max(1, math.ceil(len(pairs) / 500)))
    scores: list[NDArray[np.float64]] = []
    busy = 0.0
    args = (cache, spec, extractor, matcher)
    with tqdm(total=len(pairs), unit="cmp", desc=desc, file=sys.stderr) as bar:
        if workers <= 1:
            _init_match(*args)
            results = map(_score_pairs, chunks)
            for s, sec in results:
                scores.append(s)
                busy += sec
                bar.update(len(s))
        else:
            with ProcessPoolExecutor(workers, initializer=_init_match, initargs=args) as pool:
                for s, sec in pool.map(_score_pairs, chunks):
                    scores.append(s)
                    busy += sec
                    bar.update(len(s))
    return np.concatenate(scores), busy / max(len(pairs), 1)


# --- metrics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    eer: float
    fnmr_at: dict[float, float]  # FMR target -> FNMR
    threshold_at: dict[float, float]


def threshold_for(impostor: NDArray[np.float64], fmr: float) -> float:
    """The lowest threshold whose FMR (share of impostors scoring >= it) is <= ``fmr``."""
    s = np.sort(impostor)[::-1]
    allowed = math.floor(fmr * len(s))  # impostors allowed at or above the threshold
    if allowed >= len(s):
        return float(s[-1])
    # Just above the (allowed+1)-th highest impostor: ties there would exceed the budget.
    return float(np.nextafter(s[allowed], np.inf))


def rates(genuine: NDArray[np.float64], impostor: NDArray[np.float64]) -> Rates:
    fnmr_at, thr_at = {}, {}
    for fmr in (0.01, 0.001):
        thr = threshold_for(impostor, fmr)
        thr_at[fmr] = thr
        fnmr_at[fmr] = float(np.mean(genuine < thr))
    fmr_c, fnmr_c = det_curve(genuine, impostor)
    k = int(np.argmin(np.abs(fmr_c - fnmr_c)))
    return Rates(float((fmr_c[k] + fnmr_c[k]) / 2), fnmr_at, thr_at)


def det_curve(
    genuine: NDArray[np.float64], impostor: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(FMR, FNMR) at every distinct score taken as the threshold (accept >= t)."""
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    g, i = np.sort(genuine), np.sort(impostor)
    fnmr = np.searchsorted(g, thresholds, side="left") / max(len(g), 1)
    fmr = 1.0 - np.searchsorted(i, thresholds, side="left") / max(len(i), 1)
    return fmr, fnmr


# --- the run ----------------------------------------------------------------------------


def genuine_pairs(spec: SetSpec) -> NDArray[np.int64]:
    k = spec.impressions
    rows = [
        (f * k + a, f * k + b)
        for f in range(spec.fingers)
        for a, b in itertools.combinations(range(k), 2)
    ]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def impostor_pairs(spec: SetSpec, limit: int | None) -> NDArray[np.int64]:
    k = spec.impressions
    f = spec.fingers
    total = f * (f - 1) // 2
    if limit is None or limit >= total:
        a, b = np.triu_indices(f, 1)
    else:
        rng = np.random.default_rng([spec.seed, 0xB1A5])
        chosen = np.sort(rng.choice(total, size=limit, replace=False))
        a, b = np.triu_indices(f, 1)
        a, b = a[chosen], b[chosen]
    return np.stack([a * k, b * k], axis=1).astype(np.int64)


def overlap_areas(es: ExtractedSet, pairs: NDArray[np.int64]) -> NDArray[np.float64]:
    feet = [es.footprint(i) for i in range(len(es.minutiae))]
    return np.array(
        [float((feet[a] & feet[b]).sum()) * FOOTPRINT_STEP**2 for a, b in pairs], dtype=np.float64
    )


def _gated(
    g: NDArray[np.float64], i: NDArray[np.float64], gp: NDArray[np.int64],
    ip: NDArray[np.int64], matchable: NDArray[np.bool_], nfiq: NDArray[np.int16], gate: int,
) -> str:  # fmt: skip
    """FNMR at FMR 0.1 % over the pairs whose two impressions both pass ``gate``."""
    ok = nfiq >= gate
    sel_g = matchable & ok[gp[:, 0]] & ok[gp[:, 1]]
    sel_i = ok[ip[:, 0]] & ok[ip[:, 1]]
    if not sel_g.any() or not sel_i.any():
        return "n/a"
    return _pct(rates(g[sel_g], i[sel_i]).fnmr_at[0.001])


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def plot_det(
    panels: dict[str, dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]],
    title: str,
    path: Path,
) -> None:
    """One log-log DET panel per genuine-pair selection, a curve per pipeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 6.4), dpi=110,
                             squeeze=False)  # fmt: skip
    for ax, (panel, curves) in zip(axes[0], panels.items(), strict=True):
        for label, (fmr, fnmr) in curves.items():
            keep = (fmr > 0) & (fnmr > 0)
            # Colour by matcher, line style by extractor: the two questions a reader asks.
            extractor, _, matcher = label.partition(" + ")
            colour = f"C{list(MATCHER_LABEL.values()).index(matcher) % 10}"
            style = ("-", "--", ":", "-.")[EXTRACTORS.index(extractor) % 4]
            ax.plot(fmr[keep], fnmr[keep], label=label, linewidth=1.4, color=colour,
                    linestyle=style)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(1e-5, 1)
        ax.set_ylim(1e-3, 1)
        for target in (0.01, 0.001):
            ax.axvline(target, color="grey", linewidth=0.6, linestyle=":")
        ax.axhline(0.01, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xlabel("FMR (false match rate)")
        ax.set_ylabel("FNMR (false non-match rate)")
        ax.set_title(panel, fontsize=9)
        ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    # One legend under the panels: inside, it would hide the best curves (lower left).
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = 3 if len(panels) > 1 else 1  # one panel is too narrow for three columns
    rows = math.ceil(len(labels) / ncol)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0.0, 0.035 * rows + 0.02, 1.0, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--fingers", type=int, default=500)
    ap.add_argument("--impressions", type=int, default=4)
    ap.add_argument("--kind", choices=("flat", "rolled"), default="flat")
    ap.add_argument("--max-rotation", type=float, default=25.0)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--extractors", default="mindtct,leader")
    ap.add_argument("--matchers", default=",".join(MATCHERS))
    ap.add_argument("--impostors", type=int, default=30_000, help="0: all pairs")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", type=Path, default=ROOT / "data" / "bench" / "accuracy")
    ap.add_argument("--plot", type=Path, help="DET plot PNG (default: none)")
    ap.add_argument("--json", type=Path, help="write the figures as JSON too")
    ap.add_argument("--extract-only", action="store_true", help="fill the cache and stop")
    ap.add_argument(
        "--nfiq2", action="store_true", help="also score every impression with NIST NFIQ 2"
    )
    ap.add_argument(
        "--gate", type=int, default=GATE, help=f"enrollment quality gate (NFIQ 2, default {GATE})"
    )
    args = ap.parse_args(argv)
    if args.fingers < 2 or args.impressions < 2:
        ap.error("need at least 2 fingers and 2 impressions")
    extractors = [e for e in args.extractors.split(",") if e]
    matchers = [m for m in args.matchers.split(",") if m]
    for e in extractors:
        if e not in EXTRACTORS:
            ap.error(f"unknown extractor {e!r}")
    for m in matchers:
        if m not in MATCHERS:
            ap.error(f"unknown matcher {m!r}")
    spec = SetSpec(args.fingers, args.impressions, args.kind, args.max_rotation, args.seed)
    sets = extract_set(spec, extractors, args.workers, args.cache, args.nfiq2)
    if args.extract_only:
        return 0
    # Every extractor's cache must describe the same images.
    base = sets[extractors[0]]
    for name, es in sets.items():
        differ = sum(a != b for a, b in zip(es.sha, base.sha, strict=True))
        if differ:
            print(f"WARNING: {name}: {differ} of {len(es.sha)} images differ from "
                  f"{extractors[0]}'s (rendered on another machine?)", file=sys.stderr)  # fmt: skip

    gp = genuine_pairs(spec)
    ip = impostor_pairs(spec, args.impostors or None)
    area = overlap_areas(base, gp)
    matchable = area >= MATCHABLE_AREA
    print(f"\n### {spec.kind} impressions: {spec.fingers} fingers x {spec.impressions}, "
          f"rotation up to {spec.max_rotation:g} deg, seed {spec.seed}, {date.today()}, "
          f"{platform.machine()}, Python {platform.python_version()}\n")  # fmt: skip
    conditions = {c: base.condition.count(c) for c in sorted(set(base.condition))}
    print(f"{len(gp):,} genuine pairs ({int(matchable.sum()):,} matchable: sharing >= "
          f"{MATCHABLE_AREA:,} px^2; median shared {np.median(area):,.0f} px^2), "
          f"{len(ip):,} impostor pairs; skin {conditions}, "
          f"{int(base.partial.sum())} partial contact\n")  # fmt: skip
    print("| extractor | s/image | minutiae (median) |\n|---|---|---|")
    for name, es in sets.items():
        counts = [len(m) for m in es.minutiae]
        print(f"| {name} | {np.median(es.seconds):.3f} {es.clock} | {np.median(counts):.0f} |")
    print()
    nfiq = next((es.nfiq2 for es in sets.values() if bool((es.nfiq2 >= 0).all())), None)
    gate_g = gate_i = None
    if nfiq is not None:
        passing = nfiq >= args.gate
        gate_g = matchable & passing[gp[:, 0]] & passing[gp[:, 1]]
        gate_i = passing[ip[:, 0]] & passing[ip[:, 1]]
        print(f"NFIQ 2 median {np.median(nfiq):.0f}; {100 * passing.mean():.1f} % of impressions "
              f"pass the gate NFIQ 2 >= {args.gate}: {int(gate_g.sum()):,} matchable genuine "
              f"and {int(gate_i.sum()):,} impostor pairs where both do\n")  # fmt: skip
    print(
        "| extractor + matcher | CPU ms/cmp | EER | FNMR @ FMR 1 % | FNMR @ FMR 0.1 % "
        "| matchable: EER | FNMR @ 1 % | FNMR @ 0.1 % | gated: FNMR @ 1 % | FNMR @ 0.1 % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    curves: dict[str, dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]] = {
        "matchable": {}, "gated": {}
    }  # fmt: skip
    results: list[dict[str, Any]] = []
    breakdown: list[str] = []
    sweep: list[str] = []
    cond = np.array(base.condition)
    skin_pairs = {
        "normal skin, full contact": (cond[gp[:, 0]] == "normal") & (cond[gp[:, 1]] == "normal")
        & ~base.partial[gp[:, 0]] & ~base.partial[gp[:, 1]],
        "normal skin, partial contact": (cond[gp[:, 0]] == "normal")
        & (cond[gp[:, 1]] == "normal") & (base.partial[gp[:, 0]] | base.partial[gp[:, 1]]),
        "a dry impression": (cond[gp[:, 0]] == "dry") | (cond[gp[:, 1]] == "dry"),
        "a wet impression": (cond[gp[:, 0]] == "wet") | (cond[gp[:, 1]] == "wet"),
    }  # fmt: skip
    for name in sets:
        for matcher in matchers:
            label = f"{name} + {MATCHER_LABEL[matcher]}"
            g, sec_g = score_pairs(args.cache, spec, name, matcher, gp, args.workers,
                                   f"{name}/{matcher} genuine")  # fmt: skip
            i, sec_i = score_pairs(args.cache, spec, name, matcher, ip, args.workers,
                                   f"{name}/{matcher} impostor")  # fmt: skip
            r_all = rates(g, i)
            r_m = rates(g[matchable], i)
            ms = 1000 * (sec_g * len(gp) + sec_i * len(ip)) / (len(gp) + len(ip))
            gated = "n/a | n/a"
            row: dict[str, Any] = {
                "extractor": name, "matcher": matcher, "ms_per_comparison": ms,
                "eer": r_all.eer, "fnmr_fmr1": r_all.fnmr_at[0.01],
                "fnmr_fmr01": r_all.fnmr_at[0.001], "matchable_eer": r_m.eer,
                "matchable_fnmr_fmr1": r_m.fnmr_at[0.01],
                "matchable_fnmr_fmr01": r_m.fnmr_at[0.001],
                "threshold_fmr01": r_all.threshold_at[0.001],
            }  # fmt: skip
            curves["matchable"][label] = det_curve(g[matchable], i)
            if gate_g is not None and gate_i is not None:
                r_q = rates(g[gate_g], i[gate_i])
                gated = f"{_pct(r_q.fnmr_at[0.01])} | {_pct(r_q.fnmr_at[0.001])}"
                row |= {
                    "gated_fnmr_fmr1": r_q.fnmr_at[0.01],
                    "gated_fnmr_fmr01": r_q.fnmr_at[0.001],
                }
                curves["gated"][label] = det_curve(g[gate_g], i[gate_i])
            print(f"| {label} | {ms:.2f} | {_pct(r_all.eer)} | {_pct(r_all.fnmr_at[0.01])} | "
                  f"{_pct(r_all.fnmr_at[0.001])} | {_pct(r_m.eer)} | {_pct(r_m.fnmr_at[0.01])} | "
                  f"{_pct(r_m.fnmr_at[0.001])} | {gated} |", flush=True)  # fmt: skip
            cells = []
            for sel in skin_pairs.values():
                both = sel & matchable
                miss = float(np.mean(g[both] < r_all.threshold_at[0.001])) if both.any() else 0.0
                cells.append(f"{_pct(miss)} of {int(both.sum()):,}")
            breakdown.append(f"| {label} | " + " | ".join(cells) + " |")
            if nfiq is not None:
                sweep.append(f"| {label} | " + " | ".join(_gated(g, i, gp, ip, matchable, nfiq, q)
                                                        for q in GATES) + " |")  # fmt: skip
            results.append(row)
    print("\nFNMR at FMR 0.1 % by the skin in the pair (matchable pairs):\n")
    print("| extractor + matcher | " + " | ".join(skin_pairs) + " |")
    print("|---|" + "---|" * len(skin_pairs))
    print("\n".join(breakdown))
    if nfiq is not None:
        print(
            "\nFNMR at FMR 0.1 % when both impressions of every pair (genuine and impostor) "
            "reach an NFIQ 2 gate (matchable pairs; the share of impressions passing):\n"
        )
        print(
            "| extractor + matcher | "
            + " | ".join(f"NFIQ 2 >= {q} ({100 * float((nfiq >= q).mean()):.0f} %)" for q in GATES)
            + " |"
        )
        print("|---|" + "---|" * len(GATES))
        print("\n".join(sweep))  # fmt: skip
    if args.plot:
        title = (f"DET, synthetic {spec.kind} impressions ({spec.fingers} fingers x "
                 f"{spec.impressions}), {len(ip):,} impostor pairs")  # fmt: skip
        panels = {
            f"matchable genuine pairs ({int(matchable.sum()):,})": curves["matchable"],
        }
        if gate_g is not None:
            panels[f"both NFIQ 2 >= {args.gate} ({int(gate_g.sum()):,})"] = curves["gated"]
        plot_det(panels, title, args.plot)
        print(f"\nDET plot: {args.plot}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"spec": asdict(spec), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
