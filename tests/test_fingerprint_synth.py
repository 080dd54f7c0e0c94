"""The synthetic fingerprint generator (biometrics.fingerprint.synth and the CLI).

Realism is checked with the NIST tools through nbis-py: mindtct minutiae counts, Bozorth3
genuine vs impostor scores, and NFIQ 2 per skin condition.
"""

from __future__ import annotations

import io
import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from biometrics.fingerprint.synth import (
    CLASS_BY_FINGER,
    CLASS_FREQUENCIES,
    IMAGE_SIZE,
    FingerClass,
    ImpressionKind,
    MasterFinger,
    SkinCondition,
    contact_mask,
    impression,
    master_finger,
)
from biometrics.fingerprint.synth_impression import (
    image_to_master,
    master_footprint,
    master_to_image,
    points_to_image,
)
from biometrics.fingerprint.synth_master import draw_class
from biometrics.synth.__main__ import main as synth_main

nbis = pytest.importorskip("nbis", reason="nbis-py (x86_64 only) is needed for NIST checks")

SEED = 20261121


@pytest.fixture(scope="module")
def masters() -> list[MasterFinger]:
    """Eight right-index masters (finger 2 carries all five classes)."""
    return [master_finger(SEED, person, 2) for person in range(8)]


@pytest.fixture(scope="module")
def extractor() -> object:
    settings = nbis.NbisExtractorSettings(
        min_quality=0.0, get_center=False, check_fingerprint=False, compute_nfiq2=False, ppi=500
    )
    return nbis.new_nbis_extractor(settings)


@pytest.fixture(scope="module")
def nfiq2_extractor() -> object:
    settings = nbis.NbisExtractorSettings(
        min_quality=0.0, get_center=False, check_fingerprint=False, compute_nfiq2=True, ppi=500
    )
    return nbis.new_nbis_extractor(settings)


