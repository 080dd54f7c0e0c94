"""Command line for the synthetic data sets.

    python -m biometrics.synth fingers --people 500 --impressions 4 --out data/fingers \\
        [--seed 7] [--rolled | --flat | --both] [--workers 2] [--fingers 1,2,6,7] \\
        [--format png|wsq] [--max-rotation 25] [--first-person 0] [--resume] [--masters]

    python -m biometrics.synth population --people 10000 --out data/population \\
        [--seed 7] [--duplicates 0.02] [--faces [--assets data/assets]]

``fingers`` writes one image per impression (8-bit grey, 500 ppi) and
``ground_truth.jsonl`` (person, ANSI/NIST finger position, impression, kind, class, seed,
skin condition, transform parameters, singular points) into the output folder; see
:mod:`biometrics.synth.fingers`.
``population`` writes ``people.jsonl`` (ground truth, with each person's face source
photo and its real identity) and ``enrollments.jsonl`` (what each enrollment declared,
with the person it really was and the face capture variation of that sitting); with
``--faces`` also ``faces/<enrollment_id>.jpg``, the portrait as captured, marked
synthetic (see :mod:`biometrics.synth.faces`; needs ``scripts/fetch_assets.py`` first).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from biometrics.fingerprint.synth import ImpressionKind
from biometrics.synth import faces, population
from biometrics.synth.fingers import (
    FingerSetSpec,
    default_workers,
    tune_process,
    write_finger_set,
)


def _fingers(text: str) -> tuple[int, ...]:
    """'1-10', '2,7' or '1-5,7' -> finger positions."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad finger list {text!r}") from None
        out.extend(range(first, last + 1))
    if not out or any(not 1 <= f <= 10 for f in out):
        raise argparse.ArgumentTypeError("finger positions are 1-10 (ANSI/NIST FGP)")
    return tuple(dict.fromkeys(out))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m biometrics.synth", description="Generate synthetic biometric data."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fp = sub.add_parser(
        "fingers",
        help="synthetic fingerprints (SFinGe-style) with ground truth",
        description="Master fingers and their impressions, PNG or WSQ, plus ground truth.",
    )
    fp.add_argument("--people", type=int, required=True, help="number of people")
    fp.add_argument("--impressions", type=int, required=True, help="impressions per finger")
    fp.add_argument("--out", type=Path, required=True, help="output folder")
    fp.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    kind = fp.add_mutually_exclusive_group()
    kind.add_argument(
        "--rolled", dest="kind", action="store_const", const="rolled", help="rolled (default)"
    )
    kind.add_argument("--flat", dest="kind", action="store_const", const="flat")
    kind.add_argument(
        "--both", dest="kind", action="store_const", const="both", help="rolled and flat"
    )
    fp.add_argument(
        "--workers", type=int, default=default_workers(), help="processes (default: cores)"
    )
    fp.add_argument(
        "--fingers", type=_fingers, default=tuple(range(1, 11)), help="positions, e.g. 1-10"
    )
    fp.add_argument("--format", choices=("png", "wsq"), default="png")
    fp.add_argument(
        "--max-rotation",
        type=float,
        default=None,
        help="largest rotation in degrees (default: 15 rolled, 25 flat)",
    )
    fp.add_argument("--first-person", type=int, default=0, help="number of the first person")
    fp.add_argument("--resume", action="store_true", help="skip fingers already written")
    fp.add_argument("--masters", action="store_true", help="also save each master pattern")
    pp = sub.add_parser(
        "population",
        help="synthetic residents in households, their enrollments and planted duplicates",
    )
    pp.add_argument("--people", type=int, required=True, help="number of residents")
    pp.add_argument("--out", type=Path, required=True, help="output folder")
    pp.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    pp.add_argument("--duplicates", type=float, default=0.02, help="fraction enrolled twice")
    pp.add_argument(
        "--faces",
        action="store_true",
        help="also write faces/<enrollment_id>.jpg (marked synthetic)",
    )
    pp.add_argument(
        "--assets",
        type=Path,
        default=DEFAULT_ASSETS,
        help="folder with the real source photos (default: data/assets of this checkout)",
    )
    return parser


# The source photos are fetched into the checkout by scripts/fetch_assets.py.
DEFAULT_ASSETS = Path(__file__).resolve().parents[2] / "data" / "assets"


