"""Finger templates, 1:1 verification and 1:N search.

A :class:`FingerTemplate` is what the registry stores per finger: MCC cylinders (see
:mod:`.mcc`) plus a minutia-pair signature (see :mod:`.prefilter`), at most 2 KB.

1:1 (:func:`verify`): MCC local similarities between all cylinder pairs, then a geometric
re-scoring: the best cylinder pairs are tried as anchors of a rigid alignment (rotation
from the two minutiae's directions, translation from their positions, the Hough-style
single-pair hypothesis of Ratha et al., "A real-time matching system for large fingerprint
databases", IEEE TPAMI 1996), the alignment is refined by least squares on the pairs it
finds, and the score is ``paired^2 / (nA * nB)`` over mutually nearest minutiae within a
distance tolerance that grows with the distance from the anchor (skin stretches) and
within a direction tolerance. 1 for a template against itself.

1:N (:func:`search`), three stages, each on fewer candidates:

1. pair signatures: one AND + popcount over the packed gallery, keep the best
   ``prefilter_keep`` (a fraction, at least ``prefilter_min``);
2. MCC with LSS on those, in batches of a few matrix products; keep the best
   ``shortlist`` (or ``shortlist_fraction`` of them), plus the ``signature_shortlist`` best
   by signature;
3. the geometric re-scoring above on the shortlist; the final order.

Stored template layout (little-endian; 1,964 bytes for 32 cylinders)::

    0  4   b"FMC1"
    4  1   NS            5  1  ND
    6  1   n cylinders   7  1  W, signature words
    8  2   width         10 2  height
    12     x: uint16[n], y: uint16[n], angle: uint8[n] (1.40625-degree units),
           masks: n * ceil(NS-disc cells / 8) bytes, values: n * ceil(ND * cells / 8) bytes,
           signature: uint64[W]
"""

from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from biometrics.errors import TemplateFormatError
from biometrics.fingerprint import mcc, prefilter
from biometrics.fingerprint.mcc import ANGLE_UNIT, DEFAULT_PARAMS, MccParams, MccTemplate
from biometrics.fingerprint.minutiae import TWO_PI, MinutiaSet
from biometrics.fingerprint.prefilter import DEFAULT_SIGNATURE, SignatureParams

MAGIC = b"FMC1"
_HEAD = struct.Struct("<4sBBBBHH")


@dataclass(frozen=True, eq=False)
class FingerTemplate:
    """MCC cylinders and the pair signature of one finger impression."""

    cylinders: MccTemplate
    signature: NDArray[np.uint64]

    def to_bytes(self) -> bytes:
        """Serialise (layout in the module docstring)."""
        c = self.cylinders
        head = _HEAD.pack(
            MAGIC, c.params.ns, c.params.nd, len(c), len(self.signature), c.width, c.height
        )
        parts = [
            c.x.astype("<u2").tobytes(),
            c.y.astype("<u2").tobytes(),
            c.angle.tobytes(),
            c.masks.tobytes(),
            c.values.tobytes(),
            self.signature.astype("<u8").tobytes(),
        ]
        return head + b"".join(parts)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        params: MccParams = DEFAULT_PARAMS,
        sig_params: SignatureParams = DEFAULT_SIGNATURE,
    ) -> FingerTemplate:
        """Parse strictly; :class:`TemplateFormatError` names what is wrong."""
        buf = bytes(data)
        if len(buf) < _HEAD.size:
            raise TemplateFormatError(f"finger template truncated: {len(buf)} bytes")
        magic, ns, nd, n, w, width, height = _HEAD.unpack_from(buf, 0)
        if magic != MAGIC:
            raise TemplateFormatError(f"finger template magic {magic!r}, expected {MAGIC!r}")
        if (ns, nd) != (params.ns, params.nd):
            raise TemplateFormatError(
                f"template made with NS={ns}, ND={nd}; this matcher uses "
                f"NS={params.ns}, ND={params.nd}: re-extract it"
            )
        if w != sig_params.words:
            raise TemplateFormatError(f"signature of {w} words, expected {sig_params.words}")
        if width == 0 or height == 0:
            raise TemplateFormatError("template image size is zero")
        vb, mb = params.value_bytes, params.mask_bytes
        expect = _HEAD.size + n * (5 + mb + vb) + 8 * w
        if len(buf) != expect:
            raise TemplateFormatError(
                f"finger template is {len(buf)} bytes, its header says {expect}"
            )
        pos = _HEAD.size

        def take(size: int, dtype: str) -> NDArray[np.generic]:
            nonlocal pos
            arr = np.frombuffer(
                buf, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=pos
            )
            pos += size
            return arr

        x = take(2 * n, "<u2").astype(np.uint16)
        y = take(2 * n, "<u2").astype(np.uint16)
        angle = take(n, "u1").astype(np.uint8)
        masks = take(n * mb, "u1").reshape(n, mb).astype(np.uint8)
        values = take(n * vb, "u1").reshape(n, vb).astype(np.uint8)
        sig = take(8 * w, "<u8").astype(np.uint64)
        if np.any(x >= width) or np.any(y >= height):
            raise TemplateFormatError("a cylinder's minutia lies outside the image")
        # Padding bits past the last cell must be zero, and no value bit may sit in a cell
        # marked invalid (the comparisons rely on both).
        vbits = np.unpackbits(values, axis=1)
        mbits = np.unpackbits(masks, axis=1)
        if vbits[:, params.n_bits :].any() or mbits[:, params.n_cells :].any():
            raise TemplateFormatError("padding bits of a cylinder are set")
        cells = vbits[:, : params.n_bits].reshape(n, params.nd, params.n_cells)
        if np.any(cells & ~mbits[:, None, : params.n_cells].astype(bool)):
            raise TemplateFormatError("a cylinder has bits set in cells marked invalid")
        cyl = MccTemplate(values, masks, x, y, angle, width, height, params)
        return cls(cyl, sig)

    @property
    def nbytes(self) -> int:
        """Serialised size."""
        return _HEAD.size + self.cylinders.nbytes + int(self.signature.nbytes)


