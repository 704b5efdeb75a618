"""Labelled spectra for calibration: the project's .npz dataset format and CSV import.

A dataset is reflectance (n, bands) on one wavelength grid, with per spectrum a label ('ore' for clean
ore, else a contaminant class), a group (lot or sample id: cross-validation never splits one), the
contaminant area fraction (0 for clean ore, NaN when unknown) and the declared brand ('' when unknown).

CSV layout: one header row; columns whose header is a number are wavelengths in nm (strictly
increasing), the others are metadata named label, lot (or group, sample), area_fraction, brand.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spectral import preprocess

DATASET_FORMAT = 1
META_COLUMNS = {"label": "labels", "class": "labels", "lot": "groups", "group": "groups", "sample": "groups",
                "area_fraction": "area_fraction", "fraction": "area_fraction", "brand": "brands"}


@dataclass
class Dataset:
    reflectance: np.ndarray  # (n, bands) float32
    wavelengths_nm: np.ndarray  # (bands,)
    labels: np.ndarray  # (n,) str
    groups: np.ndarray  # (n,) str
    area_fraction: np.ndarray  # (n,) float
    brands: np.ndarray  # (n,) str

    def __post_init__(self) -> None:
        self.reflectance = np.asarray(preprocess.check_spectra(self.reflectance, "reflectance"), dtype=np.float32)
        n, b = self.reflectance.shape
        self.wavelengths_nm = np.asarray(self.wavelengths_nm, dtype=np.float64)
        if self.wavelengths_nm.shape != (b,):
            raise ValueError(f"wavelengths_nm has {self.wavelengths_nm.size} values; spectra have {b} bands")
        if b > 1 and np.any(np.diff(self.wavelengths_nm) <= 0):
            raise ValueError("wavelengths_nm must be strictly increasing")
        for name in ("labels", "groups", "brands"):
            arr = np.asarray(getattr(self, name)).astype(str)
            if arr.shape != (n,):
                raise ValueError(f"{name} has shape {arr.shape}; expected ({n},)")
            setattr(self, name, arr)
        self.area_fraction = np.asarray(self.area_fraction, dtype=np.float64)
        if self.area_fraction.shape != (n,):
            raise ValueError(f"area_fraction has shape {self.area_fraction.shape}; expected ({n},)")

    def __len__(self) -> int:
        return int(self.reflectance.shape[0])

    def subset(self, rows) -> "Dataset":
        return Dataset(self.reflectance[rows], self.wavelengths_nm, self.labels[rows], self.groups[rows],
                       self.area_fraction[rows], self.brands[rows])

    def summary(self) -> dict:
        return {"spectra": len(self), "bands": int(self.wavelengths_nm.size),
                "range_nm": [float(self.wavelengths_nm[0]), float(self.wavelengths_nm[-1])],
                "groups": int(np.unique(self.groups).size),
                "per_label": {c: int(np.sum(self.labels == c)) for c in np.unique(self.labels)}}


def from_simulation(sim, dark: np.ndarray | None = None, white: np.ndarray | None = None,
                    wavelengths_nm: np.ndarray | None = None) -> Dataset:
    """A Dataset from spectral.synth.simulate_lots (counts turned into reflectance with its references)."""
    refl = preprocess.reflectance(sim.counts, sim.dark if dark is None else dark, sim.white if white is None else white)
    w = wavelengths_nm if wavelengths_nm is not None else np.linspace(900, 1700, refl.shape[1])
    return Dataset(refl, w, sim.labels, sim.groups, sim.area_fraction, sim.brands)


def save_npz(ds: Dataset, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, format=np.array(DATASET_FORMAT), reflectance=ds.reflectance,
                            wavelengths_nm=ds.wavelengths_nm, labels=ds.labels, groups=ds.groups,
                            area_fraction=ds.area_fraction, brands=ds.brands)
    return path


def load_npz(path: str | Path) -> Dataset:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            members = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz dataset ({exc})") from None
    fmt = int(members.get("format", -1))
    if fmt != DATASET_FORMAT:
        raise ValueError(f"{path}: dataset format {fmt}; this build reads format {DATASET_FORMAT}")
    missing = [k for k in ("reflectance", "wavelengths_nm", "labels", "groups") if k not in members]
    if missing:
        raise ValueError(f"{path}: dataset lacks {', '.join(missing)}")
    n = members["reflectance"].shape[0]
    try:
        return Dataset(members["reflectance"], members["wavelengths_nm"], members["labels"], members["groups"],
                       members.get("area_fraction", np.full(n, np.nan)), members.get("brands", np.full(n, "")))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_csv(path_or_text: str | Path, source: str | None = None) -> Dataset:
    """Read labelled reflectance from CSV with a wavelength header row (see the module docstring)."""
    if isinstance(path_or_text, Path) or (isinstance(path_or_text, str) and "\n" not in path_or_text):
        path = Path(path_or_text)
        source = source or str(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise ValueError(f"{path}: cannot read CSV ({exc.strerror or exc})") from None
    else:
        text, source = str(path_or_text), source or "<csv>"
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise ValueError(f"{source}: need a header row and at least one spectrum")
    header = [h.strip() for h in rows[0]]
    band_cols, wavelengths, meta_cols = [], [], {}
    for j, name in enumerate(header):
        try:
            wavelengths.append(float(name))
            band_cols.append(j)
            continue
        except ValueError:
            pass
        key = name.lower()
        if key not in META_COLUMNS:
            raise ValueError(f"{source}: header column {j + 1} {name!r} is neither a wavelength in nm nor one of "
                             f"{', '.join(sorted(META_COLUMNS))}")
        if META_COLUMNS[key] in meta_cols:
            raise ValueError(f"{source}: header names {META_COLUMNS[key]} twice (column {j + 1} {name!r})")
        meta_cols[META_COLUMNS[key]] = j
    if len(band_cols) < 2:
        raise ValueError(f"{source}: header has {len(band_cols)} wavelength columns; need at least 2")
    w = np.array(wavelengths)
    if not np.all(np.isfinite(w)) or np.any(np.diff(w) <= 0):
        bad = int(np.flatnonzero(~(np.diff(w) > 0))[0]) + 1 if np.all(np.isfinite(w)) else 0
        raise ValueError(f"{source}: wavelength header must be strictly increasing; {w[bad]:g} nm follows "
                         f"{w[bad - 1]:g} nm" if bad else f"{source}: wavelength header has a non-finite value")
    if "labels" not in meta_cols:
        raise ValueError(f"{source}: header has no label column (label = 'ore' for clean ore, or a contaminant)")
    n = len(rows) - 1
    spectra = np.empty((n, len(band_cols)))
    meta = {k: [] for k in meta_cols}
    for i, row in enumerate(rows[1:]):
        line = i + 2
        if len(row) != len(header):
            raise ValueError(f"{source}: line {line} has {len(row)} fields; the header has {len(header)}")
        try:
            spectra[i] = [float(row[j]) for j in band_cols]
        except ValueError:
            j = next(j for j in band_cols if not _is_float(row[j]))
            raise ValueError(f"{source}: line {line}, column {header[j]!r}: {row[j]!r} is not a number") from None
        if not np.isfinite(spectra[i]).all():
            raise ValueError(f"{source}: line {line} has NaN or infinite reflectance")
        for k, j in meta_cols.items():
            meta[k].append(row[j].strip())
    groups = meta.get("groups") or [f"row{i}" for i in range(n)]
    if "area_fraction" in meta:
        try:
            frac = np.array([float(v) if v else np.nan for v in meta["area_fraction"]])
        except ValueError:
            raise ValueError(f"{source}: area_fraction column has a value that is not a number") from None
    else:
        frac = np.full(n, np.nan)
    return Dataset(spectra, w, np.array(meta["labels"]), np.array(groups), frac,
                   np.array(meta.get("brands") or [""] * n))


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def to_csv(ds: Dataset, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "lot", "area_fraction", "brand", *[f"{x:.2f}" for x in ds.wavelengths_nm]])
        for i in range(len(ds)):
            w.writerow([ds.labels[i], ds.groups[i], f"{ds.area_fraction[i]:.4f}", ds.brands[i],
                        *[f"{v:.6f}" for v in ds.reflectance[i]]])
    return path


def load(path: str | Path) -> Dataset:
    """Dataset from .npz (the project's format) or .csv, by suffix."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return load_npz(path)
    if path.suffix.lower() in (".csv", ".txt"):
        return load_csv(path)
    raise ValueError(f"{path}: unknown dataset type {path.suffix!r}; use .npz or .csv")
