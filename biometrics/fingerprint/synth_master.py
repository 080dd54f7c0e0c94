"""Master fingerprints: the ridge pattern of one finger, before any impression is taken.

The method is SFinGe's (Cappelli, Maio & Maltoni, "Synthetic fingerprint-image generation",
ICPR 2000; chapter "Synthetic Fingerprint Generation" of the Handbook of Fingerprint
Recognition):

1. singular points (cores and deltas) are placed for the finger's class;
2. an orientation field is drawn from them with the zero-pole model of Sherlock & Monro
   ("A model for interpreting fingerprint topology", Pattern Recognition 1993), each
   singularity's angular term bent by a random piecewise-linear correction as Vizcaya &
   Gerhardt proposed ("A nonlinear orientation model for global description of fingerprints",
   Pattern Recognition 1996), plus a smooth "fingertip" term so that ridges above the core
   follow the rounded tip as in real prints;
3. a ridge-period map varies smoothly over the finger (the grown ridges come out 8-11 px
   apart at 500 ppi, as on real fingers);
4. ridges grow from a few random seeds by iterated Gabor filtering, each pixel filtered with
   the Gabor filter tuned to its own orientation and period. Minutiae are not drawn: they
   appear where fronts grown from different seeds meet, and where the flow diverges around
   the singularities and the ridge count must change.

Step 4 is the cost. It is vectorised the standard way: the orientations are quantised into
``n_orientations`` bins and the periods into ``len(periods)`` bins, the whole image is
filtered once per bin in the Fourier domain, and each pixel takes the bilinear blend of the
two nearest orientation bins and two nearest period bins. Three further savings:

- the pattern is grown at 1/3 of the final resolution: the filtered image is band-limited
  (periods >= 8 px, Nyquist at 6 px), so the full-resolution master is recovered exactly
  by zero-padding the spectrum;
- each seed is planted as the small patch of ridges (local orientation and period, random
  phase) that the first iterations would grow from a dot, which saves those iterations;
- a bin no pixel uses is not filtered, and each bin is blended only over the rows that
  use it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import cv2
import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

F32 = NDArray[np.float32]

# Within-class variety of the flow. Too little and two loops share their minutiae layout
# closely enough for Bozorth3 to score same-class impostors above 40 several times as
# often as different-class ones (4 % of left-loop pairs with the original SM + VG spread).
_VG_SPREAD = 0.25  # radians, per Vizcaya-Gerhardt node
_VG_TURN = 0.4  # radians, turn of each singularity's angular reference
_FLOW_NOISE = 0.07  # radians, smooth random orientation term


class FingerClass(StrEnum):
    """Henry-Galton pattern classes as used by NIST SD4 and SFinGe."""

    ARCH = "arch"
    TENTED_ARCH = "tented_arch"
    LEFT_LOOP = "left_loop"
    RIGHT_LOOP = "right_loop"
    WHORL = "whorl"


# Natural class frequencies, as reported by Wilson, Candela & Watson ("Neural network
# fingerprint classification", 1994) and used by SFinGe.
CLASS_FREQUENCIES: dict[FingerClass, float] = {
    FingerClass.ARCH: 0.037,
    FingerClass.TENTED_ARCH: 0.029,
    FingerClass.LEFT_LOOP: 0.338,
    FingerClass.RIGHT_LOOP: 0.317,
    FingerClass.WHORL: 0.279,
}

# Per finger position: (arch, tented arch, ulnar loop, radial loop, whorl) in percent. The
# shape follows the dermatoglyphics literature (Cummins & Midlo; FBI pattern statistics):
# whorls commonest on thumbs and ring fingers, arches and radial loops on index fingers,
# ulnar loops on middle and little fingers. The numbers are ours, chosen so that the mean
# over the ten fingers reproduces CLASS_FREQUENCIES exactly (A 3.7, TA 2.9, loops 65.5,
# W 27.9).
_BY_FINGER_TYPE: dict[str, tuple[float, float, float, float, float]] = {
    "thumb": (2.0, 0.5, 58.0, 1.5, 38.0),
    "index": (8.5, 9.0, 37.5, 14.0, 31.0),
    "middle": (5.0, 3.0, 74.0, 1.5, 16.5),
    "ring": (1.5, 1.0, 56.0, 0.5, 41.0),
    "little": (1.5, 1.0, 84.0, 0.5, 13.0),
}
# Seen on the print, an ulnar loop opens toward the little finger: a right loop on the
# right hand, a left loop on the left hand. Left loops are slightly commoner overall
# (33.8% vs 31.7%); to reproduce that, the left hand gets 2.1 points more ulnar loops and
# 2.1 fewer whorls, the right hand the opposite (our choice).
_HAND_SHIFT = 2.1
_FINGER_TYPES = ("thumb", "index", "middle", "ring", "little")


def _finger_table() -> dict[int, dict[FingerClass, float]]:
    table: dict[int, dict[FingerClass, float]] = {}
    for fgp in range(1, 11):
        right = fgp <= 5
        arch, tented, ulnar, radial, whorl = _BY_FINGER_TYPE[_FINGER_TYPES[(fgp - 1) % 5]]
        shift = -_HAND_SHIFT if right else _HAND_SHIFT
        ulnar, whorl = ulnar + shift, whorl - shift
        left_loop, right_loop = (radial, ulnar) if right else (ulnar, radial)
        table[fgp] = {
            FingerClass.ARCH: arch / 100,
            FingerClass.TENTED_ARCH: tented / 100,
            FingerClass.LEFT_LOOP: left_loop / 100,
            FingerClass.RIGHT_LOOP: right_loop / 100,
            FingerClass.WHORL: whorl / 100,
        }
    return table


CLASS_BY_FINGER: dict[int, dict[FingerClass, float]] = _finger_table()
"""Class probabilities for each ANSI/NIST finger position (FGP 1-10)."""


def class_probabilities(finger: int) -> dict[FingerClass, float]:
    """Class probabilities for ANSI/NIST finger position ``finger`` (1-10), or the natural
    frequencies when the position is unknown (0)."""
    if finger == 0:
        return dict(CLASS_FREQUENCIES)
    if finger not in CLASS_BY_FINGER:
        raise ValueError(f"finger position must be 0 (unknown) or 1-10, got {finger}")
    return dict(CLASS_BY_FINGER[finger])


def draw_class(rng: np.random.Generator, finger: int = 0) -> FingerClass:
    """Draw a pattern class for a finger position (0 = unknown position)."""
    probs = class_probabilities(finger)
    classes = list(probs)
    p = np.array([probs[c] for c in classes])
    return classes[int(rng.choice(len(classes), p=p / p.sum()))]


@dataclass(frozen=True)
class Singularity:
    """A core or delta, in full-resolution master pixels (x right, y down)."""

    kind: Literal["core", "delta"]
    x: float
    y: float


@dataclass(frozen=True)
class MasterConfig:
    """Geometry and ridge-growth settings of a master fingerprint (500 ppi)."""

    width: int = 768
    """Full-resolution width in px: nail to nail for a rolled print, with margin."""
    height: int = 810
    """Full-resolution height in px: fingertip to first flexion crease, with margin."""
    downsample: int = 3
    """Ridges grow on a grid this many times coarser; must divide width and height."""
    n_orientations: int = 12
    periods: tuple[float, ...] = (8.5, 10.5)
    """Centre periods (px) of the frequency bins; the period map is clipped to their range.
    The grown ridges overshoot the map a little (realised periods ~8-11 px)."""
    sigma_across: float = 5.0
    """Gabor envelope across the ridges (px): sets the frequency bandwidth."""
    sigma_along: float = 6.0
    """Gabor envelope along the ridges (px): longer gives smoother, more continuous ridges."""
    iterations: int = 4
    """Gabor filtering iterations after the seeds are planted."""
    seed_spacing: float = 80.0
    """Mean distance (px) between growth seeds; fronts meeting create minutiae."""
    seed_radius: float = 24.0
    """Gaussian radius (px) of the ridge patch planted at each seed."""
    gain: float = 2.5
    """Saturation between iterations: tanh(gain * response / local amplitude)."""
    floor: float = 0.02
    """Smallest local amplitude divided by, so that empty areas stay empty."""
    dead_zone: float = 0.005
    """Responses below this are zeroed before saturating (round-off must not grow)."""

    def __post_init__(self) -> None:
        if self.n_orientations < 2 or self.iterations < 1 or not self.periods:
            raise ValueError("need n_orientations >= 2, iterations >= 1 and a period bin")
        ds = self.downsample
        if self.width % ds or self.height % ds:
            raise ValueError("downsample must divide width and height")
        if (self.width // ds) % 2 or (self.height // ds) % 2:
            raise ValueError("the growth grid (size / downsample) must have even sides")
        if min(self.periods) / 2 <= ds:
            raise ValueError("the shortest period must be above the Nyquist period 2*downsample")

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, columns) of the coarse grid the ridges grow on."""
        return self.height // self.downsample, self.width // self.downsample


