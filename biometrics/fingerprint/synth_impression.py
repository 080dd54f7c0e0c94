"""Impressions of a master fingerprint: what a scanner sees when the finger touches it.

Following SFinGe (Cappelli, Maio & Maltoni, "Synthetic fingerprint-database generation",
ICPR 2002), one impression is rendered from the master in one pass over the output pixels:

- placement: rotation about, and translation of, the part of the finger that lands in the
  centre of the image;
- skin distortion after Cappelli, Maio & Maltoni, "Modelling plastic distortion in
  fingerprint images" (ICAPR 2001): a close-contact region that moves rigidly with the
  finger, an outer region displaced by a further small rotation and translation (the finger
  pushed or twisted on the glass), and a transition where a "brake" function lets the
  displacement grow from zero with the distance from the contact region;
- the contact silhouette: a wide, nail-to-nail tombstone cut at the first crease for a
  rolled print, a fingertip ellipse for a flat one, with an irregular edge and pressure
  falling off toward it; partial contact cuts it with a straight edge (finger lifted or
  tilted);
- skin condition: the master's smooth ridge signal is thresholded at a level that varies
  in space. For a smooth ridge profile, raising the level is a grey-level erosion (dry skin:
  thin ridges, broken where the noise pushes it higher still) and lowering it a dilation
  (wet skin: thick ridges that merge across valleys) — the same effect as SFinGe's
  morphological operators, at the cost of one comparison per pixel;
- noise: pores and dirt (small white blobs on the ridges), optical blur, uneven
  illumination, a light background, sensor noise. Dark ridges on light ground, 8-bit.

The geometric chain is evaluated on a coarse grid (every 8 px) and interpolated, since
every term in it is smooth; the master is then sampled once with a bilinear remap.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from biometrics.fingerprint.synth_master import MasterFinger

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


class ImpressionKind(StrEnum):
    """How the finger was captured."""

    ROLLED = "rolled"
    """Rolled nail to nail: about 800 x 750 px at 500 ppi (FBI ten-print card box)."""
    FLAT = "flat"
    """Pressed flat: about 400 x 500 px at 500 ppi (single-finger scanner)."""


class SkinCondition(StrEnum):
    """Skin moisture and pressure class of an impression."""

    NORMAL = "normal"
    DRY = "dry"
    WET = "wet"


IMAGE_SIZE: dict[ImpressionKind, tuple[int, int]] = {
    ImpressionKind.ROLLED: (800, 750),
    ImpressionKind.FLAT: (400, 500),
}
"""(width, height) in px of each kind of impression."""

MAX_ROTATION: dict[ImpressionKind, float] = {
    ImpressionKind.ROLLED: 15.0,
    ImpressionKind.FLAT: 25.0,
}
"""Default largest rotation (degrees). A rolled print is taken inside a box on the card
and rarely tilts as far as a finger laid on a flat scanner; pass ``max_rotation`` to
override (25 degrees on a rolled print clips its corners at the frame, as in real cards)."""

_GRID = 8  # px between the samples of the geometric chain

# Skin model. The levels are tuned against NFIQ 2 (nbis-py) on flat impressions: normal
# prints score a median of ~59, and each degradation scores lower, as real captures do
# (wet ~45, partial contact ~49, dry ~32; docs/benchmarks.md, tests/test_fingerprint_synth).
_THRESHOLD = {
    # Ridge threshold ranges (master signal units, about -1..1). Normal prints get ridges a
    # little narrower than the valleys: NFIQ 2 marks down thick, dark ridges.
    SkinCondition.NORMAL: (0.3, 0.55),
    SkinCondition.DRY: (0.45, 0.7),
    SkinCondition.WET: (-0.45, -0.15),
}
_TEXTURE = (0.3, 0.2)  # threshold noise at 5 px and 2.5 px: ragged ridge edges, pores
_DRY_BREAKS = (0.9, 1.0)  # extra 5 px / 2.5 px noise per unit dryness: dashes and dots
_DRY_GAPS = (1.5, 40.0, 0.5)  # gain, feature size (px), cut: patches with no contact
_DRY_FADE = 60.0  # grey levels lighter ridges per unit dryness
_WET_BLOTS = (3.0, 32.0, 0.1)  # threshold drop, feature size (px), cut: smears
_WET_SHADE = 100.0  # grey levels darker valleys inside a smear
_WET_BLUR = 1.5  # extra optical blur (sigma, px) per unit wetness: ink spreads


@dataclass(frozen=True)
class Contact:
    """Contact silhouette in master pixels: a superellipse |dx/ax|^p + |dy/ay|^p <= 1,
    cut below at ``crease_y`` (rolled prints), and optionally by a straight edge
    ``nx * x + ny * y <= cut`` (partial contact)."""

    cx: float
    cy: float
    ax: float
    ay: float
    exponent: float
    crease_y: float | None
    cut_nx: float = 0.0
    cut_ny: float = 0.0
    cut: float | None = None


@dataclass(frozen=True)
class Distortion:
    """Cappelli's plastic distortion: inside the ellipse (cx, cy, rx, ry) the skin is rigid;
    far from it the skin is rotated by ``angle_deg`` about (cx, cy) and shifted by (dx, dy);
    ``brake`` (px) is how far from the ellipse the displacement reaches about 63 %."""

    cx: float
    cy: float
    rx: float
    ry: float
    angle_deg: float
    dx: float
    dy: float
    brake: float


@dataclass(frozen=True)
class ImpressionParams:
    """Everything that decides the geometry and look of one impression."""

    kind: ImpressionKind
    width: int
    height: int
    rotation_deg: float
    """Counter-clockwise rotation of the finger on the image, degrees."""
    anchor_x: float
    anchor_y: float
    """Master point that lands at the image centre plus the translation."""
    translate_x: float
    translate_y: float
    contact: Contact
    distortion: Distortion
    condition: SkinCondition
    ridge_threshold: float
    """Level at which the master's ridge signal (about -1..1) touches the glass: higher
    gives thinner ridges (grey-level erosion), lower thicker ones (dilation)."""
    dryness: float
    """0..1: how far dry skin breaks the ridges into dashes and dots and fades them."""
    wetness: float
    """0..1: how far wet skin smears: blotches where valleys fill in."""
    partial: bool
    noise_sigma: float
    blur_sigma: float
    background: float
    ridge_grey: float
    pore_density: float
    """White specks (pores, dirt) per 2000 px^2 of image; they show where they hit a ridge."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ground-truth files (rounded to what matters)."""

        def rnd(v: Any) -> Any:
            if isinstance(v, float):
                return round(v, 3)
            if isinstance(v, dict):
                return {k: rnd(x) for k, x in v.items()}
            if isinstance(v, StrEnum):
                return str(v)
            return v

        out: dict[str, Any] = rnd(asdict(self))
        return out


