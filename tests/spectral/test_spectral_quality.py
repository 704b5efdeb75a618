"""Issue 3 quality targets on simulated lanes (fixed seeds): false alarms at 1e-4 and detection at 20 %."""

from __future__ import annotations

import numpy as np
import pytest

from spectral import chemometrics, dataset, model, synth


def _fit(instrument, contaminants=synth.CONTAMINANTS, seed=41):
    rng = np.random.default_rng(seed)
    train = dataset.from_simulation(synth.simulate_lots(instrument, rng, 40, 150, contaminants=contaminants),
                                    wavelengths_nm=instrument.wavelengths_nm)
    m = model.fit_lane_model(train.reflectance, train.labels, train.wavelengths_nm, brands=train.brands)
    # Threshold for 1e-4 from clean ore of lots the model never saw (as grouped CV does in the workbench).
    # 200 lots: the tail of new lots depends on how many lots the threshold has seen; from 60 lots of 200
    # spectra the generalised Pareto fit gave 0.5e-4 to 5e-4 on new lots over 12 tuning sets (median 1e-4).
    tune = synth.simulate_lots(instrument, rng, 200, 1000, contaminants=(), lot_prefix="tune")
    raw = m.score(tune.counts, instrument.dark_reference(), instrument.white_reference()).anomaly_score
    m.monitor.threshold_scale = chemometrics.threshold_for_false_alarm_rate(raw, 1e-4)
    m._compiled.clear()
    return m


@pytest.fixture(scope="module")
def tuned(instrument):
    return _fit(instrument)


def _detection(m, instrument, material, fraction, n=2000, seed=3):
    rng = np.random.default_rng(seed)
    counts = synth.lane_counts(instrument, synth.mixed_reflectance(material, fraction, instrument.wavelengths_nm,
                                                                   n, rng), rng)
    s = m.score(counts, instrument.dark_reference(), instrument.white_reference())
    return float(np.mean(s.decision != model.DECISION_CLEAN))


def test_false_alarm_rate_on_new_lots_is_near_one_in_ten_thousand(tuned, instrument):
    held = synth.simulate_lots(instrument, np.random.default_rng(77), 200, 1000, contaminants=(), lot_prefix="new")
    s = tuned.score(held.counts, instrument.dark_reference(), instrument.white_reference())
    # Target 1e-4. Measured 1.1e-4 here (22 of 200,000 spectra of 200 new lots) and 1.45e-4 on 400,000
    # spectra of 400 further lots: the threshold is an estimate from 200 lots, and new lots scatter around
    # it. The exponential tail fit used before gave 2.5-3e-4 (its tail is lighter than lot-to-lot variation
    # makes it). Guard against regressions.
    assert np.mean(s.decision != model.DECISION_CLEAN) <= 2e-4


# Issue targets: plastic >= 99 %, wood and paper >= 95 % (textile has none; it was held at 98 %).
# Measured: plastic 99.85 %, wood 96.8 %, paper 99.65 %, textile 100 % (2000 spectra each). At thresholds
# that give 0.5-0.7e-4 on new lots wood falls to 94-95 %: 20 % wood sits at the target at exactly 1e-4.
@pytest.mark.parametrize("material, minimum", [("plastic", 0.99), ("paper", 0.95), ("textile", 0.98)])
def test_contaminants_at_20_percent_are_detected(tuned, instrument, material, minimum):
    assert _detection(tuned, instrument, material, 0.2) >= minimum


def test_wood_at_20_percent_meets_the_issue_target(tuned, instrument):
    # 84 % with a hard DCT cut at 24 coefficients; the tapered low-pass of model.default_steps gives 96.8 %.
    assert _detection(tuned, instrument, "wood", 0.2) >= 0.95


@pytest.mark.parametrize("left_out", ["plastic", "textile", "paper"])
def test_contaminant_left_out_of_training_is_still_flagged_at_30_percent(instrument, left_out):
    m = _fit(instrument, tuple(c for c in synth.CONTAMINANTS if c != left_out), seed=43)
    assert left_out not in m.class_names
    assert _detection(m, instrument, left_out, 0.3) >= 0.95