def png(image: NDArray[np.uint8]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def nfiq2(extractor: object, image: NDArray[np.uint8]) -> int:
    """NFIQ 2 score; 0 when NFIQ 2 cannot assess the image (as the NIST tool reports)."""
    try:
        return int(extractor.extract_minutiae(png(image)).quality().score)  # type: ignore[attr-defined]
    except nbis.NbisError:
        return 0


def poincare_index(theta: NDArray[np.float32], ring: list[tuple[int, int]]) -> float:
    """Poincare index of an orientation field (mod pi) along a closed ring of (row, col)."""
    values = np.array([theta[r, c] for r, c in ring], dtype=np.float64)
    d = np.diff(np.append(values, values[0]))
    d = (d + math.pi / 2) % math.pi - math.pi / 2
    return float(d.sum() / (2 * math.pi))


def circle(master: MasterFinger, x: float, y: float, radius: float) -> list[tuple[int, int]]:
    ds = master.config.downsample
    h, w = master.orientation.shape
    pts = []
    for a in np.linspace(0.0, 2 * math.pi, 64, endpoint=False):
        r = min(max(round((y + radius * math.sin(a)) / ds), 0), h - 1)
        c = min(max(round((x + radius * math.cos(a)) / ds), 0), w - 1)
        pts.append((r, c))
    return pts


def singular_points(theta: NDArray[np.float32], margin: int = 8) -> tuple[int, int]:
    """(cores, deltas): 2x2 cells of the orientation field with index +1/2 and -1/2."""
    t = theta.astype(np.float64)
    ring = [t[:-1, :-1], t[:-1, 1:], t[1:, 1:], t[1:, :-1]]
    total = np.zeros_like(ring[0])
    for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
        total += (b - a + math.pi / 2) % math.pi - math.pi / 2
    index = np.rint(total / math.pi)[margin:-margin, margin:-margin]
    return int((index > 0).sum()), int((index < 0).sum())


# --- Determinism and diversity -----------------------------------------------------------


def test_same_seed_gives_identical_bytes(masters: list[MasterFinger]) -> None:
    again = master_finger(SEED, 3, 2)
    assert again.ridges.tobytes() == masters[3].ridges.tobytes()
    assert again.singularities == masters[3].singularities
    for kind in ImpressionKind:
        a = impression(masters[3], SEED, 3, 2, 1, kind)
        b = impression(again, SEED, 3, 2, 1, kind)
        assert a.image.tobytes() == b.image.tobytes()
        assert a.params == b.params


def test_distinct_seeds_give_different_ridge_structure(masters: list[MasterFinger]) -> None:
    # Even with the class forced, the ridges (phase, minutiae) share nothing.
    a = master_finger(1, 0, 2, finger_class=FingerClass.WHORL).ridges
    b = master_finger(2, 0, 2, finger_class=FingerClass.WHORL).ridges
    c = master_finger(1, 1, 2, finger_class=FingerClass.WHORL).ridges
    for x, y in [(a, b), (a, c), (b, c), (masters[0].ridges, masters[1].ridges)]:
        assert abs(float(np.corrcoef(x.ravel(), y.ravel())[0, 1])) < 0.1
    assert len({m.ridges.tobytes() for m in masters}) == len(masters)


def test_impressions_differ_but_each_regenerates_alone(masters: list[MasterFinger]) -> None:
    shots = [impression(masters[0], SEED, 0, 2, i, ImpressionKind.FLAT) for i in range(3)]
    assert len({s.image.tobytes() for s in shots}) == 3
    assert len({s.params.rotation_deg for s in shots}) == 3
    # Impression 2 does not depend on 0 and 1 having been drawn.
    alone = impression(master_finger(SEED, 0, 2), SEED, 0, 2, 2, ImpressionKind.FLAT)
    assert alone.image.tobytes() == shots[2].image.tobytes()


# --- Classes and the orientation model ----------------------------------------------------


def test_class_frequencies_match_natural_frequencies() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    draws = [draw_class(rng) for _ in range(n)]
    chi2 = 0.0
    for cls, p in CLASS_FREQUENCIES.items():
        observed = draws.count(cls)
        chi2 += (observed - n * p) ** 2 / (n * p)
    assert chi2 < 18.5  # chi-square, 4 degrees of freedom, p = 0.001
    # The per-finger table averages back to the natural frequencies...
    for cls, p in CLASS_FREQUENCIES.items():
        mean = sum(CLASS_BY_FINGER[f][cls] for f in range(1, 11)) / 10
        assert mean == pytest.approx(p, abs=1e-9)
    for f in range(1, 11):
        assert sum(CLASS_BY_FINGER[f].values()) == pytest.approx(1.0)
    # ...and correlates with the finger: whorls on thumbs and ring fingers, arches on index
    # fingers, ulnar loops (right loops on the right hand) on middle and little fingers.
    whorl = {f: CLASS_BY_FINGER[f][FingerClass.WHORL] for f in range(1, 11)}
    assert min(whorl[1], whorl[4], whorl[6], whorl[9]) > max(whorl[3], whorl[5], whorl[8])
    assert CLASS_BY_FINGER[2][FingerClass.ARCH] > CLASS_BY_FINGER[4][FingerClass.ARCH]
    for f in range(1, 6):
        right, left = CLASS_BY_FINGER[f], CLASS_BY_FINGER[f + 5]
        assert right[FingerClass.RIGHT_LOOP] > right[FingerClass.LEFT_LOOP]
        assert left[FingerClass.LEFT_LOOP] > left[FingerClass.RIGHT_LOOP]


EXPECTED = {
    FingerClass.ARCH: (0, 0),
    FingerClass.TENTED_ARCH: (1, 1),
    FingerClass.LEFT_LOOP: (1, 1),
    FingerClass.RIGHT_LOOP: (1, 1),
    FingerClass.WHORL: (2, 2),
}


@pytest.mark.parametrize("cls", list(FingerClass))
def test_singular_points_of_each_class(cls: FingerClass) -> None:
    for person in range(2):
        m = master_finger(SEED, person, 0, finger_class=cls)
        assert (len(m.cores), len(m.deltas)) == EXPECTED[cls]
        # The orientation field itself has exactly those singularities (none for an arch),
        # each of Poincare index +1/2 (core) or -1/2 (delta).
        assert singular_points(m.orientation) == EXPECTED[cls]
        for s in m.singularities:
            index = poincare_index(m.orientation, circle(m, s.x, s.y, 12.0))
            assert index == pytest.approx(0.5 if s.kind == "core" else -0.5, abs=0.01)
        # Far from the pattern the flow is that of an arch: index 0 around everything.
        cx, cy = m.pad_centre
        assert poincare_index(m.orientation, circle(m, cx, cy, 330.0)) == pytest.approx(0.0)
        if cls in (FingerClass.LEFT_LOOP, FingerClass.RIGHT_LOOP):
            (core,), (delta,) = m.cores, m.deltas
            # A left loop opens to the left, so its delta lies to the right of the core.
            assert (delta.x > core.x) == (cls is FingerClass.LEFT_LOOP)
            assert delta.y > core.y
        if cls is FingerClass.TENTED_ARCH:
            (core,), (delta,) = m.cores, m.deltas
            assert abs(delta.x - core.x) < 30 < delta.y - core.y


def local_period(ridges: NDArray[np.float32], y: int, x: int, n: int = 96) -> float:
    """Power-weighted mean ridge period (px) of an n x n window of a master."""
    patch = ridges[y - n // 2 : y + n // 2, x - n // 2 : x + n // 2].astype(np.float64)
    power = np.abs(np.fft.fft2(patch * np.outer(np.hanning(n), np.hanning(n)))) ** 2
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    power[(f < 1 / 14) | (f > 1 / 6)] = 0.0  # the ridge band only
    return float(1.0 / ((power * f).sum() / power.sum()))


def test_ridge_period_follows_the_frequency_map(masters: list[MasterFinger]) -> None:
    planned, grown = [], []
    for m in masters:
        ds = m.config.downsample
        assert float(m.period.min()) >= 8.0
        assert float(m.period.max()) <= 11.0
        for y in range(120, 700, 96):
            for x in range(120, 660, 96):
                planned.append(float(m.period[y // ds, x // ds]))
                grown.append(local_period(m.ridges, y, x))
    # 500 ppi fingers: 8-11 px; and where the map asks for wider ridges, they grow wider.
    assert float(np.percentile(grown, 5)) >= 8.0
    assert float(np.percentile(grown, 95)) <= 11.5
    assert float(np.corrcoef(planned, grown)[0, 1]) > 0.7


# --- Impressions ---------------------------------------------------------------------------


def test_impression_format_and_look(masters: list[MasterFinger]) -> None:
    for kind in ImpressionKind:
        shot = impression(masters[1], SEED, 1, 2, 0, kind, condition=SkinCondition.NORMAL)
        w, h = IMAGE_SIZE[kind]
        assert shot.image.shape == (h, w)
        assert shot.image.dtype == np.uint8
        inside = contact_mask(shot.params)
        assert 0.25 < inside.mean() < 0.95
        # Dark ridges on a light background, as scanners produce.
        assert np.median(shot.image[~inside]) > 200
        assert np.percentile(shot.image[inside], 10) < 120
        assert np.percentile(shot.image[inside], 90) > 170
    assert IMAGE_SIZE[ImpressionKind.ROLLED] == (800, 750)


def test_rotation_and_distortion_geometry(masters: list[MasterFinger]) -> None:
    rotations = []
    for i in range(30):
        shot = impression(masters[2], SEED, 2, 2, i, ImpressionKind.FLAT, max_rotation=25.0)
        p = shot.params
        rotations.append(p.rotation_deg)
        # master_to_image inverts image_to_master (the distortion is solved iteratively).
        for x, y in [(p.anchor_x, p.anchor_y), (p.anchor_x + 120, p.anchor_y - 90)]:
            u, v = master_to_image(p, x, y)
            bx, by = image_to_master(p, np.array([u]), np.array([v]))
            assert math.hypot(float(bx[0]) - x, float(by[0]) - y) < 0.05
        # Cappelli's model: rigid in the close-contact region, displaced far outside it by
        # the extra rotation and translation.
        d = p.distortion
        rigid = replace(p, distortion=replace(d, angle_deg=0.0, dx=0.0, dy=0.0))
        a = math.radians(d.angle_deg)
        for far in (0.0, 4.0):
            x, y = d.cx + far * (d.rx + d.brake), d.cy
            u, v = master_to_image(rigid, x, y)
            bx, by = image_to_master(p, np.array([u]), np.array([v]))
            tx = d.cx + math.cos(a) * (x - d.cx) + d.dx  # T(v) - v, far out
            ty = d.cy + math.sin(a) * (x - d.cx) + d.dy
            expected = (tx - x, ty - y) if far else (0.0, 0.0)
            assert float(bx[0]) - x == pytest.approx(expected[0], abs=1e-6)
            assert float(by[0]) - y == pytest.approx(expected[1], abs=1e-6)
    assert max(abs(r) for r in rotations) <= 25.0
    assert max(abs(r) for r in rotations) > 15.0  # the range is used


def test_partial_contact_shrinks_the_print(masters: list[MasterFinger]) -> None:
    full, part = [], []
    for i in range(6):
        normal = SkinCondition.NORMAL
        a = impression(
            masters[4], SEED, 4, 2, i, ImpressionKind.FLAT, condition=normal, partial=False
        )
        b = impression(
            masters[4], SEED, 4, 2, i, ImpressionKind.FLAT, condition=normal, partial=True
        )
        full.append(contact_mask(a.params).mean())
        part.append(contact_mask(b.params).mean())
    assert statistics.mean(part) < 0.8 * statistics.mean(full)


def test_footprint_is_the_skin_an_impression_shows(masters: list[MasterFinger]) -> None:
    m = masters[4]
    w, h = m.config.width, m.config.height
    normal = SkinCondition.NORMAL
    shots = [
        impression(m, SEED, 4, 2, i, ImpressionKind.FLAT, condition=normal, partial=False)
        for i in range(3)
    ]
    step = 4
    feet = [master_footprint(s.params, w, h, step) for s in shots]
    for shot, foot in zip(shots, feet, strict=True):
        # The area it covers on the master is the contact area in the image (the
        # distortion nearly preserves area), and every covered master point lands on a
        # contact pixel of the image.
        area_master = foot.sum() * step * step
        area_image = contact_mask(shot.params).sum()
        assert area_master == pytest.approx(area_image, rel=0.08)
        ys, xs = np.nonzero(foot)
        u, v = points_to_image(shot.params, xs * float(step), ys * float(step))
        hit = contact_mask(shot.params)[
            np.rint(v).astype(int).clip(0, shot.params.height - 1),
            np.rint(u).astype(int).clip(0, shot.params.width - 1),
        ]
        assert hit.mean() > 0.99  # all but rounding at the edge
    shared = (feet[0] & feet[1]).sum()
    assert 0 < shared <= min(feet[0].sum(), feet[1].sum())
    part = impression(m, SEED, 4, 2, 0, ImpressionKind.FLAT, condition=normal, partial=True)
    assert master_footprint(part.params, w, h, step).sum() < feet[0].sum()


def test_singularities_follow_the_impression(masters: list[MasterFinger]) -> None:
    m = next(m for m in masters if m.cores)
    shot = impression(m, SEED, masters.index(m), 2, 0, ImpressionKind.FLAT)
    assert [s.kind for s in shot.singularities] == [s.kind for s in m.singularities]
    for s_img, s_master in zip(shot.singularities, m.singularities, strict=True):
        x, y = image_to_master(shot.params, np.array([s_img.x]), np.array([s_img.y]))
        assert math.hypot(float(x[0]) - s_master.x, float(y[0]) - s_master.y) < 0.1


# --- Realism with the NIST tools -----------------------------------------------------------


def test_minutiae_arise_from_ridge_growth(masters: list[MasterFinger], extractor: object) -> None:
    rolled: list[int] = []
    flat: list[int] = []
    for person, m in enumerate(masters[:4]):
        for kind, counts in ((ImpressionKind.ROLLED, rolled), (ImpressionKind.FLAT, flat)):
            shot = impression(m, SEED, person, 2, 0, kind, condition=SkinCondition.NORMAL)
            mins = extractor.extract_minutiae(png(shot.image)).get()  # type: ignore[attr-defined]
            counts.append(len(mins))
            kinds = {str(x.kind()) for x in mins}
            assert any("ENDING" in k for k in kinds)
            assert any("BIFURCATION" in k for k in kinds)
    # mindtct on real 500 ppi prints: ~30-80 on a flat, ~80-150 on a rolled print
    # (nbis-py keeps at most 150).
    assert 25 <= statistics.median(flat) <= 90, flat
    assert 60 <= statistics.median(rolled) <= 150, rolled
    assert statistics.median(rolled) > statistics.median(flat)


def test_impressions_of_one_master_match_and_masters_do_not(
    masters: list[MasterFinger], extractor: object
) -> None:
    # Flat impressions, rotation up to 25 degrees, Cappelli distortion, normal skin.
    n = 6
    templates = {
        (p, i): extractor.extract_minutiae(  # type: ignore[attr-defined]
            png(
                impression(
                    masters[p],
                    SEED,
                    p,
                    2,
                    i,
                    ImpressionKind.FLAT,
                    condition=SkinCondition.NORMAL,
                    partial=False,
                ).image
            )
        )
        for p in range(n)
        for i in range(2)
    }
    genuine = [templates[(p, 0)].compare(templates[(p, 1)]) for p in range(n)]
    impostor = [templates[(p, 0)].compare(templates[(q, 1)]) for p in range(n) for q in range(n)]
    impostor = [s for k, s in enumerate(impostor) if k // n != k % n]
    assert statistics.mean(genuine) > 4 * statistics.mean(impostor), (genuine, impostor)
    # Bozorth3's usual decision threshold is 40: almost all genuine pairs pass, no impostor.
    assert sum(s >= 40 for s in genuine) >= n - 1, genuine
    assert max(impostor) < 40, impostor


def test_nfiq2_ranks_skin_conditions(masters: list[MasterFinger], nfiq2_extractor: object) -> None:
    scores: dict[str, list[int]] = {}
    for name, condition, partial in [
        ("normal", SkinCondition.NORMAL, False),
        ("dry", SkinCondition.DRY, False),
        ("wet", SkinCondition.WET, False),
        ("partial", SkinCondition.NORMAL, True),
    ]:
        scores[name] = [
            nfiq2(
                nfiq2_extractor,
                impression(
                    m, SEED, p, 2, 0, ImpressionKind.FLAT, condition=condition, partial=partial
                ).image,
            )
            for p, m in enumerate(masters)
        ]
    normal = statistics.mean(scores["normal"])
    assert statistics.median(scores["normal"]) > 45, scores
    for bad in ("dry", "wet", "partial"):
        assert statistics.mean(scores[bad]) < normal - 3, scores


# --- The command line ----------------------------------------------------------------------


def test_cli_writes_images_and_ground_truth(tmp_path: Path) -> None:
    out = tmp_path / "set"
    args = ["fingers", "--people", "2", "--impressions", "2", "--out", str(out)]
    args += ["--seed", "5", "--flat", "--fingers", "1,7", "--workers", "2"]
    assert synth_main(args) == 0
    lines = (out / "ground_truth.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 2 * 2
    records = [json.loads(line) for line in lines]
    assert [(r["person"], r["finger"], r["impression"]) for r in records] == [
        (p, f, i) for p in (0, 1) for f in (1, 7) for i in (0, 1)
    ]
    first = records[0]
    assert first["synthetic"] is True
    assert (first["kind"], first["seed"]) == ("flat", 5)
    assert first["class"] in {c.value for c in FingerClass}
    assert {"rotation_deg", "translate_x", "distortion", "contact"} <= first["params"].keys()
    # Any one image regenerates from (seed, person, finger, kind, impression) alone.
    rec = records[-1]
    with Image.open(out / rec["file"]) as im:
        pixels = np.asarray(im)
    again = impression(master_finger(5, 1, 7), 5, 1, 7, 1, ImpressionKind.FLAT)
    assert pixels.tobytes() == again.image.tobytes()
    assert rec["class"] == master_finger(5, 1, 7).finger_class
    # Resuming a finished run writes nothing new and keeps the file; other arguments refuse.
    before = (out / "ground_truth.jsonl").read_bytes()
    assert synth_main([*args, "--resume", "--workers", "1"]) == 0
    assert (out / "ground_truth.jsonl").read_bytes() == before
    assert synth_main([*args[:-4], "--resume", "--fingers", "2"]) == 2


def test_cli_resume_after_interruption_and_wsq(tmp_path: Path) -> None:
    out = tmp_path / "set"
    args = ["fingers", "--people", "1", "--impressions", "1", "--out", str(out)]
    args += ["--fingers", "3-4", "--format", "wsq", "--workers", "1"]
    assert synth_main(args) == 0
    full = (out / "ground_truth.jsonl").read_bytes()
    # Simulate a crash in the middle of the second finger's line.
    (out / "ground_truth.jsonl").write_bytes(full[: len(full) - 40])
    assert synth_main([*args, "--resume"]) == 0
    assert (out / "ground_truth.jsonl").read_bytes() == full
    data = (out / "000000" / "f03_rolled_0.wsq").read_bytes()
    assert data[:2] == b"\xff\xa0"  # WSQ start-of-image marker
