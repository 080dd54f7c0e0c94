"""Fingerprint features and matching: minutiae model and mindtct conversion, MCC, the
geometric re-scoring, 1:N search and multi-finger fusion.

Genuine pairs are two simulated impressions of one master minutia set (rotation up to 25
degrees each, translation, elastic distortion, jitter, missed and spurious minutiae,
cropping, mindtct's direction quantisation); impostors are impressions of other masters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from biometrics.errors import ExtractionError
from biometrics.fingerprint import mcc
from biometrics.fingerprint.fusion import ZNorm, fuse, fuse_candidates
from biometrics.fingerprint.matcher import (
    Candidate,
    FingerTemplate,
    Gallery,
    PairingParams,
    make_template,
    search,
    verify,
)
from biometrics.fingerprint.minutiae import (
    MindtctExtractor,
    Minutia,
    MinutiaKind,
    MinutiaSet,
    extract_minutiae,
)
from biometrics.fingerprint.prefilter import signature, signature_counts, signature_scores
from biometrics.fingerprint.simulate import (
    Distortion,
    impression,
    impression_with_truth,
    random_minutiae,
)
from biometrics.placeholder import finger_image
from tests import fpkit

RIGID = Distortion(
    elastic=0.0, jitter=0.0, angle_jitter=0.0, drop=0.0, spurious=0.0, type_flip=0.0,
    angle_step=None, max_translation=20.0,
)  # fmt: skip


def eer(genuine: NDArray[np.float64], impostor: NDArray[np.float64]) -> float:
    """Equal error rate over all thresholds (the mean of FNMR and FMR where they cross)."""
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    fnmr = np.array([(genuine < t).mean() for t in thresholds])
    fmr = np.array([(impostor >= t).mean() for t in thresholds])
    k = int(np.argmin(np.abs(fnmr - fmr)))
    return float((fnmr[k] + fmr[k]) / 2)


def turn(a: float, b: float) -> float:
    return abs((a - b + math.pi) % (2 * math.pi) - math.pi)


# --- minutiae model and extraction --------------------------------------------------------


def test_minutia_set_model() -> None:
    ms = MinutiaSet.from_minutiae(
        [
            Minutia(1, 2, 7.0, MinutiaKind.ENDING, 90),
            Minutia(3, 4, -1.0, MinutiaKind.BIFURCATION, 10),
        ],
        width=20,
        height=30,
    )
    assert len(ms) == 2
    assert ms.angle.min() >= 0
    assert ms.angle.max() < 2 * math.pi
    first = next(iter(ms))
    assert first.kind is MinutiaKind.ENDING
    assert first.quality == 90
    assert next(iter(ms.best(1))).quality == 90
    assert len(ms.take(ms.quality > 50)) == 1
    with pytest.raises(ValueError, match="quality"):
        MinutiaSet.from_arrays([1], [1], [0], quality=[101], width=5, height=5)
    with pytest.raises(ValueError, match="shape"):
        MinutiaSet(ms.x, ms.y[:1], ms.angle, ms.kind, ms.quality, 20, 30)


@pytest.mark.parametrize("degrees", [0, 90, 200, 315])
def test_mindtct_conventions_on_a_drawn_ridge_ending(degrees: int) -> None:
    """A ridge running in from the side opposite ``theta`` and stopping at the centre: one
    ridge ending there, pointing into its ridge (theta + 180), counter-clockwise on
    screen, within mindtct's 11.25-degree steps."""
    pytest.importorskip("nbis")
    theta = math.radians(degrees)
    ms = extract_minutiae(fpkit.cut_ridge(theta))
    d = np.hypot(ms.x - 200, ms.y - 200)
    k = int(np.argmin(d))
    assert d[k] <= 6
    assert ms.kind[k] == MinutiaKind.ENDING
    assert turn(ms.angle[k], theta + math.pi) <= math.radians(11.25)
    assert (ms.width, ms.height) == (400, 400)


