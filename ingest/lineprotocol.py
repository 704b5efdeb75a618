"""InfluxDB line protocol: exact escaping, one canonical number format, and a vectorised encoder for
spectrum-result batches.

Escaping follows the InfluxDB line protocol reference (v2 and 3): measurements
escape comma and space; tag keys, tag values and field keys escape comma, equals
sign and space; string field values escape double quote and backslash. What the
protocol cannot carry is refused with a `LineProtocolError` naming the element,
never written in a form the database would read differently:

- a newline (or any other control character) in a measurement, tag or field
  key, or tag value; a newline in a string field value (InfluxDB documents
  newlines in values as unsupported, and VictoriaMetrics splits lines on it);
- a backslash at the end of a name, or before a backslash or a character that
  must be escaped: InfluxDB 2.x keeps such a backslash while InfluxDB 3 and
  VictoriaMetrics drop it, so the stored name would depend on the database;
- an empty name, a measurement starting with '#' (a comment line) and names
  starting with '_' (reserved by InfluxDB).

Floats are written with 17 significant digits, correctly rounded, trailing
zeros removed (`format(x, ".16e")`): enough to read back the identical float64
in every database, and a fixed layout that numpy can produce for a whole
column at once. Integers carry the `i` suffix and must fit int64.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from orelane.contract import messages as m
from orelane.contract.measurements import Point, spectrum_result_columns


class LineProtocolError(ValueError):
    """A value line protocol cannot represent exactly; the message says which element and why."""


INT64_MIN, INT64_MAX = -2**63, 2**63 - 1

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MEASUREMENT_SPECIALS = ", "
_KEY_SPECIALS = ",= "
_NEEDS_CARE = {specials: re.compile("[\\x00-\\x1f\\x7f\\\\" + re.escape(specials) + "]")
               for specials in (_MEASUREMENT_SPECIALS, _KEY_SPECIALS)}


def _check_utf8(kind: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise LineProtocolError(f"{kind} {text[:80]!r} is not valid unicode text (lone surrogate)") from None


def _escape_name(kind: str, text: Any, specials: str) -> str:
    if not isinstance(text, str):
        raise LineProtocolError(f"{kind} {text!r} is a {type(text).__name__}, not a string")
    if not text:
        raise LineProtocolError(f"{kind} is empty; line protocol needs at least one character")
    if not _NEEDS_CARE[specials].search(text):
        if not text.isascii():
            _check_utf8(kind, text)
        return text
    _check_utf8(kind, text)
    control = _CONTROL.search(text)
    if control:
        what = "a newline" if control.group() == "\n" else f"control character {control.group()!r}"
        raise LineProtocolError(f"{kind} {text!r} contains {what}; line protocol cannot carry it in a {kind}")
    out = []
    for i, ch in enumerate(text):
        if ch == "\\":
            after = text[i + 1] if i + 1 < len(text) else None
            if after is None or after == "\\" or after in specials:
                where = "at the end" if after is None else f"before {after!r}"
                raise LineProtocolError(f"{kind} {text!r} has a backslash {where}; InfluxDB 2.x keeps it and "
                                        f"InfluxDB 3 and VictoriaMetrics drop it, so it cannot be written exactly")
            out.append(ch)
        elif ch in specials:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def escape_measurement(name: str) -> str:
    """A measurement name, escaped; names are few, so the answer is cached."""
    if isinstance(name, str) and name.startswith("#"):
        raise LineProtocolError(f"measurement {name!r} starts with '#', which makes the line a comment")
    if isinstance(name, str) and name.startswith("_"):
        raise LineProtocolError(f"measurement {name!r} starts with '_', a prefix InfluxDB reserves")
    return _escape_name("measurement", name, _MEASUREMENT_SPECIALS)


@functools.lru_cache(maxsize=4096)
def escape_key(key: str, kind: str = "tag key") -> str:
    """A tag key or field key, escaped."""
    if isinstance(key, str) and key.startswith("_"):
        raise LineProtocolError(f"{kind} {key!r} starts with '_', a prefix InfluxDB reserves")
    return _escape_name(kind, key, _KEY_SPECIALS)


@functools.lru_cache(maxsize=65536)
def escape_tag_value(value: str) -> str:
    """A tag value, escaped; tag values are bounded by design, so the answer is cached."""
    return _escape_name("tag value", value, _KEY_SPECIALS)


def escape_string_field(text: str) -> str:
    """A string field value with its quotes: backslash and double quote escaped; a newline is refused."""
    if "\n" in text:
        raise LineProtocolError(f"string field value {text[:80]!r} contains a newline; line protocol does not "
                                f"support newlines in field values")
    if not text.isascii():
        _check_utf8("string field value", text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


FLOAT_WIDTH = 24


def format_float(value: float) -> str:
    """17 significant digits, correctly rounded, mantissa padded with zeros to 24 characters: 1.250000000000000000e+02.

    Every finite float64 reads back identically, and every float has the same
    width, which lets the vectorised encoder lay out whole batches without
    moving bytes around.
    """
    if not math.isfinite(value):
        raise LineProtocolError(f"float {value} is not finite; line protocol cannot carry it")
    text = format(value, ".16e")
    mantissa, exponent = text.split("e")
    return f"{mantissa}{'0' * (FLOAT_WIDTH - len(text))}e{exponent}"


def _int64_error(value: int) -> str:
    return f"integer {value} does not fit int64, the largest integer line protocol carries"


def format_int(value: int) -> str:
    if not INT64_MIN <= value <= INT64_MAX:
        raise LineProtocolError(_int64_error(value))
    return f"{value}i"


def field_value(value: Any) -> str:
    """One field value in line protocol: float, integer (i), boolean or quoted string."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return format_int(int(value))
    if isinstance(value, (float, np.floating)):
        return format_float(float(value))
    if isinstance(value, str):
        return escape_string_field(value)
    raise LineProtocolError(f"field value {value!r} is a {type(value).__name__}; line protocol carries floats, "
                            f"integers, booleans and strings")


