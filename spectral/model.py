"""The lane model the edge applies to every spectrum: preprocessing chain, one-class PCA clean-ore model
(T2, Q and their limits), contaminant classifier with class residual checks, ore brand model, and a
versioned, content-hashed, optionally HMAC-signed file format.

Loading and scoring need numpy alone (scikit-learn and matplotlib stay on the calibration side).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spectral import preprocess
from spectral.chemometrics import ClassResiduals, PCAMonitor, PLSDA
from spectral.fast import NARROW_FEATURES, CompiledChain, Heads, Outputs
from spectral.preprocess import Step

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
FILE_KIND = "orelane-lane-model"
KEY_ENV = "ORELANE_MODEL_KEY"  # HMAC key for signing and verifying model files (hex, or text)
DECISION_CLEAN, DECISION_CONTAMINANT, DECISION_UNKNOWN = 0, 1, 2
NO_CLASS = 255
# Scores.flags bits: why a spectrum got no score (its decision is then DECISION_UNKNOWN).
FLAG_NONFINITE, FLAG_SATURATED, FLAG_DEGENERATE = 1, 2, 4
# Decisions within this relative distance of a threshold are recomputed exactly in float64.
GUARD_BAND = 2e-3


@dataclass(frozen=True)
class Scores:
    anomaly_score: np.ndarray  # float32; > 1 is outside the clean-ore limits; NaN where flagged
    t2: np.ndarray
    q: np.ndarray
    class_scores: np.ndarray  # (n, k) float32
    class_index: np.ndarray  # uint8, NO_CLASS where no class is named
    decision: np.ndarray  # uint8: 0 clean, 1 contaminant, 2 unknown anomaly (or unscorable, see flags)
    flags: np.ndarray | None = None  # uint8 FLAG_* bits, 0 for a normal spectrum
    brand_scores: np.ndarray | None = None  # (n, brands) float32 softmax over the model's brands


@dataclass(frozen=True)
class BrandVerdict:
    """Whether a lot's clean-ore spectra match its declared brand."""

    declared: str
    best_brand: str
    match_fraction: float  # share of clean-ore spectra whose most likely brand is the declared one
    brand_shares: dict[str, float]
    n_spectra: int
    mismatch: bool


class ModelFileError(ValueError):
    """A model file that cannot be used: unreadable, unknown format, altered, or badly signed."""