@dataclass(frozen=True)
class MasterFinger:
    """A master fingerprint: the full ridge pattern of one finger."""

    ridges: F32 = field(repr=False)
    """(height, width) ridge signal, about -1 (valley) to +1 (ridge centre), band-limited."""
    orientation: F32 = field(repr=False)
    """Ridge orientation (radians mod pi, 0 = horizontal) on the coarse grid."""
    period: F32 = field(repr=False)
    """Ridge period (px) on the coarse grid."""
    finger_class: FingerClass
    singularities: tuple[Singularity, ...]
    config: MasterConfig

    @property
    def cores(self) -> list[Singularity]:
        return [s for s in self.singularities if s.kind == "core"]

    @property
    def deltas(self) -> list[Singularity]:
        return [s for s in self.singularities if s.kind == "delta"]

    @property
    def pad_centre(self) -> tuple[float, float]:
        """Where a flat impression centres: the core(s), or the arch's summit."""
        cores = self.cores
        if cores:
            return (
                float(np.mean([c.x for c in cores])),
                float(np.mean([c.y for c in cores])),
            )
        return self.config.width / 2, self.config.height * 0.48


# --- Singularities and orientation -------------------------------------------------------


def place_singularities(
    rng: np.random.Generator, finger_class: FingerClass, cfg: MasterConfig
) -> tuple[Singularity, ...]:
    """Cores and deltas for a class, placed as on real rolled prints: the core a little
    above the centre of the pad, deltas below it to one side (loops) or both (whorls)."""
    x0 = cfg.width / 2 + rng.normal(0.0, 22.0)
    y0 = cfg.height * 0.44 + rng.normal(0.0, 25.0)
    if finger_class is FingerClass.ARCH:
        return ()
    if finger_class is FingerClass.TENTED_ARCH:
        return (
            Singularity("core", x0, y0),
            Singularity("delta", x0 + rng.normal(0.0, 6.0), y0 + rng.uniform(45.0, 85.0)),
        )
    if finger_class in (FingerClass.LEFT_LOOP, FingerClass.RIGHT_LOOP):
        # A left loop's ridges enter and leave on the left, so its delta lies to the right.
        side = 1.0 if finger_class is FingerClass.LEFT_LOOP else -1.0
        # About 10 to 30 ridges between core and delta, within the range of real loops.
        dx = side * rng.uniform(60.0, 200.0)
        return (
            Singularity("core", x0 - 0.15 * dx, y0),
            Singularity("delta", x0 + 0.85 * dx, y0 + rng.uniform(70.0, 210.0)),
        )
    # Whorl: two cores (a short separation gives a plain whorl, a longer one a spiral or a
    # double loop) and a delta on each side.
    sep = rng.uniform(12.0, 60.0)
    ang = rng.uniform(0.0, math.pi)
    hx, hy = 0.5 * sep * math.cos(ang), 0.5 * sep * math.sin(ang)
    return (
        Singularity("core", x0 + hx, y0 + hy),
        Singularity("core", x0 - hx, y0 - hy),
        Singularity("delta", x0 - rng.uniform(120.0, 210.0), y0 + rng.uniform(95.0, 185.0)),
        Singularity("delta", x0 + rng.uniform(120.0, 210.0), y0 + rng.uniform(95.0, 185.0)),
    )


