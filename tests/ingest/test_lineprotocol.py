"""Line protocol: escaping of every character the protocol names, refusal of what it cannot carry, one exact
number format, and the vectorised spectrum-results encoder byte for byte equal to the scalar one."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ingest import lineprotocol as lp
from ingest.lineprotocol import LineProtocolError, encode, encode_lenient, encode_point, encode_spectrum_results
from orelane.contract import ContractError, messages as m
from orelane.contract.measurements import Point, points_for

X = "1.500000000000000000e+00"  # 1.5 as every float is written


# ------------------------------------------------------------------ a strict reader, to check round trips

def _split_unescaped(text: str, separators: str) -> tuple[str, str, str]:
    """(head, separator, rest) at the first separator not preceded by a backslash escape."""
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 2
            continue
        if text[i] in separators:
            return text[:i], text[i], text[i + 1:]
        i += 1
    return text, "", ""


def _unescape(text: str, specials: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in specials:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_line(line: str) -> Point:
    """Read one line the way InfluxDB's parser does (enough of it for what the encoder writes)."""
    series, sep, rest = _split_unescaped(line, " ")
    assert sep == " ", line
    measurement, sep, tagset = _split_unescaped(series, ",")
    tags = {}
    while sep:
        pair, sep, tagset = _split_unescaped(tagset, ",")
        key, eq, value = _split_unescaped(pair, "=")
        assert eq == "=", pair
        tags[_unescape(key, ",= ")] = _unescape(value, ",= ")
    fields = {}
    while True:
        key, eq, rest = _split_unescaped(rest, "=")
        assert eq == "=", rest
        if rest.startswith('"'):
            i, chars = 1, []
            while rest[i] != '"':
                if rest[i] == "\\" and rest[i + 1] in '"\\':
                    i += 1
                chars.append(rest[i])
                i += 1
            value, rest = "".join(chars), rest[i + 1:]
        else:
            m_ = re.match(r"[^, ]+", rest)
            raw, rest = m_.group(), rest[m_.end():]
            value = (True if raw == "true" else False if raw == "false" else int(raw[:-1]) if raw.endswith("i")
                     else float(raw))
        fields[_unescape(key, ",= ")] = value
        if rest.startswith(","):
            rest = rest[1:]
            continue
        assert rest.startswith(" "), rest
        return Point(_unescape(measurement, ", "), tags, fields, int(rest[1:]))


# ------------------------------------------------------------------ escaping

@pytest.mark.parametrize("tags, fields, expected", [
    ({"lane": "lane 1"}, {"x": 1.5}, rf"m,lane=lane\ 1 x={X} 7"),
    ({"lane": "a,b=c"}, {"x": 2}, r"m,lane=a\,b\=c x=2i 7"),
    ({"a b": "v", "c,d": "w", "e=f": "x"}, {"x": 2}, r"m,a\ b=v,c\,d=w,e\=f=x x=2i 7"),
    ({"lane": "l1"}, {"note": 'say "hi" \\ bye'}, r'm,lane=l1 note="say \"hi\" \\ bye" 7'),
    ({"lane": "l1"}, {"note": "a,b=c d"}, 'm,lane=l1 note="a,b=c d" 7'),  # nothing else is special in strings
    ({"lane": "Zhanjiang-港"}, {"ok": True, "港口": "日照 港"}, 'm,lane=Zhanjiang-港 ok=true,港口="日照 港" 7'),
    ({"lane": "", "site": "s"}, {"x": 1.5}, f"m,site=s x={X} 7"),  # empty tag values are left out
    ({"lane": r"C:\ore"}, {"x": 2}, r"m,lane=C:\ore x=2i 7"),  # a backslash before an ordinary character stays
    ({"k": "v"}, {"a b": 1, "c,d=e": False}, r"m,k=v a\ b=1i,c\,d\=e=false 7"),
])
def test_escaping(tags, fields, expected):
    assert encode_point(Point("m", tags, fields, 7)) == expected


def test_measurement_escapes_comma_and_space_but_not_equals():
    assert encode_point(Point("a b,c=d", {}, {"x": 1}, 1)) == r"a\ b\,c=d x=1i 1"


