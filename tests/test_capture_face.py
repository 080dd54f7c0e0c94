"""Live face capture against the simulated camera, in real time: a journey ends in an
auto-captured portrait that passes the checks again; a turned head, a dark scene and closed
eyes time out naming those hints; cancel, the background thread and a camera fault.

The camera plays its script on the monotonic clock from ``open()``; each test opens it
itself when it needs to start at a given point of the script.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biometrics.face.pipeline import FaceAnalyzer
from biometrics.face.quality import HINTS
from biometrics.synth import faces
from station.capture.face import (
    FaceCapture,
    FaceCaptureSettings,
    FaceFeedback,
    FrameJudge,
    portrait_quality,
)
from station.drivers.camera import SimulatedCamera, parse_script
from station.drivers.camera.simulated import person_for
from tests.imagekit import ensure_face_assets

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "data" / "assets"
SEED = 0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def person() -> faces.SourceFace:
    if not all((ASSETS / name).is_file() for name in faces.SOURCE_PHOTOS):
        ensure_face_assets()
    return person_for(SEED, ASSETS)


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer()


@pytest.fixture
def cameras(person: faces.SourceFace) -> Iterator[list[SimulatedCamera]]:
    """Cameras made by a test, all closed after it."""
    made: list[SimulatedCamera] = []
    yield made
    for camera in made:
        camera.close()


def camera(made: list[SimulatedCamera], person: faces.SourceFace, script: str) -> SimulatedCamera:
    cam = SimulatedCamera(parse_script(script), seed=SEED, source=person, loop=True)
    made.append(cam)
    return cam


def decode(jpeg: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.format == "JPEG"
        return np.asarray(im.convert("RGB"))


def test_journey_ends_in_an_auto_captured_portrait(
    cameras: list[SimulatedCamera], person: faces.SourceFace, analyzer: FaceAnalyzer
) -> None:
    cam = camera(cameras, person, "walk_in:1.5, good:60")
    seen: list[FaceFeedback] = []
    # Previews limited below the camera's frame rate, so the limit shows in the count.
    capture = FaceCapture(cam, analyzer, FaceCaptureSettings(stable_frames=5, preview_fps=5))
    result = capture.run(timeout=20, on_feedback=seen.append)
    assert result.captured, (result.reason, result.top_hints)
    assert not cam.is_open  # opened by the capture, closed again
    assert result.jpeg is not None
    image = decode(result.jpeg)
    assert image.shape == (result.height, result.width, 3) == (640, 480, 3)
    # The portrait, decoded from what goes into the record, passes on its own.
    again = analyzer.analyze(image)
    assert again.passed, again.hint_keys()
    assert 50 <= result.quality <= 100
    assert abs(result.quality - portrait_quality(again.assessment)) <= 5
    # Feedback came every frame, with the stable run growing to the capture.
    assert len(seen) == result.frames >= 5
    assert [f.stable for f in seen[-5:]] == [1, 2, 3, 4, 5]
    assert all(f.passed and f.found and f.box is not None for f in seen[-5:])
    assert seen[0].preview is not None  # the first frame always carries a preview
    with Image.open(io.BytesIO(seen[0].preview)) as preview:
        assert preview.size[0] == 320
    previews = sum(f.preview is not None for f in seen)
    assert previews <= 1 + result.seconds * 5 + 1  # at most preview_fps a second
    assert [f.frame for f in seen] == sorted(f.frame for f in seen)


@pytest.mark.parametrize(
    ("script", "wait", "expected"),
    [
        ("turn_head:2", 0.0, {"yaw_to_left", "yaw_to_right"}),
        ("backlight:30", 0.0, {"too_dark"}),
        # Eyes close 2.5 s into the segment and stay closed until 7.5 s: start in between.
        ("eyes_closing:10", 2.8, {"open_eyes"}),
    ],
    ids=["turned-head", "too-dark", "eyes-closed"],
)
def test_a_scene_that_never_passes_times_out_naming_the_fault(
    cameras: list[SimulatedCamera],
    person: faces.SourceFace,
    analyzer: FaceAnalyzer,
    script: str,
    wait: float,
    expected: set[str],
) -> None:
    cam = camera(cameras, person, script)
    cam.open()
    time.sleep(wait)
    started = time.monotonic()
    result = FaceCapture(cam, analyzer).run(timeout=3.0)
    assert 2.9 <= time.monotonic() - started < 6.0
    assert cam.is_open  # the caller's camera stays open
    assert result.reason == "timeout"
    assert not result.captured
    assert result.jpeg is None
    assert result.frames >= 10
    assert expected & set(result.top_hints[:2]), result.hint_counts
    # The texts the officer reads are the hints' own, in both languages.
    for key, vi, en in zip(result.top_hints, result.hints("vi"), result.hints("en"), strict=True):
        assert (vi, en) == HINTS[key]


def test_cancel_stops_the_background_capture(
    cameras: list[SimulatedCamera], person: faces.SourceFace, analyzer: FaceAnalyzer
) -> None:
    cam = camera(cameras, person, "turn_head:2")
    capture = FaceCapture(cam, analyzer)
    capture.start(timeout=60)
    with pytest.raises(RuntimeError, match="already running"):
        capture.start()
    deadline = time.monotonic() + 10
    while capture.latest() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    latest = capture.latest()
    assert latest is not None
    assert latest.found
    assert capture.wait(0.05) is None  # still running
    cancelled_at = time.monotonic()
    capture.cancel()
    result = capture.wait(5)
    assert result is not None
    assert time.monotonic() - cancelled_at < 1.0
    assert result.reason == "cancelled"
    assert not capture.running
    assert not cam.is_open
    assert all(t.name != "face-capture" for t in threading.enumerate())


def test_background_capture_succeeds_and_streams_feedback(
    cameras: list[SimulatedCamera], person: faces.SourceFace, analyzer: FaceAnalyzer
) -> None:
    cam = camera(cameras, person, "good:60")
    seen: list[FaceFeedback] = []
    capture = FaceCapture(cam, analyzer)
    capture.start(timeout=15, on_feedback=seen.append)
    result = capture.wait(20)
    assert result is not None
    assert result.captured
    assert capture.latest() == seen[-1]
    assert seen[-1].hints("en") == ()
    assert seen[-1].passed


def test_a_camera_fault_ends_the_capture_with_its_reason(
    cameras: list[SimulatedCamera], person: faces.SourceFace, analyzer: FaceAnalyzer
) -> None:
    cam = camera(cameras, person, "empty:1, unplugged:30")
    result = FaceCapture(cam, analyzer).run(timeout=10)
    assert result.reason == "camera"
    assert result.detail is not None
    assert "cable" in result.detail
    assert result.top_hints == ("no_face",)
    assert result.seconds < 5


def test_framing_the_camera_frame_asks_to_come_closer_or_move(
    person: faces.SourceFace, analyzer: FaceAnalyzer
) -> None:
    """Rendered frames (no clock): far away the crop would be blown up (move closer); at
    the frame's edge the portrait reaches past it (move toward the middle)."""
    cam = SimulatedCamera(parse_script("walk_in:4, good:1"), seed=SEED, source=person)
    judge = FrameJudge(analyzer)
    far = judge.feed(cam.render(3))  # a third of the way in, off to one side
    assert far.found
    assert "move_closer" in far.hint_keys
    assert not far.passed
    near = FrameJudge(analyzer).feed(cam.render(round(4.5 * cam.fps)))
    assert near.passed, near.hint_keys
    # The same good frame shifted far to one side: the portrait leaves the frame.
    frame = cam.render(round(4.5 * cam.fps))
    assert frame is not None
    shifted = np.roll(frame.image, -int(frame.width * 0.3), axis=1)
    shifted[:, -int(frame.width * 0.3) :] = frame.image[:, -1:]
    edge = FrameJudge(analyzer).feed(type(frame)(shifted, frame.timestamp, 0))
    assert edge.found
    assert {"move_to_left", "move_to_right"} & set(edge.hint_keys)


def test_portrait_quality_ranks_passing_above_failing(
    person: faces.SourceFace, analyzer: FaceAnalyzer
) -> None:
    cam = SimulatedCamera(parse_script("good:1, backlight:1"), seed=SEED, source=person)
    scores = {}
    for name, t in (("good", 0.5), ("dark", 1.5)):
        frame = cam.render(round(t * cam.fps))
        assert frame is not None
        crop = analyzer.analyze(analyzer.portrait(frame.image, analyzer.analyze(frame.image)).image)
        scores[name] = (crop.passed, portrait_quality(crop.assessment))
    assert scores["good"][0]
    assert not scores["dark"][0]
    assert scores["good"][1] >= 50 > scores["dark"][1]
    assert portrait_quality(None) == 0
