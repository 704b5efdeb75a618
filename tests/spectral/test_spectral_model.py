from __future__ import annotations

import numpy as np
import pytest

from spectral import chemometrics, model, preprocess, synth
from spectral.preprocess import Step


def test_train_synthetic_runs_quickly_and_names_classes(instrument):
    import time

    t0 = time.perf_counter()
    m = model.train_synthetic(instrument, np.random.default_rng(5))
    assert time.perf_counter() - t0 < 5.0  # budget 2 s; slack for a loaded CI machine
    assert m.class_names == tuple(sorted(synth.CONTAMINANTS))
    assert set(m.brand_names) == set(synth.BRANDS)
    assert isinstance(m.version, str) and m.version.startswith("synthetic-v1@")


def test_fast_scores_match_reference_decisions_on_thousands_of_spectra(instrument, lane_model, references):
    rng = np.random.default_rng(11)
    w = instrument.wavelengths_nm
    parts = [synth.ore_reflectance(w, 3000, rng)]
    for material in synth.CONTAMINANTS:
        parts.append(synth.mixed_reflectance(material, rng.uniform(0, 0.6, 500), w, 500, rng))
    counts = synth.lane_counts(instrument, np.vstack(parts), rng)
    fast = lane_model.score(counts, *references)
    exact = lane_model.score_reference(counts, *references)
    assert np.array_equal(fast.decision, exact.decision)
    assert np.array_equal(fast.class_index, exact.class_index)
    np.testing.assert_allclose(fast.anomaly_score, exact.anomaly_score, rtol=5e-3)
    np.testing.assert_allclose(fast.class_scores, exact.class_scores, atol=5e-3)
    assert fast.anomaly_score.dtype == np.float32 and fast.decision.dtype == np.uint8
    assert fast.class_scores.shape == (counts.shape[0], len(lane_model.class_names))


# ---------------------------------------------------------------- false-alarm thresholds


def _pareto_sample(shape: float, scale: float, n: int, rng) -> np.ndarray:
    u = rng.random(n)
    return -scale * np.log1p(-u) if shape == 0 else scale / shape * ((1 - u) ** -shape - 1)


@pytest.mark.parametrize("shape", [0.0, 0.2, 0.4])
def test_pareto_tail_fit_recovers_shape_and_scale(shape):
    got_shape, got_scale = chemometrics.pareto_tail_fit(_pareto_sample(shape, 2.0, 20_000, np.random.default_rng(5)))
    assert got_shape == pytest.approx(shape, abs=0.03)
    assert got_scale == pytest.approx(2.0, rel=0.05)


def test_pareto_tail_fit_keeps_the_shape_in_range():
    light = np.random.default_rng(6).random(5000)  # uniform excess: shape -1, lighter than exponential
    shape, scale = chemometrics.pareto_tail_fit(light)
    assert shape == 0.0 and scale == pytest.approx(light.mean())
    heavy = _pareto_sample(0.9, 1.0, 5000, np.random.default_rng(7))
    assert chemometrics.pareto_tail_fit(heavy)[0] == chemometrics.PARETO_SHAPE_RANGE[1]


def test_tail_fit_threshold_holds_its_rate_on_a_heavy_tail():
    # Scores whose tail is heavier than exponential (Student t, 5 degrees of freedom): the threshold set
    # from 20,000 must be exceeded by new scores at close to the target, not at several times it (an
    # exponential tail fit gives 3.4e-4 here; this one 0.73e-4).
    rng = np.random.default_rng(8)
    threshold = chemometrics.threshold_for_false_alarm_rate(np.abs(rng.standard_t(5, 20_000)), 1e-4)
    new = np.abs(rng.standard_t(5, 2_000_000))
    assert 0.5e-4 <= np.mean(new > threshold) <= 1.6e-4


