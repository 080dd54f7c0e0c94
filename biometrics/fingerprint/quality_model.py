"""The station quality model as a TFLite graph: a fixed front end and a trained head.

The input is one fixed canvas, 768 x 800 px (h x w) of 8-bit grey at 500 ppi, as float32
0-255 ([1, 768, 800, 1]). :func:`to_canvas` puts any scan on it: a smaller image is
centred and the margin filled with the median of the image's own border pixels (so the
margin adds no edge), a larger one is centre-cropped. Nothing is resized: ridge periods
must stay where NFIQ 2 sees them. Training and the station both call :func:`to_canvas`
and then the model; everything else happens inside the graph.

Front end (fixed, no trained weights), all inside the graph:

1. 2 x 2 average pooling to 250 ppi (ridge periods 8-11 px become 4-5.5 px);
2. a quadrature Gabor bank (8 orientations, period 4.75 px at 250 ppi) and a Laplacian
   high-pass, 11 x 11, stride 2; squared responses pooled over 32 x 32 px blocks (at
   500 ppi) give, per block, the ridge-band energy per orientation and the high-band energy;
3. block maps (24 x 25 blocks): mean grey, log variance, log ridge energy, orientation
   coherence, coherence over 3 x 3 blocks (orientation flow), ridge clarity (ridge energy
   over variance), noise (high-band over ridge energy);
4. a soft foreground mask (ridge energy above a level) and, per map, soft histograms: the
   foreground area above each of a few thresholds, both absolute (NFIQ 2 rewards large
   usable areas) and as a fraction of the foreground; plus foreground means.

The head is a small MLP ensemble on those features (logistic hidden units, sigmoid output
scaled to 0-100), fitted by scripts/train_station_quality.py, then a steep gate that sends
scores below a level to 0, as NFIQ 2 reports 0 for images it cannot assess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from biometrics.tflite_build import GraphBuilder

F32 = NDArray[np.float32]

CANVAS = (768, 800)
"""(height, width) of the model input, px at 500 ppi: holds a rolled print (750 x 800)."""

PERIOD = 4.75  # px at 250 ppi: the middle of the 8-11 px ridge periods at 500 ppi
N_ORIENT = 8
KERNEL = 11
BLOCK = 8  # energy samples per block side after the stride-2 bank: 32 px at 500 ppi
EPS = 1e-4
GATE_SLOPE = 2.0  # per score point: the zero gate is 0.998 open 3 points above its level

MAP_NAMES = (
    "mean", "log_var", "log_ridge", "coherence", "flow", "clarity", "noise", "skew",
    "fine_coherence",
)  # fmt: skip
"""The per-block maps, in channel order."""


def to_canvas(image: NDArray[np.uint8]) -> F32:
    """The model input for an 8-bit grey 500 ppi image: [1, 768, 800, 1] float32 0-255."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    ch, cw = CANVAS
    h, w = image.shape
    top, left = max((h - ch) // 2, 0), max((w - cw) // 2, 0)
    crop = image[top : top + ch, left : left + cw]
    h, w = crop.shape
    border = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
    out = np.full(CANVAS, float(np.median(border)), np.float32)
    y, x = (ch - h) // 2, (cw - w) // 2
    out[y : y + h, x : x + w] = crop
    return out[None, :, :, None]


def gabor_bank() -> F32:
    """Conv weights [2 * N_ORIENT + 1, 11, 11, 1]: even/odd Gabor pairs, then a Laplacian.

    Each pair responds with the amplitude of a sinusoid at the tuned period and angle, so
    even^2 + odd^2 is its local energy whatever the ridge phase."""
    r = KERNEL // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    sigma = 0.55 * PERIOD  # about one octave of bandwidth
    env = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    out = np.zeros((2 * N_ORIENT + 1, KERNEL, KERNEL, 1), np.float64)
    for k in range(N_ORIENT):
        theta = math.pi * k / N_ORIENT  # direction of the wave vector (across the ridges)
        u = xx * math.cos(theta) + yy * math.sin(theta)
        even = env * np.cos(2 * math.pi * u / PERIOD)
        even -= env * (even.sum() / env.sum())  # no response to flat grey
        odd = env * np.sin(2 * math.pi * u / PERIOD)
        out[2 * k, :, :, 0] = even / (even * np.cos(2 * math.pi * u / PERIOD)).sum()
        out[2 * k + 1, :, :, 0] = odd / (odd * np.sin(2 * math.pi * u / PERIOD)).sum()
    lap = np.zeros((KERNEL, KERNEL))
    lap[r, r] = -4.0
    lap[r - 1, r] = lap[r + 1, r] = lap[r, r - 1] = lap[r, r + 1] = 1.0
    out[-1, :, :, 0] = lap / 4.0
    return out.astype(np.float32)


@dataclass(frozen=True)
class Histograms:
    """Soft-histogram thresholds per map ([n_maps, k]) and the sigmoid slopes, plus the
    foreground level on the log ridge energy."""

    thresholds: F32
    slopes: F32
    foreground: float
    foreground_slope: float = 4.0
    ridge_levels: tuple[float, ...] = (-8.5, -7.5, -6.5, -5.5, -4.5, -3.5, -2.5)
    """Log ridge energy levels of the whole-canvas area histogram (blank glass is ~-9.2)."""
    ridge_slope: float = 2.0


@dataclass(frozen=True)
class Head:
    """MLP head: features -> hidden (logistic) -> 100 * sigmoid, averaged over an ensemble
    of E members (their hidden units side by side, ``w2`` block-diagonal).
    Input standardisation included."""

    mean: F32  # [F]
    scale: F32  # [F]
    w1: F32  # [H, F]
    b1: F32  # [H]
    w2: F32  # [E, H]
    b2: F32  # [E]
    zero_below: float = 0.0
    """Scores below this are gated to 0: NFIQ 2 reports 0 ("cannot assess") rather than a
    small number, and the station should too (a steep gate, see :data:`GATE_SLOPE`)."""

    @staticmethod
    def ensemble(members: list[Head]) -> Head:
        """One head averaging the scores of ``members`` (same standardisation)."""
        hidden = [m.w1.shape[0] for m in members]
        w2 = np.zeros((len(members), sum(hidden)), np.float32)
        start = 0
        for i, (m, h) in enumerate(zip(members, hidden, strict=True)):
            w2[i, start : start + h] = m.w2[0]
            start += h
        return Head(
            members[0].mean, members[0].scale,
            np.concatenate([m.w1 for m in members]), np.concatenate([m.b1 for m in members]),
            w2, np.concatenate([m.b2 for m in members]), members[0].zero_below,
        )  # fmt: skip


def _maps(g: GraphBuilder) -> tuple[int, int]:
    """Input -> (block maps [1, 24, 25, len(MAP_NAMES)], log ridge energy [1, 24, 25, 1])."""
    x = g.input("image", (1, *CANVAS, 1))
    half = g.average_pool(x, 2, 2, name="to_250ppi")
    half = g.binary("mul", half, g.constant("inv255", np.array([1 / 255], np.float32)))
    bank = gabor_bank()
    resp = g.conv2d(half, bank, np.zeros(len(bank), np.float32), stride=2, name="bank")
    # Fine blocks (16 px at 500 ppi) first: coherence there drops at ridge breaks, dots and
    # minutiae; then the 32 px blocks every other map uses.
    fine = g.average_pool(g.binary("mul", resp, resp, name="sq"), BLOCK // 2, BLOCK // 2,
                          name="fine_blocks")  # fmt: skip
    energy = g.average_pool(fine, 2, 2, name="blocks")
    # Per block: ridge energy T, doubled-angle vector (a, b), high-band energy H.
    mix = np.zeros((4, 2 * N_ORIENT + 1), np.float32)
    for k in range(N_ORIENT):
        angle = 2 * math.pi * k / N_ORIENT
        mix[0, 2 * k : 2 * k + 2] = 1.0
        mix[1, 2 * k : 2 * k + 2] = math.cos(angle)
        mix[2, 2 * k : 2 * k + 2] = math.sin(angle)
    mix[3, -1] = 1.0
    fine_tab = g.conv2d(fine, mix[:3, None, None, :], np.array([EPS, 0, 0], np.float32),
                        name="fine_tab")  # fmt: skip
    fine_sq = g.binary("mul", fine_tab, fine_tab, name="fine_sq")
    pick3_ab = np.zeros((1, 1, 1, 3), np.float32)
    pick3_ab[0, 0, 0, 1:3] = 1.0
    pick3_t = np.zeros((1, 1, 1, 3), np.float32)
    pick3_t[0, 0, 0, 0] = 1.0
    fine_coh = g.average_pool(g.unary("sqrt", g.binary(
        "div", g.conv2d(fine_sq, pick3_ab, np.zeros(1, np.float32), name="fine_ab2"),
        g.conv2d(fine_sq, pick3_t, np.zeros(1, np.float32), name="fine_t2"),
        name="fine_coh2"), name="fine_coh"), 2, 2, name="fine_coherence")  # fmt: skip
    tabh = g.conv2d(energy, mix[:, None, None, :], np.array([EPS, 0, 0, EPS], np.float32),
                    name="tabh")  # fmt: skip
    # The same over 3 x 3 blocks: how well the orientation flows between neighbours.
    tab3 = g.depthwise_conv2d(
        tabh, np.full((1, 3, 3, 4), 1 / 9, np.float32), np.zeros(4, np.float32), name="nb3"
    )
    sq = g.binary("mul", tabh, tabh, name="tabh_sq")
    sq3 = g.binary("mul", tab3, tab3, name="tab3_sq")
    # |(a, b)| / T via a 1x1 conv picking a^2 + b^2 and T^2, then sqrt of the ratio.
    pick_ab = np.zeros((1, 1, 1, 4), np.float32)
    pick_ab[0, 0, 0, 1:3] = 1.0
    pick_t = np.zeros((1, 1, 1, 4), np.float32)
    pick_t[0, 0, 0, 0] = 1.0
    zero = np.zeros(1, np.float32)
    coh = g.unary("sqrt", g.binary(
        "div", g.conv2d(sq, pick_ab, zero, name="ab2"), g.conv2d(sq, pick_t, zero, name="t2"),
        name="coh2"), name="coherence")  # fmt: skip
    flow = g.unary("sqrt", g.binary(
        "div", g.conv2d(sq3, pick_ab, zero, name="ab2_3"),
        g.conv2d(sq3, pick_t, zero, name="t2_3"), name="flow2"), name="flow")  # fmt: skip
    pick_th = np.zeros((2, 1, 1, 4), np.float32)
    pick_th[0, 0, 0, 0], pick_th[1, 0, 0, 3] = 1.0, 1.0
    log_th = g.unary("log", g.conv2d(tabh, pick_th, np.zeros(2, np.float32), name="th"))
    # Grey mean and variance over the same blocks (16 x 16 at 250 ppi).
    mean = g.average_pool(half, 2 * BLOCK, 2 * BLOCK, name="block_mean")
    mean_sq = g.average_pool(g.binary("mul", half, half), 2 * BLOCK, 2 * BLOCK, name="block_sq")
    mean2 = g.binary("mul", mean, mean, name="mean2")
    var = g.unary("relu", g.binary("sub", mean_sq, mean2), name="var0")
    # Skewness of the grey levels: thin ridges on light ground (dry) skew one way, thick
    # merged ones (wet) the other. E[(x-m)^3] = E[x^3] - 3 m E[x^2] + 2 m^3.
    cube = g.binary("mul", g.binary("mul", half, half), half, name="cube")
    mean_cube = g.average_pool(cube, 2 * BLOCK, 2 * BLOCK, name="block_cube")
    three = g.constant("three", np.array([3.0], np.float32))
    two = g.constant("two", np.array([2.0], np.float32))
    third = g.binary("add", g.binary("sub", mean_cube, g.binary(
        "mul", three, g.binary("mul", mean, mean_sq))), g.binary(
        "mul", two, g.binary("mul", mean2, mean)), name="third")  # fmt: skip
    sd = g.unary("sqrt", g.binary("add", var, g.constant("eps_sd", np.array([1e-3], np.float32))))
    skew = g.binary("div", third, g.binary("mul", g.binary("mul", sd, sd), sd), name="skew")
    log_var = g.unary("log", g.binary("add", var, g.constant("eps", np.array([EPS], np.float32))))
    # Linear combinations of the logs: log T, clarity = log T - log var, noise = log H - log T.
    stack = g.concat([log_th, log_var], axis=3, name="logs")  # log T, log H, log var
    comb = np.zeros((3, 1, 1, 3), np.float32)
    comb[0, 0, 0, 0] = 1.0
    comb[1, 0, 0, 0], comb[1, 0, 0, 2] = 1.0, -1.0
    comb[2, 0, 0, 1], comb[2, 0, 0, 0] = 1.0, -1.0
    log_t = g.conv2d(stack, comb[:1], np.zeros(1, np.float32), name="log_ridge")
    clarity_noise = g.conv2d(stack, comb[1:], np.zeros(2, np.float32), name="clarity_noise")
    # Channel order = MAP_NAMES.
    maps = g.concat([mean, log_var, log_t, coh, flow, clarity_noise, skew, fine_coh], axis=3,
                    name="maps")  # fmt: skip
    return maps, log_t


def build_maps_model() -> bytes:
    """Front end up to the block maps: for calibrating the histogram thresholds."""
    g = GraphBuilder()
    maps, _ = _maps(g)
    return g.build([maps], description="vn-eid nfiq2 station quality: block maps")


def _features(g: GraphBuilder, hist: Histograms) -> int:
    maps, log_t = _maps(g)
    fg_w = np.array([[[[hist.foreground_slope]]]], np.float32)
    fg = g.unary("logistic", g.conv2d(log_t, fg_w, np.array(
        [-hist.foreground_slope * hist.foreground], np.float32), name="fg_logit"),
        name="foreground")  # fmt: skip
    area = g.mean(fg, [1, 2], name="area")  # [1, 1]
    slopes = hist.slopes.reshape(-1)
    soft = g.unary("logistic", g.depthwise_conv2d(
        maps, slopes.reshape(1, 1, 1, -1), -slopes * hist.thresholds.reshape(-1),
        name="hist_logit"), name="hist_soft")  # fmt: skip
    counts = g.mean(g.binary("mul", soft, fg, name="hist_fg"), [1, 2], name="hist_area")
    denom = g.binary("add", area, g.constant("area_eps", np.array([1e-3], np.float32)))
    fractions = g.binary("div", counts, denom, name="hist_frac")
    means = g.binary("div", g.mean(g.binary("mul", maps, fg), [1, 2], name="fg_sum"), denom,
                     name="fg_mean")  # fmt: skip
    # Histogram of ridge energy over the whole canvas (area at each energy level).
    levels = np.array(hist.ridge_levels, np.float32)
    ridge_soft = g.unary("logistic", g.depthwise_conv2d(
        log_t, np.full((1, 1, 1, len(levels)), hist.ridge_slope, np.float32),
        -hist.ridge_slope * levels, name="ridge_logit"), name="ridge_soft")  # fmt: skip
    ridge_area = g.mean(ridge_soft, [1, 2], name="ridge_area")
    feats: int = g.concat([area, counts, fractions, means, ridge_area], axis=1, name="features")
    return feats


def n_features(hist: Histograms) -> int:
    n_maps, k = (int(v) for v in hist.thresholds.shape)
    return 1 + 2 * n_maps * k + n_maps + len(hist.ridge_levels)


def build_features_model(hist: Histograms) -> bytes:
    """Front end up to the feature vector [1, F]: what the head is fitted on."""
    g = GraphBuilder()
    feats = _features(g, hist)
    return g.build([feats], description="vn-eid nfiq2 station quality: features")


def build_model(hist: Histograms, head: Head, description: str) -> bytes:
    """The station model: canvas [1, 768, 800, 1] -> NFIQ 2 estimate [1, 1] in 0-100."""
    g = GraphBuilder()
    feats = _features(g, hist)
    # Standardisation folded into the first layer: w1 @ ((f - mean) / scale) + b1.
    w1 = head.w1 / head.scale[None, :]
    b1 = head.b1 - w1 @ head.mean
    hidden = g.unary("logistic", g.fully_connected(feats, w1.astype(np.float32),
                                                   b1.astype(np.float32), name="fc1"))  # fmt: skip
    members = g.unary("logistic", g.fully_connected(hidden, head.w2, head.b2, name="fc2"))
    n = head.w2.shape[0]
    score = g.fully_connected(members, np.full((1, n), 100.0 / n, np.float32),
                              np.zeros(1, np.float32), name="ensemble")  # fmt: skip
    if head.zero_below > 0:
        gate = g.unary("logistic", g.fully_connected(
            score, np.array([[GATE_SLOPE]], np.float32),
            np.array([-GATE_SLOPE * head.zero_below], np.float32), name="gate_logit"),
            name="gate")  # fmt: skip
        score = g.binary("mul", score, gate, name="score")
    return g.build([score], description=description)


def head_forward(head: Head, features: NDArray[np.float64]) -> NDArray[np.float64]:
    """numpy reference of the head (scores 0-100), for training and checks."""
    z = (features - head.mean) / head.scale
    h = 1 / (1 + np.exp(-(z @ head.w1.T + head.b1)))
    members: NDArray[np.float64] = 100 / (1 + np.exp(-(h @ head.w2.T + head.b2)))
    return gate(members.mean(axis=1), head.zero_below)


def gate(score: NDArray[np.float64], zero_below: float) -> NDArray[np.float64]:
    """The zero gate of :class:`Head` (identity when ``zero_below`` is 0)."""
    if zero_below <= 0:
        return score
    out: NDArray[np.float64] = score / (1 + np.exp(-GATE_SLOPE * (score - zero_below)))
    return out