@pytest.mark.parametrize("degrees", [30, 120])
def test_mindtct_bifurcation_is_the_dual_of_an_ending(degrees: int) -> None:
    pytest.importorskip("nbis")
    theta = math.radians(degrees)
    found = []
    for ending in (True, False):
        ms = extract_minutiae(fpkit.dislocation(theta, ridge_ending=ending))
        k = int(np.argmin(np.hypot(ms.x - 200, ms.y - 200)))
        found.append((int(ms.kind[k]), float(ms.angle[k]), float(ms.x[k]), float(ms.y[k])))
    (k1, a1, x1, y1), (k2, a2, x2, y2) = found
    assert (k1, k2) == (MinutiaKind.ENDING, MinutiaKind.BIFURCATION)
    assert turn(a1, a2) <= math.radians(11.25)
    assert abs(x1 - x2) <= 3
    assert abs(y1 - y2) <= 3
    assert turn(a1, theta) <= math.radians(11.25)


def test_mindtct_on_placeholder_and_ppi() -> None:
    pytest.importorskip("nbis")
    image = finger_image(2, width=500, height=500)
    ms = extract_minutiae(image)
    assert (ms.width, ms.height) == (500, 500)
    assert np.all((ms.x >= 0) & (ms.x < 500) & (ms.y >= 0) & (ms.y < 500))
    assert np.all(ms.quality <= 100)
    # At 1000 ppi the same pixels are half the size at 500 ppi.
    hi = MindtctExtractor(min_quality=0).extract(fpkit.dislocations(), ppi=1000)
    assert (hi.width, hi.height) == (240, 200)
    assert np.all(hi.x < 240)
    assert np.all(hi.y < 200)
    strict = MindtctExtractor(min_quality=50).extract(fpkit.dislocations())
    assert np.all(strict.quality >= 50)
    with pytest.raises(ExtractionError):
        extract_minutiae(np.zeros((100, 100), np.float32))  # type: ignore[arg-type]
    with pytest.raises(ExtractionError):
        extract_minutiae(np.zeros((100, 100, 3), np.uint8))


# --- simulation ---------------------------------------------------------------------------


def test_simulation_is_deterministic_and_tracks_truth() -> None:
    a = random_minutiae(np.random.default_rng(5))
    b = random_minutiae(np.random.default_rng(5))
    assert np.array_equal(a.x, b.x)
    assert np.array_equal(a.angle, b.angle)
    imp, truth = impression_with_truth(a, np.random.default_rng(6), RIGID)
    assert len(imp) == len(truth)
    assert np.all(truth >= 0)
    # Rigid motion keeps distances between corresponding minutiae.
    i, j = 0, len(truth) - 1
    d0 = math.hypot(a.x[truth[i]] - a.x[truth[j]], a.y[truth[i]] - a.y[truth[j]])
    d1 = math.hypot(imp.x[i] - imp.x[j], imp.y[i] - imp.y[j])
    assert d0 == pytest.approx(d1)


# --- MCC ----------------------------------------------------------------------------------


def test_cylinder_layout_and_size() -> None:
    p = mcc.DEFAULT_PARAMS
    assert (p.n_cells, p.n_bits, p.value_bytes, p.mask_bytes) == (52, 312, 39, 7)
    t = mcc.cylinders(random_minutiae(np.random.default_rng(1), n=80))
    assert len(t) == p.max_cylinders
    assert t.values.shape == (32, 39)
    assert t.masks.shape == (32, 7)
    tpl = make_template(random_minutiae(np.random.default_rng(1), n=80))
    assert tpl.nbytes == len(tpl.to_bytes()) == 1964


def test_cylinders_are_rotation_and_translation_invariant() -> None:
    rng = np.random.default_rng(11)
    master = random_minutiae(rng, n=45)
    moved, truth = impression_with_truth(master, rng, RIGID)
    a = mcc.cylinders(master, max_cylinders=0)
    b = mcc.cylinders(moved, max_cylinders=0)
    gamma = mcc.similarity_matrix(a, b)
    # Cylinders of the same minutia agree (up to rounding at the bit threshold).
    ia = {(int(x), int(y)): i for i, (x, y) in enumerate(zip(a.x, a.y, strict=True))}
    pairs = []
    for j in range(len(b)):
        k = int(np.argmin(np.hypot(moved.x - b.x[j], moved.y - b.y[j])))
        src = truth[k]
        key = (round(master.x[src]), round(master.y[src]))
        if key in ia:
            pairs.append(gamma[ia[key], j])
    assert len(pairs) >= 20
    assert np.median(pairs) >= 0.9
    assert mcc.score(a, b) >= 0.9


