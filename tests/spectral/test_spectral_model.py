from __future__ import annotations

import numpy as np

from spectral import model, synth


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