class LaneModel:
    """Everything the edge needs to judge a spectrum, on one wavelength grid."""

    def __init__(self, model_id: str, wavelengths_nm: np.ndarray, steps: list[Step], monitor: PCAMonitor,
                 classifier: PLSDA, residuals: ClassResiduals | None = None, brand: PLSDA | None = None,
                 min_class_score: float = 0.5, saturation_counts: float = preprocess.SATURATION_COUNTS,
                 metadata: dict | None = None):
        self.model_id = model_id
        self.wavelengths_nm = np.asarray(wavelengths_nm, dtype=np.float64)
        self.steps = list(steps)
        self.monitor = monitor
        self.classifier = classifier
        self.residuals = residuals
        self.brand = brand
        self.min_class_score = float(min_class_score)
        self.saturation_counts = float(saturation_counts)
        self.metadata = dict(metadata or {})
        self._compiled: dict[bytes, CompiledChain] = {}
        self._heads = self._make_heads()
        self._content_sha256: str | None = None

    # ---------------------------------------------------------------- identity
    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.classifier.classes)

    @property
    def brand_names(self) -> tuple[str, ...]:
        return tuple(self.brand.classes) if self.brand is not None else ()

    @property
    def version(self) -> str:
        return f"{self.model_id}@{self.sha256()[:12]}"

    def sha256(self) -> str:
        """Content hash of the model (arrays and metadata), independent of how the file was zipped."""
        if self._content_sha256 is None:
            meta, arrays = self._payload()
            self._content_sha256 = _content_hash(meta, arrays)
        return self._content_sha256

    # ---------------------------------------------------------------- grid
    def check_grid(self, wavelengths_nm: np.ndarray) -> None:
        """Refuse a grid that is not increasing or does not cover the model's range; others are resampled."""
        w = np.asarray(wavelengths_nm, dtype=np.float64)
        m = self.wavelengths_nm
        try:
            preprocess.check_grid_covers(w, m, "spectrum")
        except ValueError as exc:
            raise ValueError(f"model {self.model_id}: {exc}") from None

    def _on_model_grid(self, wavelengths_nm) -> bool:
        if wavelengths_nm is None:
            return True
        w = np.asarray(wavelengths_nm, dtype=np.float64)
        return w.shape == self.wavelengths_nm.shape and bool(np.allclose(w, self.wavelengths_nm, atol=0.05))

    def _prepare(self, counts, dark, white, wavelengths_nm):
        """Validate inputs, resample onto the model grid if needed, and flag unscorable rows."""
        counts = np.asarray(counts)
        if counts.ndim != 2:
            raise ValueError(f"counts must be a 2-D array (spectra, bands); got shape {counts.shape}")
        if counts.dtype.kind not in "uif":
            raise ValueError(f"counts must be numeric; got dtype {counts.dtype}")
        b = self.wavelengths_nm.size
        if wavelengths_nm is None and counts.shape[1] != b:
            m = self.wavelengths_nm
            raise ValueError(f"spectrum has {counts.shape[1]} bands; model {self.model_id} expects {b} "
                             f"({m[0]:.0f}-{m[-1]:.0f} nm); pass wavelengths_nm to resample")
        if wavelengths_nm is not None:
            w = np.asarray(wavelengths_nm, dtype=np.float64)
            if w.shape != (counts.shape[1],):
                raise ValueError(f"wavelengths_nm has shape {w.shape}; counts have {counts.shape[1]} bands")
        dark, white = preprocess.check_references(dark, white, counts.shape[1])
        flags = np.zeros(counts.shape[0], dtype=np.uint8)
        if counts.dtype.kind == "f" and not np.isfinite(counts.sum()):
            flags[~np.isfinite(counts).all(axis=1)] |= FLAG_NONFINITE
        if counts.size and (counts.dtype.kind == "f" or counts.max() >= self.saturation_counts):
            flags[(counts >= self.saturation_counts).any(axis=1)] |= FLAG_SATURATED
        bad = flags != 0
        if bad.any():
            counts = counts.copy()
            counts[bad] = np.clip(white, 0, 65535).astype(counts.dtype)
        if not self._on_model_grid(wavelengths_nm):
            self.check_grid(wavelengths_nm)
            r = preprocess.resample_matrix(wavelengths_nm, self.wavelengths_nm)
            counts, dark, white = counts.astype(np.float64) @ r, dark @ r, white @ r
        return counts, dark, white, flags

    # ---------------------------------------------------------------- scoring
    def features(self, counts: np.ndarray, dark: np.ndarray, white: np.ndarray) -> np.ndarray:
        """Counts to the model's feature space, step by step in float64 (the reference path)."""
        return preprocess.apply_steps(preprocess.reflectance(counts, dark, white), self.steps)

    def score(self, counts: np.ndarray, dark: np.ndarray, white: np.ndarray,
              wavelengths_nm: np.ndarray | None = None) -> Scores:
        """Fast batch scoring with folded linear steps (float32 where exact enough, see _fast_dtype); decisions
        match :meth:`score_reference`."""
        counts, dark, white, flags = self._prepare(counts, dark, white, wavelengths_nm)
        key = dark.tobytes() + white.tobytes()
        chain = self._compiled.get(key)
        if chain is None:
            if len(self._compiled) >= 4:
                self._compiled.clear()
            chain = self._compiled[key] = CompiledChain(self.steps, self._heads, dark, white, self._fast_dtype())
        out = chain.run(counts)
        flags[out.degenerate] |= FLAG_DEGENERATE
        result, near = self._judge(out, flags, margins=True)
        if near.any():
            rows = np.flatnonzero(near)
            exact, _ = self._judge(self._reference_outputs(counts[rows], dark, white), flags[rows])
            result = _overwrite(result, rows, exact)
        return result

    def _fast_dtype(self) -> type:
        """float32 when the chain narrows the spectrum to a few features before the PCA (the default DCT
        low-pass; those segments run in float64). A chain that keeps every band (absorbance alone, or then SNV
        or centring) leaves Q as a small difference of sums over hundreds of bands, which float32 gets wrong
        by up to 60 %; such chains run in float64, about twice as slow, so decisions stay those of the
        reference path."""
        return np.float32 if self._heads.mean.size <= NARROW_FEATURES else np.float64

    def score_reference(self, counts: np.ndarray, dark: np.ndarray, white: np.ndarray,
                        wavelengths_nm: np.ndarray | None = None) -> Scores:
        """Plain float64 scoring, one preprocessing step after another; slow, for checks and calibration."""
        counts, dark, white, flags = self._prepare(counts, dark, white, wavelengths_nm)
        out = self._reference_outputs(counts, dark, white)
        flags[out.degenerate] |= FLAG_DEGENERATE
        result, _ = self._judge(out, flags)
        return result

    def score_features(self, reflectance: np.ndarray) -> Scores:
        """Reference scoring of reflectance spectra already on the model grid (calibration side)."""
        refl = preprocess.check_spectra(reflectance, "reflectance", self.wavelengths_nm.size)
        out = self._outputs_from_reflectance(refl)
        flags = np.where(out.degenerate, FLAG_DEGENERATE, 0).astype(np.uint8)
        return self._judge(out, flags)[0]

    def _reference_outputs(self, counts, dark, white) -> Outputs:
        return self._outputs_from_reflectance(preprocess.reflectance(counts, dark, white))

    def _outputs_from_reflectance(self, refl: np.ndarray) -> Outputs:
        degenerate = np.zeros(refl.shape[0], dtype=bool)
        x = np.asarray(refl, dtype=np.float64)
        for step in self.steps:
            if step.kind == "snv":
                std = x.std(axis=1)
                degenerate |= ~(std > 1e-7 * (np.abs(x.mean(axis=1)) + 1e-30))
            x = preprocess.apply_step(x, step)
        h = self._heads
        centred = x - h.mean
        scores = centred @ h.components.T
        q = np.sum((centred - scores @ h.components) ** 2, axis=1)
        return Outputs(scores, q, x @ h.class_coef + h.class_offset, centred @ h.residual_dirs,
                       x @ h.brand_coef + h.brand_offset, degenerate)

    def _judge(self, out: Outputs, flags: np.ndarray, margins: bool = False) -> tuple[Scores, np.ndarray]:
        # Row sums and maxima over the few classes are matrix products and column-by-column passes: numpy's
        # reductions along a short axis cost several times more than the matrix product that made the numbers.
        mon = self.monitor
        t2 = np.square(out.scores) @ (1.0 / mon.variances)
        q = out.q
        anomaly = mon.anomaly_score(t2, q)
        class_scores, best = _softmax_and_best(out.logits)
        rows = np.arange(len(best))
        best_score = class_scores[rows, best]
        if self.residuals is not None and self.residuals.limits.size:
            explain_ratio = self.residuals.class_q_at(q, out.residual_proj, best) / self.residuals.limits[best]
        else:
            explain_ratio = np.zeros(len(best))
        anomalous = anomaly > 1.0
        named = anomalous & (best_score >= self.min_class_score) & (explain_ratio <= 1.0)
        bad = flags != 0
        decision = np.full(len(best), DECISION_CLEAN, dtype=np.uint8)
        np.putmask(decision, anomalous, DECISION_UNKNOWN)
        np.putmask(decision, named, DECISION_CONTAMINANT)
        np.putmask(decision, bad, DECISION_UNKNOWN)
        class_index = np.full(len(best), NO_CLASS, dtype=np.uint8)
        np.copyto(class_index, best, casting="unsafe", where=named & ~bad)
        brand_scores = _softmax_and_best(out.brand_logits)[0] if out.brand_logits.shape[1] else out.brand_logits
        result = Scores(_float32_rows(anomaly, bad, np.nan), _float32_rows(t2, bad, np.nan),
                        _float32_rows(q, bad, np.nan), _float32_rows(class_scores, bad, 0.0), class_index,
                        decision, flags.astype(np.uint8), _float32_rows(brand_scores, bad, 0.0))
        near = np.zeros(len(best), dtype=bool)
        if margins:
            near = np.abs(anomaly - 1.0) < GUARD_BAND
            flagged = np.flatnonzero(anomalous)  # the class margins matter only where the ore is anomalous
            if flagged.size:
                second = np.zeros(flagged.size)
                if class_scores.shape[1] > 1:
                    others = class_scores[flagged]
                    others[np.arange(flagged.size), best[flagged]] = -np.inf
                    second = others.max(axis=1)
                b = best_score[flagged]
                near[flagged] |= ((np.abs(b - self.min_class_score) < GUARD_BAND) | (b - second < GUARD_BAND)
                                  | (np.abs(explain_ratio[flagged] - 1.0) < GUARD_BAND))
            near &= ~bad
        return result, near

    def check_brand(self, scores: Scores, declared: str, min_match_fraction: float = 0.5) -> BrandVerdict:
        """Lot check: do the clean-ore spectra of a lot look like its declared brand?"""
        if self.brand is None:
            raise ValueError(f"model {self.model_id} has no brand model")
        if declared not in self.brand_names:
            raise ValueError(f"declared brand {declared!r} is not one the model knows: {', '.join(self.brand_names)}")
        clean = scores.decision == DECISION_CLEAN
        n = int(clean.sum())
        if n == 0:
            raise ValueError("no clean-ore spectra in this lot to check the brand on")
        winners = np.asarray(scores.brand_scores)[clean].argmax(axis=1)
        shares = {b: float(np.mean(winners == i)) for i, b in enumerate(self.brand_names)}
        best = max(shares, key=shares.get)
        match = shares[declared]
        return BrandVerdict(declared, best, match, shares, n, mismatch=match < min_match_fraction)

    def _make_heads(self) -> Heads:
        clf = self.classifier
        mon = self.monitor
        bf = mon.mean.size
        res = self.residuals.directions if self.residuals is not None else np.zeros((bf, 0))
        if self.brand is not None:
            bc, bo = self.brand.coef, self.brand.intercept - self.brand.x_mean @ self.brand.coef
        else:
            bc, bo = np.zeros((bf, 0)), np.zeros(0)
        return Heads(mon.mean, mon.components, clf.coef, clf.intercept - clf.x_mean @ clf.coef, res, bc, bo)

    # ---------------------------------------------------------------- artifact
    def _payload(self) -> tuple[dict, dict[str, np.ndarray]]:
        mon = self.monitor
        arrays: dict[str, np.ndarray] = {
            "wavelengths_nm": self.wavelengths_nm,
            "pca_mean": mon.mean, "pca_components": mon.components, "pca_variances": mon.variances,
            "cls_x_mean": self.classifier.x_mean, "cls_rotations": self.classifier.rotations,
            "cls_coef": self.classifier.coef, "cls_intercept": self.classifier.intercept,
        }
        steps_meta = []
        for i, step in enumerate(self.steps):
            steps_meta.append({"kind": step.kind, "label": step.label, "floor": step.floor,
                               "params": step.params})
            if step.matrix is not None:
                arrays[f"step{i}_matrix"] = np.asarray(step.matrix, dtype=np.float64)
            if step.reference is not None:
                arrays[f"step{i}_reference"] = np.asarray(step.reference, dtype=np.float64)
        if self.residuals is not None:
            arrays["res_directions"] = self.residuals.directions
            arrays["res_limits"] = self.residuals.limits
        if self.brand is not None:
            arrays.update({"brand_x_mean": self.brand.x_mean, "brand_rotations": self.brand.rotations,
                           "brand_coef": self.brand.coef, "brand_intercept": self.brand.intercept})
        meta = {
            "kind": FILE_KIND, "format": FORMAT_VERSION, "model_id": self.model_id,
            "classes": list(self.class_names), "brands": list(self.brand_names),
            "monitor": {"method": mon.method, "alpha": mon.alpha, "t2_limit": mon.t2_limit, "q_limit": mon.q_limit,
                        "h0": mon.h0, "q0": mon.q0, "dof_h": mon.dof_h, "dof_q": mon.dof_q,
                        "f_limit": mon.f_limit, "threshold_scale": mon.threshold_scale},
            "residual_per_class": self.residuals.per_class if self.residuals is not None else 0,
            "min_class_score": self.min_class_score, "saturation_counts": self.saturation_counts,
            "steps": steps_meta, "metadata": self.metadata,
        }
        arrays = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}
        return json.loads(json.dumps(meta, sort_keys=True)), arrays

    def to_bytes(self, key: bytes | str | None = None) -> bytes:
        """The model file; signed with HMAC-SHA256 when a key is given (or set in ORELANE_MODEL_KEY)."""
        meta, arrays = self._payload()
        digest = _content_hash(meta, arrays)
        meta["content_sha256"] = digest
        members = {"meta": _json_bytes(meta), **arrays}
        key_bytes = _key_bytes(key if key is not None else os.environ.get(KEY_ENV))
        if key_bytes is not None:
            members["signature"] = _json_bytes({"alg": "hmac-sha256",
                                                "mac": hmac.new(key_bytes, digest.encode(), "sha256").hexdigest()})
        buf = io.BytesIO()
        np.savez(buf, **members)
        return buf.getvalue()

    def save(self, path: str | Path, key: bytes | str | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes(key))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, key: bytes | str | None = None, require_signature: bool | None = None,
             expected_sha256: str | None = None) -> "LaneModel":
        """Load a model file, refusing an unknown format, altered content or a bad or missing signature.

        The HMAC key comes from `key` or the ORELANE_MODEL_KEY environment variable; when there is a key,
        a signature is required unless require_signature is False.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelFileError(f"{path}: cannot read model file: {exc.strerror or exc}") from None
        return cls.from_bytes(data, str(path), key, require_signature, expected_sha256)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>", key: bytes | str | None = None,
                   require_signature: bool | None = None, expected_sha256: str | None = None) -> "LaneModel":
        key_bytes = _key_bytes(key if key is not None else os.environ.get(KEY_ENV))
        if require_signature is None:
            require_signature = key_bytes is not None
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                members = {name: z[name] for name in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ModelFileError(f"{source}: not an orelane model file ({exc})") from None
        if "meta" not in members:
            raise ModelFileError(f"{source}: not an orelane model file (no meta member)")
        try:
            meta = json.loads(members.pop("meta").tobytes())
        except ValueError as exc:
            raise ModelFileError(f"{source}: model metadata is not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("kind", FILE_KIND) != FILE_KIND:
            raise ModelFileError(f"{source}: not an orelane lane model (kind {meta.get('kind')!r})")
        fmt = meta.get("format")
        if fmt != FORMAT_VERSION:
            newer = isinstance(fmt, int) and fmt > FORMAT_VERSION
            raise ModelFileError(f"{source}: model format {fmt!r}; this build reads format {FORMAT_VERSION}"
                                 + (" (written by a newer orelane: upgrade this edge)" if newer else
                                    " (re-export the model with this version of orelane)"))
        signature = members.pop("signature", None)
        stated = meta.pop("content_sha256", None)
        arrays = {k: v for k, v in members.items()}
        actual = _content_hash(meta, arrays)
        if stated != actual:
            raise ModelFileError(f"{source}: content hash mismatch (file says {str(stated)[:12]}, content is "
                                 f"{actual[:12]}): the file was altered or corrupted")
        if expected_sha256 is not None and not actual.startswith(expected_sha256):
            raise ModelFileError(f"{source}: content hash {actual[:12]} is not the expected {expected_sha256[:12]}")
        if signature is not None and key_bytes is not None:
            try:
                sig = json.loads(signature.tobytes())
                mac = sig["mac"]
            except (ValueError, KeyError, TypeError):
                raise ModelFileError(f"{source}: signature member is unreadable") from None
            good = hmac.new(key_bytes, actual.encode(), "sha256").hexdigest()
            if not hmac.compare_digest(str(mac), good):
                raise ModelFileError(f"{source}: signature does not match (wrong key, or the file was altered "
                                     "and re-hashed)")
        elif require_signature:
            raise ModelFileError(f"{source}: model file is not signed; this edge requires signed models "
                                 f"(key set via {KEY_ENV})" if key_bytes is not None else
                                 f"{source}: a signed model is required but no key is configured ({KEY_ENV})")
        elif signature is not None:
            log.warning("model %s: signed, but no key configured to verify it (%s)", source, KEY_ENV)
        try:
            model = cls._from_parts(meta, arrays)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{source}: model file is incomplete or inconsistent: {exc}") from None
        model._content_sha256 = actual
        return model

    @classmethod
    def _from_parts(cls, meta: dict, a: dict[str, np.ndarray]) -> "LaneModel":
        m = meta["monitor"]
        monitor = PCAMonitor(a["pca_mean"], a["pca_components"], a["pca_variances"], m["method"], m["alpha"],
                             m["t2_limit"], m["q_limit"], m["h0"], m["q0"], m["dof_h"], m["dof_q"], m["f_limit"],
                             m["threshold_scale"])
        clf = PLSDA(tuple(meta["classes"]), a["cls_x_mean"], a["cls_rotations"], a["cls_coef"], a["cls_intercept"])
        residuals = None
        if "res_directions" in a:
            residuals = ClassResiduals(a["res_directions"], int(meta["residual_per_class"]), a["res_limits"])
        brand = None
        if "brand_coef" in a:
            brand = PLSDA(tuple(meta["brands"]), a["brand_x_mean"], a["brand_rotations"], a["brand_coef"],
                          a["brand_intercept"])
        steps = []
        for i, s in enumerate(meta["steps"]):
            steps.append(Step(s["kind"], s.get("label", ""), s.get("floor", 1e-4), a.get(f"step{i}_matrix"),
                              a.get(f"step{i}_reference"), s.get("params", {})))
        model = cls(meta["model_id"], a["wavelengths_nm"], steps, monitor, clf, residuals, brand,
                    meta["min_class_score"], meta["saturation_counts"], meta.get("metadata", {}))
        n = model.wavelengths_nm.size
        for step in steps:
            n = step.n_out(n)
        if n != monitor.mean.size:
            raise ValueError(f"preprocessing gives {n} features but the PCA model has {monitor.mean.size}")
        return model

    def describe(self) -> dict:
        """A summary for people and logs: identity, grid, classes, limits, training record."""
        w = self.wavelengths_nm
        return {"model_id": self.model_id, "version": self.version, "sha256": self.sha256(),
                "format": FORMAT_VERSION, "bands": int(w.size), "range_nm": [float(w[0]), float(w[-1])],
                "classes": list(self.class_names), "brands": list(self.brand_names),
                "steps": [s.label or s.kind for s in self.steps],
                "limits": {"method": self.monitor.method, "alpha": self.monitor.alpha,
                           "threshold_scale": self.monitor.threshold_scale},
                "metadata": self.metadata}


def _overwrite(result: Scores, rows: np.ndarray, exact: Scores) -> Scores:
    """The exact rows written into result's arrays, which _judge made for this call alone (no copies)."""
    for name in Scores.__dataclass_fields__:
        full = getattr(result, name)
        if full is not None:
            full[rows] = getattr(exact, name)
    return result


