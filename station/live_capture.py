"""The live capture loops of open cases, between the devices and the workflow.

The face loop runs in a background thread while the UI polls its feedback (hints, the
face box, a small preview); when it auto-captures, the portrait is stored in the case at
once. A finger roll is one blocking call (the scanner streams while the citizen rolls);
an attempt that finishes a finger (accepted, or the best kept after the last attempt) is
stored in the case in the same call, so what the officer saw as "done" survives a power
cut. Attempts that are not done yet live only here: after a restart the finger starts
again from its first attempt.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from station.capture.face import FaceCapture, FaceCaptureResult, FaceCaptureSettings, FaceFeedback
from station.capture.tenprint import (
    FingerResult,
    TenPrintCapture,
    TenPrintSettings,
)
from station.cases import FaceEntry, FingerEntry
from station.drivers.camera.frame import Frame
from station.policy import StationPolicy
from station.workflow import EnrollmentWorkflow, WorkflowError

if TYPE_CHECKING:
    from biometrics.face.pipeline import FaceAnalyzer
    from biometrics.fingerprint.quality import StationQuality
    from station.devices import StationDevices

log = logging.getLogger(__name__)


def entry_of(result: FingerResult) -> FingerEntry:
    """What the workflow stores of a finished finger."""
    return FingerEntry(
        position=result.position,
        wsq=result.wsq,
        width=result.width,
        height=result.height,
        quality=result.quality,
        attempts=result.attempts,
        template=result.template,
        low_quality=result.low_quality,
        exception_code=result.exception_code,
        exception_reason=result.exception_reason,
    )


def result_of(entry: FingerEntry) -> FingerResult:
    """A stored finger as the ten-print capture resumes it."""
    if entry.wsq is None:
        return FingerResult(
            position=entry.position,
            status="exception",
            exception_code=entry.exception_code,
            exception_reason=entry.exception_reason,
            attempts=entry.attempts,
        )
    return FingerResult(
        position=entry.position,
        status="captured",
        wsq=entry.wsq,
        width=entry.width,
        height=entry.height,
        quality=entry.quality,
        attempts=entry.attempts,
        scores=(entry.quality,) if entry.quality is not None else (),
        template=entry.template,
        low_quality=entry.low_quality,
    )


def feedback_json(feedback: FaceFeedback | None) -> dict[str, Any] | None:
    if feedback is None:
        return None
    return {
        "frame": feedback.frame,
        "t": round(feedback.t, 3),
        "found": feedback.found,
        "passed": feedback.passed,
        "score": feedback.score,
        "stable": feedback.stable,
        "failed": list(feedback.failed),
        "hint_keys": list(feedback.hint_keys),
        "hints": {"vi": list(feedback.hints_vi), "en": list(feedback.hints_en)},
        "box": list(feedback.box) if feedback.box else None,
        "frame_size": list(feedback.frame_size),
    }


@dataclass(frozen=True)
class FaceFrame:
    """What the live preview shows now: the newest feedback, and the newest preview image
    (previews come less often than frames, and before their frame's feedback)."""

    running: bool
    feedback: FaceFeedback | None
    previewed: tuple[int, float] | None
    """Frame number and capture time (``time.monotonic()``) of ``preview``."""
    preview: bytes | None = field(repr=False)


@dataclass
class FaceSession:
    case_id: str
    operator_id: str
    capture: FaceCapture
    thread: threading.Thread | None = None
    result: FaceCaptureResult | None = None
    stored: bool = False
    error: str | None = None
    preview: bytes | None = field(default=None, repr=False)
    previewed: tuple[int, float] | None = None
    """Frame number and capture time (``time.monotonic()``) of ``preview``."""
    changed: threading.Condition = field(default_factory=threading.Condition, repr=False)
    """Notified on every frame and when the loop ends (the live preview's stream waits)."""


@dataclass(frozen=True)
class RunningRoll:
    """A roll waiting on the scanner now. Its id lets a page stop exactly the roll it saw
    running (one a reloaded page left waiting), never one started after it looked."""

    id: str
    position: int
    started_at: float
    """Epoch seconds."""
    stop: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "position": self.position, "started_at": self.started_at}