def series_key(measurement: str, tags: dict[str, str]) -> str:
    """Measurement and tag set as written (tags sorted by key, empty values left out)."""
    parts = [escape_measurement(measurement)]
    for key in sorted(tags):
        value = tags[key]
        if value != "":
            parts.append(f",{escape_key(key)}={escape_tag_value(value)}")
    return "".join(parts)


def encode_point(p: Point) -> str:
    """One point as one line (no newline); raise LineProtocolError naming the element that cannot be written."""
    if not p.fields:
        raise LineProtocolError(f"point of {p.measurement!r} has no fields; line protocol needs at least one")
    try:
        fields = ",".join(f"{escape_key(k, 'field key')}={field_value(v)}" for k, v in p.fields.items())
    except LineProtocolError as exc:
        raise LineProtocolError(f"{p.measurement}: {exc}") from None
    if not INT64_MIN <= p.time_ns <= INT64_MAX:
        raise LineProtocolError(f"{p.measurement}: timestamp {p.time_ns} ns does not fit int64")
    return f"{series_key(p.measurement, p.tags)} {fields} {int(p.time_ns)}"


def encode(points: Iterable[Point]) -> bytes:
    """Points as newline-separated UTF-8 lines; raise LineProtocolError at the first point that cannot be written."""
    return "\n".join(encode_point(p) for p in points).encode("utf-8")


@dataclass
class Encoded:
    """Line protocol for some points, and the points refused with the reason (index -> reason)."""

    body: bytes
    points: int
    refused: dict[int, str] = field(default_factory=dict)


def encode_lenient(points: list[Point]) -> Encoded:
    """Encode what can be encoded; report the rest by index instead of raising."""
    lines, refused = [], {}
    for i, p in enumerate(points):
        try:
            lines.append(encode_point(p).encode("utf-8"))
        except LineProtocolError as exc:
            refused[i] = str(exc)
    return Encoded(b"\n".join(lines), len(lines), refused)


# ------------------------------------------------------------------ vectorised spectrum results

def _split_pow10(k: int) -> tuple[float, float, float, float]:
    """10^k as hi + lo doubles (exact for k <= 32: 5^k has at most 75 bits), and hi split into 26-bit halves."""
    hi = float(10**k)
    lo = float(10**k - int(hi))
    c = 134217729.0 * hi  # Dekker's split: 2^27 + 1
    hi_hi = c - (c - hi)
    return hi, lo, hi_hi, hi - hi_hi


_P_HI, _P_LO, _P_HI_HI, _P_HI_LO = (np.ascontiguousarray(part) for part in np.array(
    [_split_pow10(k) for k in range(33)]).T)