# --- Sampling ----------------------------------------------------------------------------


def sample_impression(
    rng: np.random.Generator,
    master: MasterFinger,
    kind: ImpressionKind = ImpressionKind.ROLLED,
    *,
    condition: SkinCondition | None = None,
    partial: bool | None = None,
    max_rotation: float | None = None,
) -> ImpressionParams:
    """Draw the parameters of one impression of ``master``.

    ``condition`` and ``partial`` force the skin condition and partial contact; left as
    None they are drawn (70 % normal, 15 % dry, 15 % wet; 12 % partial contact)."""
    cfg = master.config
    width, height = IMAGE_SIZE[kind]
    max_rot = MAX_ROTATION[kind] if max_rotation is None else max_rotation
    if condition is None:
        condition = SkinCondition(
            rng.choice(
                [SkinCondition.NORMAL, SkinCondition.DRY, SkinCondition.WET],
                p=[0.70, 0.15, 0.15],
            )
        )
    if partial is None:
        partial = bool(rng.random() < 0.12)
    px, py = master.pad_centre
    if kind is ImpressionKind.ROLLED:
        # Nail to nail: the silhouette spans nearly the whole master width, rounded at the
        # tip, straight-ish sides, cut at the first flexion crease.
        cx = cfg.width / 2 + rng.normal(0.0, 8.0)
        cy = cfg.height * 0.5 + rng.normal(0.0, 10.0)
        ax = rng.uniform(0.39, 0.45) * cfg.width
        ay = rng.uniform(0.43, 0.48) * cfg.height
        contact = Contact(
            cx, cy, ax, ay, rng.uniform(2.2, 2.9), crease_y=cy + ay * rng.uniform(0.80, 0.92)
        )
        anchor = (cx + rng.normal(0.0, 6.0), cy + rng.normal(0.0, 8.0))
        translate = (rng.normal(0.0, 12.0), rng.normal(0.0, 10.0))
        d_shift, d_angle = 14.0, 3.0
    else:
        # The fingertip pad around the core, wherever the finger happened to land.
        anchor = (px + rng.normal(0.0, 30.0), py + rng.uniform(-10.0, 60.0))
        cx, cy = anchor[0] + rng.normal(0.0, 8.0), anchor[1] + rng.normal(0.0, 10.0)
        ax, ay = rng.uniform(135.0, 175.0), rng.uniform(185.0, 235.0)
        contact = Contact(cx, cy, ax, ay, rng.uniform(1.9, 2.4), crease_y=None)
        translate = (rng.normal(0.0, 18.0), rng.normal(0.0, 18.0))
        d_shift, d_angle = 10.0, 4.0
    if partial:
        ang = rng.uniform(0.0, 2 * math.pi)
        nx, ny = math.cos(ang), math.sin(ang)
        reach = math.hypot(ax * nx, ay * ny)  # about the silhouette's extent along n
        cut = nx * contact.cx + ny * contact.cy + rng.uniform(-0.15, 0.35) * reach
        contact = Contact(**{**asdict(contact), "cut_nx": nx, "cut_ny": ny, "cut": cut})
    distortion = Distortion(
        cx=contact.cx + rng.normal(0.0, 0.15 * ax),
        cy=contact.cy + rng.normal(0.0, 0.15 * ay),
        rx=rng.uniform(0.25, 0.45) * ax,
        ry=rng.uniform(0.25, 0.45) * ay,
        angle_deg=rng.uniform(-d_angle, d_angle),
        dx=rng.uniform(-d_shift, d_shift),
        dy=rng.uniform(-d_shift, d_shift),
        brake=rng.uniform(0.5, 1.2) * ax,
    )
    dryness = wetness = 0.0
    threshold = rng.uniform(*_THRESHOLD[condition])
    if condition is SkinCondition.DRY:
        dryness = rng.uniform(0.5, 1.0)
    elif condition is SkinCondition.WET:
        wetness = rng.uniform(0.5, 1.0)
    return ImpressionParams(
        kind=kind,
        width=width,
        height=height,
        rotation_deg=rng.uniform(-max_rot, max_rot),
        anchor_x=float(anchor[0]),
        anchor_y=float(anchor[1]),
        translate_x=float(translate[0]),
        translate_y=float(translate[1]),
        contact=contact,
        distortion=distortion,
        condition=condition,
        ridge_threshold=float(threshold),
        dryness=float(dryness),
        wetness=float(wetness),
        partial=partial,
        noise_sigma=rng.uniform(2.0, 6.0),
        blur_sigma=rng.uniform(0.5, 1.0),
        background=rng.uniform(215.0, 245.0),
        ridge_grey=rng.uniform(50.0, 100.0),
        pore_density=rng.uniform(0.5, 2.5),
    )


