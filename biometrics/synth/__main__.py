"""Command line for the synthetic data sets.

    python -m biometrics.synth fingers --people 500 --impressions 4 --out data/fingers \\
        [--seed 7] [--rolled | --flat | --both] [--workers 2] [--fingers 1,2,6,7] \\
        [--format png|wsq] [--max-rotation 25] [--first-person 0] [--resume] [--masters]

    python -m biometrics.synth population --people 10000 --out data/population \\
        [--seed 7] [--duplicates 0.02]

``fingers`` writes one image per impression (8-bit grey, 500 ppi) and
``ground_truth.jsonl`` (person, ANSI/NIST finger position, impression, kind, class, seed,
skin condition, transform parameters, singular points) into the output folder; see
:mod:`biometrics.synth.fingers`.
``population`` writes ``people.jsonl`` (ground truth) and ``enrollments.jsonl`` (what each
enrollment declared, with the person it really was).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from biometrics.fingerprint.synth import ImpressionKind
from biometrics.synth import population
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
    return parser


def _population(args: argparse.Namespace) -> int:
    if args.people < 1 or not 0 <= args.duplicates <= 1:
        print("error: --people must be >= 1 and --duplicates in [0, 1]", file=sys.stderr)
        return 2
    start = time.perf_counter()
    pop = population.generate(args.people, seed=args.seed, duplicate_fraction=args.duplicates)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "people.jsonl").open("w", encoding="utf-8") as fh:
        for p in tqdm(pop.people, unit="person", desc="people", file=sys.stderr):
            demographics = p.demographics.model_dump(mode="json", exclude_none=True)
            row = {"synthetic": True, "person_id": p.person_id, "household_id": p.household_id,
                   "finger_seed": p.finger_seed, "face_seed": p.face_seed,
                   "demographics": demographics}  # fmt: skip
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (args.out / "enrollments.jsonl").open("w", encoding="utf-8") as fh:
        for e in pop.enrollments:
            row = {"synthetic": True, "enrollment_id": e.enrollment_id, "person_id": e.person_id,
                   "duplicate_of": e.duplicate_of, "impression_seed": e.impression_seed,
                   "declared": e.declared.model_dump(mode="json", exclude_none=True)}  # fmt: skip
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
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