def _words(texts: list[str]) -> np.ndarray:
    """Four-character strings as native uint32 words, so a table lookup writes four bytes at once."""
    return np.frombuffer("".join(texts).encode("ascii"), dtype=np.uint32).copy()


_DIGITS4 = _words([f"{i:04d}" for i in range(10_000)])  # 7 -> "0007"
_HEAD = _words([f"{i // 100}.{i % 100:02d}" for i in range(1000)])  # 314 -> "3.14"
_TAIL = _words([f"{i:02d}00" for i in range(100)])  # 42 -> "4200"
_EXPONENT = _words([f"e{k:+03d}" for k in range(-16, 17)])  # -5 -> "e-05"
_U64_POW10 = np.array([10**k for k in range(1, 20)], dtype=np.uint64)  # 10 .. 10^19
_ZERO_FLOAT = np.frombuffer(format_float(0.0).encode(), dtype=np.uint8)
_TEN_THOUSAND = np.uint64(10_000)


def int_widths(values: np.ndarray) -> np.ndarray:
    """Characters each int64 takes in decimal, sign included."""
    v = np.asarray(values, dtype=np.int64)
    return np.searchsorted(_U64_POW10, _magnitude(v), side="right") + 1 + (v < 0)


def _magnitude(v: np.ndarray) -> np.ndarray:
    u = v.view(np.uint64)
    return np.where(v < 0, ~u + np.uint64(1), u)  # two's complement: |-2^63| fits uint64


INT_WIDTH = 20


