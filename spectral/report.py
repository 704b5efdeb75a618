"""Calibration report: an HTML page with PNG figures (matplotlib, calibration side only)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from spectral import chemometrics
from spectral.dataset import Dataset
from spectral.model import LaneModel
from spectral.validation import CLEAN, CVResult, confusion_matrix, roc_curve


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_mean_spectra(ds: Dataset, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label in np.unique(ds.labels):
        rows = ds.labels == label
        mean = ds.reflectance[rows].mean(axis=0)
        sd = ds.reflectance[rows].std(axis=0)
        ax.plot(ds.wavelengths_nm, mean, label=f"{label} (n={int(rows.sum())})")
        ax.fill_between(ds.wavelengths_nm, mean - sd, mean + sd, alpha=0.12)
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel("reflectance")
    ax.set_title("Mean spectra per class (band: +-1 SD)")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_loadings(model: LaneModel, path: Path) -> Path:
    plt = _plt()
    comps = model.monitor.components
    x = np.arange(comps.shape[1])
    if comps.shape[1] == model.wavelengths_nm.size:
        x, xlabel = model.wavelengths_nm, "wavelength (nm)"
    else:
        xlabel = "feature"
    fig, ax = plt.subplots(figsize=(7, 4))
    var = model.monitor.variances
    for i, c in enumerate(comps):
        ax.plot(x, c, label=f"PC{i + 1} ({100 * var[i] / var.sum():.0f}% of modelled)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loading")
    ax.set_title("Clean-ore PCA loadings")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_t2_q(cv: CVResult, model: LaneModel, path: Path) -> Path:
    """Out-of-fold T2 against Q, with the (threshold-scaled) acceptance boundary of the final model."""
    plt = _plt()
    mon = model.monitor
    fig, ax = plt.subplots(figsize=(6, 5))
    ok = np.isfinite(cv.t2) & np.isfinite(cv.q)
    for label in [CLEAN] + sorted(set(cv.labels.tolist()) - {CLEAN}):
        rows = ok & (cv.labels == label)
        ax.scatter(np.maximum(cv.t2[rows], 1e-3), np.maximum(cv.q[rows], 1e-6), s=3, alpha=0.4, label=label)
    t2 = np.logspace(-3, np.log10(max(np.nanmax(cv.t2), mon.t2_limit) * 2), 300)
    scale = mon.threshold_scale
    if mon.method == "chi2":
        ax.axvline(mon.t2_limit * scale, color="k", lw=1)
        ax.axhline(mon.q_limit * scale, color="k", lw=1, label="limit")
    else:
        q = (mon.f_limit * scale - mon.dof_h * t2 / mon.h0) * mon.q0 / mon.dof_q
        keep = q > 0
        ax.plot(t2[keep], q[keep], "k", lw=1, label="limit (DD-SIMCA, at threshold)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Hotelling T2")
    ax.set_ylabel("Q (squared residual)")
    ax.set_title("T2-Q plot, out-of-fold spectra")
    ax.legend(fontsize=7, markerscale=3)
    return _save(plt, fig, path)


def plot_roc(cv: CVResult, path: Path) -> tuple[Path, dict[str, float]]:
    plt = _plt()
    clean = cv.raw_score[cv.labels == CLEAN]
    fig, ax = plt.subplots(figsize=(6, 5))
    aucs = {}
    for label in sorted(set(cv.labels.tolist()) - {CLEAN}):
        fpr, tpr, auc = roc_curve(clean, cv.raw_score[cv.labels == label])
        aucs[label] = auc
        ax.plot(np.maximum(fpr, 1e-5), tpr, label=f"{label} (AUC {auc:.3f})")
    ax.axvline(max(1e-5, float(np.mean(clean > cv.threshold_scale))), color="k", ls=":", lw=1,
               label="chosen threshold")
    ax.set_xscale("log")
    ax.set_xlim(1e-5, 1)
    ax.set_xlabel("false-alarm rate (clean ore)")
    ax.set_ylabel("detection rate")
    ax.set_title("ROC of the anomaly score, out-of-fold (all area fractions)")
    ax.legend(fontsize=7)
    return _save(plt, fig, path), aucs


def plot_false_alarm_tail(cv: CVResult, target_false_alarm_rate: float, path: Path) -> Path:
    """False-alarm rate against the threshold: the out-of-fold clean ore, the Pareto tail fitted to its top
    5 % and the chosen threshold; shows how far below the data the target rate was extrapolated."""
    plt = _plt()
    clean = np.sort(cv.raw_score[(cv.labels == CLEAN) & np.isfinite(cv.raw_score)])
    fig, ax = plt.subplots(figsize=(6, 4))
    n = clean.size
    ax.step(clean, (n - np.arange(n)) / n, where="post", color="tab:blue", lw=1,
            label=f"clean ore, out-of-fold (n={n}, {np.unique(cv.groups[cv.labels == CLEAN]).size} lots)")
    if n >= 100:
        u, shape, scale = chemometrics.pareto_tail(clean)
        top = max(cv.threshold_scale, clean[-1]) * 1.3
        x = np.linspace(u, top, 200)
        ax.plot(x, chemometrics.pareto_exceedance(x, u, shape, scale), "k--", lw=1,
                label=f"Pareto tail fit (shape {shape:.2f})")
    ax.axhline(target_false_alarm_rate, color="tab:red", ls=":", lw=1,
               label=f"target {target_false_alarm_rate:g}")
    ax.axvline(cv.threshold_scale, color="k", ls=":", lw=1, label=f"chosen threshold {cv.threshold_scale:.3f}")
    ax.set_yscale("log")
    ax.set_ylim(min(target_false_alarm_rate, 1.0 / max(n, 1)) / 3, 1.0)
    ax.set_xlabel("anomaly score (1 = fitted limit)")
    ax.set_ylabel("share of clean ore above")
    ax.set_title("False-alarm rate against threshold")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_detection(lod: dict, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    f = np.asarray(lod["fractions"])
    for material, rates in lod["rates"].items():
        ax.plot(100 * f, rates, marker=".", label=f"{material} (LOD {_pct(lod['lod'][material])})")
    ax.axhline(lod["level"], color="k", ls=":", lw=1)
    ax.set_xlabel("contaminant area fraction in field of view (%)")
    ax.set_ylabel("detection rate at chosen threshold")
    ax.set_title("Detection against area fraction")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def _pct(x: float) -> str:
    return "not reached" if not np.isfinite(x) else f"{100 * x:.0f}%"


def write_report(out_dir: str | Path, ds: Dataset, model: LaneModel, cv: CVResult, lod: dict,
                 target_false_alarm_rate: float, extra: dict | None = None) -> Path:
    """Write index.html, its PNGs and summary.json into out_dir; returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {"mean_spectra.png": plot_mean_spectra(ds, out / "mean_spectra.png"),
               "loadings.png": plot_loadings(model, out / "loadings.png"),
               "t2_q.png": plot_t2_q(cv, model, out / "t2_q.png")}
    roc_path, aucs = plot_roc(cv, out / "roc.png")
    figures["roc.png"] = roc_path
    figures["detection.png"] = plot_detection(lod, out / "detection.png")
    figures["false_alarm_tail.png"] = plot_false_alarm_tail(cv, target_false_alarm_rate, out / "false_alarm_tail.png")
    clean = cv.labels == CLEAN
    far = float(np.mean(cv.predicted[clean] != CLEAN)) if cv.predicted is not None else float("nan")
    rows, cols, cm = confusion_matrix(cv.labels, cv.predicted)
    detection = {c: float(np.mean(cv.predicted[cv.labels == c] != CLEAN)) for c in rows if c != CLEAN}
    summary = {"model": model.describe(), "dataset": ds.summary(), "target_false_alarm_rate": target_false_alarm_rate,
               "threshold_scale": cv.threshold_scale, "cv_false_alarm_rate": far, "cv_detection_rate": detection,
               "auc": aucs, "lod": lod["lod"], "lod_level": lod["level"],
               "confusion": {"rows": rows, "cols": cols, "counts": cm.tolist()}, **(extra or {})}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    e = html.escape
    cm_html = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>"
    for r, row in zip(rows, cm):
        cm_html += f"<tr><th>{e(r)}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
    det_html = "".join(f"<tr><td>{e(c)}</td><td>{100 * v:.1f}%</td><td>{aucs.get(c, float('nan')):.4f}</td>"
                       f"<td>{_pct(lod['lod'].get(c, float('nan')))}</td></tr>" for c, v in detection.items())
    d = model.describe()
    n_clean = int(np.sum(clean & np.isfinite(cv.raw_score)))
    tail_note = (f"{n_clean} out-of-fold clean spectra show rates down to {1 / max(n_clean, 1):.1g}; the target "
                 f"{target_false_alarm_rate:g} is read from the fitted tail"
                 + (" beyond the data: check it on lots the calibration never saw (orelane spectral validate)."
                    if n_clean * target_false_alarm_rate < 5 else " within the data."))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Calibration report {e(model.model_id)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}} img{{max-width:100%}}</style></head><body>