# --- Geometry ----------------------------------------------------------------------------


def _to_finger(p: ImpressionParams, ux: F64, uy: F64) -> tuple[F64, F64]:
    """Image pixel -> finger (master) coordinates before distortion: undo placement."""
    a = math.radians(p.rotation_deg)
    # The image's y axis points down, so a counter-clockwise turn on screen is -a here.
    c, s = math.cos(a), math.sin(a)
    x = ux - (p.width / 2 + p.translate_x)
    y = uy - (p.height / 2 + p.translate_y)
    return p.anchor_x + c * x - s * y, p.anchor_y + s * x + c * y


def _brake(p: ImpressionParams, x: F64, y: F64) -> F64:
    """Cappelli's brake: 0 in the close-contact ellipse, rising smoothly to 1 outside it."""
    d = p.distortion
    ex, ey = (x - d.cx) / d.rx, (y - d.cy) / d.ry
    r = np.hypot(ex, ey)
    # Distance from the ellipse, measured along the ray from its centre.
    dist = np.maximum(r - 1.0, 0.0) * np.hypot(ex * d.rx, ey * d.ry) / np.maximum(r, 1e-9)
    out: F64 = 1.0 - np.exp(-((dist / d.brake) ** 2))
    return out


def _distort(p: ImpressionParams, x: F64, y: F64) -> tuple[F64, F64]:
    """v + (T(v) - v) * brake(v): rigid inside the contact region, displaced outside."""
    d = p.distortion
    a = math.radians(d.angle_deg)
    c, s = math.cos(a), math.sin(a)
    tx = d.cx + c * (x - d.cx) - s * (y - d.cy) + d.dx
    ty = d.cy + s * (x - d.cx) + c * (y - d.cy) + d.dy
    b = _brake(p, x, y)
    return x + (tx - x) * b, y + (ty - y) * b


