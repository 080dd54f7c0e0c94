"""Minutia-pair signatures: the 1:N pre-filter in front of MCC.

Every pair of minutiae at a distance in ``[d_min, d_max)`` is described by three values
that neither rotation nor translation change: its length and the directions of its two
minutiae relative to the line joining them (the pair features of Germain, Califano and
Colville, "Fingerprint matching using transformation parameter clustering", IEEE CSE
1997, and of Bozorth3's inter-minutia tables). Each is quantised into a "word" on a few
shifted grids, and a template's signature is the set of its words as a fixed-size bit
vector (a Bloom-filter-like set, as in Gomez-Barrero et al., "Multi-biometric template
protection based on Bloom filters", 2018, though here for speed rather than privacy).

Two impressions of one finger share many words; two fingers share about as many as chance
allows. The score is the number of common set bits, standardised by what chance gives for
the two fill levels, so one ``AND`` and one ``bitwise_count`` over the packed gallery rank
a million templates well under a second on one core. It only orders candidates for MCC;
it is not a matcher of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from biometrics.fingerprint.minutiae import TWO_PI, MinutiaSet


@dataclass(frozen=True)
class SignatureParams:
    """Quantisation of pair words and signature size (bits = 64 * words)."""

    words: int = 40  # uint64 words per signature: 2560 bits, 320 bytes
    d_min: float = 20.0
    d_max: float = 360.0
    d_step: float = 16.0
    angle_bins: int = 12
    grids: int = 2  # shifted quantisation grids (each pair sets one bit per grid)
    # The best minutiae by quality: bounds the pair count (and so the filter's fill, ~40 %
    # at 48) and leaves out the least reliable, which are the likeliest to be spurious.
    max_minutiae: int = 48

    @property
    def bits(self) -> int:
        return 64 * self.words


DEFAULT_SIGNATURE = SignatureParams()

# Odd 64-bit multiplier (Knuth's golden ratio constant) to spread word ids over the bits.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def pair_words(
    minutiae: MinutiaSet, params: SignatureParams = DEFAULT_SIGNATURE
) -> NDArray[np.uint64]:
    """The quantised pair words of a minutia set, one per pair and grid (with repeats)."""
    p = params
    ms = minutiae.best(p.max_minutiae) if len(minutiae) > p.max_minutiae else minutiae
    n = len(ms)
    if n < 2:
        return np.zeros(0, np.uint64)
    i, j = np.triu_indices(n, k=1)
    x, y, t = ms.x, -ms.y, ms.angle  # y up: ISO angles are then the usual mathematical ones
    dx, dy = x[j] - x[i], y[j] - y[i]
    d = np.hypot(dx, dy)
    keep = (d >= p.d_min) & (d < p.d_max)
    i, j, dx, dy, d = i[keep], j[keep], dx[keep], dy[keep], d[keep]
    phi = np.arctan2(dy, dx)
    # Directions relative to the segment i->j; seen from j the segment turns by pi, so
    # (a, b) for i->j is (b, a) for j->i: sorting makes the word independent of the order.
    a = np.mod(t[i] - phi, TWO_PI)
    b = np.mod(t[j] - phi - math.pi, TWO_PI)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    na = p.angle_bins
    out = []
    for g in range(p.grids):
        shift = g / p.grids  # grid g is offset by g/grids of a bin in every dimension
        db = np.floor((d - p.d_min) / p.d_step + shift).astype(np.int64)
        lb = np.floor(lo / TWO_PI * na + shift).astype(np.int64) % na
        hb = np.floor(hi / TWO_PI * na + shift).astype(np.int64) % na
        out.append((((g * 64 + db) * na + lb) * na + hb).astype(np.uint64))
    return np.concatenate(out)


def signature(
    minutiae: MinutiaSet, params: SignatureParams = DEFAULT_SIGNATURE
) -> NDArray[np.uint64]:
    """The packed signature (``params.words`` uint64) of a minutia set."""
    words = pair_words(minutiae, params)
    bits = ((words * _GOLDEN) >> np.uint64(40)) % np.uint64(params.bits)
    flags = np.zeros(params.bits, np.uint8)
    flags[bits.astype(np.int64)] = 1
    # Bit k of the signature is bit (k % 64) of word k // 64; packbits is MSB-first per byte,
    # so pack little-endian bytes and view them as little-endian uint64.
    packed = np.packbits(flags.reshape(-1, 8)[:, ::-1], axis=1).reshape(-1)
    return packed.view("<u8").astype(np.uint64)


def signature_scores(
    probe: NDArray[np.uint64],
    gallery: NDArray[np.uint64],
    gallery_counts: NDArray[np.uint16],
    chunk: int = 65536,
) -> NDArray[np.float32]:
    """Standardised overlap of ``probe`` (W,) with every row of ``gallery`` (N, W).

    ``(common - expected) / sqrt(expected)`` with ``expected = |p| |g| / bits``: how far
    above chance the shared words are, comparable across templates of any size.
    """
    n, w = gallery.shape
    bits = 64 * w
    p_count = int(np.bitwise_count(probe).sum())
    out = np.empty(n, np.float32)
    for start in range(0, n, chunk):
        block = gallery[start : start + chunk]
        common = np.bitwise_count(block & probe).sum(axis=1, dtype=np.int32)
        expected = gallery_counts[start : start + chunk].astype(np.float32) * (p_count / bits)
        out[start : start + chunk] = (common - expected) / np.sqrt(np.maximum(expected, 1.0))
    return out


def signature_counts(signatures: NDArray[np.uint64]) -> NDArray[np.uint16]:
    """Set bits of each signature (N, W) -> (N,)."""
    counts: NDArray[np.uint16] = np.bitwise_count(signatures).sum(axis=-1, dtype=np.uint16)
    return counts