@pytest.mark.parametrize("shape", [0.0, 0.3])
def test_the_fitted_tail_gives_the_target_rate_at_the_threshold(shape):
    scores = _pareto_sample(shape, 1.0, 50_000, np.random.default_rng(9))
    threshold = chemometrics.threshold_for_false_alarm_rate(scores[:2000], 1e-4)  # beyond the 2,000 spectra
    u, fitted_shape, scale = chemometrics.pareto_tail(scores[:2000])
    assert chemometrics.pareto_exceedance(np.array([threshold]), u, fitted_shape, scale)[0] == pytest.approx(1e-4)
    assert chemometrics.pareto_exceedance(np.array([u]), u, fitted_shape, scale)[0] == pytest.approx(0.05)


def test_fast_path_floors_counts_at_or_below_dark_like_the_reference(instrument, lane_model, references):
    """Blocks without such counts skip the floor pass; the block that has them must still floor them."""
    from spectral.fast import BLOCK_ROWS

    rng = np.random.default_rng(12)
    counts = synth.lane_counts(instrument, synth.ore_reflectance(instrument.wavelengths_nm, 2 * BLOCK_ROWS + 10, rng),
                               rng)
    dark = np.asarray(references[0])
    rows = [BLOCK_ROWS + 3, BLOCK_ROWS + 4, BLOCK_ROWS + 5]
    counts[rows[0], 20:40] = 0
    counts[rows[1], 60:70] = np.round(dark[60:70]).astype(counts.dtype)
    counts[rows[2], 100:104] = np.round(dark[100:104] + 1).astype(counts.dtype)
    fast = lane_model.score(counts, *references)
    exact = lane_model.score_reference(counts, *references)
    assert np.array_equal(fast.decision, exact.decision)
    assert np.array_equal(fast.class_index, exact.class_index)
    np.testing.assert_allclose(fast.anomaly_score, exact.anomaly_score, rtol=5e-3)


@pytest.mark.parametrize("chain", ["snv", "msc", "center_savgol_center", "savgol_absorbance_center_dct",
                                   "absorbance", "absorbance_snv", "absorbance_center"])
def test_fast_path_matches_reference_on_other_chains(instrument, references, chain):
    """The compiled chain folds centring, scaling steps and segments differently per chain; decisions stay exact."""
    rng = np.random.default_rng(13)
    w = instrument.wavelengths_nm
    n = w.size
    ore = synth.lane_counts(instrument, synth.ore_reflectance(w, 600, rng), rng)
    parts, labels = [ore], ["ore"] * 600
    for material in synth.CONTAMINANTS:
        parts.append(synth.lane_counts(instrument, synth.mixed_reflectance(material, rng.uniform(0.05, 1, 80), w, 80,
                                                                           rng), rng))
        labels += [material] * 80
    refl = preprocess.reflectance(np.vstack(parts), *references)
    smooth = Step("linear", "savgol(11, 2)", matrix=preprocess.savgol_matrix(n, 11, 2))
    absorbance = Step("absorbance", "absorbance", params={"floor": 1e-4})
    steps = {"snv": [Step("snv", "snv")],
             "msc": [Step("msc", "msc", reference=refl[:600].mean(axis=0))],
             "center_savgol_center": [Step("center", "center"), smooth, Step("center", "center")],
             "savgol_absorbance_center_dct": [smooth, *model.default_steps(n)],
             # every band kept to the PCA: float32 got 7-8 decisions of 2,700 wrong here, so these run in float64
             "absorbance": [absorbance], "absorbance_snv": [absorbance, Step("snv", "snv")],
             "absorbance_center": [absorbance, Step("center", "center")]}[chain]
    lane = model.fit_lane_model(refl, np.array(labels), w, steps=steps)
    parts = [synth.ore_reflectance(w, 1500, rng)]
    parts += [synth.mixed_reflectance(m, rng.uniform(0, 0.6, 200), w, 200, rng) for m in synth.CONTAMINANTS]
    counts = synth.lane_counts(instrument, np.vstack(parts), rng)
    fast = lane.score(counts, *references)
    exact = lane.score_reference(counts, *references)
    assert np.array_equal(fast.decision, exact.decision)
    assert np.array_equal(fast.class_index, exact.class_index)