@pytest.mark.parametrize("point, message", [
    (Point("m", {"lane": "a\nb"}, {"x": 1}, 1), "tag value 'a\\\\nb' contains a newline"),
    (Point("m", {"la\nne": "a"}, {"x": 1}, 1), "tag key .* contains a newline"),
    (Point("m\n", {}, {"x": 1}, 1), "measurement .* contains a newline"),
    (Point("m", {}, {"x\ny": 1}, 1), "field key .* contains a newline"),
    (Point("m", {}, {"note": "two\nlines"}, 1), "string field value .* contains a newline"),
    (Point("m", {"lane": "a\tb"}, {"x": 1}, 1), "control character '\\\\t'"),
    (Point("m", {"lane": "a\\"}, {"x": 1}, 1), "backslash at the end"),
    (Point("m", {"lane": "a\\,b"}, {"x": 1}, 1), "backslash before ','"),
    (Point("m", {"lane": "a\\\\b"}, {"x": 1}, 1), "backslash before '\\\\\\\\'"),
    (Point("m\\ x", {}, {"x": 1}, 1), "backslash before ' '"),
    (Point("", {}, {"x": 1}, 1), "measurement is empty"),
    (Point("#m", {}, {"x": 1}, 1), "comment"),
    (Point("_m", {}, {"x": 1}, 1), "reserves"),
    (Point("m", {"_k": "v"}, {"x": 1}, 1), "reserves"),
    (Point("m", {}, {}, 1), "no fields"),
    (Point("m", {}, {"x": float("nan")}, 1), "not finite"),
    (Point("m", {}, {"x": float("inf")}, 1), "not finite"),
    (Point("m", {}, {"x": 2**63}, 1), "does not fit int64"),
    (Point("m", {}, {"x": [1]}, 1), "line protocol carries floats"),
    (Point("m", {"lane": "\ud800"}, {"x": 1}, 1), "lone surrogate"),
    (Point("m", {}, {"x": 1}, 2**63), "timestamp"),
])
def test_what_line_protocol_cannot_carry_is_refused_with_the_element_named(point, message):
    with pytest.raises(LineProtocolError, match=message):
        encode_point(point)


def test_lenient_encoding_keeps_the_good_points_and_names_the_bad():
    points = [Point("m", {"k": "v"}, {"x": 1}, 1), Point("m", {"k": "a\nb"}, {"x": 1}, 2),
              Point("m", {"k": "w"}, {"x": 2}, 3)]
    encoded = encode_lenient(points)
    assert encoded.body == b"m,k=v x=1i 1\nm,k=w x=2i 3" and encoded.points == 2
    assert list(encoded.refused) == [1] and "newline" in encoded.refused[1]


def test_batch_is_newline_separated_utf8():
    assert encode([Point("m", {"k": "v"}, {"x": 1}, 1), Point("m", {"k": "w"}, {"x": 2}, 2)]) == \
        b"m,k=v x=1i 1\nm,k=w x=2i 2"


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
_field_values = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**63, 2**63 - 1),
                          st.booleans(), _text)


@given(st.builds(Point, _text, st.dictionaries(_text, _text, max_size=4),
                 st.dictionaries(_text, _field_values, min_size=1, max_size=4), st.integers(-2**63, 2**63 - 1)))
@settings(max_examples=400)
def test_every_point_encodes_to_a_line_that_reads_back_as_itself_or_is_refused(point):
    try:
        line = encode_point(point)
    except LineProtocolError:
        return
    assert "\n" not in line
    back = parse_line(line)
    assert back.measurement == point.measurement and back.time_ns == point.time_ns
    assert back.tags == {k: v for k, v in point.tags.items() if v != ""}
    assert back.fields == point.fields


# ------------------------------------------------------------------ numbers

@given(st.floats(allow_nan=False, allow_infinity=False))
@settings(max_examples=500)
def test_floats_are_24_characters_and_read_back_exactly(x):
    text = lp.format_float(x)
    assert len(text) == lp.FLOAT_WIDTH and float(text) == x and math.copysign(1, float(text)) == math.copysign(1, x)
    assert re.fullmatch(r"-?\d\.\d+e[+-]\d{2,3}", text)


@given(st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                          st.floats(allow_nan=False, allow_infinity=False, width=32),
                          st.floats(1e-17, 1e18), st.integers(-10**17, 10**17).map(float)), max_size=60))
@settings(max_examples=300)
def test_vectorised_floats_equal_the_scalar_format(values):
    block = lp.format_floats(np.array(values, dtype=np.float64))
    assert [bytes(row).decode() for row in block] == [lp.format_float(v) for v in values]


def test_vectorised_floats_equal_the_scalar_format_on_ties_edges_and_a_million_randoms():
    rng = np.random.default_rng(20240611)
    values = np.concatenate([
        rng.standard_normal(300_000) * 10.0 ** rng.integers(-30, 30, 300_000),
        rng.random(300_000).astype(np.float32).astype(np.float64) * 3,  # float32 data: many exact rounding ties
        (rng.integers(0, 2**24, 300_000) / 2.0 ** rng.integers(1, 60, 300_000)),  # dyadic: ties at the 17th digit
        rng.random(100_000) * 1e6,
        [0.0, -0.0, 1e-16, -1e-16, 1e17, 9.999999999999999e16, 1e16, 0.1, 0.5, 5e-324, 2.2250738585072014e-308,
         1.7976931348623157e308, 0.30000000000000004, 123456789.0, -2.5],
    ])
    block = lp.format_floats(values)
    got = block.view(f"S{lp.FLOAT_WIDTH}").ravel()
    expected = np.array([lp.format_float(v).encode() for v in values.tolist()], dtype=f"S{lp.FLOAT_WIDTH}")
    assert np.array_equal(got, expected), [(a, b) for a, b in zip(got, expected) if a != b][:5]


@given(st.lists(st.integers(-2**63, 2**63 - 1), max_size=50))
def test_vectorised_integers_equal_str(values):
    v = np.array(values, dtype=np.int64)
    widths = lp.int_widths(v)
    block = lp.format_ints(v, widths)
    assert [bytes(row[lp.INT_WIDTH - w:]).decode() for row, w in zip(block, widths)] == [str(x) for x in values]


