"""Live face capture: feedback on every frame, and auto-capture of the best one.

    capture = FaceCapture(camera, FaceAnalyzer(), FaceCaptureSettings())
    capture.start()                         # a background thread
    while (result := capture.wait(0.1)) is None:
        ui.show(capture.latest())           # FaceFeedback: hints in vi/en, box, preview
    if result.captured:
        workflow.store_face(case, officer, result)  # jpeg, width, height, quality, ...

Each camera frame is analysed (the face tracked from the previous frame's mesh, so the
detector runs only when the face is new or lost), cropped to the ICAO portrait geometry
(``FaceAnalyzer.portrait``) and the crop analysed again: the portrait checks (pose, eyes,
mouth, light, sharpness, background) judge the crop, because their geometry is that of the
portrait, not of the wider camera frame. Two checks need the camera frame: enough pixels
between the eyes (the crop must not be blown up from a face too far away) and a portrait
that lies inside the frame (else the citizen is told which way to move).

Auto-capture: once the crop passes on ``stable_frames`` consecutive frames, the
best-scoring of those frames is taken, its crop analysed afresh (no tracking) and, if it
still passes, encoded as the portrait JPEG. A timeout gives back the hints that were
shown most often, so the officer knows what kept the capture from succeeding.

Cost here: 15-18 ms a frame on one core at 640 x 480 or 1280 x 960 (bench/station.py), so
the loop keeps up with a 15 fps camera; a slower machine simply gets the newest frame each
time (the camera drops what the loop did not take).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from biometrics.face.crop import Portrait, PortraitGeometry
from biometrics.face.landmarks import eye_centres
from biometrics.face.pipeline import FaceAnalysis, FaceAnalyzer
from biometrics.face.quality import Check, FaceAssessment, hint_text
from enrollment.images import encode_jpeg
from station.drivers.camera import Camera, CameraError, CameraTimeout
from station.drivers.camera.frame import Frame

Lang = Literal["vi", "en"]
Reason = Literal["captured", "timeout", "cancelled", "camera"]
RGBImage = NDArray[np.uint8]

QUALITY_ALGORITHM = ("vn-eid-face", "0.1")
"""How :func:`portrait_quality` is labelled in the record."""


class FaceCaptureSettings(BaseModel):
    """How the live face capture decides, and what it shows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stable_frames: int = Field(5, ge=1, le=100)
    """Consecutive passing frames before the capture is taken (a third of a second at
    15 fps: the citizen holds still, and one lucky frame is not enough)."""
    timeout_s: float = Field(30.0, gt=0.0, le=600.0)
    """Give up after this long (the result names the hints seen most often)."""
    read_timeout_s: float = Field(2.0, gt=0.0, le=30.0)
    """No frame for this long is a camera fault."""
    portrait_width: int = Field(480, ge=360, le=1200)
    """Width of the ICAO portrait in pixels (height 4/3 of it; eyes a quarter of it
    apart: ISO/IEC 19794-5 token geometry; at least 360, which puts the eyes 90 px apart,
    the portrait checks' minimum)."""
    min_source_eye_distance: float = Field(60.0, gt=0.0)
    """Pixels between the eyes in the camera frame below which the citizen is asked to
    come closer: the crop would be blown up from too few pixels (ISO/IEC 19794-5 asks
    for at least 60 in a token image)."""
    min_coverage: float = Field(0.97, gt=0.0, le=1.0)
    """Share of the portrait that must come from inside the camera frame (the rest is
    padded white); below it the citizen is asked to move."""
    jpeg_quality: int = Field(90, ge=50, le=95)
    """Of the portrait JPEG that goes into the record."""
    preview_width: int = Field(320, ge=64, le=1280)
    """Width of the preview JPEG sent to the UI."""
    preview_fps: float = Field(15.0, ge=0.0, le=30.0)
    """Previews per second at most (0: none); feedback itself comes every frame. 15 a
    second moves smoothly enough for a citizen to follow "turn a little left"; the kiosk
    takes only what it has drawn (frames in between are dropped, never queued)."""
    preview_quality: int = Field(70, ge=20, le=95)
    top_hints: int = Field(3, ge=1, le=10)
    """Hints a timed-out result names, most frequent first."""

    @property
    def geometry(self) -> PortraitGeometry:
        return PortraitGeometry(self.portrait_width, self.portrait_width * 4 // 3)


@dataclass(frozen=True)
class FaceFeedback:
    """What one frame showed, for the kiosk (sent every frame)."""

    frame: int
    """The camera's frame number."""
    t: float
    """Seconds since the capture started."""
    found: bool
    passed: bool
    """The portrait crop passes every check (and the framing is right)."""
    score: int
    """:func:`portrait_quality` of the crop (0 without a face)."""
    stable: int
    """Consecutive passing frames so far (the capture is taken at ``stable_frames``)."""
    failed: tuple[str, ...]
    """Criteria that failed (biometrics.face.quality.Criterion values)."""
    hint_keys: tuple[str, ...]
    """What to tell the citizen, most actionable first (biometrics.face.quality.HINTS)."""
    hints_vi: tuple[str, ...]
    hints_en: tuple[str, ...]
    box: tuple[int, int, int, int] | None
    """The face in the camera frame: (x0, y0, x1, y1) pixels."""
    frame_size: tuple[int, int]
    """(width, height) of the camera frame, to place ``box`` on the preview."""
    preview: bytes | None = field(default=None, repr=False)
    """A small JPEG of the frame, at most ``preview_fps`` a second (None in between)."""
    captured: float = 0.0
    """``time.monotonic()`` when the camera took the frame (the kiosk measures its live
    preview's latency from it)."""

    def hints(self, lang: Lang = "vi") -> tuple[str, ...]:
        return self.hints_vi if lang == "vi" else self.hints_en


@dataclass(frozen=True)
class FaceCaptureResult:
    """How the capture ended. Field names follow what the workflow stores
    (station.cases.FaceEntry): ``jpeg``, ``width``, ``height``, ``quality``, ``frames``,
    ``seconds``."""

    reason: Reason
    jpeg: bytes | None = field(default=None, repr=False)
    """The ICAO portrait (baseline JPEG), when captured."""
    width: int = 0
    height: int = 0
    quality: int = 0
    """:func:`portrait_quality` of the portrait (0-100)."""
    frames: int = 0
    """Frames analysed."""
    seconds: float = 0.0
    hint_counts: dict[str, int] = field(default_factory=dict)
    """How many frames showed each hint."""
    top_hints: tuple[str, ...] = ()
    """The most frequent hints (what kept a timed-out capture from succeeding)."""
    detail: str | None = None
    """The camera's error message (reason ``camera``)."""

    @property
    def captured(self) -> bool:
        return self.reason == "captured"

    def hints(self, lang: Lang = "vi") -> list[str]:
        return [hint_text(k, lang) for k in self.top_hints]


# --------------------------------------------------------------------------- scoring


def _depth(check: Check) -> float:
    """How far inside its pass range a passing check sits, 0 (at the limit) to 1."""
    v, lo, hi = check.value, check.low, check.high
    if not check.passed or math.isnan(v):
        return 0.0
    if lo is not None and hi is not None:
        half = (hi - lo) / 2
        return min(1.0, max(0.0, min(v - lo, hi - v) / half)) if half > 0 else 1.0
    if lo is not None:
        return min(1.0, max(0.0, (v - lo) / max(abs(lo), 1e-6)))
    if hi is not None:
        return min(1.0, max(0.0, (hi - v) / max(abs(hi), 1e-6)))
    return 1.0


def portrait_quality(assessment: FaceAssessment | None) -> int:
    """A 0-100 score that ranks portraits: 50-100 when every check passes (50 plus 50
    times the mean depth inside the pass ranges: frontal, eyes wide open, sharp, evenly
    lit score high), 0-49 when some fail (49 times the share that pass). So any passing
    portrait outranks any failing one."""
    if assessment is None or not assessment.checks:
        return 0
    if assessment.passed:
        depth = sum(_depth(c) for c in assessment.checks) / len(assessment.checks)
        return round(50 + 50 * depth)
    return int(49 * assessment.score)


# --------------------------------------------------------------------------- framing


def _box(analysis: FaceAnalysis) -> tuple[int, int, int, int] | None:
    if analysis.mesh is not None:
        p = analysis.mesh.points[:, :2]
        x0, y0 = p.min(axis=0)
        x1, y1 = p.max(axis=0)
        return round(float(x0)), round(float(y0)), round(float(x1)), round(float(y1))
    if analysis.detection is not None:
        a, b, c, d = analysis.detection.box
        return round(a), round(b), round(c), round(d)
    return None


def framing_hints(
    analysis: FaceAnalysis, portrait: Portrait, frame_size: tuple[int, int], s: FaceCaptureSettings
) -> list[str]:
    """Hints the camera frame gives and the crop cannot: too few pixels between the
    eyes ("move_closer"), or a portrait reaching past the frame's edge (move toward the
    middle; directions are the citizen's, as in biometrics.face.quality)."""
    keys: list[str] = []
    assert analysis.mesh is not None
    right, left = eye_centres(analysis.mesh, analysis.irises)
    if float(np.linalg.norm(left - right)) < s.min_source_eye_distance:
        keys.append("move_closer")
    if portrait.coverage < s.min_coverage:
        w, h = frame_size
        inverse = np.asarray(cv2.invertAffineTransform(portrait.matrix), np.float64)
        g = s.geometry
        corners = np.array([[0, 0], [g.width, 0], [0, g.height], [g.width, g.height]], np.float64)
        src = corners @ inverse[:, :2].T + inverse[:, 2]
        over = {
            "move_to_left": -src[:, 0].min(),  # past the image's left: the citizen's right
            "move_to_right": src[:, 0].max() - w,
            "face_too_high": -src[:, 1].min(),
            "face_too_low": src[:, 1].max() - h,
        }
        worst = max(over, key=lambda k: over[k])
        if over[worst] > 0:
            keys.append(worst)
    return keys


# --------------------------------------------------------------------------- the loop


@dataclass
class _Candidate:
    frame: Frame
    portrait: Portrait
    score: int


class FrameJudge:
    """The capture's work on each frame, apart from the camera (the bench times it on
    rendered frames): track and analyse, crop and judge, keep the stable run, count the
    hints. One judge per capture."""

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        settings: FaceCaptureSettings | None = None,
        started: float | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.settings = settings or FaceCaptureSettings()
        self.started = time.monotonic() if started is None else started
        self.frames = 0
        self.history: Counter[str] = Counter()
        self._run: list[_Candidate] = []
        self._tracked: FaceAnalysis | None = None
        self._tracked_crop: FaceAnalysis | None = None
        self._last_preview = -math.inf

    @property
    def ready(self) -> bool:
        """The crop has passed on ``stable_frames`` frames in a row."""
        return len(self._run) >= self.settings.stable_frames

    def preview(self, frame: Frame) -> bytes | None:
        """The frame's preview JPEG when one is due (at most ``preview_fps`` a second),
        else None. Taken before the frame is judged, so that the live picture does not
        wait for the analysis."""
        s = self.settings
        now = time.monotonic()
        if s.preview_fps > 0 and now - self._last_preview >= 1.0 / s.preview_fps:
            self._last_preview = now
            return self._preview(frame.image)
        return None

    def feed(
        self, frame: Frame, preview: bytes | None = None, *, previewed: bool = False
    ) -> FaceFeedback:
        """Judge one frame. ``previewed``: the caller already asked :meth:`preview` for
        this frame, which gave ``preview`` (or None: none was due); else the judge makes
        the preview itself when one is due."""
        s = self.settings
        self.frames += 1
        analysis = self.analyzer.analyze(frame.image, self._tracked)
        self._tracked = analysis if analysis.mesh is not None else None
        portrait: Portrait | None = None
        crop: FaceAnalysis | None = None
        keys: list[str]
        if analysis.mesh is None:
            keys, self._tracked_crop = ["no_face"], None
        else:
            portrait = self.analyzer.portrait(frame.image, analysis, s.geometry)
            # Crops of successive frames put the eyes in the same place: track there too.
            crop = self.analyzer.analyze(portrait.image, self._tracked_crop)
            self._tracked_crop = crop if crop.mesh is not None else None
            keys = ["many_faces"] if analysis.faces > 1 else []
            keys += framing_hints(analysis, portrait, (frame.width, frame.height), s)
            keys += [k for k in crop.hint_keys() if k not in keys]
        passed = crop is not None and crop.passed and not keys
        score = portrait_quality(crop.assessment if crop is not None else None)
        self.history.update(keys)
        if passed and portrait is not None:
            self._run.append(_Candidate(frame, portrait, score))
        else:
            self._run.clear()
        now = time.monotonic()
        if not previewed:
            preview = self.preview(frame)
        return FaceFeedback(
            frame=frame.sequence,
            t=now - self.started,
            found=analysis.mesh is not None,
            passed=passed,
            score=score,
            stable=len(self._run),
            failed=tuple(str(c) for c in (crop.failed if crop is not None else [])),
            hint_keys=tuple(keys),
            hints_vi=tuple(hint_text(k, "vi") for k in keys),
            hints_en=tuple(hint_text(k, "en") for k in keys),
            box=_box(analysis),
            frame_size=(frame.width, frame.height),
            preview=preview,
            captured=frame.timestamp,
        )

    def take(self) -> FaceCaptureResult | None:
        """Once :attr:`ready`: the best frame of the stable run, its crop analysed again
        without tracking; None (and a new run begins) if that fresh check fails."""
        if not self.ready:
            return None
        best = max(self._run, key=lambda c: c.score)
        self._run.clear()
        fresh = self.analyzer.analyze(best.portrait.image)
        if not fresh.passed:
            return None
        image = best.portrait.image
        return replace(
            self.ending("captured"),
            jpeg=encode_jpeg(image, self.settings.jpeg_quality),
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            quality=portrait_quality(fresh.assessment),
        )

    def ending(self, reason: Reason, detail: str | None = None) -> FaceCaptureResult:
        """A result with this judge's counts (no portrait)."""
        return FaceCaptureResult(
            reason,
            frames=self.frames,
            seconds=time.monotonic() - self.started,
            hint_counts=dict(self.history),
            top_hints=tuple(k for k, _ in self.history.most_common(self.settings.top_hints)),
            detail=detail,
        )

    def _preview(self, image: RGBImage) -> bytes:
        h, w = image.shape[:2]
        width = min(self.settings.preview_width, w)
        height = max(1, round(h * width / w))
        small = np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
        return encode_jpeg(small.astype(np.uint8), self.settings.preview_quality)


class FaceCapture:
    """The live loop over one camera. ``run`` works in the caller's thread; ``start`` /
    ``latest`` / ``cancel`` / ``wait`` run it in a background thread for the service.

    The camera is opened if it is not open yet (and then closed again at the end); the
    analyzer is used from one thread at a time."""

    def __init__(
        self,
        camera: Camera,
        analyzer: FaceAnalyzer,
        settings: FaceCaptureSettings | None = None,
    ) -> None:
        self.camera = camera
        self.analyzer = analyzer
        self.settings = settings or FaceCaptureSettings()
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._latest: FaceFeedback | None = None
        self._result: FaceCaptureResult | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # --- background ---------------------------------------------------------------

    def start(
        self,
        timeout: float | None = None,
        on_feedback: Callable[[FaceFeedback], None] | None = None,
    ) -> None:
        """Run the capture in a background thread (one at a time)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise RuntimeError("a face capture is already running on this camera")
            self._cancel.clear()
            self._latest = self._result = None
            self._error = None
            self._thread = threading.Thread(
                target=self._background, args=(timeout, on_feedback), name="face-capture"
            )
            self._thread.daemon = True
            self._thread.start()

    def _background(
        self, timeout: float | None, on_feedback: Callable[[FaceFeedback], None] | None
    ) -> None:
        try:
            result = self.run(timeout, on_feedback)
        except BaseException as exc:  # handed to wait(), which raises it in the caller
            with self._lock:
                self._error = exc
            return
        with self._lock:
            self._result = result

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def latest(self) -> FaceFeedback | None:
        """The newest frame's feedback (None before the first)."""
        with self._lock:
            return self._latest

    def cancel(self) -> None:
        """Stop the capture (from any thread); it ends within one frame's analysis."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> FaceCaptureResult | None:
        """The result once the background capture has ended (None if it is still running
        after ``timeout`` seconds); re-raises what the capture thread raised."""
        thread = self._thread
        if thread is None:
            raise RuntimeError("no face capture was started")
        thread.join(timeout)
        if thread.is_alive():
            return None
        with self._lock:
            if self._error is not None:
                raise self._error
            return self._result

    # --- the loop -----------------------------------------------------------------

    def run(
        self,
        timeout: float | None = None,
        on_feedback: Callable[[FaceFeedback], None] | None = None,
        on_preview: Callable[[Frame, bytes], None] | None = None,
    ) -> FaceCaptureResult:
        """Capture until a portrait is taken, ``timeout`` seconds pass (default
        ``settings.timeout_s``), :meth:`cancel` is called or the camera fails.
        ``on_preview`` gets each preview JPEG as soon as its frame is read, before the
        frame's analysis (a live picture that does not lag by the analysis time)."""
        opened = False
        if not self.camera.is_open:
            self.camera.open()
            opened = True
        try:
            return self._loop(
                self.settings.timeout_s if timeout is None else timeout, on_feedback, on_preview
            )
        finally:
            if opened:
                self.camera.close()

    def _loop(
        self,
        timeout: float,
        on_feedback: Callable[[FaceFeedback], None] | None,
        on_preview: Callable[[Frame, bytes], None] | None = None,
    ) -> FaceCaptureResult:
        s = self.settings
        judge = FrameJudge(self.analyzer, s)
        deadline = judge.started + timeout
        while True:
            if self._cancel.is_set():
                return judge.ending("cancelled")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return judge.ending("timeout")
            try:
                frame = self.camera.read(timeout=min(s.read_timeout_s, remaining))
            except CameraTimeout as exc:
                # Waiting out the last fraction of the timeout is not a camera fault.
                if time.monotonic() >= deadline - 0.01:
                    return judge.ending("timeout")
                return judge.ending("camera", str(exc))
            except CameraError as exc:
                return judge.ending("camera", str(exc))
            if self._cancel.is_set():
                return judge.ending("cancelled")
            preview = judge.preview(frame)
            if preview is not None and on_preview is not None:
                on_preview(frame, preview)
            feedback = judge.feed(frame, preview, previewed=True)
            with self._lock:
                self._latest = feedback
            if on_feedback is not None:
                on_feedback(feedback)
            taken = judge.take()
            if taken is not None:
                return taken


__all__ = [
    "QUALITY_ALGORITHM",
    "FaceCapture",
    "FaceCaptureResult",
    "FaceCaptureSettings",
    "FaceFeedback",
    "FrameJudge",
    "framing_hints",
    "portrait_quality",
]