def _grid_coords(cfg: MasterConfig) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Full-resolution (x, y) of each coarse-grid sample (sample k sits at k * downsample,
    which is what spectrum zero-padding assumes when it upsamples)."""
    h, w = cfg.grid_shape
    ds = cfg.downsample
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return x * ds, y * ds


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> F32:
    """Zero-mean, unit-ish smooth random field: a coarse normal grid, bicubically upsampled."""
    coarse = rng.standard_normal(cells).astype(np.float32)
    return np.asarray(
        cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC), np.float32
    )


def _vizcaya_gerhardt(rng: np.random.Generator) -> tuple[NDArray[np.float64], float]:
    """A random piecewise-linear correction g(a) = a + e(a) of one singularity's angle.

    Vizcaya & Gerhardt fit e at eight angles per singularity to real prints; we draw
    them (the spread gives each finger its own shape). e is periodic, so g(a + 2 pi) =
    g(a) + 2 pi: the winding, hence the singularity's index (+-1/2), is kept."""
    eps = rng.normal(0.0, _VG_SPREAD, size=8)
    return eps, float(rng.uniform(-_VG_TURN, _VG_TURN))


def _corrected_angle(alpha: NDArray[np.float64], eps: NDArray[np.float64]) -> NDArray[np.float64]:
    """g(alpha) for alpha in (-pi, pi]: linear interpolation of eps between 8 nodes."""
    nodes = np.linspace(-math.pi, math.pi, 9)
    return np.asarray(alpha + np.interp(alpha, nodes, np.append(eps, eps[0])), np.float64)