def make_template(
    minutiae: MinutiaSet,
    params: MccParams = DEFAULT_PARAMS,
    sig_params: SignatureParams = DEFAULT_SIGNATURE,
    max_cylinders: int | None = None,
) -> FingerTemplate:
    """The finger template of a minutia set (see :func:`.mcc.cylinders` for the cap)."""
    return FingerTemplate(
        mcc.cylinders(minutiae, params, max_cylinders), prefilter.signature(minutiae, sig_params)
    )


# --- geometric re-scoring ---------------------------------------------------------------


@dataclass(frozen=True)
class PairingParams:
    """Alignment and pairing tolerances (pixels at 500 ppi, radians).

    Tuned on 500 synthetic fingers x 4 flat impressions (``bench/fingerprint_accuracy.py``):
    impostors of the same pattern class share the ridge flow, so their minutiae line up
    by chance under loose tolerances. Going from 12 px / 25 degrees to 7 px / 12 degrees
    (the stretch term still allows ~14 px at 150 px from the anchor, what the elastic
    distortion needs) took FNMR at FMR 0.1 % on matchable pairs from 25 % to 16 %
    (mindtct) and from 12 % to 4.7 % (LEADER), with no loss on clean prints.
    """

    anchors: int = 8  # best local-similarity pairs tried as alignment hypotheses
    distance: float = 7.0  # tolerance at the anchor ...
    stretch: float = 0.05  # ... plus this fraction of the distance from the anchor
    angle: float = math.radians(12.0)
    refine: bool = True
    # Normalisation: "counts" divides paired^2 by nA * nB, all the minutiae of both;
    # "overlap" by the minutiae of each that lie in the common area under the alignment
    # (within ``overlap_radius`` of a minutia of the other), floored at ``overlap_floor``
    # so that a sliver of overlap cannot score high on a handful of chance pairs.
    normalise: str = "overlap"
    overlap_radius: float = 40.0
    overlap_floor: int = 16


DEFAULT_PAIRING = PairingParams()


