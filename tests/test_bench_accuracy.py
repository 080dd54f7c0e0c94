"""The accuracy benchmark's arithmetic: error rates at a target FMR, the DET curve, the FVC
pairs, and the ISO variant it feeds nbis's Bozorth3 with."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from biometrics.fingerprint.minutiae import MindtctExtractor
from biometrics.fingerprint.synth import ImpressionKind, impression, master_finger


def _load_bench() -> Any:
    # bench/ is a folder of scripts, not a package: load the module from its file.
    path = Path(__file__).resolve().parent.parent / "bench" / "fingerprint_accuracy.py"
    spec = importlib.util.spec_from_file_location("fingerprint_accuracy", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


acc: Any = _load_bench()


def test_threshold_keeps_the_false_match_rate_at_or_under_the_target() -> None:
    impostor = np.arange(1000, dtype=np.float64)  # 0..999
    t = acc.threshold_for(impostor, 0.01)
    assert np.mean(impostor >= t) <= 0.01
    assert np.mean(impostor >= t) == pytest.approx(0.01)  # and no stricter than needed
    # Ties at the threshold count as matches, so a tie cannot sneak under the budget.
    tied = np.concatenate([np.zeros(990), np.ones(10) * 5.0])
    assert np.mean(tied >= acc.threshold_for(tied, 0.005)) <= 0.005


def test_rates_on_known_distributions() -> None:
    impostor = np.linspace(0.0, 1.0, 1001)
    genuine = np.array([0.5, 0.995, 0.9995, 2.0])
    r = acc.rates(genuine, impostor)
    # FMR 1 %: threshold just above 0.99 -> 0.5 misses; FMR 0.1 %: just above 0.999.
    assert r.fnmr_at[0.01] == pytest.approx(0.25)
    assert r.fnmr_at[0.001] == pytest.approx(0.5)
    separated = acc.rates(np.full(50, 2.0), impostor)
    assert separated.eer == 0.0
    assert separated.fnmr_at[0.001] == 0.0
    fmr, fnmr = acc.det_curve(genuine, impostor)
    assert np.all(np.diff(fmr) <= 0)  # thresholds rise: fewer false matches ...
    assert np.all(np.diff(fnmr) >= 0)  # ... and more misses


def test_fvc_pairs() -> None:
    spec = acc.SetSpec(fingers=5, impressions=4, kind="flat", max_rotation=25.0, seed=1)
    genuine = acc.genuine_pairs(spec)
    assert len(genuine) == 5 * 6
    assert np.all(genuine[:, 0] // 4 == genuine[:, 1] // 4)
    impostor = acc.impostor_pairs(spec, None)
    assert len(impostor) == 10
    assert np.all(impostor % 4 == 0)  # first impressions only
    assert np.all(impostor[:, 0] // 4 < impostor[:, 1] // 4)
    sample = acc.impostor_pairs(spec, 4)
    assert len(sample) == 4
    assert {tuple(p) for p in sample} <= {tuple(p) for p in impostor}


def test_bozorth3_scores_our_records_as_it_scores_its_own() -> None:
    nbis = pytest.importorskip("nbis")
    settings = nbis.NbisExtractorSettings(
        min_quality=0.0, get_center=False, check_fingerprint=False, compute_nfiq2=False, ppi=500.0
    )
    native = nbis.new_nbis_extractor(settings)
    ours = MindtctExtractor()
    master = master_finger(5, 0, 2)
    images = [impression(master, 5, 0, 2, k, ImpressionKind.FLAT).image for k in range(2)]

    def png(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        return buf.getvalue()

    theirs = [native.extract_minutiae(png(a)) for a in images]
    loaded = [native.load_iso_19794_2_2005(acc.nbis_record(ours.extract(a))) for a in images]
    assert len(loaded[0].get()) == len(theirs[0].get()) > 10
    assert loaded[0].compare(loaded[1]) == theirs[0].compare(theirs[1]) > 20  # a genuine pair