# ------------------------------------------------------------------ spectrum results, vectorised

def random_results(rng: np.random.Generator, n: int, classes: tuple[str, ...] = ("plastic", "wood", "rubber"),
                   model_version: str = "v1.2") -> m.SpectrumResults:
    k = len(classes)
    class_index = rng.choice(np.array(list(range(k)) + [m.NO_CLASS], dtype=np.uint8), n)
    return m.SpectrumResults(
        "lane-1", model_version, classes,
        rng.integers(0, 10 ** rng.integers(1, 19), n, dtype=np.uint64),  # seq widths vary
        rng.integers(1_600_000_000, 1_900_000_000, n) * 10**9 + rng.integers(0, 10**9, n),
        rng.standard_normal(n) * 10.0 ** rng.integers(-3, 6), rng.random(n).astype(np.float32) * 3,
        (rng.random(n) * 40).astype(np.float32), rng.exponential(size=n).astype(np.float32), class_index,
        rng.integers(0, 3, n).astype(np.uint8), rng.random((n, k)).astype(np.float32))


def scalar_reference(site: str, lane: str, res: m.SpectrumResults):
    """The scalar path: the contract's points, one by one through encode_point."""
    return encode_lenient(points_for(site, lane, "results/spectra", res.to_bytes()))


@pytest.mark.parametrize("seed", range(12))
def test_vectorised_results_are_byte_for_byte_the_scalar_encoding(seed):
    rng = np.random.default_rng(seed)
    res = random_results(rng, int(rng.integers(1, 3000)))
    res = m.SpectrumResults.from_bytes(res.to_bytes())  # read-only views, as ingest gets them
    vectorised = encode_spectrum_results("port-a", "lane-1", res)
    reference = scalar_reference("port-a", "lane-1", res)
    assert vectorised.body == reference.body
    assert vectorised.points == reference.points == len(res) and not vectorised.refused


@given(st.integers(0, 2**32 - 1), st.integers(0, 40), st.sampled_from([("a b", "c,d", "e=f"), ("港", "x"), ()]),
       st.sampled_from(["v1", "v 2,=", "Zhanjiang-港"]))
@settings(max_examples=60)
def test_vectorised_results_equal_the_scalar_encoding_for_any_shape(seed, n, classes, model_version):
    res = random_results(np.random.default_rng(seed), n, classes, model_version)
    vectorised = encode_spectrum_results("port-a", "lane-1", res)
    reference = scalar_reference("port-a", "lane-1", res)
    assert (vectorised.body, vectorised.points) == (reference.body, reference.points)


def test_rows_the_protocol_cannot_carry_are_refused_by_the_vectorised_encoder():
    rng = np.random.default_rng(5)
    res = random_results(rng, 50)
    seq = res.seq.copy()
    seq[3] = 2**64 - 1  # beyond int64
    anomaly = res.anomaly_score.copy()
    anomaly[7] = np.nan
    t2 = res.t2.copy()
    t2[9] = np.inf
    res = m.SpectrumResults(res.lane, res.model_version, res.class_names, seq, res.timestamp_ns,
                            res.belt_position_m, anomaly, t2, res.q, res.class_index, res.decision, res.class_scores)
    vectorised = encode_spectrum_results("port-a", "lane-1", res)
    assert vectorised.points == 47 and sorted(vectorised.refused) == [3, 7, 9]
    good = np.setdiff1d(np.arange(50), [3, 7, 9])
    clean = m.SpectrumResults(res.lane, res.model_version, res.class_names, *(
        getattr(res, name)[good] for name in ("seq", "timestamp_ns", "belt_position_m", "anomaly_score", "t2", "q",
                                              "class_index", "decision", "class_scores")))
    assert vectorised.body == scalar_reference("port-a", "lane-1", clean).body
    # on the wire the contract refuses such a batch outright (the edge refuses unscorable spectra itself)
    with pytest.raises(ContractError, match="NaN or infinity"):
        m.SpectrumResults.from_bytes(res.to_bytes())


def test_a_class_name_with_a_newline_refuses_only_its_rows():
    rng = np.random.default_rng(6)
    res = random_results(rng, 40, classes=("ok", "bad\nname"))
    vectorised = encode_spectrum_results("port-a", "lane-1", res)
    reference = scalar_reference("port-a", "lane-1", res)
    assert vectorised.body == reference.body and vectorised.refused == reference.refused
    bad_rows = {i for i in range(40) if res.class_index[i] == 1}
    assert set(vectorised.refused) == bad_rows and all("newline" in r for r in vectorised.refused.values())


def test_results_of_several_messages_encode_as_one_batch():
    rng = np.random.default_rng(8)
    parts = [random_results(rng, n) for n in (3, 0, 17, 250)]
    joined = encode_spectrum_results("s", "l", lp.concat_results(parts))
    assert joined.body == b"\n".join(filter(None, (encode_spectrum_results("s", "l", p).body for p in parts)))