def orientation_field(
    rng: np.random.Generator,
    finger_class: FingerClass,
    singularities: tuple[Singularity, ...],
    cfg: MasterConfig,
) -> F32:
    """Ridge orientation (radians, 0 = horizontal, y down) on the coarse grid.

    theta = 1/2 [sum over cores g_c(arg(z - c)) - sum over deltas g_d(arg(z - d))]
            + fingertip term + a faint smooth random term,
    the Sherlock-Monro zero-pole model with Vizcaya-Gerhardt corrections g.
    """
    x, y = _grid_coords(cfg)
    z = x + 1j * y
    theta = np.zeros_like(x)
    for s in singularities:
        eps, rot = _vizcaya_gerhardt(rng)
        # rot turns the singularity's angular reference: for a single core it tilts the loop.
        alpha = np.angle((z - (s.x + 1j * s.y)) * np.exp(-1j * rot))
        sign = 1.0 if s.kind == "core" else -1.0
        theta += sign * 0.5 * (_corrected_angle(alpha, eps) + rot)

    w, h = cfg.width, cfg.height
    cx = w / 2 + rng.normal(0.0, 15.0)
    cores = [s for s in singularities if s.kind == "core"]
    top_of_pattern = min((c.y for c in cores), default=h * 0.5)
    # Fingertip term: ridges above the pattern arc over it, following the rounded tip
    # (the zero-pole model alone leaves them straight). Zero low down, so the deltas and
    # the flexion-crease ridges below them stay horizontal.
    amp = rng.uniform(0.35, 0.6)
    y_fade = top_of_pattern - rng.uniform(40.0, 110.0)
    bend = amp * np.tanh((x - cx) / rng.uniform(150.0, 230.0))
    bend /= 1.0 + np.exp(-(y_fade - y) / 55.0)
    theta += bend
    if finger_class is FingerClass.ARCH:
        # Plain arch: no singularity, ridges rise in a hump across the middle of the pad.
        s_x = rng.uniform(90.0, 150.0)
        y_hump = h * rng.uniform(0.42, 0.55)
        slope = rng.uniform(0.5, 1.0) * (x - cx) / s_x * np.exp(-0.5 * ((x - cx) / s_x) ** 2)
        slope *= np.exp(-0.5 * ((y - y_hump) / rng.uniform(110.0, 170.0)) ** 2)
        theta += np.arctan(slope)
    h_c, w_c = cfg.grid_shape
    theta += _FLOW_NOISE * _smooth_noise(rng, (h_c, w_c), (5, 5))
    return np.mod(theta, math.pi).astype(np.float32)


