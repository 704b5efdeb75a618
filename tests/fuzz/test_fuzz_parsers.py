"""Every parser that takes outside bytes answers garbage with its own clear error, never a crash.

The contract's decoders (MQTT payloads, register blocks, topics) are fuzzed in tests/orelane/test_contract.py;
this file covers the rest: site config files, CSV spectra imports, barcodes and Modbus register words.
Run longer with HYPOTHESIS_PROFILE=thorough.
"""

from __future__ import annotations

import string
import tomllib

from hypothesis import given, strategies as st

from orelane import config
from orelane.contract import ContractError
from orelane.contract.registers import BELT_SCALE, RADIATION_PORTAL, SAMPLER_STATUS
from sampling_robot.registry import make_barcode, parse_barcode
from spectral import dataset

VALID_SITE = """
[site]
id = "port-a"
[[lane]]
id = "lane-1"
[lane.belt_scale]
host = "10.0.0.1"
port = 502
[lane.robot]
host = "10.0.0.2"
port = 502
"""

toml_values = st.recursive(
    st.none().map(lambda _: '""') | st.integers().map(str) | st.floats(allow_nan=True).map(repr)
    | st.text(max_size=10).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"')
    | st.booleans().map(lambda b: "true" if b else "false"),
    lambda inner: st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"), max_leaves=5)


@given(text=st.text(max_size=400))
def test_random_text_as_a_config_file_gives_a_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "site.toml"
    path.write_text(text)
    try:
        config.load(path, environ={})
    except config.ConfigError as exc:
        assert str(path) in str(exc)


@given(key=st.sampled_from(["segment_length_m", "cutter_distance_m", "routine_increment_t", "event_open_score",
                            "radiation_cut", "brand_min_spectra", "id", "unknown_key"]), value=toml_values)
def test_any_value_for_a_lane_key_is_accepted_or_refused_by_name(tmp_path_factory, key, value):
    text = VALID_SITE.replace('id = "lane-1"', 'id = "lane-1"\n' + f"{key} = {value}", 1)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    path = tmp_path_factory.mktemp("cfg") / "site.toml"
    path.write_text(text)
    try:
        config.load(path, environ={})
    except config.ConfigError as exc:
        assert key in str(exc) or "lane" in str(exc)


csv_cells = st.text(alphabet=string.digits + ".-e,;\t \"abcnNaI", max_size=12)


@given(rows=st.lists(st.lists(csv_cells, max_size=8), max_size=6))
def test_random_csv_import_gives_a_value_error_or_a_dataset(rows):
    text = "\n".join(",".join(r) for r in rows) + "\n"
    try:
        ds = dataset.load_csv(text + "\n", source="fuzz.csv")
    except ValueError as exc:
        assert "fuzz.csv" in str(exc) or str(exc)
        return
    assert ds.spectra.shape[0] == len(ds.labels)


@given(text=st.text(max_size=40))
def test_random_scanner_input_is_a_barcode_or_a_clear_refusal(text):
    try:
        lane, sample_id = parse_barcode(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert parse_barcode(make_barcode(lane, sample_id)) == (lane, sample_id)


@given(lane=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,11}", fullmatch=True), sample_id=st.integers(1, 2**32 - 1))
def test_every_barcode_made_parses_back(lane, sample_id):
    assert parse_barcode(make_barcode(lane, sample_id))[1] == sample_id


@given(data=st.data())
def test_random_register_words_decode_or_are_refused_by_register(data):
    for regmap in (BELT_SCALE, RADIATION_PORTAL, SAMPLER_STATUS):
        words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=regmap.count, max_size=regmap.count))
        try:
            values = regmap.decode(words)
        except ContractError as exc:
            assert regmap.device in str(exc)
            continue
        assert set(values) == {r.name for r in regmap.registers}