def image_to_master(p: ImpressionParams, ux: F64, uy: F64) -> tuple[F64, F64]:
    """Where in the master each image pixel (ux, uy) looks."""
    fx, fy = _to_finger(p, ux, uy)
    return _distort(p, fx, fy)


def points_to_image(p: ImpressionParams, x: F64, y: F64) -> tuple[F64, F64]:
    """Inverse of :func:`image_to_master` for master points (x, y): the distortion is a
    small perturbation of the identity, so a fixed-point iteration converges fast."""
    fx, fy = x.astype(np.float64), y.astype(np.float64)
    for _ in range(50):
        gx, gy = _distort(p, fx, fy)
        ex, ey = x - gx, y - gy
        fx, fy = fx + ex, fy + ey
        if float(np.max(np.abs(ex), initial=0.0) + np.max(np.abs(ey), initial=0.0)) < 1e-9:
            break
    a = math.radians(p.rotation_deg)
    c, s = math.cos(a), math.sin(a)
    dx, dy = fx - p.anchor_x, fy - p.anchor_y
    return (
        c * dx + s * dy + p.width / 2 + p.translate_x,
        -s * dx + c * dy + p.height / 2 + p.translate_y,
    )


def master_to_image(p: ImpressionParams, x: float, y: float) -> tuple[float, float]:
    """Where master point (x, y) appears in the impression (see :func:`points_to_image`)."""
    u, v = points_to_image(p, np.array([x]), np.array([y]))
    return float(u[0]), float(v[0])


