"""The fitting maths, in numpy (and scipy.special while fitting): PCA with T2/Q limits (chi-square/F and DD-SIMCA),
PLS (SIMPLS) with a linear discriminant on its scores, class residual subspaces, and threshold fits.

The scikit-learn estimators in :mod:`spectral.estimators` are thin wrappers over these functions, and
:func:`spectral.model.train_synthetic` uses them directly so the demo does not need scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LIMIT_METHODS = ("chi2", "dd-simca")


def chi2_ppf(p: float, dof: float) -> float:
    """Chi-square quantile (scipy.special: importing scipy.stats alone takes over a second)."""
    from scipy.special import gammaincinv

    return float(2.0 * gammaincinv(dof / 2.0, p))


def f_ppf(p: float, d1: float, d2: float) -> float:
    """F-distribution quantile."""
    from scipy.special import betaincinv

    x = float(betaincinv(d1 / 2.0, d2 / 2.0, p))
    return d2 * x / (d1 * (1.0 - x))


@dataclass
class PCAMonitor:
    """A one-class PCA model of clean ore: anything with anomaly_score > 1 is outside its limits."""

    mean: np.ndarray  # (bands,)
    components: np.ndarray  # (k, bands) orthonormal rows
    variances: np.ndarray  # (k,)
    method: str
    alpha: float
    t2_limit: float
    q_limit: float
    # DD-SIMCA: f = dof_h * h / h0 + dof_q * q / q0, limit f_limit; here h is T2 / (n-1)
    h0: float = 1.0
    q0: float = 1.0
    dof_h: float = 1.0
    dof_q: float = 1.0
    f_limit: float = 1.0
    threshold_scale: float = 1.0  # raw score at which anomaly_score is 1 (set by threshold selection)

    def t2_q(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centred = np.asarray(features, dtype=np.float64) - self.mean
        scores = centred @ self.components.T
        t2 = np.sum(scores ** 2 / self.variances, axis=1)
        residual = centred - scores @ self.components
        return t2, np.sum(residual ** 2, axis=1)

    def raw_score(self, t2: np.ndarray, q: np.ndarray) -> np.ndarray:
        return combine_raw(self.method, t2, q, self.t2_limit, self.q_limit, self.h0, self.q0, self.dof_h,
                           self.dof_q, self.f_limit)

    def anomaly_score(self, t2: np.ndarray, q: np.ndarray) -> np.ndarray:
        return self.raw_score(t2, q) / self.threshold_scale


def combine_raw(method: str, t2, q, t2_limit, q_limit, h0, q0, dof_h, dof_q, f_limit):
    """One number per spectrum from T2 and Q; 1 at the limit of the fitted significance."""
    if method == "chi2":
        return np.maximum(t2 / t2_limit, q / q_limit)
    return (dof_h * t2 / h0 + dof_q * q / q0) / f_limit


def _scaled_chi2_moments(x: np.ndarray) -> tuple[float, float]:
    """Fit x ~ (x0 / dof) * chi2(dof) by moments; returns (x0, dof) with dof rounded to >= 1 as in DD-SIMCA."""
    x0 = float(np.mean(x))
    var = float(np.var(x))
    dof = max(1.0, round(2 * x0 ** 2 / var)) if var > 0 else 1.0
    return x0, dof


def fit_pca_monitor(features: np.ndarray, n_components: int, alpha: float = 1e-4,
                    method: str = "dd-simca") -> PCAMonitor:
    """PCA of clean-ore features with limits at significance alpha (the nominal false-alarm rate)."""
    x = np.asarray(features, dtype=np.float64)
    n, b = x.shape
    if method not in LIMIT_METHODS:
        raise ValueError(f"limit method {method!r} unknown; use one of {', '.join(LIMIT_METHODS)}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5); got {alpha}")
    if not 1 <= n_components < min(n, b):
        raise ValueError(f"n_components={n_components} must be in 1..{min(n, b) - 1} for {n} spectra of {b} bands")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = n_components
    components = vt[:k]
    variances = s[:k] ** 2 / (n - 1)
    monitor = PCAMonitor(mean, components, variances, method, alpha, 1.0, 1.0)
    t2, q = monitor.t2_q(x)
    # T2: F distribution (Tracy et al.) for new observations; Q: Box's scaled chi-square by moments.
    a_each = alpha / 2  # the two limits share the false-alarm budget
    monitor.t2_limit = float(k * (n - 1) * (n + 1) / (n * (n - k)) * f_ppf(1 - a_each, k, n - k))
    g = q.var() / (2 * q.mean())
    h = 2 * q.mean() ** 2 / q.var()
    monitor.q_limit = float(g * chi2_ppf(1 - a_each, h))
    # DD-SIMCA (Pomerantsev 2008): scaled chi-square for leverage and residual, summed.
    monitor.h0, monitor.dof_h = _scaled_chi2_moments(t2)
    monitor.q0, monitor.dof_q = _scaled_chi2_moments(q)
    monitor.f_limit = float(chi2_ppf(1 - alpha, monitor.dof_h + monitor.dof_q))
    return monitor


THRESHOLD_METHODS = ("tail-fit", "chi2-fit", "empirical")


def threshold_for_false_alarm_rate(clean_raw_scores: np.ndarray, target_rate: float,
                                   method: str = "tail-fit") -> float:
    """Raw-score threshold that held-out clean ore exceeds at `target_rate`.

    tail-fit fits a generalised Pareto distribution to the top 5% of held-out scores (peaks over
    threshold) and reads the rate from it, so 1e-4 can be set from a few thousand spectra. Its shape is
    estimated, not assumed: lot-to-lot variation makes the tail of new lots heavier than exponential,
    and an exponential fit (shape 0) gave 3e-4 instead of 1e-4 on new simulated lots. The shape is kept
    in [0, 0.5]: never lighter than exponential, never so heavy that a few outliers set the limit.
    chi2-fit fits a scaled chi-square by moments (lighter-tailed, optimistic when lots differ);
    empirical takes the plain quantile. The result is never below the empirical quantile where there
    are enough spectra to show it.
    """
    s = np.asarray(clean_raw_scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size < 100:
        raise ValueError(f"need at least 100 held-out clean spectra to set a threshold; got {s.size}")
    if not 0 < target_rate < 1:
        raise ValueError(f"target false-alarm rate must be in (0, 1); got {target_rate}")
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method {method!r} unknown; use one of {', '.join(THRESHOLD_METHODS)}")
    empirical = float(np.quantile(s, 1 - target_rate))
    if method == "empirical":
        return empirical
    if method == "chi2-fit":
        m, v = float(s.mean()), float(s.var())
        dof = max(0.5, 2 * m ** 2 / v)
        fitted = m / dof * chi2_ppf(1 - target_rate, dof)
    else:
        if target_rate >= TAIL_SHARE:
            return empirical
        u, shape, scale = pareto_tail(s)
        ratio = TAIL_SHARE / target_rate
        fitted = u + (scale * np.log(ratio) if shape == 0.0 else scale / shape * (ratio ** shape - 1.0))
    return max(fitted, empirical) if s.size * target_rate >= 5 else fitted


TAIL_SHARE = 0.05  # the top share of clean-ore scores the tail fit uses
PARETO_SHAPE_RANGE = (0.0, 0.5)


def pareto_tail(clean_raw_scores: np.ndarray) -> tuple[float, float, float]:
    """Where the tail starts (the score TAIL_SHARE of clean ore exceeds), and the Pareto shape and scale
    of the excesses over it."""
    s = np.asarray(clean_raw_scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    u = float(np.quantile(s, 1 - TAIL_SHARE))
    return (u, *pareto_tail_fit(s[s > u] - u))


def pareto_exceedance(scores: np.ndarray, u: float, shape: float, scale: float) -> np.ndarray:
    """The false-alarm rate the fitted tail gives at each score (scores >= u)."""
    excess = np.maximum(np.asarray(scores, dtype=np.float64) - u, 0.0) / scale
    survival = np.exp(-excess) if shape == 0.0 else (1.0 + shape * excess) ** (-1.0 / shape)
    return TAIL_SHARE * survival


def pareto_tail_fit(excess: np.ndarray) -> tuple[float, float]:
    """Shape and scale of a generalised Pareto distribution fitted to exceedances over a threshold, by
    probability-weighted moments (Hosking and Wallis 1987: stable with a few hundred exceedances, unlike
    maximum likelihood), with the shape kept in PARETO_SHAPE_RANGE (the scale then refitted to the mean)."""
    y = np.sort(np.asarray(excess, dtype=np.float64))
    n = y.size
    a0 = float(y.mean())
    if n < 2 or a0 <= 0.0:
        return 0.0, max(a0, 0.0)
    plotting = (np.arange(1, n + 1) - 0.35) / n
    a1 = float(np.mean(y * (1.0 - plotting)))
    if a0 - 2.0 * a1 <= 0.0:  # no finite-variance fit: the heaviest shape allowed
        shape = PARETO_SHAPE_RANGE[1]
    else:
        shape = 2.0 - a0 / (a0 - 2.0 * a1)
    clipped = float(np.clip(shape, *PARETO_SHAPE_RANGE))
    if clipped == shape:
        return clipped, 2.0 * a0 * a1 / (a0 - 2.0 * a1)
    return clipped, a0 * (1.0 - clipped)  # mean of the GPD is scale / (1 - shape)


@dataclass
class PLSDA:
    """PLS (SIMPLS) on one-hot classes, then a linear discriminant on the PLS scores.

    logits = (x - x_mean) @ coef + intercept; class scores are softmax(logits).
    """

    classes: tuple[str, ...]
    x_mean: np.ndarray
    rotations: np.ndarray  # (bands, k): scores = (x - x_mean) @ rotations
    coef: np.ndarray  # (bands, classes)
    intercept: np.ndarray  # (classes,)

    def logits(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self.x_mean) @ self.coef + self.intercept

    def class_scores(self, features: np.ndarray) -> np.ndarray:
        return softmax(self.logits(features))


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def simpls(x: np.ndarray, y: np.ndarray, n_components: int) -> np.ndarray:
    """SIMPLS rotations R (bands, k) for centred x (n, bands) and centred y (n, targets); scores = x @ R."""
    s = x.T @ y
    n_b = x.shape[1]
    rotations = np.zeros((n_b, n_components))
    basis = np.zeros((n_b, n_components))
    for a in range(n_components):
        _, _, vt = np.linalg.svd(s, full_matrices=False)
        r = s @ vt[0]
        t = x @ r
        norm = np.linalg.norm(t)
        if norm < 1e-12:
            return rotations[:, :a]
        r /= norm
        t /= norm
        p = x.T @ t
        v = p - basis[:, :a] @ (basis[:, :a].T @ p)
        v /= np.linalg.norm(v)
        s = s - np.outer(v, v @ s)
        rotations[:, a] = r
        basis[:, a] = v
    return rotations


def fit_plsda(features: np.ndarray, labels: np.ndarray, n_components: int = 8, ridge: float = 1e-6) -> PLSDA:
    x = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    classes = tuple(sorted(set(labels.tolist())))
    if len(classes) < 2:
        raise ValueError(f"PLS-DA needs at least 2 classes; got {classes}")
    if len(classes) >= 255:
        raise ValueError(f"at most 254 classes fit in a uint8 class index; got {len(classes)}")
    y = (labels[:, None] == np.array(classes)[None, :]).astype(np.float64)
    x_mean = x.mean(axis=0)
    xc = x - x_mean
    k = min(n_components, x.shape[1] - 1, x.shape[0] - 1)
    rotations = simpls(xc, y - y.mean(axis=0), k)
    t = xc @ rotations
    means = np.stack([t[labels == c].mean(axis=0) for c in classes])
    within = t - means[np.searchsorted(classes, labels)]
    cov = within.T @ within / max(1, len(t) - len(classes))
    cov += ridge * np.trace(cov) / max(1, cov.shape[0]) * np.eye(cov.shape[0])
    a = np.linalg.solve(cov, means.T)  # (k, classes)
    coef = rotations @ a
    intercept = -0.5 * np.sum(means.T * a, axis=0)
    return PLSDA(classes, x_mean, rotations, coef, intercept)


@dataclass
class ClassResiduals:
    """Per class, directions that (with the clean-ore PCA) span that class's mixtures with ore.

    A spectrum is explained by class c when its residual outside the ore model and class c's
    directions, q - |(x - mean) @ directions_c|^2, is within limit_c.
    """

    directions: np.ndarray  # (bands, classes * per_class) orthonormal, orthogonal to the ore PCA
    per_class: int
    limits: np.ndarray  # (classes,)

    def class_q_at(self, q: np.ndarray, centred_projection: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """q - |(x - mean) @ directions_c|^2 for one class c per spectrum (classes: an index per row).

        Every class's sum of squares comes out of one matrix product with a 0/1 matrix (adding zeros is exact),
        then each row picks its own: cheaper than gathering the class's columns row by row."""
        n_classes = self.limits.size
        sums = np.square(centred_projection) @ np.repeat(np.eye(n_classes), self.per_class, axis=0)
        return q - sums[np.arange(len(classes)), classes]


def fit_class_residuals(monitor: PCAMonitor, features: np.ndarray, labels: np.ndarray, classes: tuple[str, ...],
                        per_class: int = 2, quantile: float = 0.999) -> ClassResiduals:
    x = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    centred = x - monitor.mean
    resid = centred - (centred @ monitor.components.T) @ monitor.components
    directions, limits = [], []
    for c in classes:
        rc = resid[labels == c]
        _, _, vt = np.linalg.svd(rc, full_matrices=False)
        d = vt[:per_class].T
        directions.append(d)
        qc = np.sum(rc ** 2, axis=1) - np.sum((rc @ d) ** 2, axis=1)
        limits.append(float(np.quantile(qc, quantile)) * 1.5)
    return ClassResiduals(np.hstack(directions), per_class, np.asarray(limits))