def _dphi(a: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray((a + math.pi) % TWO_PI - math.pi)


def _moved(
    a: NDArray[np.float64], rot: NDArray[np.float64], shift: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """x and y of the points ``a`` (n, >=2) under rigid motions: ``rot`` of any shape
    (...), ``shift`` (..., 2); the result has shape (..., n)."""
    c, s = np.cos(rot)[..., None], np.sin(rot)[..., None]
    mx = c * a[:, 0] - s * a[:, 1] + shift[..., 0:1]
    my = s * a[:, 0] + c * a[:, 1] + shift[..., 1:2]
    return mx, my


def _mutual_pairs(
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    b_valid: NDArray[np.bool_],
    rot: NDArray[np.float64],
    shift: NDArray[np.float64],
    origin: NDArray[np.float64],
    p: PairingParams,
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Which minutiae of A pair with which of B under H rigid hypotheses per candidate.

    ``a`` (nA, 3) x, y, direction of the probe; ``b`` (S, C, 3) of S candidates, of which
    ``b_valid`` (S, C) exist; ``rot`` (S, H), ``shift`` (S, H, 2), ``origin`` (S, H, 2).
    A minutia of A, moved by a hypothesis, pairs with its nearest minutia of B within the
    tolerances if that one's nearest is it in turn. Returns (S, H, nA) paired flags and
    (S, H, nA) partner indices.
    """
    mx, my = _moved(a, rot, shift)  # (S, H, nA)
    ex = mx[..., None] - b[:, None, None, :, 0]
    ey = my[..., None] - b[:, None, None, :, 1]
    d = ex * ex
    d += ey * ey  # squared distances (S, H, nA, C)
    reach = np.hypot(a[:, 0] - origin[..., 0:1], a[:, 1] - origin[..., 1:2])
    ok = d <= ((p.distance + p.stretch * reach) ** 2)[..., None]
    # Direction agreement as cos(turned A direction - B direction) >= cos(tolerance).
    ta = a[:, 2] + rot[..., None]  # (S, H, nA)
    cos_turn = np.cos(ta)[..., None] * np.cos(b[:, None, None, :, 2])
    cos_turn += np.sin(ta)[..., None] * np.sin(b[:, None, None, :, 2])
    ok &= cos_turn >= math.cos(p.angle)
    ok &= b_valid[:, None, None, :]
    d = np.where(ok, d, np.inf)
    best_b = d.argmin(axis=3)  # (S, H, nA)
    best_a = d.argmin(axis=2)  # (S, H, C)
    mutual = np.take_along_axis(best_a, best_b, axis=2) == np.arange(len(a))
    found = np.isfinite(np.take_along_axis(d, best_b[..., None], axis=3)[..., 0])
    return mutual & found, best_b


def _points(
    x: NDArray[np.uint16], y: NDArray[np.uint16], angle: NDArray[np.uint8]
) -> NDArray[np.float64]:
    # y up, so that ISO angles are the usual counter-clockwise ones.
    return np.stack(
        [x.astype(np.float64), -y.astype(np.float64), angle.astype(np.float64) * ANGLE_UNIT],
        axis=-1,
    )


def pairing_scores(
    gamma: NDArray[np.float32],
    a: MccTemplate,
    b: NDArray[np.float64],
    counts: NDArray[np.int64],
    params: PairingParams = DEFAULT_PAIRING,
) -> NDArray[np.float64]:
    """Geometric re-scoring of one probe against S candidates at once.

    ``gamma`` (S, nA, C) local similarities, ``b`` (S, C, 3) the candidates' cylinder
    minutiae as (x, y up, direction), ``counts`` (S,) how many of the C exist. Returns
    ``paired^2 / (nA * nB)`` under the best anchored, refined rigid alignment, per
    candidate.
    """
    s_count, na, c = gamma.shape
    out = np.zeros(s_count)
    if na == 0 or s_count == 0:
        return out
    pa = _points(a.x, a.y, a.angle)
    b_valid = np.arange(c)[None, :] < counts[:, None]
    flat = gamma.reshape(s_count, -1)
    h = min(params.anchors, flat.shape[1])
    top = (
        np.argpartition(-flat, h - 1, axis=1)[:, :h]
        if h < flat.shape[1]
        else np.tile(np.arange(h), (s_count, 1))
    )
    usable = np.take_along_axis(flat, top, axis=1) > 0  # (S, H)
    ia, ib = top // c, top % c
    anchor_b = np.take_along_axis(b, ib[..., None], axis=1)  # (S, H, 3)
    # Each anchor pair fixes a rotation (its directions) and a translation (its positions).
    rot = _dphi(anchor_b[..., 2] - pa[ia, 2])
    cr, sr = np.cos(rot), np.sin(rot)
    shift = np.stack(
        [
            anchor_b[..., 0] - (cr * pa[ia, 0] - sr * pa[ia, 1]),
            anchor_b[..., 1] - (sr * pa[ia, 0] + cr * pa[ia, 1]),
        ],
        axis=-1,
    )
    paired, partner = _mutual_pairs(pa, b, b_valid, rot, shift, pa[ia, :2], params)
    paired &= usable[..., None]
    n_pairs = paired.sum(axis=2)  # (S, H)
    best_h = n_pairs.argmax(axis=1)
    rows = np.arange(s_count)
    best = n_pairs[rows, best_h].astype(np.float64)
    if params.refine:
        # Least-squares rigid fit (2-D Procrustes) on the pairs found, then count again
        # with the reach measured from their centroid.
        w = paired[rows, best_h].astype(np.float64)  # (S, nA)
        mate = np.take_along_axis(b, partner[rows, best_h][..., None], axis=1)  # (S, nA, 3)
        total = np.maximum(w.sum(axis=1, keepdims=True), 1.0)
        ca = (w[..., None] * pa[None, :, :2]).sum(axis=1) / total
        cb = (w[..., None] * mate[..., :2]).sum(axis=1) / total
        da = (pa[None, :, :2] - ca[:, None, :]) * w[..., None]
        db = mate[..., :2] - cb[:, None, :]
        m = np.einsum("sni,snj->sij", da, db)
        r = np.arctan2(m[:, 0, 1] - m[:, 1, 0], m[:, 0, 0] + m[:, 1, 1])
        cr, sr = np.cos(r), np.sin(r)
        t = cb - np.stack([cr * ca[:, 0] - sr * ca[:, 1], sr * ca[:, 0] + cr * ca[:, 1]], axis=1)
        again, _ = _mutual_pairs(pa, b, b_valid, r[:, None], t[:, None, :], ca[:, None, :], params)
        refined = again[:, 0].sum(axis=1).astype(np.float64)
        use = (best >= 3) & (refined > best)
        best = np.where(use, refined, best)
        rot_best = np.where(use, r, rot[rows, best_h])
        shift_best = np.where(use[:, None], t, shift[rows, best_h])
    else:
        rot_best, shift_best = rot[rows, best_h], shift[rows, best_h]
    if params.normalise == "counts":
        nb = np.maximum(counts, 1)
        return np.asarray(best * best / (na * nb))
    in_a, in_b = _overlap_counts(pa, b, b_valid, rot_best, shift_best, params.overlap_radius)
    floor = float(params.overlap_floor)
    denom = np.maximum(in_a, floor) * np.maximum(in_b, floor)
    return np.asarray(np.minimum(best * best / denom, 1.0))


def _overlap_counts(
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    b_valid: NDArray[np.bool_],
    rot: NDArray[np.float64],
    shift: NDArray[np.float64],
    radius: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """How many minutiae of A (moved by each candidate's alignment) and of B lie in the
    area the two impressions share: within ``radius`` of some minutia of the other."""
    mx, my = _moved(a, rot, shift)  # (S, nA)
    d = (mx[..., None] - b[:, None, :, 0]) ** 2 + (my[..., None] - b[:, None, :, 1]) ** 2
    d = np.where(b_valid[:, None, :], d, np.inf)  # (S, nA, C)
    r2 = radius * radius
    in_a = (d.min(axis=2) <= r2).sum(axis=1).astype(np.float64)
    in_b = ((d.min(axis=1) <= r2) & b_valid).sum(axis=1).astype(np.float64)
    return in_a, in_b


def pairing_score(
    gamma: NDArray[np.float32],
    a: MccTemplate,
    b: MccTemplate,
    params: PairingParams = DEFAULT_PAIRING,
) -> float:
    """:func:`pairing_scores` for a single pair of templates."""
    if len(a) == 0 or len(b) == 0:
        return 0.0
    pb = _points(b.x, b.y, b.angle)[None]
    res = pairing_scores(gamma[None], a, pb, np.array([len(b)]), params)
    return float(res[0])


def verify(a: FingerTemplate, b: FingerTemplate, pairing: PairingParams = DEFAULT_PAIRING) -> float:
    """1:1 score in [0, 1]: MCC local similarities, then the geometric re-scoring."""
    gamma = mcc.similarity_matrix(a.cylinders, b.cylinders)
    return pairing_score(gamma, a.cylinders, b.cylinders, pairing)


# --- the packed gallery and 1:N search --------------------------------------------------


@dataclass
class Gallery:
    """Finger templates packed into fixed-shape arrays (one row per template).

    Rows hold up to ``params.max_cylinders`` cylinders; unused rows have zero masks, which
    makes them unmatchable. ``labels`` maps rows to the caller's ids (e.g. a person).
    """

    params: MccParams = DEFAULT_PARAMS
    sig_params: SignatureParams = DEFAULT_SIGNATURE
    capacity: int = 1024
    size: int = 0
    values: NDArray[np.uint8] = field(init=False, repr=False)
    masks: NDArray[np.uint8] = field(init=False, repr=False)
    x: NDArray[np.uint16] = field(init=False, repr=False)
    y: NDArray[np.uint16] = field(init=False, repr=False)
    angle: NDArray[np.uint8] = field(init=False, repr=False)
    counts: NDArray[np.uint8] = field(init=False, repr=False)
    widths: NDArray[np.uint16] = field(init=False, repr=False)
    heights: NDArray[np.uint16] = field(init=False, repr=False)
    signatures: NDArray[np.uint64] = field(init=False, repr=False)
    signature_counts: NDArray[np.uint16] = field(init=False, repr=False)
    labels: NDArray[np.int64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._allocate(max(self.capacity, 1))

    def _allocate(self, capacity: int) -> None:
        p, c = self.params, self.params.max_cylinders
        old = {k: getattr(self, k) for k in self.columns() if hasattr(self, k)}
        self.values = np.zeros((capacity, c, p.value_bytes), np.uint8)
        self.masks = np.zeros((capacity, c, p.mask_bytes), np.uint8)
        self.x = np.zeros((capacity, c), np.uint16)
        self.y = np.zeros((capacity, c), np.uint16)
        self.angle = np.zeros((capacity, c), np.uint8)
        self.counts = np.zeros(capacity, np.uint8)
        self.widths = np.zeros(capacity, np.uint16)
        self.heights = np.zeros(capacity, np.uint16)
        self.signatures = np.zeros((capacity, self.sig_params.words), np.uint64)
        self.signature_counts = np.zeros(capacity, np.uint16)
        self.labels = np.full(capacity, -1, np.int64)
        for k, arr in old.items():
            getattr(self, k)[: self.size] = arr[: self.size]
        self.capacity = capacity

    @staticmethod
    def columns() -> tuple[str, ...]:
        return (
            "values",
            "masks",
            "x",
            "y",
            "angle",
            "counts",
            "widths",
            "heights",
            "signatures",
            "signature_counts",
            "labels",
        )

    def __len__(self) -> int:
        return self.size

    def add(self, template: FingerTemplate, label: int | None = None) -> int:
        """Append one template; returns its row."""
        c = template.cylinders
        if c.params != self.params:
            raise ValueError("template made with other MCC parameters than the gallery's")
        if len(c) > self.params.max_cylinders:
            raise ValueError(f"{len(c)} cylinders, the gallery holds {self.params.max_cylinders}")
        if len(template.signature) != self.sig_params.words:
            raise ValueError("signature size differs from the gallery's")
        if self.size == self.capacity:
            self._allocate(2 * self.capacity)
        i, n = self.size, len(c)
        self.values[i, :n], self.masks[i, :n] = c.values, c.masks
        self.x[i, :n], self.y[i, :n], self.angle[i, :n] = c.x, c.y, c.angle
        self.counts[i], self.widths[i], self.heights[i] = n, c.width, c.height
        self.signatures[i] = template.signature
        self.signature_counts[i] = prefilter.signature_counts(template.signature)
        self.labels[i] = i if label is None else label
        self.size += 1
        return i

    def extend(self, other: Gallery) -> None:
        """Append all rows of ``other`` (same parameters), e.g. a gallery built elsewhere."""
        if (other.params, other.sig_params) != (self.params, self.sig_params):
            raise ValueError("galleries made with different parameters")
        need = self.size + other.size
        if need > self.capacity:
            self._allocate(max(need, 2 * self.capacity))
        for k in self.columns():
            getattr(self, k)[self.size : need] = getattr(other, k)[: other.size]
        self.size = need

    def head(self, n: int) -> Gallery:
        """A gallery of the first ``n`` rows, sharing this one's memory (read-only use:
        adding to it reallocates)."""
        view = Gallery(self.params, self.sig_params, capacity=1)
        for k in self.columns():
            setattr(view, k, getattr(self, k)[:n])
        view.size = min(n, self.size)
        view.capacity = len(view.labels)
        return view

    def template(self, i: int) -> FingerTemplate:
        """The template at row ``i``."""
        if not 0 <= i < self.size:
            raise IndexError(i)
        n = int(self.counts[i])
        cyl = MccTemplate(
            self.values[i, :n].copy(),
            self.masks[i, :n].copy(),
            self.x[i, :n].copy(),
            self.y[i, :n].copy(),
            self.angle[i, :n].copy(),
            int(self.widths[i]),
            int(self.heights[i]),
            self.params,
        )
        return FingerTemplate(cyl, self.signatures[i].copy())

    @property
    def bytes_per_template(self) -> int:
        """Memory one row takes in this gallery, everything included."""
        return sum(getattr(self, k)[0:1].nbytes for k in self.columns())

    @property
    def nbytes(self) -> int:
        """Memory of the rows in use."""
        return self.bytes_per_template * self.size


@dataclass(frozen=True)
class Candidate:
    """A search result: gallery row, its label and the scores of each stage."""

    row: int
    label: int
    score: float  # the re-scoring (final) score
    mcc: float  # LSS score
    prefilter: float  # standardised signature overlap


@dataclass(frozen=True)
class SearchParams:
    """How much each stage keeps."""

    prefilter_keep: float = 0.05  # fraction of the gallery kept by the signatures ...
    prefilter_min: int = 500  # ... but at least this many (all, in small galleries)
    # Re-scored geometrically: the best by MCC, at least ``shortlist`` or this fraction of
    # MCC's candidates (the more impostors MCC sees, the more can outrank a weak mate) ...
    shortlist: int = 50
    shortlist_fraction: float = 0.004
    # ... plus the best by signature, whatever their MCC score: the two stages err on
    # different probes (a 1M-gallery mate ranked 113th by MCC was 1st by signature).
    signature_shortlist: int = 10
    chunk: int = 512  # templates per batch of matrix products
    pairing: PairingParams = DEFAULT_PAIRING


DEFAULT_SEARCH = SearchParams()


def search(
    probe: FingerTemplate,
    gallery: Gallery,
    top: int = 10,
    params: SearchParams = DEFAULT_SEARCH,
    timings: dict[str, float] | None = None,
) -> list[Candidate]:
    """The ``top`` best gallery candidates for ``probe``, best first.

    ``timings``, if given, receives each stage's duration in seconds ("prefilter",
    "mcc", "rescore") and how many candidates stages 2 and 3 saw.
    """
    n = len(gallery)
    if n == 0 or len(probe.cylinders) == 0:
        return []
    clock = time.perf_counter()
    # Stage 1: pair signatures over the whole gallery.
    sig = prefilter.signature_scores(
        probe.signature, gallery.signatures[:n], gallery.signature_counts[:n]
    )
    keep = max(params.prefilter_min, math.ceil(params.prefilter_keep * n))
    rows = np.argpartition(-sig, keep - 1)[:keep] if keep < n else np.arange(n)
    rows = np.sort(rows)  # sequential memory access in stage 2
    after_prefilter = time.perf_counter()
    # Stage 2: MCC with LSS, in batches of matrix products.
    p = gallery.params
    u = mcc.unpack_template(probe.cylinders)
    lss = mcc.lss_many(
        u,
        gallery.values[rows],
        gallery.masks[rows],
        gallery.angle[rows],
        gallery.counts[rows],
        p,
        params.chunk,
    )
    after_mcc = time.perf_counter()
    short = min(max(params.shortlist, math.ceil(params.shortlist_fraction * len(rows))), len(rows))
    best = np.argpartition(-lss, short - 1)[:short] if short < len(rows) else np.arange(len(rows))
    extra = min(params.signature_shortlist, len(rows))
    if extra > 0 and short < len(rows):
        by_sig = np.argpartition(-sig[rows], extra - 1)[:extra]
        best = np.union1d(best, by_sig)
    # Stage 3: geometric re-scoring of the shortlist, all candidates at once.
    short_rows = rows[best]
    c = p.max_cylinders
    ub = mcc.unpack(
        gallery.values[short_rows], gallery.masks[short_rows], gallery.angle[short_rows], p
    )
    gamma = mcc.local_similarities(u, ub, p).reshape(len(u.direction), len(short_rows), c)
    pts = _points(gallery.x[short_rows], gallery.y[short_rows], gallery.angle[short_rows])
    final = pairing_scores(
        gamma.transpose(1, 0, 2),
        probe.cylinders,
        pts,
        gallery.counts[short_rows].astype(np.int64),
        params.pairing,
    )
    out = [
        Candidate(int(r), int(gallery.labels[r]), float(f), float(lss[j]), float(sig[r]))
        for r, f, j in zip(short_rows, final, best, strict=True)
    ]
    out.sort(key=lambda c: (-c.score, -c.mcc))
    if timings is not None:
        timings["prefilter"] = after_prefilter - clock
        timings["mcc"] = after_mcc - after_prefilter
        timings["rescore"] = time.perf_counter() - after_mcc
        timings["mcc_candidates"] = float(len(rows))
        timings["rescored"] = float(len(short_rows))
    return out[:top]