class LiveCapture:
    """One face loop at a time (one camera), one roll at a time (one scanner)."""

    def __init__(
        self,
        devices: Callable[[], StationDevices | None],
        workflow: Callable[[], EnrollmentWorkflow],
        policy: Callable[[], StationPolicy],
        scanner_lock: threading.Lock,
        *,
        face_settings: FaceCaptureSettings | None = None,
    ) -> None:
        self._devices = devices
        self._workflow = workflow
        self._policy = policy
        self._scanner_lock = scanner_lock
        self.face_settings = face_settings or FaceCaptureSettings()
        self._lock = threading.Lock()
        self._face: FaceSession | None = None
        self._tenprints: dict[str, TenPrintCapture] = {}
        self._rolls: dict[str, RunningRoll] = {}
        self._analyzer: FaceAnalyzer | None = None
        self._quality: StationQuality | None = None

    # --- shared models (loaded once, on first use) -----------------------------------------

    def analyzer(self) -> FaceAnalyzer:
        with self._lock:
            if self._analyzer is None:
                from biometrics.face.pipeline import FaceAnalyzer

                self._analyzer = FaceAnalyzer()
            return self._analyzer

    def quality(self) -> StationQuality:
        with self._lock:
            if self._quality is None:
                from biometrics.fingerprint.quality import StationQuality

                self._quality = StationQuality()
            return self._quality

    def _need_devices(self) -> StationDevices:
        devices = self._devices()
        if devices is None:
            raise WorkflowError("no_devices", "this station runs without capture devices")
        return devices

    # --- face ----------------------------------------------------------------------------

    def start_face(self, case_id: str, operator_id: str, timeout_s: float | None = None) -> None:
        """Start the live face loop for a case (the case must accept a face now)."""
        workflow = self._workflow()
        case = workflow.get(case_id)
        if case.consent_at is None:
            raise WorkflowError(
                "consent_missing", "the citizen's consent comes before any biometric capture"
            )
        devices = self._need_devices()
        from station.devices import DeviceUnavailableError

        try:
            camera = devices.camera
        except DeviceUnavailableError as exc:
            raise WorkflowError("device_missing", str(exc)) from None
        analyzer = self.analyzer()
        session = FaceSession(
            case_id, operator_id, FaceCapture(camera, analyzer, self.face_settings)
        )

        def on_preview(frame: Frame, preview: bytes) -> None:
            # Before the frame's analysis: the live picture does not wait for it.
            with session.changed:
                session.preview, session.previewed = preview, (frame.sequence, frame.timestamp)
                session.changed.notify_all()

        def on_feedback(feedback: FaceFeedback) -> None:
            with session.changed:
                session.changed.notify_all()

        def run() -> None:
            try:
                result = session.capture.run(timeout_s, on_feedback, on_preview)
                session.result = result
                if result.captured and result.jpeg is not None:
                    workflow.store_face(
                        case_id,
                        operator_id,
                        FaceEntry(
                            jpeg=result.jpeg,
                            width=result.width,
                            height=result.height,
                            quality=result.quality,
                            frames=result.frames,
                            seconds=result.seconds,
                        ),
                    )
                    session.stored = True
            except Exception as exc:  # shown to the officer; the loop is over
                log.exception("face capture for case %s failed", case_id)
                session.error = f"{type(exc).__name__}: {exc}"
            finally:
                with session.changed:
                    session.changed.notify_all()

        session.thread = threading.Thread(target=run, name=f"face-{case_id[:8]}", daemon=True)
        with self._lock:  # the check and the reservation together: one loop per camera
            current = self._face
            if current is not None and current.thread is not None and current.thread.is_alive():
                raise WorkflowError(
                    "camera_busy", f"the camera is capturing for case {current.case_id}"
                )
            self._face = session
            session.thread.start()

    def face_status(self, case_id: str) -> dict[str, Any]:
        session = self._face
        if session is None or session.case_id != case_id:
            case = self._workflow().get(case_id)
            return {"state": "stored" if case.has_face else "idle", "feedback": None}
        running = session.thread is not None and session.thread.is_alive()
        out: dict[str, Any] = {
            "state": "running" if running else ("stored" if session.stored else "ended"),
            "feedback": feedback_json(session.capture.latest()),
            "error": session.error,
        }
        result = session.result
        if result is not None:
            out["result"] = {
                "reason": result.reason,
                "quality": result.quality,
                "frames": result.frames,
                "seconds": round(result.seconds, 2),
                "top_hints": list(result.top_hints),
                "hints": {"vi": result.hints("vi"), "en": result.hints("en")},
                "detail": result.detail,
            }
        return out

    def face_preview(self, case_id: str) -> bytes | None:
        session = self._face
        if session is None or session.case_id != case_id:
            return None
        return session.preview

    def face_frame(self, case_id: str, after: int, timeout: float) -> FaceFrame | None:
        """The newest frame of the case's face loop once it is newer than frame number
        ``after`` (or the loop has ended, or ``timeout`` passed); None when the case has
        no loop here. Only ever the newest: a slow viewer skips frames, it never lags."""
        session = self._face
        if session is None or session.case_id != case_id:
            return None

        def running() -> bool:
            return session.thread is not None and session.thread.is_alive()

        def newer() -> bool:
            latest, shown = session.capture.latest(), session.previewed
            return (latest is not None and latest.frame > after) or (
                shown is not None and shown[0] > after
            )

        with session.changed:
            session.changed.wait_for(lambda: newer() or not running(), timeout)
            return FaceFrame(
                running(), session.capture.latest(), session.previewed, session.preview
            )

    def cancel_face(self, case_id: str) -> None:
        session = self._face
        if session is not None and session.case_id == case_id:
            session.capture.cancel()

    def wait_face(self, case_id: str, timeout: float) -> dict[str, Any]:
        session = self._face
        if session is not None and session.case_id == case_id and session.thread is not None:
            session.thread.join(timeout)
        return self.face_status(case_id)

    # --- fingers -------------------------------------------------------------------------

    def _tenprint(self, case_id: str) -> TenPrintCapture:
        with self._lock:
            capture = self._tenprints.get(case_id)
        if capture is not None:
            return capture
        devices = self._need_devices()
        from station.devices import DeviceUnavailableError

        try:
            scanner = devices.scanner
        except DeviceUnavailableError as exc:
            raise WorkflowError("device_missing", str(exc)) from None
        policy = self._policy()
        settings = TenPrintSettings(
            min_quality=policy.finger_min_quality,
            max_attempts=policy.finger_max_attempts,
            **(
                {"same_finger_threshold": policy.same_finger_threshold}
                if policy.same_finger_threshold
                else {}
            ),
        )
        stored = self._workflow().fingers(case_id)
        capture = TenPrintCapture(
            scanner, self.quality(), settings, results=[result_of(e) for e in stored.values()]
        )
        with self._lock:
            self._tenprints[case_id] = capture
        return capture

    def roll(
        self, case_id: str, operator_id: str, position: int, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """One attempt at ``position``; stores the finger when it is done."""
        workflow = self._workflow()
        case = workflow.get(case_id)
        if case.consent_at is None:
            raise WorkflowError(
                "consent_missing", "the citizen's consent comes before any biometric capture"
            )
        if not 1 <= position <= 10:
            raise WorkflowError("bad_position", f"finger position {position} is not 1-10")
        capture = self._tenprint(case_id)
        current = capture.result(position)
        if current is not None and current.done:
            capture.reset(position)  # the officer asked to capture this finger again
        if not self._scanner_lock.acquire(timeout=1.0):
            raise WorkflowError("scanner_busy", "the scanner is busy with another capture")
        running = RunningRoll(secrets.token_urlsafe(12), position, round(time.time(), 3))
        with self._lock:
            self._rolls[case_id] = running
        try:
            outcome = capture.attempt(position, timeout_s, cancel=running.stop)
        finally:
            with self._lock:
                if self._rolls.get(case_id) is running:
                    del self._rolls[case_id]
            self._scanner_lock.release()
        stored = False
        if outcome.done and outcome.result is not None:
            workflow.store_finger(case_id, operator_id, entry_of(outcome.result))
            stored = True
        result = outcome.result
        out: dict[str, Any] = {
            "roll": running.id,
            "position": position,
            "code": outcome.code,
            "message": {"vi": outcome.message("vi"), "en": outcome.message("en")},
            "quality": outcome.quality,
            "same_as": outcome.same_as,
            "done": outcome.done,
            "stored": stored,
            "attempts": result.attempts if result else 0,
            "best_quality": result.quality if result else None,
            "seconds": round(outcome.seconds, 3),
        }
        if stored and position in (5, 10):
            out["hand_warnings"] = [
                {"hand": w.hand, "vi": w.message("vi"), "en": w.message("en")}
                for w in capture.hand_check()
            ]
        return out

    def mark_exception(
        self, case_id: str, operator_id: str, position: int, code: str, reason: str | None
    ) -> None:
        """A finger that cannot be printed (it needs a supervisor's approval)."""
        entry = FingerEntry(position=position, exception_code=code, exception_reason=reason)
        self._workflow().store_finger(case_id, operator_id, entry)
        with self._lock:
            capture = self._tenprints.get(case_id)
        if capture is not None:
            capture.mark_exception(position, code, reason)

    def hand_warnings(self, case_id: str) -> list[dict[str, str]]:
        with self._lock:
            capture = self._tenprints.get(case_id)
        if capture is None:
            return []
        return [
            {"hand": w.hand, "vi": w.message("vi"), "en": w.message("en")}
            for w in capture.hand_check()
        ]

    def finger_states(self, case_id: str) -> list[dict[str, Any]]:
        """Each position as the capture sees it now: the attempts of a finger not done yet
        live only here (the case keeps done fingers), so a reloaded screen still says
        "attempt 2 of 3"."""
        stored = self._workflow().get(case_id).fingers
        with self._lock:
            capture = self._tenprints.get(case_id)
        out = []
        for position in range(1, 11):
            result = capture.result(position) if capture is not None else None
            summary = stored.get(position)
            if result is not None:
                state = {
                    "status": result.status,
                    "quality": result.quality,
                    "attempts": result.attempts,
                    "scores": list(result.scores),
                    "low_quality": result.low_quality,
                    "exception": result.exception_code,
                    "exception_reason": result.exception_reason,
                }
            elif summary is not None:
                state = {
                    "status": "exception" if summary.get("exception") else "captured",
                    "quality": summary.get("quality"),
                    "attempts": summary.get("attempts") or 0,
                    "scores": [],
                    "low_quality": bool(summary.get("low_quality")),
                    "exception": summary.get("exception"),
                    "exception_reason": None,
                }
            else:
                state = {"status": "todo", "quality": None, "attempts": 0, "scores": []}
                state |= {"low_quality": False, "exception": None, "exception_reason": None}
            out.append({"position": position, **state})
        return out

    def running_roll(self, case_id: str) -> RunningRoll | None:
        """The case's roll waiting on the scanner now, if any."""
        with self._lock:
            return self._rolls.get(case_id)

    def cancel_roll(self, case_id: str, roll_id: str | None = None) -> str | None:
        """Stop the case's running roll (it comes back as ``cancelled``): only the roll
        ``roll_id`` when given, whatever runs when not. The id of the roll stopped, or
        None when nothing (or another roll) was running."""
        with self._lock:
            running = self._rolls.get(case_id)
            if running is None or (roll_id is not None and running.id != roll_id):
                return None
            running.stop.set()
        return running.id

    def stop(self, timeout: float = 10.0) -> None:
        """End any capture (the service is stopping)."""
        with self._lock:
            session = self._face
            captures = list(self._tenprints.values())
            self._tenprints.clear()
        for capture in captures:
            capture.cancel()
        if session is not None:
            session.capture.cancel()
            if session.thread is not None:
                session.thread.join(timeout)

    def forget(self, case_id: str) -> None:
        """Drop a case's in-memory capture state (submitted or cancelled)."""
        with self._lock:
            self._tenprints.pop(case_id, None)
            if self._face is not None and self._face.case_id == case_id:
                self._face.capture.cancel()


__all__ = ["FaceFrame", "LiveCapture", "RunningRoll", "entry_of", "feedback_json", "result_of"]
