"""Command line for the synthetic data sets.

    python -m biometrics.synth fingers --people 500 --impressions 4 --out data/fingers \\
        [--seed 7] [--rolled | --flat | --both] [--workers 2] [--fingers 1,2,6,7] \\
        [--format png|wsq] [--max-rotation 25] [--first-person 0] [--resume] [--masters]

writes one image per impression (8-bit grey, 500 ppi) and ``ground_truth.jsonl`` (person,
ANSI/NIST finger position, impression, kind, class, seed, skin condition, transform
parameters, singular points) into the output folder; see :mod:`biometrics.synth.fingers`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from biometrics.fingerprint.synth import ImpressionKind
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
