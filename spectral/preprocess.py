"""Reference correction and preprocessing, as plain numpy functions on (n, bands) arrays.

Every linear step (Savitzky-Golay, detrending, range selection, resampling) is also available as a
matrix ``M`` with ``y = x @ M``, so that the edge can fold a chain of them into its projections.
A chain of steps is serialised as a list of :class:`Step`; :func:`apply_steps` is the plain
(float64, step by step) reference evaluation that the fast path in :mod:`spectral.fast` must match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SATURATION_COUNTS = 65535


def check_spectra(x: np.ndarray, name: str = "spectra", n_bands: int | None = None) -> np.ndarray:
    """Validate a (n, bands) array of finite numbers; returns it as a float array without copying when possible."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (spectra, bands); got shape {arr.shape}")
    if arr.dtype.kind not in "uif":
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    if n_bands is not None and arr.shape[1] != n_bands:
        raise ValueError(f"{name} has {arr.shape[1]} bands; expected {n_bands}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(f"{name} contains NaN or infinity in {rows.size} spectra (first at row {rows[0]})")
    return arr


def check_references(dark: np.ndarray, white: np.ndarray, n_bands: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dark and white references as float64 (bands,); refused if not finite, negative or white <= dark."""
    dark = np.asarray(dark, dtype=np.float64)
    white = np.asarray(white, dtype=np.float64)
    for name, ref in (("dark", dark), ("white", white)):
        if ref.ndim != 1:
            raise ValueError(f"{name} reference must be 1-D (bands,); got shape {ref.shape}")
        if n_bands is not None and ref.size != n_bands:
            raise ValueError(f"{name} reference has {ref.size} bands; spectra have {n_bands}")
        if not np.isfinite(ref).all():
            raise ValueError(f"{name} reference contains NaN or infinity; re-take the references")
        if np.any(ref < 0):
            raise ValueError(f"{name} reference is negative at band {int(np.flatnonzero(ref < 0)[0])}; "
                             "re-take the references")
    if dark.shape != white.shape:
        raise ValueError(f"dark has {dark.size} bands but white has {white.size}")
    span = white - dark
    if np.any(span <= 0):
        bad = int(np.flatnonzero(span <= 0)[0])
        raise ValueError(f"white reference is not above dark at band {bad} (white={white[bad]:g}, "
                         f"dark={dark[bad]:g}); re-take the references")
    return dark, white


def reflectance(counts: np.ndarray, dark: np.ndarray, white: np.ndarray) -> np.ndarray:
    """(counts - dark) / (white - dark); bands where white is not above dark are refused."""
    dark, white = check_references(dark, white)
    return (np.asarray(counts, dtype=np.float64) - dark) / (white - dark)


def absorbance(refl: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """log10(1/R), with R floored so dark pixels do not give infinity."""
    return -np.log10(np.maximum(refl, floor))


def snv(x: np.ndarray) -> np.ndarray:
    """Standard normal variate: centre and scale each spectrum to remove multiplicative scatter."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    return (x - mean) / np.where(std > 0, std, 1.0)


def center(x: np.ndarray) -> np.ndarray:
    """Subtract each spectrum's own mean: removes an additive offset (a gain, in absorbance)."""
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=1, keepdims=True)


def msc(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Multiplicative scatter correction: regress each spectrum on the reference, x = a + b*ref, return (x-a)/b."""
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    rc = ref - ref.mean()
    slope = ((x - x.mean(axis=1, keepdims=True)) @ rc) / (rc @ rc)
    intercept = x.mean(axis=1) - slope * ref.mean()
    safe = np.where(np.abs(slope) > 1e-12, slope, 1.0)
    return (x - intercept[:, None]) / safe[:, None]


def savgol_matrix(n_bands: int, window_length: int, polyorder: int, deriv: int = 0,
                  delta: float = 1.0) -> np.ndarray:
    """Savitzky-Golay filter as a (n_bands, n_bands) matrix, y = x @ M; edges use the fit over the end window."""
    if window_length % 2 != 1 or window_length < 3:
        raise ValueError(f"window_length must be odd and >= 3; got {window_length}")
    if not 0 <= polyorder < window_length:
        raise ValueError(f"polyorder must be in 0..window_length-1; got {polyorder}")
    if not 0 <= deriv <= polyorder:
        raise ValueError(f"deriv must be in 0..polyorder; got {deriv}")
    if window_length > n_bands:
        raise ValueError(f"window_length {window_length} exceeds the {n_bands} bands")
    half = window_length // 2
    m = np.zeros((n_bands, n_bands))
    offsets = np.arange(window_length, dtype=np.float64)
    for i in range(n_bands):
        start = min(max(i - half, 0), n_bands - window_length)
        pos = offsets + start - i
        vander = pos[:, None] ** np.arange(polyorder + 1)[None, :]
        weights = np.linalg.pinv(vander)[deriv] * math.factorial(deriv) / delta ** deriv
        m[start:start + window_length, i] = weights
    return m


def dct_lowpass_matrix(n_bands: int, n_coefficients: int, taper: float | None = None) -> np.ndarray:
    """Projection onto the first n_coefficients orthonormal DCT-II cosines, y = x @ M (n_bands, n_coefficients).

    A low-pass filter that also shrinks the feature count: smooth spectra keep almost all their energy in
    the first few coefficients while detector noise spreads evenly over all of them.

    taper (in coefficients) rolls the kept coefficients off smoothly instead of cutting them at
    n_coefficients: coefficient k is weighted by exp(-(k / taper)^2 / 2). Distances in the feature space
    (the PCA residual Q in particular) then count the broad bands that carry a contaminant's signature at
    full weight and the fine detail, mostly detector noise on dark ore, at a fraction.
    """
    if not 1 <= n_coefficients <= n_bands:
        raise ValueError(f"n_coefficients must be in 1..{n_bands}; got {n_coefficients}")
    if taper is not None and not taper > 0:
        raise ValueError(f"taper must be a positive number of coefficients or None; got {taper}")
    i = np.arange(n_bands)[:, None]
    k = np.arange(n_coefficients)[None, :]
    m = np.cos(np.pi * (i + 0.5) * k / n_bands)
    m = m / np.linalg.norm(m, axis=0)
    if taper is not None:
        m = m * np.exp(-0.5 * (k / float(taper)) ** 2)
    return m


def detrend_matrix(n_bands: int, order: int = 1) -> np.ndarray:
    """Removal of a least-squares polynomial baseline of `order` as a projection matrix, y = x @ M."""
    if order < 0:
        raise ValueError(f"detrend order must be >= 0; got {order}")
    t = np.linspace(-1, 1, n_bands)
    basis, _ = np.linalg.qr(t[:, None] ** np.arange(order + 1)[None, :])
    return np.eye(n_bands) - basis @ basis.T


def range_indices(wavelengths_nm: np.ndarray, start_nm: float, end_nm: float) -> np.ndarray:
    """Band indices within [start_nm, end_nm]; refuses an empty selection."""
    w = np.asarray(wavelengths_nm, dtype=np.float64)
    keep = np.flatnonzero((w >= start_nm) & (w <= end_nm))
    if keep.size < 2:
        raise ValueError(f"range {start_nm:g}-{end_nm:g} nm keeps {keep.size} bands of the grid "
                         f"{w[0]:g}-{w[-1]:g} nm; need at least 2")
    return keep


def selection_matrix(n_bands: int, indices: np.ndarray) -> np.ndarray:
    m = np.zeros((n_bands, len(indices)))
    m[np.asarray(indices), np.arange(len(indices))] = 1.0
    return m


def check_grid_covers(source_nm: np.ndarray, target_nm: np.ndarray, what: str = "spectrum",
                      tolerance_nm: float | None = None) -> None:
    """Refuse a source grid that is not increasing or does not cover the target grid's range."""
    s = np.asarray(source_nm, dtype=np.float64)
    t = np.asarray(target_nm, dtype=np.float64)
    if s.ndim != 1 or s.size < 2 or not np.isfinite(s).all() or np.any(np.diff(s) <= 0):
        raise ValueError(f"{what} wavelength grid must be a strictly increasing 1-D array of finite values "
                         f"with at least 2 bands")
    tol = tolerance_nm if tolerance_nm is not None else 0.5 * float(np.median(np.diff(t))) if t.size > 1 else 0.0
    if s[0] > t[0] + tol or s[-1] < t[-1] - tol:
        raise ValueError(f"{what} covers {s[0]:.1f}-{s[-1]:.1f} nm ({s.size} bands); the model needs "
                         f"{t[0]:.1f}-{t[-1]:.1f} nm ({t.size} bands)")


def resample_matrix(source_nm: np.ndarray, target_nm: np.ndarray) -> np.ndarray:
    """Linear interpolation from one wavelength grid onto another as a matrix, y = x @ M.

    Target points a little outside the source (within half a target band) take the end value.
    """
    s = np.asarray(source_nm, dtype=np.float64)
    t = np.asarray(target_nm, dtype=np.float64)
    check_grid_covers(s, t, "source grid")
    m = np.zeros((s.size, t.size))
    pos = np.clip(np.interp(t, s, np.arange(s.size)), 0, s.size - 1)
    lo = np.minimum(np.floor(pos).astype(int), s.size - 2)
    frac = pos - lo
    m[lo, np.arange(t.size)] = 1 - frac
    m[lo + 1, np.arange(t.size)] += frac
    return m


def resample(x: np.ndarray, source_nm: np.ndarray, target_nm: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64) @ resample_matrix(source_nm, target_nm)


# ---------------------------------------------------------------- serialisable chains


STEP_KINDS = ("absorbance", "center", "snv", "msc", "linear")


@dataclass
class Step:
    """One preprocessing step after reflectance: kind is absorbance, center, snv, msc or linear."""

    kind: str
    label: str = ""
    floor: float = 1e-4  # absorbance
    matrix: np.ndarray | None = None  # linear: (bands_in, bands_out)
    reference: np.ndarray | None = None  # msc
    params: dict = field(default_factory=dict)  # the transformer's parameters, for the record

    def __post_init__(self) -> None:
        if self.kind not in STEP_KINDS:
            raise ValueError(f"unknown preprocessing step {self.kind!r}; known: {', '.join(STEP_KINDS)}")
        if self.kind == "linear" and (self.matrix is None or np.asarray(self.matrix).ndim != 2):
            raise ValueError(f"linear step {self.label!r} needs a 2-D matrix")
        if self.kind == "msc" and (self.reference is None or np.asarray(self.reference).ndim != 1):
            raise ValueError("msc step needs a 1-D reference spectrum")

    @property
    def is_selection(self) -> bool:
        """True when the matrix only picks bands (each input used at most once, weight 1)."""
        if self.kind != "linear":
            return False
        m = np.asarray(self.matrix)
        nz = m != 0
        return bool(np.all(m[nz] == 1.0) and np.all(nz.sum(axis=0) == 1) and np.all(nz.sum(axis=1) <= 1))

    def n_out(self, n_in: int) -> int:
        if self.kind == "linear":
            m = np.asarray(self.matrix)
            if m.shape[0] != n_in:
                raise ValueError(f"step {self.label!r} expects {m.shape[0]} bands, gets {n_in}")
            return m.shape[1]
        if self.kind == "msc" and np.asarray(self.reference).size != n_in:
            raise ValueError(f"msc reference has {np.asarray(self.reference).size} bands, gets {n_in}")
        return n_in


def apply_step(x: np.ndarray, step: Step) -> np.ndarray:
    if step.kind == "absorbance":
        return absorbance(x, step.floor)
    if step.kind == "snv":
        return snv(x)
    if step.kind == "center":
        return center(x)
    if step.kind == "msc":
        return msc(x, step.reference)
    return np.asarray(x, dtype=np.float64) @ step.matrix


def apply_steps(x: np.ndarray, steps: list[Step]) -> np.ndarray:
    """Reference evaluation of a chain in float64, one step at a time."""
    out = np.asarray(x, dtype=np.float64)
    for step in steps:
        out = apply_step(out, step)
    return out
