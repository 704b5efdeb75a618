"""Model files: round trip, content hash, tamper detection, HMAC signing, unknown formats, bad input."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from spectral import model, synth
from spectral.model import LaneModel, ModelFileError


def test_round_trip_keeps_version_and_scores(tmp_path, lane_model, instrument, references):
    path = lane_model.save(tmp_path / "m.npz", key=None)
    loaded = LaneModel.load(path, key=None)
    assert loaded.version == lane_model.version and loaded.class_names == lane_model.class_names
    counts = synth.lane_counts(instrument, synth.ore_reflectance(instrument.wavelengths_nm, 200,
                                                                 np.random.default_rng(0)), np.random.default_rng(1))
    a, b = lane_model.score(counts, *references), loaded.score(counts, *references)
    np.testing.assert_array_equal(a.decision, b.decision)
    np.testing.assert_array_equal(a.anomaly_score, b.anomaly_score)
    meta = loaded.metadata
    assert {"created_utc", "training_data_sha256", "params"} <= set(meta)


def _rewrite(data: bytes, member: str, transform) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            raw = src.read(info.filename)
            if info.filename == member:
                raw = transform(raw)
            dst.writestr(info.filename, raw)
    return out.getvalue()


def test_altered_array_is_refused_with_hash_mismatch(lane_model):
    data = lane_model.to_bytes(key=None)

    def bump(raw: bytes) -> bytes:
        arr = np.load(io.BytesIO(raw))
        arr = arr.copy()
        arr.flat[0] += 1e-3
        buf = io.BytesIO()
        np.save(buf, arr)
        return buf.getvalue()

    bad = _rewrite(data, "pca_mean.npy", bump)
    with pytest.raises(ModelFileError, match="content hash mismatch"):
        LaneModel.from_bytes(bad, key=None)


def test_signed_model_loads_with_key_and_refuses_wrong_or_missing(lane_model, monkeypatch):
    monkeypatch.delenv(model.KEY_ENV, raising=False)
    signed = lane_model.to_bytes(key="site-secret")
    assert LaneModel.from_bytes(signed, key="site-secret").version == lane_model.version
    with pytest.raises(ModelFileError, match="signature does not match"):
        LaneModel.from_bytes(signed, key="another-secret")
    unsigned = lane_model.to_bytes(key=None)
    with pytest.raises(ModelFileError, match="not signed"):
        LaneModel.from_bytes(unsigned, key="site-secret")
    monkeypatch.setenv(model.KEY_ENV, "site-secret")
    with pytest.raises(ModelFileError, match="not signed"):
        LaneModel.from_bytes(unsigned)
    assert LaneModel.from_bytes(signed).version == lane_model.version


def test_rehashed_tampering_is_caught_by_the_signature(lane_model):
    """An attacker who edits metadata and recomputes the hash still lacks the key."""
    signed = lane_model.to_bytes(key="k")

    def edit(raw: bytes) -> bytes:
        meta = json.loads(np.load(io.BytesIO(raw)).tobytes())
        meta["min_class_score"] = 0.99
        meta.pop("content_sha256")
        arrays = {n: np.load(io.BytesIO(zipfile.ZipFile(io.BytesIO(signed)).read(n)))
                  for n in zipfile.ZipFile(io.BytesIO(signed)).namelist() if n not in ("meta.npy", "signature.npy")}
        meta["content_sha256"] = model._content_hash(meta, {n[:-4]: a for n, a in arrays.items()})
        buf = io.BytesIO()
        np.save(buf, model._json_bytes(meta))
        return buf.getvalue()

    with pytest.raises(ModelFileError, match="signature does not match"):
        LaneModel.from_bytes(_rewrite(signed, "meta.npy", edit), key="k")


@pytest.mark.parametrize("fmt, message", [(1, "re-export"), (3, "newer orelane"), ("x", "format")])
def test_unknown_format_is_refused_clearly(lane_model, fmt, message):
    def edit(raw: bytes) -> bytes:
        meta = json.loads(np.load(io.BytesIO(raw)).tobytes())
        meta["format"] = fmt
        buf = io.BytesIO()
        np.save(buf, model._json_bytes(meta))
        return buf.getvalue()

    with pytest.raises(ModelFileError, match=message):
        LaneModel.from_bytes(_rewrite(lane_model.to_bytes(key=None), "meta.npy", edit), key=None)


def test_garbage_file_is_not_a_model(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ModelFileError, match="not an orelane model"):
        LaneModel.load(path, key=None)


def test_loading_and_scoring_import_neither_sklearn_nor_matplotlib(tmp_path, lane_model):
    import subprocess
    import sys

    path = lane_model.save(tmp_path / "m.npz", key=None)
    code = ("import sys, numpy as np\nfrom spectral.model import LaneModel\nfrom spectral import synth\n"
            f"m = LaneModel.load({str(path)!r}, key=None)\ninst = synth.Instrument(synth.wavelength_grid())\n"
            "c = inst.counts(synth.ore_reflectance(inst.wavelengths_nm, 10, np.random.default_rng(0)), "
            "np.random.default_rng(1))\nm.score(c, inst.dark_reference(), inst.white_reference())\n"
            "bad = [m for m in ('sklearn', 'matplotlib', 'scipy') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": ".", "PATH": ""})


# ---------------------------------------------------------------- bad input


def test_wrong_band_count_names_the_model_grid(lane_model, references):
    with pytest.raises(ValueError, match=r"223 bands; model synthetic-v1 expects 224 \(900-1700 nm\)"):
        lane_model.score(np.zeros((3, 223), np.uint16), *references)


def test_grid_not_covering_the_model_range_is_refused(lane_model):
    with pytest.raises(ValueError, match="covers 950.0-1700.0 nm"):
        lane_model.check_grid(np.linspace(950, 1700, 224))
    lane_model.check_grid(np.linspace(880, 1720, 256))  # another instrument that covers it is fine


def test_other_instrument_grid_is_resampled(lane_model):
    other = synth.Instrument(np.linspace(880, 1720, 256))
    rng = np.random.default_rng(4)
    counts = synth.lane_counts(other, synth.ore_reflectance(other.wavelengths_nm, 2000, rng), rng)
    s = lane_model.score(counts, other.dark_reference(), other.white_reference(), other.wavelengths_nm)
    assert np.mean(s.decision != 0) < 0.01
    plastic = synth.lane_counts(other, synth.mixed_reflectance("plastic", 0.5, other.wavelengths_nm, 200, rng), rng)
    s = lane_model.score(plastic, other.dark_reference(), other.white_reference(), other.wavelengths_nm)
    assert np.mean(s.decision != 0) > 0.95


def test_nan_and_saturated_spectra_are_flagged_not_scored(lane_model, instrument, references):
    rng = np.random.default_rng(5)
    counts = synth.lane_counts(instrument, synth.ore_reflectance(instrument.wavelengths_nm, 4, rng), rng)
    counts = counts.astype(np.float32)
    counts[1, 10] = np.nan
    counts[2, 100] = 65535
    s = lane_model.score(counts, *references)
    assert list(s.flags) == [0, model.FLAG_NONFINITE, model.FLAG_SATURATED, 0]
    assert np.isnan(s.anomaly_score[1:3]).all() and list(s.decision[1:3]) == [model.DECISION_UNKNOWN] * 2
    assert np.isfinite(s.anomaly_score[[0, 3]]).all()


@pytest.mark.parametrize("dark_white, message", [
    ((np.zeros(224), np.zeros(224)), "not above dark"),
    ((np.full(224, -1.0), np.full(224, 40000.0)), "negative"),
    ((np.full(224, np.nan), np.full(224, 40000.0)), "NaN"),
    ((np.zeros(200), np.full(224, 40000.0)), "200 bands"),
])
def test_bad_references_are_refused(lane_model, dark_white, message):
    with pytest.raises(ValueError, match=message):
        lane_model.score(np.zeros((2, 224), np.uint16), *dark_white)


def test_wrong_shape_is_refused(lane_model, references):
    with pytest.raises(ValueError, match="2-D array"):
        lane_model.score(np.zeros(224, np.uint16), *references)


def test_flat_spectrum_is_never_called_clean(lane_model, references):
    s = lane_model.score(np.full((1, 224), 30000, np.uint16), *references)
    assert s.decision[0] != model.DECISION_CLEAN
