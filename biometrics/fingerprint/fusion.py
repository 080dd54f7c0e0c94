"""Multi-finger score fusion for ten-print probes.

Scores of different fingers are put on one scale by z-normalisation against the impostor
distribution (Jain, Nandakumar, Ross, "Score normalization in multimodal biometric
systems", Pattern Recognition 38(12), 2005), then combined with the sum rule (evidence of
every finger adds up; the best single rule in Kittler et al., "On combining classifiers",
IEEE TPAMI 1998, when scores are noisy) or the max rule. Fingers missing from the probe
(amputated, unprintable, not captured) are skipped, never counted as a non-match.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from biometrics.fingerprint.matcher import Candidate

Rule = Literal["sum", "max", "mean"]


@dataclass(frozen=True)
class ZNorm:
    """``(score - mean) / std`` with the impostor mean and standard deviation."""

    mean: float
    std: float

    def __post_init__(self) -> None:
        if not self.std > 0:
            raise ValueError("ZNorm needs a positive standard deviation")

    @classmethod
    def fit(cls, impostor_scores: ArrayLike) -> ZNorm:
        """Estimate from impostor scores (at least two)."""
        s = np.asarray(impostor_scores, dtype=np.float64).reshape(-1)
        if len(s) < 2:
            raise ValueError("need at least two impostor scores")
        return cls(float(s.mean()), float(max(s.std(ddof=1), 1e-9)))

    def __call__(self, score: float) -> float:
        return (score - self.mean) / self.std


#: Impostor statistics of :func:`.matcher.verify` on the synthetic minutia sets
#: (2,000 impostor pairs of ``biometrics.fingerprint.simulate`` impressions): the
#: re-scoring's impostor scores are small and right-skewed (median 0.016, 99.9 % 0.10).
DEFAULT_ZNORM = ZNorm(mean=0.0225, std=0.0132)


def _norm_for(norm: ZNorm | Mapping[int, ZNorm], position: int) -> ZNorm:
    if isinstance(norm, ZNorm):
        return norm
    return norm[position]


def _combine(values: Sequence[float], rule: Rule) -> float:
    if not values:
        return math.nan
    if rule == "sum":
        return float(sum(values))
    if rule == "max":
        return float(max(values))
    if rule == "mean":
        return float(sum(values) / len(values))
    raise ValueError(f"unknown fusion rule {rule!r}")


def fuse(
    scores: Mapping[int, float | None],
    rule: Rule = "sum",
    norm: ZNorm | Mapping[int, ZNorm] = DEFAULT_ZNORM,
) -> float:
    """Fuse per-finger scores (finger position -> score; ``None``/NaN: missing).

    Returns NaN when no finger has a score. ``norm`` may differ per finger position.
    """
    values = [
        _norm_for(norm, pos)(float(s))
        for pos, s in scores.items()
        if s is not None and not math.isnan(float(s))
    ]
    return _combine(values, rule)


@dataclass(frozen=True)
class FusedCandidate:
    """A person found by a ten-print search: fused score and the per-finger scores."""

    label: int
    score: float
    fingers: dict[int, float] = field(default_factory=dict)  # position -> raw score


def fuse_candidates(
    per_finger: Mapping[int, Iterable[Candidate]],
    rule: Rule = "sum",
    norm: ZNorm | Mapping[int, ZNorm] = DEFAULT_ZNORM,
    top: int | None = None,
) -> list[FusedCandidate]:
    """Fuse the candidate lists of each searched finger into one list of persons.

    ``per_finger`` maps a finger position to that finger's search results (labels name
    persons). Only the fingers present here count: a finger the probe lacks is simply not
    searched. When a person is absent from one finger's list, that finger contributes the
    weakest score the list holds (what the person scored at most, as far as the search can
    tell), so being found on more fingers is what lifts a person.
    """
    lists = {pos: list(cands) for pos, cands in per_finger.items()}
    floors: dict[int, float] = {}
    raw: dict[int, dict[int, float]] = {}
    for pos, cands in lists.items():
        if not cands:
            continue
        floors[pos] = min(c.score for c in cands)
        for c in cands:
            prev = raw.setdefault(c.label, {}).get(pos)
            if prev is None or c.score > prev:
                raw[c.label][pos] = c.score
    fused = []
    for label, found in raw.items():
        values = [_norm_for(norm, pos)(found.get(pos, floor)) for pos, floor in floors.items()]
        fused.append(FusedCandidate(label, _combine(values, rule), dict(found)))
    fused.sort(key=lambda f: -f.score)
    return fused if top is None else fused[:top]
