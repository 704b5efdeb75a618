"""Calibration workflow on simulated lanes: grouped CV, false-alarm rate, LOD, report, CSV import, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from spectral import dataset, model, synth, validation, workbench


@pytest.fixture(scope="module")
def calibration_set(instrument) -> dataset.Dataset:
    sim = synth.simulate_lots(instrument, np.random.default_rng(21), n_lots=16, spectra_per_lot=100)
    return dataset.from_simulation(sim, wavelengths_nm=instrument.wavelengths_nm)


@pytest.fixture(scope="module")
def cv_result(calibration_set):
    cv = validation.cross_validate(calibration_set, n_splits=4)
    threshold = validation.select_threshold(cv, 1e-3)
    return validation.apply_threshold(cv, calibration_set, threshold)


def test_grouped_folds_never_split_a_lot():
    groups = np.repeat([f"lot{i}" for i in range(13)], 7)
    folds = validation.grouped_folds(groups, 5)
    seen = np.zeros(groups.size, int)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        seen[test] += 1
    assert np.all(seen == 1)


def test_too_few_lots_for_the_folds_is_an_error():
    with pytest.raises(ValueError, match="3 lots cannot make 5 folds"):
        validation.grouped_folds(np.array(["a", "b", "c"]), 5)


def test_cross_validation_scores_every_spectrum_with_a_model_that_never_saw_its_lot(calibration_set, cv_result):
    assert np.all(cv_result.fold >= 0)
    for k, m in enumerate(cv_result.models):
        assert m.model_id == f"cv-fold{k}"
    assert cv_result.predicted is not None and cv_result.predicted.shape == (len(calibration_set),)


def test_limits_give_about_the_nominal_false_alarm_rate_on_new_lots(instrument, references):
    """Fitted limits at alpha = 1 % give roughly 1 % false alarms on clean ore from lots never seen."""
    rng = np.random.default_rng(31)
    train = dataset.from_simulation(synth.simulate_lots(instrument, rng, 24, 120), wavelengths_nm=instrument.wavelengths_nm)
    m = model.fit_lane_model(train.reflectance, train.labels, train.wavelengths_nm, alpha=0.01)
    held = synth.simulate_lots(instrument, rng, 24, 400, contaminants=(), lot_prefix="new")
    far = np.mean(m.score(held.counts, *references).decision != model.DECISION_CLEAN)
    assert 0.002 < far < 0.05, far


def test_threshold_from_cross_validation_holds_on_new_lots(instrument, references, calibration_set, cv_result):
    m = model.fit_lane_model(calibration_set.reflectance, calibration_set.labels, calibration_set.wavelengths_nm)
    m.monitor.threshold_scale = cv_result.threshold_scale
    held = synth.simulate_lots(instrument, np.random.default_rng(32), 30, 400, contaminants=(), lot_prefix="new")
    far = np.mean(m.score(held.counts, *references).decision != model.DECISION_CLEAN)
    assert far <= 3e-3, far  # target 1e-3


def test_roc_and_confusion_matrix(cv_result):
    clean = cv_result.raw_score[cv_result.labels == "ore"]
    fpr, tpr, auc = validation.roc_curve(clean, cv_result.raw_score[cv_result.labels == "plastic"])
    assert fpr[0] == 0 and tpr[-1] == 1 and 0.9 < auc <= 1
    rows, cols, cm = validation.confusion_matrix(cv_result.labels, cv_result.predicted)
    assert rows[0] == "ore" and cols[-1] == "unknown" and cm.sum() == len(cv_result.labels)


def test_limit_of_detection_interpolates_the_crossing():
    f = np.array([0.05, 0.1, 0.15, 0.2, 0.25])
    assert validation.limit_of_detection(f, np.array([0.1, 0.5, 0.9, 0.97, 1.0])) == pytest.approx(0.15 + 0.05 * 5 / 7)
    assert np.isnan(validation.limit_of_detection(f, np.array([0.1, 0.2, 0.3, 0.4, 0.5])))
    assert validation.limit_of_detection(f, np.ones(5)) == 0.05


def test_simulated_lod_sweep_reports_each_material(lane_model, instrument):
    lod = validation.simulated_lod_sweep(lane_model, instrument, np.random.default_rng(3), ("plastic", "rubber"),
                                         fractions=np.array([0.05, 0.1, 0.2, 0.4, 0.6]), per_fraction=200)
    assert 0.02 < lod["lod"]["plastic"] < 0.3
    assert np.isnan(lod["lod"]["rubber"]) or lod["lod"]["rubber"] > lod["lod"]["plastic"]


def test_report_is_written_with_its_pngs(tmp_path, calibration_set, cv_result):
    pytest.importorskip("matplotlib")
    from spectral.report import write_report

    m = model.fit_lane_model(calibration_set.reflectance, calibration_set.labels, calibration_set.wavelengths_nm)
    lod = {"fractions": [0.1, 0.3], "rates": {"plastic": [0.5, 1.0]}, "lod": {"plastic": 0.2}, "level": 0.95}
    page = write_report(tmp_path / "rep", calibration_set, m, cv_result, lod, 1e-3)
    text = page.read_text()
    for png in ("mean_spectra.png", "loadings.png", "t2_q.png", "roc.png", "detection.png", "false_alarm_tail.png"):
        assert png in text
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "rep" / "summary.json").exists()


# ---------------------------------------------------------------- datasets and CSV


def test_npz_and_csv_round_trip(tmp_path, calibration_set):
    small = calibration_set.subset(np.arange(30))
    back = dataset.load(dataset.save_npz(small, tmp_path / "d.npz"))
    np.testing.assert_array_equal(back.reflectance, small.reflectance)
    assert list(back.groups) == list(small.groups)
    csv_back = dataset.load(dataset.to_csv(small, tmp_path / "d.csv"))
    np.testing.assert_allclose(csv_back.reflectance, small.reflectance, atol=1e-6)
    assert list(csv_back.labels) == list(small.labels)


@pytest.mark.parametrize("header, message", [
    ("label,lot,900,1000,950\n", "strictly increasing; 950 nm follows 1000 nm"),
    ("label,colour,900,1000\n", "column 2 'colour' is neither a wavelength"),
    ("lot,900,1000\n", "no label column"),
    ("label,900\n", "1 wavelength columns"),
])
def test_csv_with_bad_header_is_refused(header, message):
    body = "ore,l1,0.1,0.2,0.3\n" if header.count(",") == 4 else "ore,0.1,0.2\n"
    with pytest.raises(ValueError, match=message):
        dataset.load_csv(header + body)


def test_csv_with_bad_value_names_line_and_column():
    with pytest.raises(ValueError, match=r"line 3, column '1000': 'x' is not a number"):
        dataset.load_csv("label,900,1000\nore,0.1,0.2\nore,0.1,x\n")


# ---------------------------------------------------------------- CLI


def test_cli_simulate_fit_validate_inspect(tmp_path, capsys):
    data, mfile = tmp_path / "d.npz", tmp_path / "m.npz"
    assert workbench.main(["simulate", str(data), "--lots", "10", "--per-lot", "80", "--seed", "2"]) == 0
    assert workbench.main(["fit", str(data), "--out", str(mfile), "--folds", "3", "--target-far", "1e-3"]) == 0
    out = capsys.readouterr()
    assert "cross-validation: 3/3" in out.err and "threshold_scale=" in out.out
    assert workbench.main(["validate", str(data), "--model", str(mfile)]) == 0
    assert "false_alarm_rate=" in capsys.readouterr().out
    assert workbench.main(["inspect", str(mfile)]) == 0
    assert '"format": 2' in capsys.readouterr().out


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,colour,900,1000\nore,red,0.1,0.2\n")
    assert workbench.main(["import", str(bad), str(tmp_path / "x.npz")]) == 1
    assert "'colour' is neither a wavelength" in capsys.readouterr().err
