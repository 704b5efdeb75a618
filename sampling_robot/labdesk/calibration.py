"""A targeted sample's lab result, with the spectra of its event, as a labelled calibration set.

The lab's verdict on a cup cut at an event's peak is ground truth for the
spectra the edge took of that stretch of belt: a confirmed contaminant labels
them with its type, a clean result labels them 'ore' (a false alarm, which is
just as valuable for calibration). The output is the spectral workbench's .npz
dataset (spectral/dataset.py, format 1), so `orelane spectral` reads it as is;
sampling_robot does not import spectral, so the format is written here and a
test loads it with spectral.dataset.load_npz.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from sampling_robot.labdesk.desk import CLEAN_LABEL
from sampling_robot.registry import SampleRegistry

log = logging.getLogger(__name__)

DATASET_FORMAT = 1  # spectral.dataset.DATASET_FORMAT
# (first_seq, last_seq) inclusive -> (wavelengths_nm (bands,), counts (n, bands), seqs (n,))
SpectraSource = Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def export_calibration_set(registry: SampleRegistry, sample_id: int, spectra_source: SpectraSource, *,
                           event_seqs: tuple[int, int], dark: np.ndarray, white: np.ndarray,
                           out_dir: str | Path, margin_seqs: int = 0) -> Path:
    """Write the sample's event spectra, labelled by its latest lab result, as a .npz dataset; returns its path.

    event_seqs: the event's spectra_seq_first and spectra_seq_last (from its ContaminationEvent), widened by
    margin_seqs on each side to allow for the timing slack between the event's bounds and the cut.
    dark, white: the references the edge used on that lane then, to turn counts into reflectance.
    Each spectrum's group is the lot (or the barcode when the sample has no lot), so cross-validation never
    trains and tests on the same ore. The latest result counts: corrections are later entries.
    """
    row = registry.sample(sample_id)
    where = f"sample {sample_id} ({row.barcode})"
    if row.kind != "targeted" or not row.event_id:
        raise ValueError(f"{where} is a {row.kind} sample without an event: only targeted samples have event spectra "
                         f"to label")
    results = registry.results(sample_id)
    if not results:
        raise ValueError(f"{where} has no lab result yet (status {row.status}); enter the result first")
    result = results[-1]
    if result.contaminant_found:
        label = result.contaminant_type.strip()
        if not label or label.lower() == CLEAN_LABEL:
            raise ValueError(f"{where}: result {result.id} says a contaminant was found but names no type; "
                             f"add a corrected result with the type")
    else:
        label = CLEAN_LABEL
    first, last = _check_seqs(event_seqs, margin_seqs, where)
    wavelengths, counts, seqs = _check_source(spectra_source(first, last), first, last, where)
    reflectance = _reflectance(counts, dark, white, where)
    n = reflectance.shape[0]
    group = row.lot_id or row.barcode
    provenance = {
        "sample_id": row.sample_id, "barcode": row.barcode, "lane": row.lane, "lot_id": row.lot_id,
        "vessel": row.vessel, "event_id": row.event_id, "event_seqs": list(event_seqs), "margin_seqs": margin_seqs,
        "seq_range": [first, last], "spectra": n, "missing_seqs": (last - first + 1) - n,
        "likely_class": row.likely_class, "model_version": row.model_version,
        "lab_result": {"id": result.id, "contaminant_found": result.contaminant_found,
                       "contaminant_type": result.contaminant_type, "mass_fraction": result.mass_fraction,
                       "note": result.note, "who": result.who, "at_s": result.at_s},
    }
    members = {
        "format": np.array(DATASET_FORMAT),
        "reflectance": reflectance.astype(np.float32),
        "wavelengths_nm": wavelengths,
        "labels": np.full(n, label),
        "groups": np.full(n, group),
        # Area fraction is 0 for clean ore; the lab measures a mass fraction, which is a different quantity.
        "area_fraction": np.full(n, 0.0 if label == CLEAN_LABEL else np.nan),
        "brands": np.full(n, ""),
        "seqs": seqs.astype(np.uint64),
        "mass_fraction": np.full(n, np.nan if result.mass_fraction is None else result.mass_fraction),
        "provenance_json": np.array(json.dumps(provenance, sort_keys=True)),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"calibration-{row.barcode}-result{result.id}.npz"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **members)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("%s: %d spectra (seq %d-%d) labelled %r written to %s", where, n, first, last, label, path)
    return path


def _check_seqs(event_seqs: tuple[int, int], margin_seqs: int, where: str) -> tuple[int, int]:
    try:
        first, last = (int(v) for v in event_seqs)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: event_seqs must be (spectra_seq_first, spectra_seq_last), got "
                         f"{event_seqs!r}") from None
    if first < 0 or last < first:
        raise ValueError(f"{where}: event_seqs {first}-{last} must be >= 0 and in order")
    if isinstance(margin_seqs, bool) or not isinstance(margin_seqs, int) or margin_seqs < 0:
        raise ValueError(f"{where}: margin_seqs must be a whole number of spectra >= 0, got {margin_seqs!r}")
    return max(0, first - margin_seqs), last + margin_seqs


def _check_source(got, first: int, last: int, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        wavelengths, counts, seqs = got
    except (TypeError, ValueError):
        raise ValueError(f"{where}: spectra_source must return (wavelengths_nm, counts, seqs)") from None
    w = np.asarray(wavelengths, dtype=np.float64)
    c = np.asarray(counts)
    s = np.asarray(seqs)
    if w.ndim != 1 or w.size < 2 or not np.all(np.isfinite(w)) or np.any(np.diff(w) <= 0):
        raise ValueError(f"{where}: spectra_source gave wavelengths of shape {w.shape}; need 2+ finite, strictly "
                         f"increasing values in nm")
    if c.ndim != 2 or c.shape[1] != w.size or c.dtype.kind not in "uif":
        raise ValueError(f"{where}: spectra_source gave counts of shape {c.shape} ({c.dtype}); need (n, {w.size}) "
                         f"numbers")
    if c.shape[0] == 0:
        raise ValueError(f"{where}: no spectra for seq {first}-{last}; were they retained that long?")
    if s.shape != (c.shape[0],) or s.dtype.kind not in "ui":
        raise ValueError(f"{where}: spectra_source gave seqs of shape {s.shape} ({s.dtype}) for {c.shape[0]} "
                         f"spectra; need one integer seq per spectrum")
    if s.min() < first or s.max() > last or np.any(np.diff(s) <= 0):
        raise ValueError(f"{where}: spectra_source gave seqs {int(s.min())}-{int(s.max())} (must increase "
                         f"strictly, within the asked {first}-{last})")
    if c.dtype.kind == "f" and not np.all(np.isfinite(c)):
        raise ValueError(f"{where}: spectra_source gave NaN or infinite counts")
    return w, c, s


def _reflectance(counts: np.ndarray, dark: np.ndarray, white: np.ndarray, where: str) -> np.ndarray:
    """(counts - dark) / (white - dark), as spectral.preprocess.reflectance computes it."""
    bands = counts.shape[1]
    dark = np.asarray(dark, dtype=np.float64)
    white = np.asarray(white, dtype=np.float64)
    for name, ref in (("dark", dark), ("white", white)):
        if ref.shape != (bands,) or not np.all(np.isfinite(ref)):
            raise ValueError(f"{where}: {name} reference has shape {ref.shape}; need ({bands},) finite counts")
    span = white - dark
    if np.any(span <= 0):
        band = int(np.flatnonzero(span <= 0)[0])
        raise ValueError(f"{where}: white reference is not above dark at band {band} (white={white[band]:g}, "
                         f"dark={dark[band]:g})")
    return (counts.astype(np.float64) - dark) / span
