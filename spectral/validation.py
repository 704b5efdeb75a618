"""Calibration workflow: grouped cross-validation by lot, threshold for a target false-alarm rate, ROC,
confusion matrix, detection rate against area fraction and the limit of detection.

Numpy only; long loops report progress through a callback ``progress(stage, done, total)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from spectral import chemometrics
from spectral.dataset import Dataset
from spectral.model import DECISION_CLEAN, LaneModel, fit_lane_model

Progress = Callable[[str, int, int], None]
CLEAN = "ore"
UNKNOWN = "unknown"


def grouped_folds(groups: np.ndarray, n_splits: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds over whole groups (lots): the spectra of one lot are never on both sides."""
    groups = np.asarray(groups).astype(str)
    unique = np.unique(groups)
    if unique.size < n_splits:
        raise ValueError(f"{unique.size} lots cannot make {n_splits} folds; need at least one lot per fold")
    order = np.random.default_rng(seed).permutation(unique)
    fold_of_group = {g: i % n_splits for i, g in enumerate(order)}
    fold = np.array([fold_of_group[g] for g in groups])
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n_splits)]


@dataclass
class CVResult:
    """Out-of-fold results: every spectrum scored by the model of the fold that did not see its lot."""

    labels: np.ndarray
    groups: np.ndarray
    area_fraction: np.ndarray
    raw_score: np.ndarray  # anomaly score before threshold selection (1 = the fitted limit)
    t2: np.ndarray
    q: np.ndarray
    fold: np.ndarray
    models: list[LaneModel] = field(repr=False, default_factory=list)
    predicted: np.ndarray | None = None  # labels after threshold selection ('ore', class, 'unknown')
    threshold_scale: float = 1.0


def cross_validate(ds: Dataset, n_splits: int = 5, seed: int = 0, progress: Progress | None = None,
                   **fit_params) -> CVResult:
    n = len(ds)
    raw, t2, q, fold = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan), np.full(n, -1)
    models = []
    folds = grouped_folds(ds.groups, n_splits, seed)
    for k, (train, test) in enumerate(folds):
        if progress:
            progress("cross-validation", k, len(folds))
        m = fit_lane_model(ds.reflectance[train], ds.labels[train], ds.wavelengths_nm, brands=ds.brands[train],
                           model_id=f"cv-fold{k}", **fit_params)
        s = m.score_features(ds.reflectance[test])
        raw[test] = s.anomaly_score * m.monitor.threshold_scale
        t2[test], q[test], fold[test] = s.t2, s.q, k
        models.append(m)
    if progress:
        progress("cross-validation", len(folds), len(folds))
    return CVResult(ds.labels, ds.groups, ds.area_fraction, raw, t2, q, fold, models)


def apply_threshold(cv: CVResult, ds: Dataset, threshold_scale: float) -> CVResult:
    """Re-judge the out-of-fold spectra with a threshold: anomaly_score = raw / threshold_scale."""
    predicted = np.empty(len(ds), dtype=object)
    for k, m in enumerate(cv.models):
        rows = np.flatnonzero(cv.fold == k)
        m.monitor.threshold_scale = threshold_scale
        s = m.score_features(ds.reflectance[rows])
        names = np.array([*m.class_names, UNKNOWN])
        idx = np.where(s.class_index == 255, len(names) - 1, s.class_index)
        predicted[rows] = np.where(s.decision == DECISION_CLEAN, CLEAN, names[idx])
    cv.predicted = predicted.astype(str)
    cv.threshold_scale = threshold_scale
    return cv


def select_threshold(cv: CVResult, target_false_alarm_rate: float, method: str = "tail-fit") -> float:
    clean = cv.labels == CLEAN
    return chemometrics.threshold_for_false_alarm_rate(cv.raw_score[clean], target_false_alarm_rate, method)


