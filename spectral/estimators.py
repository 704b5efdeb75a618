"""scikit-learn estimators for calibration: preprocessing transformers, the one-class PCA model, PLS-DA,
and the whole lane classifier, plus export of a fitted Pipeline to the edge's :class:`LaneModel`.

This module needs scikit-learn (the calibration-side dependency); the edge never imports it.
Each transformer wraps a function of :mod:`spectral.preprocess` and knows its serialisable
:class:`~spectral.preprocess.Step`, so ``Pipeline([... , LaneClassifier()])`` exports exactly.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, OutlierMixin, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from spectral import chemometrics, preprocess
from spectral.model import DECISION_CLEAN, DECISION_CONTAMINANT, DEFAULT_DCT_TAPER, LaneModel, data_sha256
from spectral.preprocess import Step

CLEAN_LABEL = "ore"
UNKNOWN_LABEL = "unknown"


class _SpectralTransformer(TransformerMixin, BaseEstimator):
    """fit learns nothing but the band count; transform validates shape and finiteness first."""

    def fit(self, X, y=None):
        X = preprocess.check_spectra(X, "X")
        self.n_features_in_ = X.shape[1]
        return self

    def _check(self, X) -> np.ndarray:
        check_is_fitted(self, "n_features_in_")
        return np.asarray(preprocess.check_spectra(X, "X", self.n_features_in_), dtype=np.float64)

    def to_step(self) -> Step | None:
        raise NotImplementedError


class Reflectance(_SpectralTransformer):
    """Detector counts to reflectance with dark and white references; the edge does this step itself."""

    def __init__(self, dark=None, white=None):
        self.dark = dark
        self.white = white

    def fit(self, X, y=None):
        super().fit(X, y)
        preprocess.check_references(self.dark, self.white, self.n_features_in_)
        return self

    def transform(self, X):
        return preprocess.reflectance(self._check(X), self.dark, self.white)

    def to_step(self) -> None:
        return None


class Absorbance(_SpectralTransformer):
    def __init__(self, floor: float = 1e-4):
        self.floor = floor

    def transform(self, X):
        return preprocess.absorbance(self._check(X), self.floor)

    def to_step(self) -> Step:
        return Step("absorbance", "absorbance", floor=self.floor, params={"floor": self.floor})


class Center(_SpectralTransformer):
    def transform(self, X):
        return preprocess.center(self._check(X))

    def to_step(self) -> Step:
        return Step("center", "center")


class SNV(_SpectralTransformer):
    def transform(self, X):
        return preprocess.snv(self._check(X))

    def to_step(self) -> Step:
        return Step("snv", "snv")


class MSC(_SpectralTransformer):
    """Multiplicative scatter correction against `reference`, or the training mean when None."""

    def __init__(self, reference=None):
        self.reference = reference

    def fit(self, X, y=None):
        super().fit(X, y)
        ref = np.asarray(X, dtype=np.float64).mean(axis=0) if self.reference is None else np.asarray(self.reference)
        if ref.shape != (self.n_features_in_,):
            raise ValueError(f"MSC reference has shape {ref.shape}; X has {self.n_features_in_} bands")
        self.reference_ = ref.astype(np.float64)
        return self

    def transform(self, X):
        return preprocess.msc(self._check(X), self.reference_)

    def to_step(self) -> Step:
        return Step("msc", "msc", reference=self.reference_)


class _LinearTransformer(_SpectralTransformer):
    def fit(self, X, y=None):
        super().fit(X, y)
        self.matrix_ = self._matrix(self.n_features_in_)
        return self

    def transform(self, X):
        return self._check(X) @ self.matrix_

    def to_step(self) -> Step:
        return Step("linear", self._label(), matrix=self.matrix_, params=self.get_params())


class SavitzkyGolay(_LinearTransformer):
    """Savitzky-Golay smoothing (deriv=0) or derivative, along the band axis."""

    def __init__(self, window_length: int = 21, polyorder: int = 2, deriv: int = 0):
        self.window_length = window_length
        self.polyorder = polyorder
        self.deriv = deriv

    def _matrix(self, n):
        return preprocess.savgol_matrix(n, self.window_length, self.polyorder, self.deriv)

    def _label(self):
        return f"savgol({self.window_length},{self.polyorder},{self.deriv})"


class DCTLowPass(_LinearTransformer):
    """Keep the first n_coefficients DCT-II coefficients of each spectrum (smoothing and compression);
    with taper, weight coefficient k by exp(-(k / taper)^2 / 2) (see preprocess.dct_lowpass_matrix)."""

    def __init__(self, n_coefficients: int = 24, taper: float | None = None):
        self.n_coefficients = n_coefficients
        self.taper = taper

    def _matrix(self, n):
        return preprocess.dct_lowpass_matrix(n, self.n_coefficients, self.taper)

    def _label(self):
        return (f"dct_lowpass({self.n_coefficients})" if self.taper is None
                else f"dct_lowpass({self.n_coefficients}, taper={self.taper:g})")


class Detrend(_LinearTransformer):
    def __init__(self, order: int = 1):
        self.order = order

    def _matrix(self, n):
        return preprocess.detrend_matrix(n, self.order)

    def _label(self):
        return f"detrend({self.order})"


class RangeSelect(_LinearTransformer):
    """Keep the bands of `wavelengths_nm` within start_nm..end_nm."""

    def __init__(self, wavelengths_nm=None, start_nm: float = 0.0, end_nm: float = np.inf):
        self.wavelengths_nm = wavelengths_nm
        self.start_nm = start_nm
        self.end_nm = end_nm

    def _matrix(self, n):
        w = np.asarray(self.wavelengths_nm, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"RangeSelect wavelengths_nm has {w.size} values; X has {n} bands")
        return preprocess.selection_matrix(n, preprocess.range_indices(w, self.start_nm, self.end_nm))

    def _label(self):
        return f"range({self.start_nm:g}-{self.end_nm:g} nm)"


class Resample(_LinearTransformer):
    """Linear interpolation from source_nm onto target_nm (another instrument's or the model's grid)."""

    def __init__(self, source_nm=None, target_nm=None):
        self.source_nm = source_nm
        self.target_nm = target_nm

    def _matrix(self, n):
        s = np.asarray(self.source_nm, dtype=np.float64)
        if s.shape != (n,):
            raise ValueError(f"Resample source_nm has {s.size} values; X has {n} bands")
        return preprocess.resample_matrix(s, self.target_nm)

    def _label(self):
        t = np.asarray(self.target_nm)
        return f"resample({t.size} bands {t[0]:g}-{t[-1]:g} nm)"


class OneClassPCA(OutlierMixin, BaseEstimator):
    """PCA of clean ore with Hotelling T2 and Q limits; predict gives +1 inside, -1 outside (sklearn style)."""

    def __init__(self, n_components: int = 5, alpha: float = 1e-4, limits: str = "dd-simca"):
        self.n_components = n_components
        self.alpha = alpha
        self.limits = limits

    def fit(self, X, y=None):
        X = preprocess.check_spectra(X, "X")
        self.n_features_in_ = X.shape[1]
        self.monitor_ = chemometrics.fit_pca_monitor(X, self.n_components, self.alpha, self.limits)
        self.components_ = self.monitor_.components
        self.t2_limit_ = self.monitor_.t2_limit
        self.q_limit_ = self.monitor_.q_limit
        return self

    def t2_q(self, X):
        check_is_fitted(self, "monitor_")
        return self.monitor_.t2_q(preprocess.check_spectra(X, "X", self.n_features_in_))

    def anomaly_score(self, X):
        return self.monitor_.anomaly_score(*self.t2_q(X))

    def decision_function(self, X):
        return 1.0 - self.anomaly_score(X)

    def score_samples(self, X):
        return -self.anomaly_score(X)

    def predict(self, X):
        return np.where(self.anomaly_score(X) > 1.0, -1, 1)


class PLSDA(ClassifierMixin, BaseEstimator):
    """PLS (SIMPLS) on one-hot classes with a linear discriminant on its scores."""

    def __init__(self, n_components: int = 10):
        self.n_components = n_components

    def fit(self, X, y):
        X = preprocess.check_spectra(X, "X")
        self.n_features_in_ = X.shape[1]
        self.model_ = chemometrics.fit_plsda(X, np.asarray(y), self.n_components)
        self.classes_ = np.array(self.model_.classes)
        return self

    def predict_proba(self, X):
        check_is_fitted(self, "model_")
        return self.model_.class_scores(preprocess.check_spectra(X, "X", self.n_features_in_))

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class LaneClassifier(ClassifierMixin, BaseEstimator):
    """The lane decision on preprocessed features: clean ore ('ore'), a named contaminant, or 'unknown'.

    fit(X, y) takes clean ore with label 'ore' for the one-class model and every other label for the
    classifier; `brands` (declared product per spectrum, '' for none) fits the ore brand model.
    """

    def __init__(self, n_components: int = 5, alpha: float = 1e-4, limits: str = "dd-simca",
                 pls_components: int = 10, min_class_score: float = 0.5, residual_per_class: int = 2,
                 threshold_scale: float = 1.0):
        self.n_components = n_components
        self.alpha = alpha
        self.limits = limits
        self.pls_components = pls_components
        self.min_class_score = min_class_score
        self.residual_per_class = residual_per_class
        self.threshold_scale = threshold_scale

    def fit(self, X, y, brands=None):
        X = preprocess.check_spectra(X, "X")
        y = np.asarray(y).astype(str)
        if y.shape != (X.shape[0],):
            raise ValueError(f"y has shape {y.shape}; X has {X.shape[0]} spectra")
        self.n_features_in_ = X.shape[1]
        ore = y == CLEAN_LABEL
        if ore.sum() <= self.n_components + 1 or (~ore).sum() == 0:
            raise ValueError(f"need clean ore (label {CLEAN_LABEL!r}) and contaminant spectra; got "
                             f"{int(ore.sum())} clean and {int((~ore).sum())} other")
        monitor = chemometrics.fit_pca_monitor(X[ore], self.n_components, self.alpha, self.limits)
        monitor.threshold_scale = float(self.threshold_scale)
        clf = chemometrics.fit_plsda(X[~ore], y[~ore], self.pls_components)
        residuals = (chemometrics.fit_class_residuals(monitor, X[~ore], y[~ore], clf.classes, self.residual_per_class)
                     if self.residual_per_class > 0 else None)
        brand = None
        if brands is not None:
            b = np.asarray(brands).astype(str)
            keep = ore & (b != "")
            if len(set(b[keep].tolist())) >= 2:
                brand = chemometrics.fit_plsda(X[keep], b[keep], self.pls_components)
        self.lane_ = LaneModel("features", np.arange(X.shape[1], dtype=np.float64), [], monitor, clf, residuals,
                               brand, self.min_class_score)
        self.classes_ = np.array([CLEAN_LABEL, *clf.classes, UNKNOWN_LABEL])
        self.training_data_sha256_ = data_sha256(np.asarray(X), y)
        return self

    def score_lane(self, X):
        """The full per-spectrum result (anomaly score, T2, Q, class scores, decision) as the edge gives it."""
        check_is_fitted(self, "lane_")
        return self.lane_.score_features(X)

    def predict(self, X):
        s = self.score_lane(X)
        names = np.array([*self.lane_.class_names, UNKNOWN_LABEL])
        named = names[np.where(s.class_index == 255, len(names) - 1, s.class_index)]
        return np.where(s.decision == DECISION_CLEAN, CLEAN_LABEL,
                        np.where(s.decision == DECISION_CONTAMINANT, named, UNKNOWN_LABEL))

    def anomaly_score(self, X):
        return self.score_lane(X).anomaly_score.astype(np.float64)

    def decision_function(self, X):
        """Higher means more contaminated: the anomaly score (1 at the limit)."""
        return self.anomaly_score(X)


def default_pipeline(n_components: int = 5, dark=None, white=None, **lane_params) -> Pipeline:
    """The calibration pipeline behind the default edge model (counts in when dark/white are given)."""
    steps = [] if dark is None else [("reflectance", Reflectance(dark, white))]
    steps += [("absorbance", Absorbance()), ("center", Center()), ("lowpass", DCTLowPass(24, taper=DEFAULT_DCT_TAPER)),
              ("lane", LaneClassifier(n_components=n_components, **lane_params))]
    return Pipeline(steps)


def export_lane_model(pipeline: Pipeline, wavelengths_nm: np.ndarray, model_id: str,
                      metadata: dict | None = None) -> LaneModel:
    """A fitted Pipeline ([Reflectance], transformers..., LaneClassifier) as the edge's LaneModel."""
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"expected a fitted sklearn Pipeline, got {type(pipeline).__name__}")
    *transformers, (_, last) = pipeline.steps
    if not isinstance(last, LaneClassifier):
        raise ValueError(f"the pipeline must end in LaneClassifier; it ends in {type(last).__name__}")
    check_is_fitted(last, "lane_")
    steps: list[Step] = []
    for i, (name, t) in enumerate(transformers):
        if not hasattr(t, "to_step"):
            raise ValueError(f"pipeline step {name!r} ({type(t).__name__}) cannot be exported to the edge; "
                             "use the transformers of spectral.estimators")
        step = t.to_step()
        if step is None:
            if i != 0:
                raise ValueError(f"{name!r}: Reflectance must be the first step")
            continue
        steps.append(step)
    lane = last.lane_
    n = np.asarray(wavelengths_nm).size
    for step in steps:
        n = step.n_out(n)
    if n != lane.monitor.mean.size:
        raise ValueError(f"the chain gives {n} features but the classifier was fitted on {lane.monitor.mean.size}")
    meta = {"training_data_sha256": last.training_data_sha256_,
            "pipeline": [f"{name}: {t!r}" for name, t in pipeline.steps],
            "params": {k: v for k, v in last.get_params().items()}, **(metadata or {})}
    import datetime as dt

    meta.setdefault("created_utc", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    return LaneModel(model_id, wavelengths_nm, steps, lane.monitor, lane.classifier, lane.residuals, lane.brand,
                     lane.min_class_score, metadata=meta)
