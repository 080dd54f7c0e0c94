"""Minutiae: the model every matcher here consumes, and the extractors that produce it.

One convention everywhere (that of ISO/IEC 19794-2:2005 and ANSI INCITS 378):

- ``x``, ``y`` in pixels at 500 ppi, origin at the top-left corner of the image, ``x`` to
  the right, ``y`` downwards;
- ``angle`` in radians in ``[0, 2*pi)``, counter-clockwise from the ``x`` axis *as seen on
  the image* (90 degrees points to the top edge). A ridge ending points from the end into
  its ridge; a bifurcation points from the fork into the valley between its two branches
  (the valley ending a bifurcation is the dual of): that is what NBIS writes into INCITS 378
  / ISO records, and ``tests/test_fingerprint_matching.py`` checks it on drawn minutiae;
- ``kind``: the ISO type code (0 other, 1 ridge ending, 2 bifurcation);
- ``quality``: 0-100 (ISO minutia quality), higher is more reliable.

mindtct (NBIS LFS v2, through ``nbis-py``) works internally with an integer direction ``d``
in 32 steps of 11.25 degrees, 0 pointing to the top of the image and increasing
clockwise. ``nbis-py`` already reports ``angle() = 90 - 11.25 * d`` degrees (NBIS's
``lfs2m1_minutia_XYT``), which is the convention above; its reliability (0-1) becomes
``quality = round(100 * reliability)`` as NBIS's own ``write_minutiae_XYTQ`` does. Its
Bozorth3 path uses a different one (origin bottom-left, ``270 - 11.25 * d``): never mix.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from biometrics.errors import BackendUnavailableError, ExtractionError

#: The resolution every coordinate in this package is expressed in.
PPI = 500
TWO_PI = 2.0 * math.pi


class MinutiaKind(IntEnum):
    """ISO/IEC 19794-2 minutia type codes."""

    OTHER = 0
    ENDING = 1
    BIFURCATION = 2


@dataclass(frozen=True, slots=True)
class Minutia:
    """One minutia, in the package convention (see the module docstring)."""

    x: float
    y: float
    angle: float
    kind: MinutiaKind = MinutiaKind.ENDING
    quality: int = 100


@dataclass(frozen=True, eq=False)
class MinutiaSet:
    """The minutiae of one finger impression, column-wise so that matchers vectorise.

    ``x``, ``y``, ``angle`` are float64 arrays; ``kind`` and ``quality`` uint8 arrays, all
    of one length. ``width``/``height`` are the image size in pixels at 500 ppi.
    """

    x: NDArray[np.float64]
    y: NDArray[np.float64]
    angle: NDArray[np.float64]
    kind: NDArray[np.uint8]
    quality: NDArray[np.uint8]
    width: int
    height: int

    def __post_init__(self) -> None:
        n = self.x.shape
        for name in ("y", "angle", "kind", "quality"):
            if getattr(self, name).shape != n:
                raise ValueError(
                    f"MinutiaSet.{name} has shape {getattr(self, name).shape}, not {n}"
                )
        if self.x.ndim != 1:
            raise ValueError("MinutiaSet columns must be one-dimensional")
        if not (0 < self.width <= 0xFFFF and 0 < self.height <= 0xFFFF):
            raise ValueError(f"image size {self.width}x{self.height} outside 1..65535")
        if len(self.x) and not np.all(np.isfinite(self.x) & np.isfinite(self.y)):
            raise ValueError("minutia coordinates must be finite")
        if np.any(self.quality > 100):
            raise ValueError("minutia quality must be 0-100")
        if np.any(self.kind > 2):
            raise ValueError("minutia kind must be 0 (other), 1 (ending) or 2 (bifurcation)")

    @classmethod
    def from_arrays(
        cls,
        x: ArrayLike,
        y: ArrayLike,
        angle: ArrayLike,
        *,
        width: int,
        height: int,
        kind: ArrayLike | None = None,
        quality: ArrayLike | None = None,
    ) -> MinutiaSet:
        """Build from array-likes; angles are wrapped into ``[0, 2*pi)``."""
        xs = np.asarray(x, dtype=np.float64).reshape(-1)
        n = len(xs)
        kinds = np.full(n, MinutiaKind.ENDING, np.uint8) if kind is None else kind
        quals = np.full(n, 100, np.uint8) if quality is None else quality
        return cls(
            x=xs,
            y=np.asarray(y, dtype=np.float64).reshape(-1),
            angle=np.mod(np.asarray(angle, dtype=np.float64).reshape(-1), TWO_PI),
            kind=np.asarray(kinds, dtype=np.uint8).reshape(-1),
            quality=np.asarray(quals, dtype=np.uint8).reshape(-1),
            width=int(width),
            height=int(height),
        )

    @classmethod
    def from_minutiae(cls, minutiae: Sequence[Minutia], *, width: int, height: int) -> MinutiaSet:
        """Build from a sequence of :class:`Minutia`."""
        return cls.from_arrays(
            [m.x for m in minutiae],
            [m.y for m in minutiae],
            [m.angle for m in minutiae],
            kind=[int(m.kind) for m in minutiae],
            quality=[m.quality for m in minutiae],
            width=width,
            height=height,
        )

    @classmethod
    def empty(cls, width: int, height: int) -> MinutiaSet:
        """A set with no minutiae (an unprintable or blank finger)."""
        return cls.from_arrays([], [], [], width=width, height=height)

    def __len__(self) -> int:
        return len(self.x)

    def __iter__(self) -> Iterator[Minutia]:
        for i in range(len(self)):
            yield Minutia(
                float(self.x[i]),
                float(self.y[i]),
                float(self.angle[i]),
                MinutiaKind(int(self.kind[i])),
                int(self.quality[i]),
            )

    def take(self, index: ArrayLike) -> MinutiaSet:
        """The subset at ``index`` (an index array or a boolean mask)."""
        idx = np.asarray(index)
        return MinutiaSet(
            self.x[idx],
            self.y[idx],
            self.angle[idx],
            self.kind[idx],
            self.quality[idx],
            self.width,
            self.height,
        )

    def best(self, n: int) -> MinutiaSet:
        """The ``n`` minutiae of highest quality (stable for ties)."""
        order = np.argsort(-self.quality.astype(np.int16), kind="stable")[:n]
        return self.take(np.sort(order))


class MinutiaeExtractor(Protocol):
    """A minutiae extractor: grey 8-bit image (dark ridges, white background) in,
    :class:`MinutiaSet` (500 ppi coordinates) out."""

    name: str

    def extract(self, image: NDArray[np.uint8], ppi: int = PPI) -> MinutiaSet:
        """Extract the minutiae of one finger image."""
        ...


def _check_image(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise ExtractionError(f"need a 2-D uint8 grey image, got {arr.dtype} {arr.shape}")
    if min(arr.shape) < 32:
        raise ExtractionError(f"image {arr.shape[1]}x{arr.shape[0]} is too small for mindtct")
    return np.ascontiguousarray(arr)


def _pgm(image: NDArray[np.uint8]) -> bytes:
    # nbis-py decodes an image file, not a raw buffer; binary PGM is the cheapest container
    # its decoder reads (no compression, no Pillow round trip).
    h, w = image.shape
    return b"P5\n%d %d\n255\n" % (w, h) + image.tobytes()


class MindtctExtractor:
    """NIST mindtct (LFS v2) via ``nbis-py``. x86_64 only (see STACK.md).

    ``min_quality`` (0-100) drops minutiae below that quality; mindtct marks many spurious
    ones with low reliability, so matchers usually want 20 or more.
    """

    name = "mindtct"

    def __init__(self, min_quality: int = 0) -> None:
        if not 0 <= min_quality <= 100:
            raise ValueError("min_quality must be 0-100")
        self.min_quality = min_quality
        self._extractors: dict[int, Any] = {}

    def _backend(self, ppi: int) -> Any:
        if ppi not in self._extractors:
            try:
                import nbis
            except ImportError as exc:  # pragma: no cover - depends on the platform
                raise BackendUnavailableError(
                    "nbis-py is not installed (x86_64 only): pip install nbis-py==0.1.3"
                ) from exc
            settings = nbis.NbisExtractorSettings(
                min_quality=0.0,
                get_center=False,
                check_fingerprint=False,
                compute_nfiq2=False,
                ppi=float(ppi),
            )
            self._extractors[ppi] = nbis.new_nbis_extractor(settings)
        return self._extractors[ppi]

    def extract(self, image: NDArray[np.uint8], ppi: int = PPI) -> MinutiaSet:
        """Run mindtct on ``image`` (scanned at ``ppi``) and convert to 500 ppi."""
        img = _check_image(image)
        if not 100 <= ppi <= 2000:
            raise ExtractionError(f"ppi {ppi} outside 100..2000")
        try:
            found = self._backend(ppi).extract_minutiae(_pgm(img)).get()
        except BackendUnavailableError:
            raise
        except Exception as exc:  # nbis raises its own NbisError family and InternalError
            raise ExtractionError(f"mindtct failed: {exc!r}") from exc
        n = len(found)
        raw = np.empty((n, 5), dtype=np.float64)
        for i, m in enumerate(found):
            kind = MinutiaKind.BIFURCATION if m.kind().name == "BIFURCATION" else MinutiaKind.ENDING
            raw[i] = (m.x(), m.y(), m.angle(), float(kind), m.reliability())
        quality = np.clip(np.rint(raw[:, 4] * 100.0), 0, 100)
        keep = quality >= self.min_quality
        scale = PPI / ppi
        h, w = img.shape
        return MinutiaSet.from_arrays(
            raw[keep, 0] * scale,
            raw[keep, 1] * scale,
            np.deg2rad(raw[keep, 2]),
            kind=raw[keep, 3],
            quality=quality[keep],
            width=max(1, round(w * scale)),
            height=max(1, round(h * scale)),
        )


_DEFAULT = MindtctExtractor()
_shared: dict[str, MinutiaeExtractor] = {"mindtct": _DEFAULT}

#: What ``extract_minutiae(method=...)`` accepts: mindtct (NBIS, fast) or LEADER (a
#: network, more accurate, seconds per image on one core; see biometrics.fingerprint.leader).
METHODS = ("mindtct", "leader")


def extract_minutiae(
    image: NDArray[np.uint8],
    ppi: int = PPI,
    extractor: MinutiaeExtractor | None = None,
    *,
    method: str = "mindtct",
) -> MinutiaSet:
    """Minutiae of a grey fingerprint image with ``extractor``, or else with the shared
    default extractor of ``method`` (one of :data:`METHODS`; all qualities kept)."""
    if extractor is None:
        if method not in METHODS:
            raise ValueError(f"unknown minutiae method {method!r}; known: {', '.join(METHODS)}")
        if method not in _shared:
            # Imported here: leader imports this module.
            from biometrics.fingerprint.leader import LeaderExtractor

            _shared.setdefault(method, LeaderExtractor())
        extractor = _shared[method]
    return extractor.extract(image, ppi)