def test_self_match_is_the_maximum() -> None:
    rng = np.random.default_rng(4)
    t = make_template(impression(random_minutiae(rng), rng))
    other = make_template(impression(random_minutiae(rng), rng))
    assert mcc.score(t.cylinders, t.cylinders) == pytest.approx(1.0)
    assert verify(t, t) == pytest.approx(1.0)
    assert verify(t, other) < 1.0
    assert mcc.score(t.cylinders, other.cylinders) < 1.0


@pytest.fixture(scope="module")
def pairs() -> tuple[list[FingerTemplate], list[FingerTemplate]]:
    rng = np.random.default_rng(2026)
    masters = [random_minutiae(rng) for _ in range(200)]
    gallery = [make_template(impression(m, rng)) for m in masters]
    probes = [make_template(impression(m, rng)) for m in masters]
    return gallery, probes


def test_genuine_scores_clearly_above_impostors(
    pairs: tuple[list[FingerTemplate], list[FingerTemplate]],
) -> None:
    gallery, probes = pairs
    n = len(gallery)
    genuine = np.array([verify(probes[i], gallery[i]) for i in range(n)])
    impostor = np.array(
        [verify(probes[i], gallery[(i + k) % n]) for i in range(n) for k in (1, 2, 3)]
    )
    assert eer(genuine, impostor) < 0.005
    # Not just separable: far apart (measured: genuine median ~0.64, impostor max ~0.22;
    # the score counts only the minutiae in the common area, so chance pairs in a small
    # overlap score higher than they did against every minutia).
    assert np.median(genuine) > 2 * impostor.max()
    # MCC alone (LSS) already separates them well; LSS-R too.
    lss_g = np.array([mcc.score(probes[i].cylinders, gallery[i].cylinders) for i in range(n)])
    lss_i = np.array(
        [mcc.score(probes[i].cylinders, gallery[(i + 1) % n].cylinders) for i in range(n)]
    )
    assert eer(lss_g, lss_i) < 0.02
    rel_g = [
        mcc.score(probes[i].cylinders, gallery[i].cylinders, relaxation=True) for i in range(50)
    ]
    rel_i = [
        mcc.score(probes[i].cylinders, gallery[i + 1].cylinders, relaxation=True) for i in range(50)
    ]
    assert np.mean(rel_g) > 2 * np.mean(rel_i)


def test_a_partial_impression_is_scored_on_the_common_area() -> None:
    """Half a finger against the whole one: against all minutiae the score can reach at
    most about a half; counted over the common area it stays high, while an impostor's
    half does not gain."""
    rng = np.random.default_rng(21)
    master = random_minutiae(rng)
    full = make_template(impression(master, rng, RIGID), max_cylinders=0)
    half_set = impression(master, rng, RIGID)
    keep = np.flatnonzero(half_set.x < np.median(half_set.x))
    half = make_template(half_set.take(keep), max_cylinders=0)
    other = random_minutiae(rng)
    other_set = impression(other, rng, RIGID)
    other_half = make_template(
        other_set.take(np.flatnonzero(other_set.x < np.median(other_set.x))), max_cylinders=0
    )
    counts = PairingParams(normalise="counts")
    assert verify(half, full, counts) < 0.6
    assert verify(half, full) > 0.8
    assert verify(half, full) > 1.5 * verify(half, full, counts)
    assert verify(other_half, full) < 0.2


def test_minutiae_without_a_valid_cylinder_give_an_empty_template() -> None:
    # Two minutiae far apart: neither has the neighbours a cylinder needs.
    sparse = MinutiaSet.from_arrays([50.0, 350.0], [50.0, 350.0], [0.0, 1.0], width=400, height=400)
    t = make_template(sparse)
    assert len(t.cylinders) == 0
    assert verify(t, t) == 0.0


def test_signature_is_invariant_and_discriminates() -> None:
    rng = np.random.default_rng(9)
    master = random_minutiae(rng)
    same = signature(impression(master, rng, RIGID))
    others = np.stack([signature(random_minutiae(rng)) for _ in range(300)])
    gallery = np.vstack([signature(master)[None, :], others])
    scores = signature_scores(same, gallery, signature_counts(gallery))
    assert int(np.argmax(scores)) == 0
    assert scores[0] > scores[1:].max() + 5