def _coarse_axis(size: int) -> F64:
    """Image positions (px) of the coarse samples along one axis.

    cv2.resize (INTER_LINEAR) by an integer factor k maps output pixel x to source
    (x + 0.5) / k - 0.5 and clamps below 0: the first and last k/2 pixels would repeat the
    edge sample. The coarse grid therefore covers a frame k/2 px wider on each side, and
    the upsampled array is cropped back (see :func:`_upsample`)."""
    n = -(-(size + _GRID) // _GRID)
    out: F64 = (np.arange(n, dtype=np.float64) + 0.5) * _GRID - 0.5 - _GRID // 2
    return out


def _upsample(coarse: NDArray[np.float64] | F32, width: int, height: int) -> F32:
    """Bilinear upsampling of a coarse-grid field onto the (height, width) image."""
    pad = _GRID // 2
    big = cv2.resize(
        coarse.astype(np.float32),
        (coarse.shape[1] * _GRID, coarse.shape[0] * _GRID),
        interpolation=cv2.INTER_LINEAR,
    )
    return np.ascontiguousarray(big[pad : pad + height, pad : pad + width])


def _silhouette_level(p: ImpressionParams, x: F64, y: F64) -> F64:
    """< 0 inside the contact region, > 0 outside, about a distance in px near the edge."""
    c = p.contact
    dx, dy = np.abs(x - c.cx) / c.ax, np.abs(y - c.cy) / c.ay
    m = (dx**c.exponent + dy**c.exponent) ** (1.0 / c.exponent)
    level = (m - 1.0) * min(c.ax, c.ay)
    if c.crease_y is not None:
        level = np.maximum(level, y - c.crease_y)
    if c.cut is not None:
        level = np.maximum(level, c.cut_nx * x + c.cut_ny * y - c.cut)
    out: F64 = level
    return out


def _field(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> F32:
    """Smooth zero-mean noise of about unit spread with features of about ``cell`` px:
    normal samples on a grid ``cell`` px apart, bicubically resized to ``shape``."""
    h, w = shape
    coarse = rng.standard_normal((max(2, round(h / cell) + 1), max(2, round(w / cell) + 1)))
    return np.asarray(
        cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC),
        np.float32,
    )


def _sensor_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> F32:
    """Zero-mean noise of standard deviation ``sigma``: the sum of two uniform bytes
    (triangular, close enough to Gaussian after quantisation, and ~5x cheaper to draw)."""
    a = rng.integers(0, 256, size=shape, dtype=np.uint8).astype(np.float32)
    a += rng.integers(0, 256, size=shape, dtype=np.uint8)
    a -= 255.0
    a *= np.float32(sigma / (256.0 * math.sqrt(2.0 / 12.0)))
    return a


# --- Rendering ---------------------------------------------------------------------------


def render_impression(
    master: MasterFinger, params: ImpressionParams, rng: np.random.Generator
) -> NDArray[np.uint8]:
    """Render one impression: a (height, width) uint8 image, dark ridges on light ground."""
    p = params
    w, h = p.width, p.height
    dry, wet = p.dryness, p.wetness
    gy, gx = np.meshgrid(_coarse_axis(h), _coarse_axis(w), indexing="ij")
    mx, my = image_to_master(p, gx, gy)
    grid = gx.shape

    # Smooth fields live on the coarse grid and are upsampled once each.
    # Contact: a slightly irregular edge (skin does not meet glass along a clean curve);
    # pressure falls off over the last ~25 px, thinning and fading the ridges there.
    edge = _silhouette_level(p, mx, my) + 3.0 * _field(rng, grid, 4.0)
    # The ridge threshold (see the module docstring) wanders a little over the finger.
    threshold = p.ridge_threshold + 0.12 * _field(rng, grid, 5.0)
    light = p.background * (1.0 + 0.02 * _field(rng, grid, 20.0))
    if wet:
        # Wet skin smears: blotches where the valleys fill in and darken.
        gain, size, cut = _WET_BLOTS
        blot = np.maximum(_field(rng, grid, size / _GRID) - cut, 0.0)
        threshold -= wet * gain * blot
        shade = _upsample(_WET_SHADE * wet * np.minimum(blot, 1.0), w, h)
    if dry:
        # Dry skin does not reach the glass everywhere: patches with no ridges at all.
        gain, size, cut = _DRY_GAPS
        gaps = np.clip(dry * gain * (_field(rng, grid, size / _GRID) - cut), 0.0, 1.0)
        no_contact = _upsample(gaps, w, h)

    map_x = _upsample(mx, w, h)
    map_y = _upsample(my, w, h)
    ridges: F32 = np.asarray(
        cv2.remap(
            master.ridges,
            map_x,
            map_y,
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=-1.0,
        ),
        np.float32,
    )
    edge_f = _upsample(edge, w, h)
    pressure = np.clip(edge_f, -25.0, 0.0)
    pressure *= np.float32(-1.0 / 25.0)
    thr = _upsample(threshold, w, h)
    thr += 0.45 * (1.0 - pressure)
    # Ridge edges are never clean (skin texture, pores); dry skin touches in islands and
    # grains, breaking the ridges into dashes and dots.
    thr += np.float32(_TEXTURE[0] + dry * _DRY_BREAKS[0]) * _field(rng, (h, w), 5.0)
    thr += np.float32(_TEXTURE[1] + dry * _DRY_BREAKS[1]) * _field(rng, (h, w), 2.5)
    # ink: 0 valley .. 1 ridge in full contact; the slope keeps a soft ridge flank.
    ink = ridges
    ink -= thr
    ink *= 2.5
    ink += 0.5
    np.clip(ink, 0.0, 1.0, out=ink)

    # Pores and dirt: small white specks on the ridges.
    n_specks = int(rng.poisson(p.pore_density * w * h / 2000.0))
    dots = np.zeros((h, w), np.uint8)
    dots[rng.integers(0, h, n_specks), rng.integers(0, w, n_specks)] = 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    specks = np.asarray(cv2.dilate(dots, disc), np.float32)
    ink *= 1.0 - 0.8 * specks
    ink *= np.minimum(pressure * 1.6, 1.0)
    if dry:
        ink *= 1.0 - no_contact

    # Grey levels: valleys inside the contact a little darker than the bare glass.
    inside = np.clip(edge_f, -4.0, 0.0)  # -4 inside .. 0 outside
    valley = _upsample(light, w, h)
    valley += 4.5 * inside  # 18 grey levels darker inside
    if wet:
        valley += shade * (inside * 0.25)
    ink *= valley - np.float32(p.ridge_grey + _DRY_FADE * dry)
    valley -= ink
    img = np.asarray(cv2.GaussianBlur(valley, (0, 0), p.blur_sigma + _WET_BLUR * wet), np.float32)
    # Noise where the skin touches only: optical scanners show bare glass as an almost
    # flat field (and NFIQ 2's foreground segmentation takes noisy glass for finger).
    noise = _sensor_noise(rng, (h, w), p.noise_sigma)
    noise *= inside
    noise *= -0.25
    img += noise
    img += 0.5
    out: NDArray[np.uint8] = np.clip(img, 0.0, 255.0).astype(np.uint8)
    return out


def contact_mask(params: ImpressionParams) -> NDArray[np.bool_]:
    """Pixels of the impression inside the (noise-free) contact silhouette."""
    p = params
    uy, ux = np.mgrid[0 : p.height, 0 : p.width].astype(np.float64)
    mx, my = image_to_master(p, ux, uy)
    mask: NDArray[np.bool_] = _silhouette_level(p, mx, my) < 0
    return mask


def master_footprint(
    params: ImpressionParams, master_width: int, master_height: int, step: int = 4
) -> NDArray[np.bool_]:
    """Which master points an impression shows, on a grid of ``step`` px over the master:
    inside the contact silhouette and inside the image frame.

    Two impressions of one master share ridge detail only where their footprints overlap,
    so ``(a & b).sum() * step**2`` is their common area in px^2: the ground truth that
    decides whether a pair is matchable at all (benchmarks score FNMR on such pairs).
    """
    my, mx = np.mgrid[0:master_height:step, 0:master_width:step].astype(np.float64)
    u, v = points_to_image(params, mx.ravel(), my.ravel())
    inside = (u >= 0) & (u < params.width) & (v >= 0) & (v < params.height)
    touching = _silhouette_level(params, mx.ravel(), my.ravel()) < 0
    out: NDArray[np.bool_] = (inside & touching).reshape(mx.shape)
    return out
