"""Matched minutiae for the adjudicator's side-by-side view of two fingers.

The same alignment as the matcher's geometric re-scoring
(:func:`biometrics.fingerprint.matcher.pairing_scores`): the best local-similarity pairs
of the MCC cylinders are tried as anchors of a rigid alignment, the best is refined by a
least-squares fit on the pairs it found, and minutiae pair when they are mutually nearest
within the distance and direction tolerances. Here the pairs themselves are returned (the
matcher only counts them), with :func:`~biometrics.fingerprint.matcher.verify`'s score
on the full templates, so the adjudicator sees the evidence behind the number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from biometrics.fingerprint import mcc
from biometrics.fingerprint.matcher import (
    DEFAULT_PAIRING,
    PairingParams,
    _dphi,
    _mutual_pairs,
    _points,
    make_template,
    verify,
)
from biometrics.fingerprint.minutiae import MinutiaeExtractor, MinutiaSet

GreyImage = NDArray[np.uint8]


@dataclass(frozen=True, eq=False)
class MatchedMinutiae:
    """Pairs ``(i, j)``: minutia ``i`` of the first set matches minutia ``j`` of the
    second; ``score`` is the 1:1 score in [0, 1]; ``rotation`` (radians, counter-clockwise)
    and ``shift`` (x, y pixels) take the first print onto the second."""

    first: MinutiaSet
    second: MinutiaSet
    pairs: list[tuple[int, int]]
    score: float
    rotation: float
    shift: tuple[float, float]


def _minutia_index(
    ms: MinutiaSet, x: NDArray[np.uint16], y: NDArray[np.uint16]
) -> NDArray[np.intp]:
    """Which minutia each cylinder centre is (cylinders keep rounded coordinates)."""
    d = (ms.x[None, :] - x[:, None].astype(np.float64)) ** 2 + (
        ms.y[None, :] - y[:, None].astype(np.float64)
    ) ** 2
    return np.asarray(d.argmin(axis=1))


def match_minutiae(
    first: MinutiaSet, second: MinutiaSet, params: PairingParams = DEFAULT_PAIRING
) -> MatchedMinutiae:
    """The matched minutia pairs of two full minutia sets, and their score."""
    a = make_template(first, max_cylinders=0)
    b = make_template(second, max_cylinders=0)
    score = verify(a, b, params)
    ca, cb = a.cylinders, b.cylinders
    if len(ca) == 0 or len(cb) == 0:
        return MatchedMinutiae(first, second, [], score, 0.0, (0.0, 0.0))
    gamma = mcc.similarity_matrix(ca, cb)
    pa = _points(ca.x, ca.y, ca.angle)
    pb = _points(cb.x, cb.y, cb.angle)[None]
    valid = np.ones((1, len(cb)), bool)
    flat = gamma.reshape(-1)
    h = min(params.anchors, len(flat))
    top = np.argsort(-flat, kind="stable")[:h]
    ia, ib = top // len(cb), top % len(cb)
    rot = _dphi(pb[0, ib, 2] - pa[ia, 2])
    c, s = np.cos(rot), np.sin(rot)
    shift = np.stack(
        [
            pb[0, ib, 0] - (c * pa[ia, 0] - s * pa[ia, 1]),
            pb[0, ib, 1] - (s * pa[ia, 0] + c * pa[ia, 1]),
        ],
        axis=-1,
    )
    paired, partner = _mutual_pairs(pa, pb, valid, rot[None], shift[None], pa[ia, :2][None], params)
    paired &= (flat[top] > 0)[None, :, None]
    best = int(paired[0].sum(axis=1).argmax())
    ok, mate = paired[0, best], partner[0, best]
    r, t = float(rot[best]), shift[best]
    if params.refine and ok.sum() >= 3:
        # Least-squares rigid fit on the pairs found (2-D Procrustes), then pair again.
        qa, qb = pa[ok, :2], pb[0, mate[ok], :2]
        ma, mb = qa.mean(axis=0), qb.mean(axis=0)
        m = (qa - ma).T @ (qb - mb)
        r2 = float(np.arctan2(m[0, 1] - m[1, 0], m[0, 0] + m[1, 1]))
        c2, s2 = np.cos(r2), np.sin(r2)
        t2 = mb - np.array([c2 * ma[0] - s2 * ma[1], s2 * ma[0] + c2 * ma[1]])
        again, mate2 = _mutual_pairs(
            pa, pb, valid, np.array([[r2]]), t2[None, None, :], ma[None, None, :], params
        )
        if again[0, 0].sum() > ok.sum():
            ok, mate, r, t = again[0, 0], mate2[0, 0], r2, t2
    ia_all = _minutia_index(first, ca.x, ca.y)
    ib_all = _minutia_index(second, cb.x, cb.y)
    pairs = [(int(ia_all[i]), int(ib_all[mate[i]])) for i in np.flatnonzero(ok)]
    # y was flipped for the alignment (y up): report the motion in image coordinates.
    return MatchedMinutiae(first, second, pairs, score, r, (float(t[0]), float(-t[1])))


def match_images(
    first: GreyImage, second: GreyImage, extractor: MinutiaeExtractor, ppi: int = 500
) -> MatchedMinutiae:
    """:func:`match_minutiae` on the minutiae ``extractor`` finds in two finger images."""
    return match_minutiae(extractor.extract(first, ppi), extractor.extract(second, ppi))