# --- 1:N ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gallery_2000() -> tuple[Gallery, list[MinutiaSet]]:
    rng = np.random.default_rng(77)
    masters = [random_minutiae(rng) for _ in range(2000)]
    g = Gallery(capacity=256)  # grows by doubling
    for k, m in enumerate(masters):
        g.add(make_template(impression(m, rng)), label=10_000 + k)
    return g, masters


def test_search_finds_the_mate_at_rank_one(gallery_2000: tuple[Gallery, list[MinutiaSet]]) -> None:
    g, masters = gallery_2000
    assert len(g) == 2000
    assert g.bytes_per_template <= 2048
    rng = np.random.default_rng(78)
    for k in rng.choice(len(masters), 25, replace=False):
        probe = make_template(impression(masters[k], rng))
        found = search(probe, g, top=3)
        assert found[0].label == 10_000 + k, (k, found)
        assert found[0].score > 1.5 * found[1].score


def test_search_identity_and_edge_cases(gallery_2000: tuple[Gallery, list[MinutiaSet]]) -> None:
    g, _ = gallery_2000
    for row in (0, 999, 1999):
        found = search(g.template(row), g, top=1)
        assert found[0].row == row
        assert found[0].score == pytest.approx(1.0)
    empty = make_template(MinutiaSet.empty(500, 560))
    assert search(empty, g) == []
    assert search(g.template(0), Gallery()) == []
    small = Gallery()
    small.add(g.template(5), label=5)
    assert search(g.template(5), small)[0].label == 5


# --- fusion -------------------------------------------------------------------------------


def test_fuse_rules_and_missing_fingers() -> None:
    norm = ZNorm(0.0, 1.0)
    assert fuse({1: 2.0, 2: None, 3: 1.0}, "sum", norm) == 3.0
    assert fuse({1: 2.0, 2: float("nan"), 3: 1.0}, "max", norm) == 2.0
    assert fuse({1: 2.0, 3: 1.0}, "mean", norm) == 1.5
    assert math.isnan(fuse({1: None}, "sum", norm))
    per_position = {1: ZNorm(0.0, 1.0), 2: ZNorm(1.0, 2.0)}
    assert fuse({1: 1.0, 2: 3.0}, "sum", per_position) == 2.0
    fitted = ZNorm.fit([0.0, 0.2, 0.1, 0.3])
    assert fitted.mean == pytest.approx(0.15)
    with pytest.raises(ValueError, match="rule"):
        fuse({1: 1.0}, "median", norm)  # type: ignore[arg-type]


def test_fuse_candidates_prefers_consistent_evidence() -> None:
    def cands(*pairs: tuple[int, float]) -> list[Candidate]:
        return [Candidate(row=lab, label=lab, score=s, mcc=0.0, prefilter=0.0) for lab, s in pairs]

    # Person 7 is found on three fingers with moderate scores; person 9 on one finger with
    # a high one and absent elsewhere (scored at most the weakest listed score there).
    per_finger = {
        1: cands((7, 0.30), (9, 0.05), (4, 0.04)),
        2: cands((7, 0.25), (3, 0.06), (4, 0.05)),
        6: cands((9, 0.40), (7, 0.20), (5, 0.05)),
    }
    fused = fuse_candidates(per_finger, "sum")
    assert fused[0].label == 7
    assert fused[0].fingers == {1: 0.30, 2: 0.25, 6: 0.20}
    assert [f.label for f in fused[:2]] == [7, 9]
    by_max = fuse_candidates(per_finger, "max", top=1)
    assert by_max[0].label == 9


def test_ten_print_search_end_to_end() -> None:
    """Ten fingers of 60 people enrolled per finger position; a probe with two fingers
    missing fuses the eight searches and finds the person."""
    rng = np.random.default_rng(123)
    people = [
        [random_minutiae(rng, n=int(rng.integers(30, 50))) for _ in range(10)] for _ in range(60)
    ]
    galleries = {pos: Gallery(capacity=64) for pos in range(1, 11)}
    for person, fingers in enumerate(people):
        for pos, master in enumerate(fingers, start=1):
            galleries[pos].add(make_template(impression(master, rng)), label=person)
    target = 17
    results = {
        pos: search(make_template(impression(people[target][pos - 1], rng)), galleries[pos], top=5)
        for pos in range(1, 11)
        if pos not in (4, 9)  # amputated / unprintable
    }
    fused = fuse_candidates(results)
    assert fused[0].label == target
    assert set(fused[0].fingers) <= set(results)
