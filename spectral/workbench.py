"""`orelane spectral ...`: the calibration workbench on the command line.

    simulate OUT.npz            make a simulated calibration dataset (lots, brands, contaminants)
    import SRC.csv OUT.npz      check a CSV of labelled reflectance and store it in the project format
    fit DATA --out MODEL.npz    grouped CV, threshold for a target false-alarm rate, final fit, save
    report DATA --out DIR       grouped CV and the HTML report with PNG figures (no model saved)
    validate DATA --model M     score a dataset with an existing model file
    inspect MODEL.npz           show a model's identity, grid, limits and training record; checks hash/signature

Model files are signed when ORELANE_MODEL_KEY is set. Exit codes: 0 ok, 1 bad input or failed check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from spectral import dataset as dataset_io
from spectral import validation
from spectral.model import DECISION_CLEAN, LaneModel, ModelFileError, fit_lane_model


def _progress():
    """Progress lines on stderr, so stdout stays for results."""
    started = time.monotonic()

    def report(stage: str, done: int, total: int) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {stage}: {done}/{total}", file=sys.stderr, flush=True)

    return report


def _fit_params(args) -> dict:
    return {"n_components": args.components, "alpha": args.alpha, "limit_method": args.limits,
            "pls_components": args.pls_components, "min_class_score": args.min_class_score}


def _calibrate(args, ds: dataset_io.Dataset):
    progress = _progress()
    cv = validation.cross_validate(ds, args.folds, args.seed, progress, **_fit_params(args))
    threshold = validation.select_threshold(cv, args.target_far)
    validation.apply_threshold(cv, ds, threshold)
    materials = sorted(set(ds.labels.tolist()) - {validation.CLEAN})
    bins = np.linspace(0, 1, 21)
    lod = {"fractions": [], "rates": {}, "lod": {}, "level": args.lod_level}
    for material in materials:
        rows = ds.labels == material
        centres, rates, counts = validation.detection_by_fraction(ds.area_fraction[rows],
                                                                  cv.predicted[rows] != validation.CLEAN, bins)
        lod["fractions"] = centres.tolist()
        lod["rates"][material] = rates.tolist()
        lod["lod"][material] = validation.limit_of_detection(centres, rates, args.lod_level)
    return cv, threshold, lod


def _final_model(args, ds, threshold: float) -> LaneModel:
    model = fit_lane_model(ds.reflectance, ds.labels, ds.wavelengths_nm, brands=ds.brands, model_id=args.model_id,
                           metadata={"target_false_alarm_rate": args.target_far, "cv_folds": args.folds},
                           **_fit_params(args))
    model.monitor.threshold_scale = threshold
    model._content_sha256 = None
    return model


def _print_summary(cv, threshold, lod, target) -> None:
    clean = cv.labels == validation.CLEAN
    print(f"threshold_scale={threshold:.4f} target_far={target:g} "
          f"cv_far={np.mean(cv.predicted[clean] != validation.CLEAN):.6f} (n_clean={int(clean.sum())})")
    for material in sorted(lod["lod"]):
        rows = cv.labels == material
        lod_value = lod["lod"][material]
        print(f"  {material:10s} detected={np.mean(cv.predicted[rows] != validation.CLEAN):.3f} "
              f"named_correctly={np.mean(cv.predicted[rows] == material):.3f} "
              f"lod={'not reached' if not np.isfinite(lod_value) else f'{100 * lod_value:.0f}%'}")


def cmd_simulate(args) -> int:
    from spectral import synth

    inst = synth.Instrument(synth.wavelength_grid(args.bands))
    sim = synth.simulate_lots(inst, np.random.default_rng(args.seed), args.lots, args.per_lot,
                              contaminant_share=args.contaminant_share)
    ds = dataset_io.from_simulation(sim, wavelengths_nm=inst.wavelengths_nm)
    dataset_io.save_npz(ds, args.out)
    print(json.dumps(ds.summary()))
    return 0


def cmd_import(args) -> int:
    ds = dataset_io.load_csv(Path(args.src))
    dataset_io.save_npz(ds, args.out)
    print(json.dumps(ds.summary()))
    return 0


def cmd_fit(args) -> int:
    ds = dataset_io.load(args.data)
    cv, threshold, lod = _calibrate(args, ds)
    _print_summary(cv, threshold, lod, args.target_far)
    model = _final_model(args, ds, threshold)
    model.metadata["cv"] = {"false_alarm_rate": float(np.mean(cv.predicted[cv.labels == "ore"] != "ore")),
                            "lod": lod["lod"]}
    path = model.save(args.out)
    print(f"model {model.version} written to {path}")
    if args.report:
        from spectral.report import write_report

        page = write_report(args.report, ds, model, cv, lod, args.target_far)
        print(f"report written to {page}")
    return 0


def cmd_report(args) -> int:
    from spectral.report import write_report

    ds = dataset_io.load(args.data)
    cv, threshold, lod = _calibrate(args, ds)
    _print_summary(cv, threshold, lod, args.target_far)
    model = _final_model(args, ds, threshold)
    page = write_report(args.out, ds, model, cv, lod, args.target_far)
    print(f"report written to {page}")
    return 0


def cmd_validate(args) -> int:
    ds = dataset_io.load(args.data)
    model = LaneModel.load(args.model)
    if not np.allclose(ds.wavelengths_nm, model.wavelengths_nm, atol=0.05):
        model.check_grid(ds.wavelengths_nm)
        from spectral import preprocess

        refl = ds.reflectance @ preprocess.resample_matrix(ds.wavelengths_nm, model.wavelengths_nm)
    else:
        refl = ds.reflectance
    s = model.score_features(refl)
    names = np.array([*model.class_names, validation.UNKNOWN])
    predicted = np.where(s.decision == DECISION_CLEAN, validation.CLEAN,
                         names[np.where(s.class_index == 255, len(names) - 1, s.class_index)])
    clean = ds.labels == validation.CLEAN
    print(f"model {model.version}: false_alarm_rate={np.mean(predicted[clean] != validation.CLEAN):.6f} "
          f"(n_clean={int(clean.sum())})")
    for material in sorted(set(ds.labels.tolist()) - {validation.CLEAN}):
        rows = ds.labels == material
        print(f"  {material:10s} detected={np.mean(predicted[rows] != validation.CLEAN):.3f} "
              f"named_correctly={np.mean(predicted[rows] == material):.3f} n={int(rows.sum())}")
    rows, cols, cm = validation.confusion_matrix(ds.labels, predicted)
    print("confusion (rows true, columns predicted): " + " ".join(cols))
    for r, line in zip(rows, cm):
        print(f"  {r:10s} " + " ".join(str(v) for v in line))
    return 0


def cmd_inspect(args) -> int:
    model = LaneModel.load(args.model)
    print(json.dumps(model.describe(), indent=2, default=float))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orelane spectral", description="NIR calibration workbench",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="make a simulated calibration dataset (.npz)")
    s.add_argument("out")
    s.add_argument("--lots", type=int, default=40)
    s.add_argument("--per-lot", type=int, default=150)
    s.add_argument("--bands", type=int, default=224)
    s.add_argument("--contaminant-share", type=float, default=0.3)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("import", help="check a labelled CSV and store it as .npz")
    s.add_argument("src")
    s.add_argument("out")
    s.set_defaults(func=cmd_import)

    def calibration_args(sp):
        sp.add_argument("data", help="dataset (.npz or .csv)")
        sp.add_argument("--components", type=int, default=5, help="clean-ore PCA components")
        sp.add_argument("--alpha", type=float, default=1e-4, help="significance of the fitted limits")
        sp.add_argument("--limits", choices=("dd-simca", "chi2"), default="dd-simca")
        sp.add_argument("--pls-components", type=int, default=10)
        sp.add_argument("--min-class-score", type=float, default=0.5)
        sp.add_argument("--target-far", type=float, default=1e-4, help="target false-alarm rate on clean ore")
        sp.add_argument("--folds", type=int, default=5)
        sp.add_argument("--lod-level", type=float, default=0.95, help="detection rate that defines the LOD")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--model-id", default="lane-model")

    s = sub.add_parser("fit", help="cross-validate, set the threshold, fit and save a model")
    calibration_args(s)
    s.add_argument("--out", required=True, help="model file to write")
    s.add_argument("--report", help="also write the HTML report into this folder")
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("report", help="cross-validate and write the HTML report")
    calibration_args(s)
    s.add_argument("--out", required=True, help="report folder")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("validate", help="score a dataset with a model file")
    s.add_argument("data")
    s.add_argument("--model", required=True)
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("inspect", help="describe a model file (checks its hash and signature)")
    s.add_argument("model")
    s.set_defaults(func=cmd_inspect)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, ModelFileError) as exc:
        print(f"orelane spectral {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
