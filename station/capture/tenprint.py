"""The ten rolled fingers, one attempt at a time: quality, same finger twice, wrong hand.

    capture = TenPrintCapture(scanner, TenPrintSettings(min_quality=40))
    for position in capture.remaining():            # FGP 1..10, right thumb first
        outcome = capture.attempt(position)         # one roll; never raises for the
        ui.show(outcome.message("vi"))              # scanner's or the citizen's faults
        if outcome.result is not None and outcome.result.done:
            workflow.store_finger(case, officer, outcome.result)   # persisted at once
    for warning in capture.hand_check():
        ui.warn(warning.message("vi"))

Each attempt rolls the finger (the scanner driver composes the print), crops it to the
skin, scores it with the station's NFIQ 2 predictor, extracts minutiae (mindtct) and
checks them against every other finger already captured: the same finger rolled twice
is refused and is not counted. The best of up to ``max_attempts`` is kept: accepted at
once when it reaches ``min_quality``, otherwise kept after the last attempt and flagged
low quality (the workflow asks a supervisor). A finger that cannot be rolled gets an
exception code instead, which a supervisor approves.

State lives in plain objects (:class:`FingerResult`, serialisable with ``to_dict`` /
``from_dict``): the workflow stores each finger the moment it is done and, after a power
cut, rebuilds the capture with ``TenPrintCapture(..., results=stored)`` and goes on.

The wrong-hand check (:meth:`TenPrintCapture.hand_check`) reads each kept print's pattern
class (:mod:`biometrics.fingerprint.pattern`) and, once a hand is done, weighs its loops:
right-hand loops mostly open to the right on the print, left-hand loops to the left.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Literal, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from biometrics.errors import BackendUnavailableError, BiometricsError
from biometrics.fingerprint.iso19794 import decode_minutiae, encode_minutiae
from biometrics.fingerprint.matcher import FingerTemplate, make_template, verify
from biometrics.fingerprint.minutiae import MinutiaeExtractor, MinutiaSet, extract_minutiae
from biometrics.fingerprint.pattern import (
    HAND_FINGERS,
    SWAP_LOG_RATIO,
    Pattern,
    classify,
    hand_vote,
)
from biometrics.fingerprint.quality import QualityScorer
from enrollment import ansi_nist
from enrollment.images import encode_wsq
from enrollment.modalities import FINGER
from enrollment.record import BiometricException, BiometricSample, QualityScore
from station.drivers.fingerprint.band import CONTACT_STD
from station.drivers.fingerprint.errors import ScannerError
from station.drivers.fingerprint.frames import RollFrame
from station.drivers.fingerprint.rolled import RolledCapture, RollError

ORDER = tuple(range(1, 11))
"""The standard sequence: FGP 1-5 right thumb to little, then 6-10 left thumb to little."""

FINGER_NAMES: dict[int, tuple[str, str]] = {
    1: ("ngón cái tay phải", "right thumb"),
    2: ("ngón trỏ tay phải", "right index"),
    3: ("ngón giữa tay phải", "right middle"),
    4: ("ngón áp út tay phải", "right ring"),
    5: ("ngón út tay phải", "right little"),
    6: ("ngón cái tay trái", "left thumb"),
    7: ("ngón trỏ tay trái", "left index"),
    8: ("ngón giữa tay trái", "left middle"),
    9: ("ngón áp út tay trái", "left ring"),
    10: ("ngón út tay trái", "left little"),
}
"""(Vietnamese, English) name of each ANSI/NIST finger position."""

EXCEPTION_CODES: dict[str, str] = {
    code: meaning for code, (meaning, _) in FINGER.exceptions.items()
}
"""The finger exception codes the enrollment record accepts (enrollment.modalities.FINGER):
``amputated`` (ANSI/NIST AMP XX), ``unable_to_print`` (worn, scarred or otherwise
unprintable skin; AMP UP) and ``bandaged`` (bandaged or injured, temporarily unprintable;
AMP UP). Every one needs a supervisor's approval."""

QUALITY_ALGORITHM = ("NFIQ2-station", "1")
"""How the station's quality scores are labelled in the record (the registry scores every
finger again with NIST's NFIQ 2)."""

Lang = Literal["vi", "en"]
Status = Literal["in_progress", "captured", "exception"]