def period_map(
    rng: np.random.Generator, singularities: tuple[Singularity, ...], cfg: MasterConfig
) -> F32:
    """Ridge period (px) on the coarse grid: a per-finger mean of 8.6-10 px, a little finer
    near the core than toward the edges, with smooth random variation."""
    x, y = _grid_coords(cfg)
    base = rng.uniform(8.6, 10.0)
    cores = [s for s in singularities if s.kind == "core"]
    cx = np.mean([c.x for c in cores]) if cores else cfg.width / 2
    cy = np.mean([c.y for c in cores]) if cores else cfg.height * 0.48
    r = np.hypot(x - cx, y - cy) / 400.0
    h_c, w_c = cfg.grid_shape
    p = base - 0.3 + 0.9 * r + 0.35 * _smooth_noise(rng, (h_c, w_c), (4, 4))
    return np.clip(p, min(cfg.periods), max(cfg.periods)).astype(np.float32)


# --- Ridge growth ------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def gabor_bank(cfg: MasterConfig) -> F32:
    """Even Gabor filters in the Fourier domain of the coarse grid, one per (period,
    orientation) bin, shape (bins, rows, columns // 2 + 1), unit gain at the tuned
    frequency. Bin index = period_bin * n_orientations + orientation_bin."""
    h, w = cfg.grid_shape
    fy = np.fft.fftfreq(h, d=cfg.downsample)[:, None]  # cycles per full-resolution px
    fx = np.fft.rfftfreq(w, d=cfg.downsample)[None, :]
    sa2 = 2.0 * math.pi**2 * cfg.sigma_across**2
    sl2 = 2.0 * math.pi**2 * cfg.sigma_along**2
    n_o = cfg.n_orientations
    bank = np.empty((len(cfg.periods) * n_o, h, w // 2 + 1), np.float32)
    for j, period in enumerate(cfg.periods):
        f = 1.0 / period
        for i in range(n_o):
            t = math.pi * i / n_o
            u_n = -fx * math.sin(t) + fy * math.cos(t)  # across the ridges
            u_t = fx * math.cos(t) + fy * math.sin(t)  # along the ridges
            along = sl2 * u_t**2
            g = np.exp(-sa2 * (u_n - f) ** 2 - along) + np.exp(-sa2 * (u_n + f) ** 2 - along)
            bank[j * n_o + i] = g
    bank.setflags(write=False)
    return bank


def _bin_weights(
    orientation: F32, period: F32, cfg: MasterConfig
) -> tuple[F32, list[tuple[int, int, int]]]:
    """Per-pixel weight of each (period, orientation) bin, shape (bins, rows, cols), and
    the (bin, first row, end row) band where each used bin has any weight. Every pixel
    blends its two nearest orientation bins and two nearest period bins (bilinearly); a
    bin no pixel uses is never filtered."""
    n_o, periods = cfg.n_orientations, cfg.periods
    n_f = len(periods)
    h, w = orientation.shape
    o = orientation.ravel().astype(np.float64) / math.pi * n_o
    o0 = np.floor(o)
    wo = (o - o0).astype(np.float32)
    i0 = o0.astype(np.intp) % n_o
    i1 = (i0 + 1) % n_o
    pix = np.arange(h * w)
    if n_f == 1:
        corners = [(i0, 1 - wo), (i1, wo)]
    else:
        # Bins are not evenly spaced in general: interpolate in the bin-index space.
        q = np.interp(period.ravel(), np.array(periods), np.arange(n_f, dtype=np.float64))
        j0 = np.minimum(np.floor(q).astype(np.intp), n_f - 2)
        wf = (q - j0).astype(np.float32)
        j1 = j0 + 1
        corners = [
            (j0 * n_o + i0, (1 - wo) * (1 - wf)),
            (j0 * n_o + i1, wo * (1 - wf)),
            (j1 * n_o + i0, (1 - wo) * wf),
            (j1 * n_o + i1, wo * wf),
        ]
    n_bins = n_o * n_f
    weights = np.zeros(n_bins * h * w, np.float32)
    rows = pix // w
    per_row = np.zeros(n_bins * h)  # total weight of each bin in each row
    for label, weight in corners:
        weights[label * (h * w) + pix] = weight
        per_row += np.bincount(label * h + rows, weights=weight, minlength=n_bins * h)
    used = per_row.reshape(n_bins, h) > 0
    stack = weights.reshape(n_bins, h, w)
    bands = []
    for b in range(n_bins):
        band = np.flatnonzero(used[b])
        if band.size:
            bands.append((b, int(band[0]), int(band[-1]) + 1))
    return stack, bands


def _seeds(
    rng: np.random.Generator, singularities: tuple[Singularity, ...], cfg: MasterConfig
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Seed positions on the coarse grid: a jittered grid (so that no gap outlasts the
    iterations) at a random offset (so that the seams where fronts meet, and the minutiae
    along them, fall in different places on different fingers), plus one near each
    singularity, where growth is slowest. Positions wrap: the FFT domain is periodic."""
    h, w = cfg.grid_shape
    s = cfg.seed_spacing / cfg.downsample
    ny, nx = max(1, round(h / s)), max(1, round(w / s))
    gy, gx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    oy, ox = rng.uniform(0.0, 1.0, 2)
    ys = (gy + oy + rng.uniform(0.1, 0.9, gy.shape)) * (h / ny)
    xs = (gx + ox + rng.uniform(0.1, 0.9, gx.shape)) * (w / nx)
    ys_l, xs_l = list(ys.ravel()), list(xs.ravel())
    for sg in singularities:
        ys_l.append(sg.y / cfg.downsample + rng.normal(0.0, 4.0))
        xs_l.append(sg.x / cfg.downsample + rng.normal(0.0, 4.0))
    yi = np.round(ys_l).astype(np.intp) % h
    xi = np.round(xs_l).astype(np.intp) % w
    return yi, xi


def _seed_patches(
    rng: np.random.Generator,
    yi: NDArray[np.intp],
    xi: NDArray[np.intp],
    orientation: F32,
    period: F32,
    cfg: MasterConfig,
) -> F32:
    """The starting image: at each seed, a small patch of ridges with the local
    orientation and period and a random phase (what the first growth iterations would
    make of a dot, made directly). Patches wrap around the edges like the FFT domain."""
    h, w = cfg.grid_shape
    ds = cfg.downsample
    radius = cfg.seed_radius / ds
    k = max(1, math.ceil(2.5 * radius))
    dy, dx = np.mgrid[-k : k + 1, -k : k + 1].astype(np.float64)
    theta = orientation[yi, xi].astype(np.float64)[:, None, None]
    freq = (ds / period[yi, xi].astype(np.float64))[:, None, None]
    phase = rng.uniform(0.0, 2 * math.pi, yi.size)[:, None, None]
    across = -dx * np.sin(theta) + dy * np.cos(theta)
    patches = np.cos(2 * math.pi * freq * across + phase) * np.exp(
        -(dx**2 + dy**2) / (2 * radius**2)
    )
    image = np.zeros((h, w), np.float32)
    rows = (yi[:, None] + np.arange(-k, k + 1)) % h
    cols = (xi[:, None] + np.arange(-k, k + 1)) % w
    np.add.at(image, (rows[:, :, None], cols[:, None, :]), patches.astype(np.float32))
    return image


def grow_ridges(
    rng: np.random.Generator,
    orientation: F32,
    period: F32,
    singularities: tuple[Singularity, ...],
    cfg: MasterConfig,
) -> F32:
    """SFinGe ridge growth on the coarse grid; returns the normalised (about +-1) linear
    filter output of the last iteration, which is band-limited and safe to upsample.

    Between iterations the image is normalised by its local amplitude and softly
    saturated (tanh): fronts of any strength grow at once, grown ridges saturate. A small
    dead zone keeps round-off noise from seeding ridges everywhere (it would be amplified
    without bound and give a labyrinth of minutiae)."""
    h, w = cfg.grid_shape
    bank = gabor_bank(cfg)
    weights, bands = _bin_weights(orientation, period, cfg)
    yi, xi = _seeds(rng, singularities, cfg)
    image = _seed_patches(rng, yi, xi, orientation, period, cfg)
    k = max(3, round(2 * float(np.mean(cfg.periods)) / cfg.downsample)) | 1
    spectrum_b = np.empty(bank.shape[1:], np.complex64)
    o2 = np.zeros((h, w), np.float32)
    env = np.ones((h, w), np.float32)
    for _ in range(cfg.iterations):
        spectrum = sfft.rfft2(image, workers=1)
        o2 = np.zeros((h, w), np.float32)
        # One bin at a time, accumulated straight into the output over the rows where the
        # bin is used: no stack of all the responses is ever held.
        for b, r0, r1 in bands:
            np.multiply(spectrum, bank[b], out=spectrum_b)
            response = sfft.irfft2(spectrum_b, s=(h, w), workers=1, overwrite_x=True)
            o2[r0:r1] += response[r0:r1] * weights[b, r0:r1]
        env = np.sqrt(np.maximum(cv2.blur(o2 * o2, (k, k)), 0.0))
        shrunk = np.sign(o2) * np.maximum(np.abs(o2) - cfg.dead_zone, 0.0)
        image = np.tanh(cfg.gain * shrunk / np.maximum(env, cfg.floor)).astype(np.float32)
    return (o2 / np.maximum(env, cfg.floor)).astype(np.float32)


def fft_upsample(image: F32, shape: tuple[int, int]) -> F32:
    """Band-limited upsampling by zero-padding the spectrum (sides must be even)."""
    h, w = image.shape
    big_h, big_w = shape
    spec = sfft.rfft2(image, workers=1)
    spec *= np.float32((big_h * big_w) / (h * w))
    padded = np.zeros((big_h, big_w // 2 + 1), np.complex64)
    # Drop the Nyquist row and column: there is no signal there and they have no unique
    # place in the larger spectrum.
    padded[: h // 2, : w // 2] = spec[: h // 2, : w // 2]
    padded[big_h - h // 2 + 1 :, : w // 2] = spec[h // 2 + 1 :, : w // 2]
    out: F32 = sfft.irfft2(padded, s=shape, workers=1, overwrite_x=True).astype(
        np.float32, copy=False
    )
    return out


def generate_master(
    rng: np.random.Generator,
    finger_class: FingerClass,
    cfg: MasterConfig | None = None,
) -> MasterFinger:
    """Generate a master fingerprint of the given class from ``rng``."""
    cfg = cfg or MasterConfig()
    singularities = place_singularities(rng, finger_class, cfg)
    orientation = orientation_field(rng, finger_class, singularities, cfg)
    period = period_map(rng, singularities, cfg)
    coarse = grow_ridges(rng, orientation, period, singularities, cfg)
    ridges = fft_upsample(coarse, (cfg.height, cfg.width))
    np.clip(ridges, -1.5, 1.5, out=ridges)
    for arr in (ridges, orientation, period):
        arr.setflags(write=False)
    return MasterFinger(
        ridges=ridges,
        orientation=orientation,
        period=period,
        finger_class=finger_class,
        singularities=singularities,
        config=cfg,
    )