<h1>Calibration report: {e(model.model_id)}</h1>
<p>Model version <code>{e(model.version)}</code>, format {d['format']}, {d['bands']} bands
{d['range_nm'][0]:.0f}-{d['range_nm'][1]:.0f} nm, preprocessing {e(' → '.join(d['steps']))},
limits {e(model.monitor.method)} at alpha {model.monitor.alpha:g}, threshold scale {cv.threshold_scale:.3f}.</p>
<p>Dataset: {len(ds)} spectra in {np.unique(ds.groups).size} lots. Cross-validation by lot
({int(cv.fold.max()) + 1} folds; no lot on both sides).</p>
<h2>False alarms and detection (out-of-fold)</h2>
<p>Target false-alarm rate {target_false_alarm_rate:g}; measured on held-out clean ore: {far:.5f}
({int(np.sum(cv.predicted[clean] != CLEAN))} of {int(clean.sum())}).</p>
<table><tr><th>class</th><th>detected (all fractions)</th><th>ROC AUC</th>
<th>LOD ({100 * lod['level']:.0f}% detection)</th></tr>{det_html}</table>
<h2>Confusion matrix (out-of-fold, at the chosen threshold)</h2><table>{cm_html}</table>
<h2>Figures</h2>
<h3>Mean spectra per class</h3><img src="mean_spectra.png" alt="mean spectra">
<h3>PCA loadings</h3><img src="loadings.png" alt="loadings">
<h3>T2-Q plot with limits</h3><img src="t2_q.png" alt="T2-Q plot">
<h3>ROC</h3><img src="roc.png" alt="ROC">
<h3>False-alarm rate against threshold</h3><img src="false_alarm_tail.png" alt="false-alarm rate against threshold">
<p>{e(tail_note)}</p>
<h3>Detection against area fraction</h3><img src="detection.png" alt="detection against area fraction">
</body></html>
"""
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