def format_ints(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """int64 values right-aligned in a (n, 20) block: row i's text is its last widths[i] bytes."""
    v = np.asarray(values, dtype=np.int64)
    out = np.empty((len(v), INT_WIDTH), dtype=np.uint8)
    words = out.view(np.uint32)  # (n, 5): four digits per word, zero-filled
    rest = _magnitude(v)
    for j in range(4, -1, -1):
        quotient = rest // _TEN_THOUSAND
        words[:, j] = _DIGITS4[(rest - quotient * _TEN_THOUSAND).astype(np.intp)]
        rest = quotient
    negative = np.flatnonzero(v < 0)
    if len(negative):
        out[negative, INT_WIDTH - widths[negative]] = ord("-")
    return out


def format_floats(values: np.ndarray) -> np.ndarray:
    """Finite float64 values as a (n, 24) block, each row exactly what `format_float` writes.

    A value between 1e-16 and 1e17 is scaled by a power of ten to a 17-digit
    integer with error-free float64 arithmetic (Dekker's two-product, the power
    held as two doubles), so the rounding is decided on the exact product; the
    digits are then written four bytes at a time from lookup tables. Rows near
    a rounding tie below 1e-6, at the edges of the digit range (the exponent
    estimate was off) and outside that range are written by `format_float`
    instead, so the result is always exact.
    """
    x = np.asarray(values, dtype=np.float64)
    out = np.empty((len(x), FLOAT_WIDTH), dtype=np.uint8)
    a = np.abs(x)
    in_range = (a >= 1e-16) & (a < 1e17)
    a = np.where(in_range, a, 1.0)
    e10 = np.clip(np.floor(np.log10(a)), -16, 16).astype(np.intp)  # an estimate; checked below
    k = 16 - e10
    p_hi, p_hi_hi, p_hi_lo = _P_HI[k], _P_HI_HI[k], _P_HI_LO[k]
    product = a * p_hi
    c = 134217729.0 * a
    a_hi = c - (c - a)
    a_lo = a - a_hi
    error = ((a_hi * p_hi_hi - product) + a_hi * p_hi_lo + a_lo * p_hi_hi) + a_lo * p_hi_lo  # a*p_hi - product
    remainder = error + a * _P_LO[k]  # product >= 2^53 is an integer, so the fraction lives here
    rounded = np.rint(remainder)
    mantissa = product.astype(np.int64) + rounded.astype(np.int64)
    # For k <= 22 the power is one double and the remainder is exact: np.rint settles a tie half to even, as
    # format() does (the product is even). Beyond, 10^k has a low part and a near-tie takes the exact path.
    fast = (in_range & ((k <= 22) | (np.abs(np.abs(remainder - rounded) - 0.5) > 1e-6))
            & (mantissa > 10**16) & (mantissa < 10**17 - 1))
    rest = np.where(fast, mantissa, 10**16).view(np.uint64)
    # d.dd dddd dddd dddd dd00 e+XX: six words
    words = out.view(np.uint32)
    quotient = rest // np.uint64(100)
    words[:, 4] = _TAIL[(rest - quotient * np.uint64(100)).astype(np.intp)]
    rest = quotient
    for j in (3, 2, 1):
        quotient = rest // _TEN_THOUSAND
        words[:, j] = _DIGITS4[(rest - quotient * _TEN_THOUSAND).astype(np.intp)]
        rest = quotient
    words[:, 0] = _HEAD[rest.astype(np.intp)]
    words[:, 5] = _EXPONENT[e10 + 16]
    zero = np.flatnonzero(x == 0.0)
    if len(zero):
        out[zero] = _ZERO_FLOAT
        fast[zero] = True
    negative = np.flatnonzero(np.signbit(x) & fast)
    if len(negative):  # '-' in front, one padding zero fewer
        out[negative, 1:20] = out[negative, 0:19]
        out[negative, 0] = ord("-")
    slow = np.flatnonzero(~fast)
    if len(slow):
        text = "".join(format_float(v) for v in x[slow].tolist()).encode()
        out[slow] = np.frombuffer(text, dtype=np.uint8).reshape(len(slow), FLOAT_WIDTH)
    return out


_RESULT_FLOATS = ("belt_position_m", "anomaly_score", "t2", "q", "class_score")  # after seq, as points_for orders them


@dataclass
class _ResultPlan:
    keep: np.ndarray  # rows that can be written
    refused: dict[int, str]
    floats: dict[str, np.ndarray]
    seq: np.ndarray  # uint64
    combo: np.ndarray  # decision * (classes + 1) + class index, the series of a row
    prefixes: dict[int, bytes]  # combo -> series key


def _plan_results(site: str, lane: str, res: m.SpectrumResults, accept_rows: np.ndarray | None) -> _ResultPlan:
    n = len(res)
    refused: dict[int, str] = {}
    keep = np.ones(n, dtype=bool) if accept_rows is None else np.asarray(accept_rows, dtype=bool).copy()
    floats = {"belt_position_m": res.belt_position_m, "anomaly_score": res.anomaly_score, "t2": res.t2,
              "q": res.q, "class_score": spectrum_result_columns(res)["class_score"]}
    floats = {name: np.asarray(column, dtype=np.float64) for name, column in floats.items()}
    seq = np.asarray(res.seq, dtype=np.uint64)
    too_big = seq > np.uint64(INT64_MAX)
    for row in np.flatnonzero(too_big & keep):
        refused[int(row)] = f"spectrum_result: {_int64_error(int(seq[row]))}"
    keep &= ~too_big
    for column in floats.values():
        bad = ~np.isfinite(column) & keep
        for row in np.flatnonzero(bad):
            refused[int(row)] = (f"spectrum_result: float {float(column[row])} is not finite; line protocol "
                                 f"cannot carry it")
        keep &= ~bad
    n_classes = len(res.class_names)
    class_index = np.asarray(res.class_index, dtype=np.int64)
    class_index = np.where(class_index == m.NO_CLASS, n_classes, class_index)
    combo = np.asarray(res.decision, dtype=np.int64) * (n_classes + 1) + class_index
    labels = list(res.class_names) + ["none"]
    prefixes: dict[int, bytes] = {}
    for c in np.unique(combo[keep]).tolist():
        tags = {"site": site, "lane": lane, "model_version": res.model_version,
                "decision": m.DECISIONS[c // (n_classes + 1)], "class": labels[c % (n_classes + 1)]}
        try:
            prefixes[c] = series_key("spectrum_result", tags).encode("utf-8")
        except LineProtocolError as exc:
            rows = np.flatnonzero((combo == c) & keep)
            refused.update((int(row), str(exc)) for row in rows)
            keep[rows] = False
    return _ResultPlan(keep, refused, floats, seq, combo, prefixes)


def check_spectrum_results(site: str, lane: str, res: m.SpectrumResults,
                           accept_rows: np.ndarray | None = None) -> tuple[np.ndarray, dict[int, str]]:
    """Rows of a results batch line protocol can carry (a mask), and the others by row index with the reason."""
    plan = _plan_results(site, lane, res, accept_rows)
    return plan.keep, plan.refused


def encode_spectrum_results(site: str, lane: str, res: m.SpectrumResults,
                            accept_rows: np.ndarray | None = None) -> Encoded:
    """A results batch as `spectrum_result` lines, byte for byte what `encode(points_for(...))` writes.

    Rows that share a shape (decision, class and the widths of seq and
    timestamp) are written together into one fixed-width byte matrix, a whole
    column at a time; the lines then leave the matrices in their original
    order, run by run. No Python object is built per value. Rows that cannot
    be written (seq beyond int64, non-finite values, tag values line protocol
    cannot carry) and rows outside `accept_rows` are left out; the refused ones
    are reported by row index with the reason.
    """
    plan = _plan_results(site, lane, res, accept_rows)
    keep, refused, floats, seq_u, combo, prefixes = (plan.keep, plan.refused, plan.floats, plan.seq, plan.combo,
                                                     plan.prefixes)
    rows = np.flatnonzero(keep)
    if not len(rows):
        return Encoded(b"", 0, refused)
    seq = seq_u[rows].astype(np.int64)
    time_ns = np.asarray(res.timestamp_ns, dtype=np.int64)[rows]
    seq_w, time_w = int_widths(seq), int_widths(time_ns)
    seq_text, time_text = format_ints(seq, seq_w), format_ints(time_ns, time_w)
    float_text = [format_floats(floats[name][rows]) for name in _RESULT_FLOATS]
    shape = (combo[rows] * 32 + seq_w) * 32 + time_w
    shapes, group_of = np.unique(shape, return_inverse=True)
    matrices = []
    for g, key in enumerate(shapes.tolist()):
        members = np.flatnonzero(group_of == g) if len(shapes) > 1 else slice(None)
        sw, tw = (key // 32) % 32, key % 32
        template = [prefixes[key // 1024] + b" seq=", b"\0" * sw, b"i"]
        for name in _RESULT_FLOATS:
            template += [f",{name}=".encode(), b"\0" * FLOAT_WIDTH]
        template += [b" ", b"\0" * tw, b"\n"]
        starts = np.cumsum([0] + [len(part) for part in template]).tolist()
        matrix = np.empty((len(seq_text[members]), starts[-1]), dtype=np.uint8)
        matrix[:] = np.frombuffer(b"".join(template), dtype=np.uint8)
        matrix[:, starts[1]:starts[2]] = seq_text[members, INT_WIDTH - sw:]
        for k, text in enumerate(float_text):
            matrix[:, starts[4 + 2 * k]:starts[5 + 2 * k]] = text[members]
        matrix[:, starts[-3]:starts[-2]] = time_text[members, INT_WIDTH - tw:]
        matrices.append(matrix)
    if len(matrices) == 1:
        return Encoded(matrices[0].tobytes()[:-1], len(rows), refused)
    # rows of a group keep their order inside its matrix; walk the runs of equal shape in row order
    rank = np.empty(len(rows), dtype=np.intp)
    order = np.argsort(group_of, kind="stable")
    group_start = np.searchsorted(group_of[order], np.arange(len(shapes)))
    rank[order] = np.arange(len(rows)) - group_start[group_of[order]]
    run_starts = np.flatnonzero(np.diff(group_of, prepend=-1))
    run_ends = np.append(run_starts[1:], len(rows))
    chunks = [matrices[g][r:r + (e - s)].tobytes()
              for g, r, s, e in zip(group_of[run_starts].tolist(), rank[run_starts].tolist(),
                                    run_starts.tolist(), run_ends.tolist())]
    return Encoded(b"".join(chunks)[:-1], len(rows), refused)


def concat_results(parts: list[m.SpectrumResults]) -> m.SpectrumResults:
    """One results batch from several of the same lane, model and classes (for one encoding pass)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    columns = {name: np.concatenate([getattr(p, name) for p in parts])
               for name in ("seq", "timestamp_ns", "belt_position_m", "anomaly_score", "t2", "q", "class_index",
                            "decision", "class_scores")}
    return m.SpectrumResults(first.lane, first.model_version, first.class_names, **columns)


def select_rows(res: m.SpectrumResults, rows: np.ndarray) -> m.SpectrumResults:
    """The given rows of a results batch (a boolean mask or indices)."""
    columns = {name: getattr(res, name)[rows]
               for name in ("seq", "timestamp_ns", "belt_position_m", "anomaly_score", "t2", "q", "class_index",
                            "decision", "class_scores")}
    return m.SpectrumResults(res.lane, res.model_version, res.class_names, **columns)