def _json_bytes(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(), dtype=np.uint8)


def _content_hash(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(FILE_KIND.encode() + b"\n")
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"\n{name}:{arr.dtype.str}:{arr.shape}\n".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _key_bytes(key: bytes | str | None) -> bytes | None:
    if key is None or key == "" or key == b"":
        return None
    if isinstance(key, bytes):
        return key
    try:
        return bytes.fromhex(key) if len(key) >= 32 and len(key) % 2 == 0 else key.encode()
    except ValueError:
        return key.encode()


def data_sha256(*arrays: np.ndarray) -> str:
    """Hash of training data, recorded in the model's metadata."""
    h = hashlib.sha256()
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        if arr.dtype.kind in "OU":
            arr = np.asarray(arr, dtype=str)
            h.update("\x1f".join(arr.ravel().tolist()).encode())
        else:
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


# Roll-off of the default DCT low-pass (coefficients); see default_steps.
DEFAULT_DCT_TAPER = 6.0


def default_steps(n_bands: int, n_coefficients: int = 24, taper: float | None = DEFAULT_DCT_TAPER) -> list[Step]:
    """Absorbance, per-spectrum centring (removes height gain and lamp drift), DCT low-pass to 24 coefficients
    rolled off with a Gaussian taper (coefficient k weighted by exp(-(k/6)^2 / 2)).

    Chosen on simulated lanes: at a false-alarm rate of 1e-4 it detected contaminants as well as
    Savitzky-Golay(21, 2) smoothing and better than SNV on reflectance or absorbance, first derivatives
    or band binning, and it is several times faster at the edge (224 x 24 instead of 224 x 224 products).

    The taper: with a hard cut at 24 coefficients the PCA residual Q summed 19 coefficients of mostly
    detector noise at equal weight, and that noise is largest on dark ore (magnetite concentrate), whose
    clean tail then set the 1e-4 threshold. Wood at 20 % moves a moist goethite or blend ore mostly along
    the ore's own brightness, mineral and moisture directions; what it leaves in the residual is broad
    (bands 30-60 nm wide) and was lost in that noise: 85 % detected. Tapered, the same 24 features weight
    the broad residual fully and the fine noise little: wood 98 %, and plastic, paper and textile gain too
    (tests/spectral/test_spectral_quality.py). A hard cut at 8-12 coefficients detects about as well but
    loses the detail that names the class (paper named in 1 % of spectra at 8 coefficients).
    """
    k = min(n_coefficients, n_bands)
    label = f"dct_lowpass({k})" if taper is None else f"dct_lowpass({k}, taper={taper:g})"
    return [Step("absorbance", "absorbance", params={"floor": 1e-4}), Step("center", "center"),
            Step("linear", label, matrix=preprocess.dct_lowpass_matrix(n_bands, k, taper),
                 params={"n_coefficients": k, "taper": taper})]


def fit_lane_model(reflectance: np.ndarray, labels: np.ndarray, wavelengths_nm: np.ndarray,
                   steps: list[Step] | None = None, brands: np.ndarray | None = None, model_id: str = "lane-model",
                   n_components: int = 5, alpha: float = 1e-4, limit_method: str = "dd-simca",
                   pls_components: int = 10, min_class_score: float = 0.5, residual_per_class: int = 2,
                   metadata: dict | None = None) -> LaneModel:
    """Fit the whole lane model in numpy: clean ore ('ore' labels) for the PCA and brands, the rest for
    the classifier. No scikit-learn; the estimators in spectral.estimators wrap the same maths."""
    from spectral import chemometrics

    steps = default_steps(np.asarray(wavelengths_nm).size) if steps is None else steps
    labels = np.asarray(labels).astype(str)
    refl = preprocess.check_spectra(reflectance, "reflectance", np.asarray(wavelengths_nm).size)
    x = preprocess.apply_steps(refl, steps)
    ore = labels == "ore"
    if ore.sum() < 10:
        raise ValueError(f"need at least 10 clean-ore ('ore') spectra to fit; got {int(ore.sum())}")
    if (~ore).sum() == 0:
        raise ValueError("need contaminant spectra (labels other than 'ore') to fit the classifier")
    monitor = chemometrics.fit_pca_monitor(x[ore], n_components, alpha, limit_method)
    classifier = chemometrics.fit_plsda(x[~ore], labels[~ore], pls_components)
    residuals = chemometrics.fit_class_residuals(monitor, x[~ore], labels[~ore], classifier.classes,
                                                 residual_per_class) if residual_per_class > 0 else None
    brand = None
    if brands is not None:
        b = np.asarray(brands).astype(str)
        keep = ore & (b != "")
        if len(set(b[keep].tolist())) >= 2:
            brand = chemometrics.fit_plsda(x[keep], b[keep], pls_components)
    meta = {"created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "training_data_sha256": data_sha256(refl, labels),
            "training": {"n_spectra": int(len(labels)),
                         "per_class": {c: int(np.sum(labels == c)) for c in sorted(set(labels.tolist()))}},
            "params": {"n_components": n_components, "alpha": alpha, "limit_method": limit_method,
                       "pls_components": pls_components, "min_class_score": min_class_score,
                       "residual_per_class": residual_per_class},
            **(metadata or {})}
    return LaneModel(model_id, wavelengths_nm, steps, monitor, classifier, residuals, brand, min_class_score,
                     metadata=meta)


def train_synthetic(instrument, rng: np.random.Generator, n_clean: int = 1500, n_per_class: int = 300,
                    model_id: str = "synthetic-v1", brands: tuple[str, ...] | None = None) -> LaneModel:
    """A model trained on simulated lane spectra; for the demo and tests until engineers calibrate a real one.
    `brands` (names of spectral.synth.BRANDS) limits the ore brands it knows; all by default."""
    from spectral import synth

    w = instrument.wavelengths_nm
    dark, white = instrument.dark_reference(), instrument.white_reference()
    brand_names = list(brands or synth.BRANDS)
    refl, labels, brands = [], [], []
    per_brand = max(1, n_clean // len(brand_names))
    for b in brand_names:
        counts = synth.lane_counts(instrument, synth.ore_reflectance(w, per_brand, rng, b), rng)
        refl.append(preprocess.reflectance(counts, dark, white))
        labels += ["ore"] * per_brand
        brands += [b] * per_brand
    for material in synth.CONTAMINANTS:
        frac = rng.uniform(0.05, 1.0, n_per_class)
        counts = synth.lane_counts(instrument, synth.mixed_reflectance(material, frac, w, n_per_class, rng), rng)
        refl.append(preprocess.reflectance(counts, dark, white))
        labels += [material] * n_per_class
        brands += [""] * n_per_class
    return fit_lane_model(np.vstack(refl), np.array(labels), w, brands=np.array(brands), model_id=model_id,
                          metadata={"source": "spectral.synth (simulated)"})


def _softmax_and_best(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row softmax and each row's best column (the first of equal maxima, as argmax); the best logit doubles
    as the overflow guard."""
    if logits.flags.c_contiguous:  # rows lie together (and a few rows are cheapest this way): argmax
        best = logits.argmax(axis=1)
        top = logits[np.arange(len(best)), best]
    else:  # the fast path's logits are columns of its read-outs: compare whole columns
        top = logits[:, 0].copy()
        best = np.zeros(logits.shape[0], dtype=np.intp)
        for j in range(1, logits.shape[1]):
            column = logits[:, j]
            np.putmask(best, column > top, j)
            np.maximum(top, column, out=top)
    e = np.exp(logits - top[:, None])
    return e / (e @ np.ones(logits.shape[1]))[:, None], best


def _float32_rows(values: np.ndarray, bad: np.ndarray, fill: float) -> np.ndarray:
    """values as a C-ordered float32 array with the rows of unscorable spectra set to fill."""
    out = values.astype(np.float32, order="C")
    out[bad] = fill
    return out