class TenPrintSettings(BaseModel):
    """Rules of the ten-print capture; the registry's station policy supplies the first
    three (``finger_min_quality``, ``finger_max_attempts``, ``same_finger_threshold``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_quality: int = Field(40, ge=0, le=100)
    """Station NFIQ 2 score at which an attempt is accepted at once."""
    max_attempts: int = Field(3, ge=1, le=10)
    """Scored attempts per finger; after the last one the best is kept, flagged low."""
    same_finger_threshold: float = Field(0.30, gt=0.0, le=1.0)
    """matcher.verify score at or above which two positions hold the same finger.
    Different fingers of one person score up to 0.21 on synthetic rolled prints,
    impressions of one finger a median of 0.45 (docs/station-capture.md)."""
    roll_timeout_s: float = Field(15.0, gt=0.0, le=120.0)
    """How long the scanner waits for the finger to land and roll."""
    crop_margin_px: int = Field(16, ge=0, le=200)
    """Glass kept around the print when it is cropped to the skin (0-200 px)."""
    swap_log_ratio: float = Field(SWAP_LOG_RATIO, gt=0.0)
    """Natural-log likelihood ratio above which a hand is reported as the other hand."""
    min_hand_prints: int = Field(3, ge=1, le=5)
    """Readable pattern readings a hand needs before the hand check speaks about it."""


# --------------------------------------------------------------------------- state


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: object, name: str) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"{name} must be base64 text or null")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ValueError(f"{name} is not valid base64: {exc}") from None


@dataclass(frozen=True)
class FingerResult:
    """One finger position: its best attempt so far (or the kept one), or its exception.

    Field names follow what the workflow stores (station.cases.FingerEntry): ``wsq``,
    ``width``, ``height``, ``quality``, ``attempts``, ``template``, ``low_quality``,
    ``exception_code``, ``exception_reason``."""

    position: int
    status: Status
    wsq: bytes | None = field(default=None, repr=False)
    """The kept attempt's image, WSQ at 500 ppi, cropped to the skin."""
    width: int = 0
    height: int = 0
    quality: int | None = None
    """Station NFIQ 2 score (0-100) of the kept attempt."""
    attempts: int = 0
    """Scored attempts (rolls that gave a print of this finger)."""
    scores: tuple[int, ...] = ()
    """Every scored attempt's quality, in order."""
    template: bytes | None = field(default=None, repr=False)
    """ISO/IEC 19794-2:2005 record (one view) of the kept attempt's minutiae."""
    low_quality: bool = False
    """Kept after the last attempt although below the minimum."""
    pattern: str | None = None
    """The kept print's pattern class (biometrics.fingerprint.pattern.Pattern value)."""
    pattern_confidence: float = 0.0
    rejected: int = 0
    """Attempts refused because they were another position's finger."""
    failed_rolls: int = 0
    """Rolls the scanner or the composer refused (too fast, smeared, no finger...)."""
    exception_code: str | None = None
    exception_reason: str | None = None
    needs_approval: bool = False
    """An exception, or a low-quality print, that no supervisor has approved yet."""
    approved_by: str | None = None

    def __post_init__(self) -> None:
        if self.position not in FINGER_NAMES:
            raise ValueError(f"finger position must be 1-10, got {self.position}")
        if self.status not in ("in_progress", "captured", "exception"):
            raise ValueError(f"unknown finger status {self.status!r}")
        if self.status == "exception":
            if self.exception_code not in EXCEPTION_CODES:
                raise ValueError(
                    f"exception code must be one of {sorted(EXCEPTION_CODES)}, "
                    f"got {self.exception_code!r}"
                )
        elif self.wsq is None or self.template is None or self.quality is None:
            raise ValueError(f"a {self.status} finger needs its image, template and quality")
        if self.pattern is not None and self.pattern not in set(Pattern):
            raise ValueError(f"unknown pattern class {self.pattern!r}")

    @property
    def done(self) -> bool:
        """Captured (accepted or kept) or excepted: the workflow can store it."""
        return self.status != "in_progress"

    @property
    def name(self) -> str:
        return FINGER_NAMES[self.position][1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (bytes as base64)."""
        return {
            "position": self.position,
            "status": self.status,
            "wsq": _b64(self.wsq),
            "width": self.width,
            "height": self.height,
            "quality": self.quality,
            "attempts": self.attempts,
            "scores": list(self.scores),
            "template": _b64(self.template),
            "low_quality": self.low_quality,
            "pattern": self.pattern,
            "pattern_confidence": self.pattern_confidence,
            "rejected": self.rejected,
            "failed_rolls": self.failed_rolls,
            "exception_code": self.exception_code,
            "exception_reason": self.exception_reason,
            "needs_approval": self.needs_approval,
            "approved_by": self.approved_by,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FingerResult:
        """The inverse of :meth:`to_dict`; raises ValueError on anything malformed."""
        try:
            scores = tuple(int(s) for s in data.get("scores", ()))
            quality = data.get("quality")
            return cls(
                position=int(data["position"]),
                status=data["status"],
                wsq=_unb64(data.get("wsq"), "wsq"),
                width=int(data.get("width", 0)),
                height=int(data.get("height", 0)),
                quality=None if quality is None else int(quality),
                attempts=int(data.get("attempts", 0)),
                scores=scores,
                template=_unb64(data.get("template"), "template"),
                low_quality=bool(data.get("low_quality", False)),
                pattern=data.get("pattern"),
                pattern_confidence=float(data.get("pattern_confidence", 0.0)),
                rejected=int(data.get("rejected", 0)),
                failed_rolls=int(data.get("failed_rolls", 0)),
                exception_code=data.get("exception_code"),
                exception_reason=data.get("exception_reason"),
                needs_approval=bool(data.get("needs_approval", False)),
                approved_by=data.get("approved_by"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a finger result: {exc!r}") from None

    # --- what the record needs ------------------------------------------------------

    def biometric_sample(self, idc: int | None) -> BiometricSample:
        """The enrollment record's sample for this finger; ``idc`` is the Type-14
        record's IDC (None for an exception without an image)."""
        if not self.done:
            raise ValueError(f"the {self.name} is still being captured")
        exception = None
        if self.status == "exception":
            assert self.exception_code is not None
            exception = BiometricException(
                code=self.exception_code,
                reason=self.exception_reason,
                approved_by=self.approved_by,
            )
            return BiometricSample(modality="finger", position=self.position, exception=exception)
        quality = QualityScore(
            algorithm=QUALITY_ALGORITHM[0], version=QUALITY_ALGORITHM[1], score=self.quality or 0
        )
        return BiometricSample(
            modality="finger",
            position=self.position,
            idc=idc,
            quality=quality,
            attempts=max(1, min(10, self.attempts)),
        )

    def fingerprint_image(
        self, idc: int, capture_date: date, source: str
    ) -> ansi_nist.FingerprintImage | None:
        """The Type-14 record of the kept print (None for an exception)."""
        if self.status != "captured":
            return None
        assert self.wsq is not None
        return ansi_nist.FingerprintImage(
            idc=idc,
            position=self.position,
            impression=1,  # live-scan rolled
            width=self.width,
            height=self.height,
            data=self.wsq,
            quality=self.quality,
            capture_date=capture_date,
            source=source,
        )


# --------------------------------------------------------------------------- outcomes

# code -> (Vietnamese, English) for the officer; {finger} and {other} are finger names.
MESSAGES: dict[str, tuple[str, str]] = {
    "accepted": ("Đã lấy {finger}.", "{finger} captured."),
    "low_quality": (
        "Ảnh {finger} chưa đạt chất lượng: lau ngón tay và lăn lại.",
        "{finger}: quality too low; clean the finger and roll again.",
    ),
    "kept_best": (
        "Đã lăn đủ số lần: giữ ảnh tốt nhất của {finger} (cần giám sát viên duyệt).",
        "Last attempt: the best print of the {finger} is kept (a supervisor must approve).",
    ),
    "same_finger": (
        "Đây là {other}, không phải {finger}: lăn đúng ngón.",
        "This is the same finger as the {other}: roll the {finger}.",
    ),
    "no_finger": (
        "Không phát hiện ngón tay: đặt {finger} lên mặt kính.",
        "No finger detected: place the {finger} on the glass.",
    ),
    "too_fast": ("Lăn quá nhanh: lăn chậm lại.", "Rolled too fast: roll more slowly."),
    "frames_lost": (
        "Mất dữ liệu từ máy quét: lăn lại; nếu lặp lại, kiểm tra cáp.",
        "Frames were lost from the scanner: roll again; check the cable if it repeats.",
    ),
    "smeared": (
        "Ngón tay bị trượt: giữ ngón tay áp nhẹ và lăn lại.",
        "The finger slipped: keep a light, steady pressure and roll again.",
    ),
    "too_short": (
        "Chưa lăn đủ từ mép móng bên này sang bên kia: lăn lại.",
        "Not rolled nail to nail: roll the whole finger again.",
    ),
    "no_contact": (
        "Không thấy vân tay: đặt ngón tay lên mặt kính rồi lăn.",
        "No print on the glass: place the finger on the glass, then roll.",
    ),
    "cancelled": ("Đã hủy.", "Cancelled."),
    "timeout": (
        "Máy quét không trả lời kịp: thử lại.",
        "The scanner did not finish in time: try again.",
    ),
    "disconnected": (
        "Máy quét bị ngắt kết nối: kiểm tra cáp USB.",
        "The scanner was disconnected: check the USB cable.",
    ),
    "protocol": (
        "Tín hiệu từ máy quét bị lỗi: thử lại; nếu lặp lại, kiểm tra cáp.",
        "The scanner's data kept arriving damaged: try again; check the cable if it repeats.",
    ),
    "extraction": (
        "Không xử lý được ảnh vân tay: lăn lại.",
        "The print could not be processed: roll again.",
    ),
    "scanner_error": ("Lỗi máy quét: thử lại.", "Scanner error: try again."),
}


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt did, for the officer's screen.

    ``code`` is stable (see :data:`MESSAGES`): ``accepted``, ``low_quality`` (roll again),
    ``kept_best`` (the last attempt: the best is kept, flagged), ``same_finger``, or the
    scanner's / composer's error code (``no_finger``, ``too_fast``, ``smeared``,
    ``too_short``, ``no_contact``, ``frames_lost``, ``cancelled``, ``timeout``,
    ``disconnected``, ``protocol``...)."""

    position: int
    code: str
    result: FingerResult | None
    """The position's state after the attempt (None while nothing was scored yet)."""
    quality: int | None = None
    """This attempt's score (None when it gave no print)."""
    same_as: int | None = None
    """The position whose finger this attempt was (``same_finger``)."""
    similarity: float | None = None
    detail: str | None = None
    """The driver's own message for a device fault (English, for the log)."""
    seconds: float = 0.0
    """Software time after the roll (crop, quality, minutiae, checks, encoding)."""

    @property
    def done(self) -> bool:
        return self.result is not None and self.result.done

    def message(self, lang: Lang = "vi") -> str:
        """The officer's instruction in Vietnamese or English."""
        vi, en = MESSAGES.get(self.code, MESSAGES["scanner_error"])
        names = 0 if lang == "vi" else 1
        text = vi if lang == "vi" else en
        other = FINGER_NAMES[self.same_as][names] if self.same_as is not None else ""
        out = text.format(finger=FINGER_NAMES[self.position][names], other=other)
        return out[:1].upper() + out[1:]


@dataclass(frozen=True)
class HandWarning:
    """A hand whose prints look like the other hand's."""

    hand: Literal["right", "left"]
    log_ratio: float
    """ln of P(prints | other hand) / P(prints | this hand)."""
    fingers: int
    """Readable prints the vote used."""

    def message(self, lang: Lang = "vi") -> str:
        if lang == "vi":
            this, other = ("phải", "trái") if self.hand == "right" else ("trái", "phải")
            return (
                f"Vân tay lấy cho tay {this} giống tay {other}: kiểm tra đã đặt đúng tay "
                f"{this} chưa, nếu sai thì lấy lại."
            )
        other_en = "left" if self.hand == "right" else "right"
        return (
            f"The prints taken for the {self.hand} hand look like a {other_en} hand: check "
            f"that the {self.hand} hand was rolled, and capture it again if not."
        )


# --------------------------------------------------------------------------- the capture


class RollScanner(Protocol):
    """What the capture needs of the scanner driver (station.drivers.fingerprint.scanner
    .FingerprintScanner has it)."""

    def capture_roll(
        self,
        finger_hint: int,
        timeout: float = ...,
        on_frame: Callable[[RollFrame], None] | None = ...,
        cancel: threading.Event | None = ...,
    ) -> RolledCapture: ...

    def cancel(self) -> None: ...


def contact_box(
    image: NDArray[np.uint8], margin: int, block: int = 16
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around the skin: the 16 x 16 blocks whose grey-level spread shows
    ridges (the composer's own contact measure), widened by ``margin`` px."""
    h, w = image.shape
    rows, cols = h // block, w // block
    cut = image[: rows * block, : cols * block].astype(np.float32)
    size = (cols, rows)
    mean = cv2.resize(cut, size, interpolation=cv2.INTER_AREA)
    square = cv2.resize(cut * cut, size, interpolation=cv2.INTER_AREA)
    spread = np.sqrt(np.maximum(square - mean * mean, 0.0))
    ys, xs = np.nonzero(spread > CONTACT_STD)
    if ys.size == 0:
        return 0, 0, w, h
    x0 = max(0, int(xs.min()) * block - margin)
    y0 = max(0, int(ys.min()) * block - margin)
    x1 = min(w, (int(xs.max()) + 1) * block + margin)
    y1 = min(h, (int(ys.max()) + 1) * block + margin)
    return x0, y0, x1, y1


def _crop(image: NDArray[np.uint8], margin: int) -> NDArray[np.uint8]:
    x0, y0, x1, y1 = contact_box(image, margin)
    return np.ascontiguousarray(image[y0:y1, x0:x1])


@dataclass
class _Scored:
    """One attempt's print after scoring (not yet encoded)."""

    image: NDArray[np.uint8]
    quality: int
    minutiae: MinutiaSet
    template: FingerTemplate


class TenPrintCapture:
    """The ten-print sequence for one citizen. Not thread-safe, except :meth:`cancel`
    (one attempt at a time; the service runs attempts on a worker thread).

    ``quality`` is the station's NFIQ 2 predictor (``StationQuality()``), ``extractor``
    the minutiae extractor (mindtct unless given), ``results`` what the workflow stored
    before (to resume after a restart)."""

    def __init__(
        self,
        scanner: RollScanner,
        quality: QualityScorer,
        settings: TenPrintSettings | None = None,
        *,
        extractor: MinutiaeExtractor | None = None,
        results: Iterable[FingerResult] = (),
    ) -> None:
        self.scanner = scanner
        self.quality = quality
        self.settings = settings or TenPrintSettings()
        self.extractor = extractor
        self._results: dict[int, FingerResult] = {}
        self._templates: dict[int, FingerTemplate] = {}
        self._cancel = threading.Event()
        for result in results:
            self.restore(result)

    # --- state ----------------------------------------------------------------------

    def restore(self, result: FingerResult) -> None:
        """Put back a finger the workflow stored (after a restart)."""
        self._results[result.position] = result
        self._templates.pop(result.position, None)
        if result.template is not None:
            minutiae = decode_minutiae(result.template)
            self._templates[result.position] = make_template(minutiae)

    def result(self, position: int) -> FingerResult | None:
        return self._results.get(_check_position(position))

    def results(self) -> list[FingerResult]:
        """Every position with a state, in the standard order."""
        return [self._results[p] for p in ORDER if p in self._results]

    def remaining(self) -> list[int]:
        """Positions not done yet, in the standard order."""
        return [p for p in ORDER if p not in self._results or not self._results[p].done]

    def next_position(self) -> int | None:
        left = self.remaining()
        return left[0] if left else None

    def to_dict(self) -> dict[str, Any]:
        """The whole session, JSON-ready."""
        return {"fingers": [r.to_dict() for r in self.results()]}

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        scanner: RollScanner,
        quality: QualityScorer,
        settings: TenPrintSettings | None = None,
        *,
        extractor: MinutiaeExtractor | None = None,
    ) -> TenPrintCapture:
        """A capture resumed from :meth:`to_dict`."""
        fingers = [FingerResult.from_dict(f) for f in data.get("fingers", [])]
        return cls(scanner, quality, settings, extractor=extractor, results=fingers)

    def reset(self, position: int) -> None:
        """Forget a position (a recapture the supervisor asked for)."""
        self._results.pop(_check_position(position), None)
        self._templates.pop(position, None)

    # --- attempts -------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop a running attempt (from any thread): it comes back as ``cancelled``."""
        self._cancel.set()
        self.scanner.cancel()

    def attempt(
        self,
        position: int,
        timeout: float | None = None,
        on_frame: Callable[[RollFrame], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> AttemptOutcome:
        """Roll ``position`` once and judge the print (see the module docstring).

        Device and roll faults come back as outcomes with the error's code; a position
        that is already done raises ValueError (``reset`` it first)."""
        current = self._results.get(_check_position(position))
        if current is not None and current.done:
            raise ValueError(
                f"the {current.name} is already {current.status}: reset it to capture it again"
            )
        self._cancel.clear()
        stop = cancel if cancel is not None else self._cancel
        try:
            rolled = self.scanner.capture_roll(
                position,
                timeout if timeout is not None else self.settings.roll_timeout_s,
                on_frame,
                stop,
            )
        except (ScannerError, RollError) as exc:
            return self._failed(position, exc.code, str(exc))
        if self._cancel.is_set() or (cancel is not None and cancel.is_set()):
            return self._failed(position, "cancelled", "cancelled after the roll")
        started = time.perf_counter()
        try:
            scored = self._score(rolled.image)
        except BackendUnavailableError:
            raise  # a station without mindtct or its model is misinstalled, not unlucky
        except BiometricsError as exc:
            return self._failed(position, "extraction", str(exc))
        same = self._same_finger(position, scored.template)
        if same is not None:
            other, similarity = same
            previous = self._results.get(position)
            if previous is not None:
                self._results[position] = replace(previous, rejected=previous.rejected + 1)
            return AttemptOutcome(
                position,
                "same_finger",
                self._results.get(position),
                scored.quality,
                same_as=other,
                similarity=similarity,
                seconds=time.perf_counter() - started,
            )
        result, code = self._keep(position, scored)
        return AttemptOutcome(
            position, code, result, scored.quality, seconds=time.perf_counter() - started
        )

    def _failed(self, position: int, code: str, detail: str) -> AttemptOutcome:
        previous = self._results.get(position)
        if previous is not None and code != "cancelled":
            previous = replace(previous, failed_rolls=previous.failed_rolls + 1)
            self._results[position] = previous
        return AttemptOutcome(position, code, previous, detail=detail)

    def _score(self, image: NDArray[np.uint8]) -> _Scored:
        cropped = _crop(image, self.settings.crop_margin_px)
        quality = int(self.quality.score(cropped))
        minutiae = extract_minutiae(cropped, extractor=self.extractor)
        return _Scored(cropped, quality, minutiae, make_template(minutiae))

    def _same_finger(self, position: int, template: FingerTemplate) -> tuple[int, float] | None:
        """The other position holding this finger (the best match at or above the
        threshold), or None."""
        best: tuple[int, float] | None = None
        for other, kept in self._templates.items():
            if other == position:
                continue
            score = verify(template, kept)
            if score >= self.settings.same_finger_threshold and (best is None or score > best[1]):
                best = (other, score)
        return best

    def _keep(self, position: int, scored: _Scored) -> tuple[FingerResult, str]:
        s = self.settings
        previous = self._results.get(position)
        scores = (*(previous.scores if previous else ()), scored.quality)
        attempts = len(scores)
        better = previous is None or previous.quality is None or scored.quality > previous.quality
        if better:
            reading = classify(scored.image)
            h, w = scored.image.shape
            kept = FingerResult(
                position=position,
                status="in_progress",
                wsq=encode_wsq(scored.image),
                width=w,
                height=h,
                quality=scored.quality,
                template=encode_minutiae(
                    scored.minutiae, position=position, finger_quality=scored.quality
                ),
                pattern=reading.pattern.value,
                pattern_confidence=round(reading.confidence, 3),
                rejected=previous.rejected if previous else 0,
                failed_rolls=previous.failed_rolls if previous else 0,
            )
            self._templates[position] = scored.template
        else:
            assert previous is not None
            kept = previous
        kept = replace(kept, attempts=attempts, scores=scores)
        if scored.quality >= s.min_quality:
            kept, code = replace(kept, status="captured"), "accepted"
        elif attempts >= s.max_attempts:
            kept = replace(kept, status="captured", low_quality=True, needs_approval=True)
            code = "kept_best"
        else:
            code = "low_quality"
        self._results[position] = kept
        return kept, code

    # --- exceptions and approvals ---------------------------------------------------

    def mark_exception(self, position: int, code: str, reason: str | None = None) -> FingerResult:
        """Record that ``position`` cannot be printed (:data:`EXCEPTION_CODES`); it
        needs a supervisor's approval (:meth:`approve`). Any capture of it is dropped."""
        if code not in EXCEPTION_CODES:
            raise ValueError(f"exception code must be one of {sorted(EXCEPTION_CODES)}: {code!r}")
        previous = self._results.get(_check_position(position))
        result = FingerResult(
            position=position,
            status="exception",
            exception_code=code,
            exception_reason=reason,
            needs_approval=True,
            attempts=previous.attempts if previous else 0,
            scores=previous.scores if previous else (),
        )
        self._results[position] = result
        self._templates.pop(position, None)
        return result

    def approve(self, position: int, supervisor_id: str) -> FingerResult:
        """A supervisor accepts an exception or a low-quality print."""
        if not supervisor_id:
            raise ValueError("an approval needs the supervisor's id")
        result = self._results.get(_check_position(position))
        if result is None or not result.needs_approval:
            raise ValueError(f"the {FINGER_NAMES[position][1]} has nothing to approve")
        approved = replace(result, needs_approval=False, approved_by=supervisor_id)
        self._results[position] = approved
        return approved

    def pending_approvals(self) -> list[int]:
        """Positions waiting for a supervisor (exceptions, low-quality prints)."""
        return [p for p in ORDER if p in self._results and self._results[p].needs_approval]

    def complete(self) -> bool:
        """All ten captured, or excepted with a supervisor's approval."""
        for position in ORDER:
            result = self._results.get(position)
            if result is None or not result.done:
                return False
            if result.status == "exception" and result.needs_approval:
                return False
        return True

    def samples(self) -> list[FingerResult]:
        """The ten fingers in order, for the record (``biometric_sample`` and
        ``fingerprint_image`` build its parts); raises unless :meth:`complete`."""
        if not self.complete():
            missing = [FINGER_NAMES[p][1] for p in self.remaining()]
            unapproved = [
                FINGER_NAMES[p][1]
                for p in self.pending_approvals()
                if self._results[p].status == "exception"
            ]
            raise ValueError(
                f"the ten-print is not complete: not captured {missing}, "
                f"exceptions awaiting approval {unapproved}"
            )
        return [self._results[p] for p in ORDER]

    # --- the wrong-hand check -------------------------------------------------------

    def hand_check(self) -> list[HandWarning]:
        """Warnings for each finished hand whose prints look like the other hand's."""
        warnings: list[HandWarning] = []
        hand: Literal["right", "left"]
        for hand in ("right", "left"):
            positions = HAND_FINGERS[hand]
            results = [self._results.get(p) for p in positions]
            if any(r is None or not r.done for r in results):
                continue
            readings = {
                r.position: Pattern(r.pattern)
                for r in results
                if r is not None and r.status == "captured" and r.pattern is not None
            }
            readable = sum(1 for p in readings.values() if p is not Pattern.UNKNOWN)
            if readable < self.settings.min_hand_prints:
                continue
            vote = hand_vote(hand, readings, threshold=self.settings.swap_log_ratio)
            if vote.swapped:
                warnings.append(HandWarning(hand, round(vote.log_ratio, 2), vote.fingers))
        return warnings


def _check_position(position: int) -> int:
    if position not in FINGER_NAMES:
        raise ValueError(f"finger position must be 1-10, got {position}")
    return position


__all__ = [
    "EXCEPTION_CODES",
    "FINGER_NAMES",
    "MESSAGES",
    "ORDER",
    "QUALITY_ALGORITHM",
    "AttemptOutcome",
    "FingerResult",
    "HandWarning",
    "RollScanner",
    "TenPrintCapture",
    "TenPrintSettings",
    "contact_box",
]