def _load_sources(folder: Path) -> dict[str, faces.SourceFace] | str:
    """The studio sources, or why they cannot be made."""
    from PIL import Image

    from biometrics.face.pipeline import FaceAnalyzer

    missing = [n for n in faces.SOURCE_PHOTOS if not (folder / n).is_file()]
    if missing:
        return (
            f"the real face photos are not in {folder} (missing {', '.join(missing)}): "
            "run `.venv/bin/python scripts/fetch_assets.py` first, or pass --assets DIR"
        )
    photos = {n: np.asarray(Image.open(folder / n).convert("RGB")) for n in faces.SOURCE_PHOTOS}
    return faces.prepare_sources(photos, FaceAnalyzer())


def _population(args: argparse.Namespace) -> int:
    if args.people < 1 or not 0 <= args.duplicates <= 1:
        print("error: --people must be >= 1 and --duplicates in [0, 1]", file=sys.stderr)
        return 2
    sources: dict[str, faces.SourceFace] = {}
    if args.faces:
        loaded = _load_sources(args.assets)
        if isinstance(loaded, str):
            print(f"error: {loaded}", file=sys.stderr)
            return 2
        sources = loaded
    start = time.perf_counter()
    pop = population.generate(args.people, seed=args.seed, duplicate_fraction=args.duplicates)
    args.out.mkdir(parents=True, exist_ok=True)
    face_seeds = {p.person_id: p.face_seed for p in pop.people}
    with (args.out / "people.jsonl").open("w", encoding="utf-8") as fh:
        for p in tqdm(pop.people, unit="person", desc="people", file=sys.stderr):
            demographics = p.demographics.model_dump(mode="json", exclude_none=True)
            source = faces.source_for(p.face_seed)
            row = {"synthetic": True, "person_id": p.person_id, "household_id": p.household_id,
                   "finger_seed": p.finger_seed, "face_seed": p.face_seed,
                   "face_source": source, "face_identity": faces.SOURCE_PHOTOS[source],
                   "demographics": demographics}  # fmt: skip
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    sittings: Counter[str] = Counter()
    captures: list[tuple[str, str, faces.Capture]] = []
    with (args.out / "enrollments.jsonl").open("w", encoding="utf-8") as fh:
        for e in pop.enrollments:
            sittings[e.person_id] += 1
            seed = face_seeds[e.person_id]
            capture = faces.capture_for(seed, sittings[e.person_id])
            captures.append((e.enrollment_id, faces.source_for(seed), capture))
            row = {"synthetic": True, "enrollment_id": e.enrollment_id, "person_id": e.person_id,
                   "duplicate_of": e.duplicate_of, "impression_seed": e.impression_seed,
                   "face_capture": capture.as_json(),
                   "declared": e.declared.model_dump(mode="json", exclude_none=True)}  # fmt: skip
            if args.faces:
                row["face_image"] = f"faces/{e.enrollment_id}.jpg"
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    if args.faces:
        folder = args.out / "faces"
        folder.mkdir(exist_ok=True)
        for enrollment_id, source, capture in tqdm(
            captures, unit="face", desc="faces", file=sys.stderr
        ):
            image = faces.synthetic_face(sources[source], capture)
            (folder / f"{enrollment_id}.jpg").write_bytes(faces.encode_jpeg(image))
    dups = sum(e.duplicate_of is not None for e in pop.enrollments)
    print(
        f"{len(pop.people)} people, {len(pop.enrollments)} enrollments ({dups} duplicates) "
        f"in {time.perf_counter() - start:.1f} s -> {args.out}",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "population":
        return _population(args)
    kinds = {
        None: (ImpressionKind.ROLLED,),
        "rolled": (ImpressionKind.ROLLED,),
        "flat": (ImpressionKind.FLAT,),
        "both": (ImpressionKind.ROLLED, ImpressionKind.FLAT),
    }[args.kind]
    try:
        spec = FingerSetSpec(
            people=args.people,
            impressions=args.impressions,
            seed=args.seed,
            kinds=kinds,
            fingers=args.fingers,
            first_person=args.first_person,
            image_format=args.format,
            max_rotation=args.max_rotation,
            save_masters=args.masters,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tune_process()  # this process renders too when --workers 1
    total = len(spec.tasks())
    start = time.perf_counter()
    with tqdm(total=total, unit="finger", desc="fingers", file=sys.stderr) as bar:
        try:
            written = write_finger_set(
                spec, args.out, workers=args.workers, resume=args.resume, progress=bar.update
            )
        except ValueError as exc:
            bar.close()
            print(f"error: {exc}", file=sys.stderr)
            return 2
    elapsed = time.perf_counter() - start
    print(
        f"{written} impressions of {total} fingers in {elapsed:.1f} s -> {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
