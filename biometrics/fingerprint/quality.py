"""Fingerprint quality on the NFIQ 2 scale (0-100).

Two scorers, one protocol:

- :class:`Nfiq2` is the real NIST NFIQ 2 through nbis-py: the registry's reference
  (~0.15-0.4 s per image, x86_64 only).
- :class:`StationQuality` is the station's predictor: a small TFLite model trained to
  reproduce NFIQ 2 on synthetic impressions (scripts/train_station_quality.py,
  docs/station-quality.md), run by LiteRT on one thread in a few milliseconds.

Both take an 8-bit grey image at 500 ppi, dark ridges on light ground, and return an int
0-100; 0 means "cannot be assessed", as NFIQ 2 reports it.
"""

from __future__ import annotations

import io
import threading
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from biometrics.errors import BackendUnavailableError, ExtractionError

if TYPE_CHECKING:
    from ai_edge_litert.interpreter import Interpreter

STATION_MODEL = "nfiq2_station"
"""Name of the station quality model in :mod:`biometrics.models`."""


class QualityScorer(Protocol):
    """Anything that scores a fingerprint image on the NFIQ 2 scale."""

    def score(self, image: NDArray[np.uint8]) -> int:
        """0-100 for an 8-bit grey 500 ppi image; 0 when it cannot be assessed."""
        ...


def _check_image(image: NDArray[Any]) -> NDArray[np.uint8]:
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 grey image, got {image.dtype} {image.shape}")
    return image


class Nfiq2:
    """The real NIST NFIQ 2 (nbis-py). Not thread-safe per instance: one per worker."""

    def __init__(self) -> None:
        try:
            import nbis
        except ImportError as exc:  # aarch64, or nbis-py not installed
            raise BackendUnavailableError(
                f"NFIQ 2 needs nbis-py (x86_64 Linux only): pip install nbis-py==0.1.3 ({exc})"
            ) from None
        settings = nbis.NbisExtractorSettings(
            min_quality=0.0, get_center=False, check_fingerprint=False, compute_nfiq2=True, ppi=500
        )
        self._nbis = nbis
        self._extractor = nbis.new_nbis_extractor(settings)

    def score(self, image: NDArray[np.uint8]) -> int:
        buf = io.BytesIO()
        Image.fromarray(_check_image(image)).save(buf, "PNG", compress_level=1)
        try:
            result = self._extractor.extract_minutiae(buf.getvalue())
        except self._nbis.NbisError as exc:
            # NFIQ 2 refuses images it cannot assess (no ridges found): report 0 as the
            # NIST tool does, unless the failure is about the input itself.
            if "decode" in str(exc).lower():
                raise ExtractionError(f"nbis could not read the image: {exc}") from exc
            return 0
        return int(result.quality().score)


class StationQuality:
    """The station's NFIQ 2 predictor: the checked-in TFLite model (sha256-verified) in
    LiteRT on one thread. Thread-safe (one invocation at a time per instance)."""

    def __init__(self, model: str = STATION_MODEL, num_threads: int = 1) -> None:
        from biometrics.models import load_tflite

        self._interpreter: Interpreter = load_tflite(model, num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._lock = threading.Lock()

    def predict(self, image: NDArray[np.uint8]) -> float:
        """The model's unrounded output (0-100)."""
        from biometrics.fingerprint.quality_model import to_canvas

        canvas = to_canvas(_check_image(image))
        with self._lock:
            self._interpreter.set_tensor(self._input, canvas)
            self._interpreter.invoke()
            out = self._interpreter.get_tensor(self._output)
        return float(out.reshape(-1)[0])

    def score(self, image: NDArray[np.uint8]) -> int:
        return int(np.clip(np.rint(self.predict(image)), 0, 100))