def roc_curve(clean_scores: np.ndarray, contaminant_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(false-alarm rate, detection rate, AUC) over all thresholds on the anomaly score."""
    s = np.concatenate([clean_scores, contaminant_scores])
    y = np.concatenate([np.zeros(len(clean_scores)), np.ones(len(contaminant_scores))])
    order = np.argsort(-s, kind="mergesort")
    y = y[order]
    tpr = np.concatenate([[0.0], np.cumsum(y) / max(1, y.sum())])
    fpr = np.concatenate([[0.0], np.cumsum(1 - y) / max(1, (1 - y).sum())])
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return fpr, tpr, auc


def confusion_matrix(true: np.ndarray, predicted: np.ndarray,
                     classes: list[str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """Rows: true labels; columns: predicted labels (with 'unknown')."""
    true = np.asarray(true).astype(str)
    predicted = np.asarray(predicted).astype(str)
    rows = classes or [CLEAN] + sorted(set(true.tolist()) - {CLEAN})
    cols = rows + [c for c in sorted(set(predicted.tolist())) if c not in rows and c != UNKNOWN] + [UNKNOWN]
    m = np.zeros((len(rows), len(cols)), dtype=np.int64)
    ri = {c: i for i, c in enumerate(rows)}
    ci = {c: i for i, c in enumerate(cols)}
    for t, p in zip(true, predicted):
        if t in ri:
            m[ri[t], ci[p]] += 1
    return rows, cols, m


def detection_by_fraction(fraction: np.ndarray, detected: np.ndarray,
                          bins: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin centre, detection rate, count) of detected (bool) against area fraction."""
    bins = np.linspace(0, 1, 11) if bins is None else np.asarray(bins)
    keep = np.isfinite(fraction)
    idx = np.digitize(fraction[keep], bins[1:-1])
    centres = (bins[:-1] + bins[1:]) / 2
    counts = np.bincount(idx, minlength=len(centres))
    hits = np.bincount(idx, weights=detected[keep].astype(float), minlength=len(centres))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    return centres, rate, counts


def limit_of_detection(fractions: np.ndarray, rates: np.ndarray, level: float = 0.95) -> float:
    """Smallest area fraction from which the detection rate stays at or above `level` (interpolated).

    NaN when the rate never gets there within the fractions tested.
    """
    f = np.asarray(fractions, dtype=np.float64)
    r = np.asarray(rates, dtype=np.float64)
    ok = np.isfinite(r)
    f, r = f[ok], r[ok]
    if f.size == 0 or r[-1] < level:
        return float("nan")
    below = np.flatnonzero(r < level)
    if below.size == 0:
        return float(f[0])
    i = below[-1]
    if i + 1 >= f.size:
        return float("nan")
    # Interpolate between the last failing and the first passing fraction.
    f0, f1, r0, r1 = f[i], f[i + 1], r[i], r[i + 1]
    return float(f0 + (level - r0) * (f1 - f0) / (r1 - r0)) if r1 != r0 else float(f1)


def simulated_lod_sweep(model: LaneModel, instrument, rng: np.random.Generator, materials: tuple[str, ...],
                        fractions: np.ndarray | None = None, per_fraction: int = 400, conditions=None,
                        level: float = 0.95, progress: Progress | None = None) -> dict:
    """Detection rate against area fraction per material with the lane simulator, and the LOD of each."""
    from spectral import synth

    fractions = np.round(np.linspace(0.02, 0.6, 30), 3) if fractions is None else np.asarray(fractions)
    conditions = conditions or synth.LaneConditions()
    w = instrument.wavelengths_nm
    dark, white = instrument.dark_reference(), instrument.white_reference()
    out = {"fractions": fractions.tolist(), "rates": {}, "lod": {}, "level": level}
    for i, material in enumerate(materials):
        if progress:
            progress("limit of detection", i, len(materials))
        f = np.repeat(fractions, per_fraction)
        counts = synth.lane_counts(instrument, synth.mixed_reflectance(material, f, w, f.size, rng), rng, conditions)
        detected = model.score(counts, dark, white).decision != DECISION_CLEAN
        rates = detected.reshape(len(fractions), per_fraction).mean(axis=1)
        out["rates"][material] = rates.tolist()
        out["lod"][material] = limit_of_detection(fractions, rates, level)
    if progress:
        progress("limit of detection", len(materials), len(materials))
    return out
