"""Transformers follow scikit-learn conventions and match the plain numpy functions."""

from __future__ import annotations

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

from spectral import estimators as est  # noqa: E402
from spectral import preprocess, synth  # noqa: E402

W = synth.wavelength_grid(64)
TRANSFORMERS = [
    est.Absorbance(), est.Center(), est.SNV(), est.MSC(), est.SavitzkyGolay(7, 2, 1), est.Detrend(2),
    est.DCTLowPass(12), est.RangeSelect(W, 1000, 1600), est.Resample(W, np.linspace(950, 1650, 40)),
]


@pytest.fixture(scope="module")
def reflectance():
    return synth.ore_reflectance(W, 60, np.random.default_rng(0))


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=lambda t: type(t).__name__)
def test_transformer_clones_and_round_trips_params(transformer, reflectance):
    cloned = clone(transformer)
    assert type(cloned) is type(transformer)
    assert set(cloned.get_params()) == set(transformer.get_params())
    out = cloned.fit(reflectance).transform(reflectance)
    assert out.shape[0] == reflectance.shape[0] and np.isfinite(out).all()


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=lambda t: type(t).__name__)
def test_exported_step_gives_the_transformer_output(transformer, reflectance):
    fitted = clone(transformer).fit(reflectance)
    step = fitted.to_step()
    np.testing.assert_allclose(preprocess.apply_step(reflectance, step), fitted.transform(reflectance), atol=1e-12)


def test_savgol_matrix_matches_scipy_in_the_interior():
    from scipy.signal import savgol_filter

    x = np.random.default_rng(1).normal(size=(3, 50))
    m = preprocess.savgol_matrix(50, 11, 3, 1)
    np.testing.assert_allclose((x @ m)[:, 5:-5], savgol_filter(x, 11, 3, deriv=1)[:, 5:-5], atol=1e-10)
    np.testing.assert_allclose((x @ m), savgol_filter(x, 11, 3, deriv=1, mode="interp"), atol=1e-10)


def test_snv_and_msc_remove_gain_and_offset(reflectance):
    scaled = reflectance * 1.7 + 0.05
    np.testing.assert_allclose(preprocess.snv(scaled), preprocess.snv(reflectance), atol=1e-10)
    ref = reflectance.mean(axis=0)
    np.testing.assert_allclose(preprocess.msc(scaled, ref), preprocess.msc(reflectance, ref), atol=1e-10)


def test_pipeline_works_with_cross_validate_and_grid_search(instrument):
    # Every brand appears in several lots, so no fold trains without one.
    sim = synth.simulate_lots(instrument, np.random.default_rng(2), n_lots=16, spectra_per_lot=40)
    refl = preprocess.reflectance(sim.counts, sim.dark, sim.white)
    pipe = est.default_pipeline(n_components=4, pls_components=6)
    res = cross_validate(pipe, refl, sim.labels, groups=sim.groups, cv=GroupKFold(4))
    assert len(res["test_score"]) == 4 and np.mean(res["test_score"]) > 0.6
    grid = GridSearchCV(pipe, {"lane__n_components": [3, 5], "lowpass__n_coefficients": [16, 24]},
                        cv=GroupKFold(2)).fit(refl, sim.labels, groups=sim.groups)
    assert grid.best_params_["lane__n_components"] in (3, 5)


def test_one_class_pca_follows_sklearn_outlier_convention(reflectance):
    x = preprocess.snv(reflectance)
    m = est.OneClassPCA(n_components=3, alpha=0.01).fit(x)
    assert set(np.unique(m.predict(x))) <= {-1, 1}
    assert m.components_.shape == (3, x.shape[1]) and m.t2_limit_ > 0 and m.q_limit_ > 0
    np.testing.assert_allclose(m.decision_function(x), 1 - m.anomaly_score(x))


def test_plsda_matches_sklearn_pls_regression_on_one_hot_targets(instrument):
    from sklearn.cross_decomposition import PLSRegression

    from spectral import chemometrics

    rng = np.random.default_rng(3)
    x = np.vstack([synth.mixed_reflectance(m, 0.5, W, 40, rng) for m in ("plastic", "wood", "paper")])
    y = np.repeat(["plastic", "wood", "paper"], 40)
    onehot = (y[:, None] == np.array(sorted(set(y)))[None, :]).astype(float)
    ours = chemometrics.simpls(x - x.mean(0), onehot - onehot.mean(0), 4)
    theirs = PLSRegression(4, scale=False).fit(x, onehot)
    # SIMPLS and scikit-learn's NIPALS agree exactly on the first component and closely after it
    # (they differ slightly for several responses, de Jong 1993).
    t_ours, t_theirs = (x - x.mean(0)) @ ours, theirs.transform(x)
    first = t_theirs[:, 0] * (t_ours[:, 0] @ t_theirs[:, 0]) / (t_theirs[:, 0] @ t_theirs[:, 0])
    np.testing.assert_allclose(first, t_ours[:, 0], atol=1e-3 * np.abs(t_ours[:, 0]).max())  # NIPALS iterates to tol 1e-6
    coef, *_ = np.linalg.lstsq(t_theirs, t_ours, rcond=None)
    assert np.abs(t_theirs @ coef - t_ours).max() < 0.02 * np.abs(t_ours).max()
    clf = est.PLSDA(4).fit(x, y)
    assert clf.score(x, y) > 0.95
