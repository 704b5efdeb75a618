"""What Grafana does to an InfluxQL query before it sends it, and to the answer after, as far as the tests need.

- `expand` replaces $timeFilter, $__interval / $interval / $__interval_ms and
  dashboard variables the way Grafana's InfluxDB data source does: a
  multi-value or include-All variable is regex-escaped and joined as
  `(a|b)`, "All" becomes the variable's allValue (`.*`).
- `interval_ms` is Grafana's interval: range / maxDataPoints, at least the
  data source's minimum, rounded like rangeutil.roundInterval.
- `panel_range` applies a panel's relative-time override (timeFrom).
- `grouping_to_matrix` and `calculate_binary` are the two table
  transformations the Samples dashboard uses.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

# rangeutil.roundInterval: (upper bound of the raw interval, rounded interval), both ms
_ROUND = ((15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
          (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
          (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000),
          (2700000, 1800000), (5400000, 3600000), (9000000, 7200000), (16200000, 10800000),
          (32400000, 21600000), (86400000, 43200000))

MIN_INTERVAL_MS = 5000  # the provisioned data source's timeInterval ("5s")
MAX_DATA_POINTS = 1000  # about a panel's width in pixels


def round_interval(ms: float) -> int:
    for bound, rounded in _ROUND:
        if ms < bound:
            return rounded
    return 86400000


def interval_ms(from_ms: int, to_ms: int, max_data_points: int = MAX_DATA_POINTS,
                min_interval_ms: int = MIN_INTERVAL_MS) -> int:
    return round_interval(max((to_ms - from_ms) / max_data_points, min_interval_ms))


def format_interval(ms: int) -> str:
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True)
class Variable:
    """A dashboard variable as selected: values (or all=True) and its allValue."""

    values: tuple[str, ...] = ()
    all: bool = True
    all_value: str = ".*"
    multi: bool = True
    include_all: bool = True

    def render(self) -> str:
        if self.all:
            return self.all_value
        if not self.multi and not self.include_all:
            return self.values[0]
        escaped = [re.sub(r"[\\^$*+?.()|{}\[\]/]", lambda mt: "\\" + mt.group(0), v) for v in self.values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def expand(query: str, from_ms: int, to_ms: int, variables: dict[str, Variable] | None = None,
           interval: int | None = None) -> str:
    """The query text Grafana sends to InfluxDB."""
    step = interval if interval is not None else interval_ms(from_ms, to_ms)
    text = query.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    text = text.replace("$__interval_ms", str(step)).replace("$__interval", format_interval(step))
    text = re.sub(r"\$interval\b", format_interval(step), text)
    for name, variable in sorted((variables or {}).items(), key=lambda kv: -len(kv[0])):
        text = re.sub(r"\$\{" + name + r"\}|\$" + name + r"\b", lambda _: variable.render(), text)
    leftover = re.findall(r"\$\w+", text)
    if leftover:
        raise ValueError(f"unexpanded macros {leftover} in {query!r}")
    return text


def panel_range(time_from: str | None, from_ms: int, to_ms: int) -> tuple[int, int]:
    """A panel's time range after its relative-time override: '7d', '30m', 'now/d' (today so far, UTC)."""
    if not time_from:
        return from_ms, to_ms
    if time_from == "now/d":
        now = datetime.fromtimestamp(to_ms / 1000, tz=timezone.utc)
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return int(start.timestamp() * 1000), to_ms
    match = re.fullmatch(r"(?:now-)?(\d+)([smhdw])", time_from)
    if not match:
        raise ValueError(f"unsupported panel timeFrom {time_from!r}")
    size = {"s": 1000, "m": 60000, "h": 3600000, "d": 86400000, "w": 604800000}[match.group(2)]
    return to_ms - int(match.group(1)) * size, to_ms


# ---------------------------------------------------------------- transformations


def table_rows(series: list[dict]) -> list[dict]:
    """InfluxDB series (table format) as rows: column name -> value, with 'Time' for the time column."""
    rows = []
    for s in series:
        for values in s["values"]:
            row = {("Time" if c == "time" else c): v for c, v in zip(s["columns"], values)}
            row.update(s.get("tags", {}))
            rows.append(row)
    return rows


def grouping_to_matrix(rows: list[dict], column_field: str, row_field: str, value_field: str) -> list[dict]:
    """Grafana's groupingToMatrix: one row per row_field value, one column per column_field value."""
    matrix: dict = {}
    for row in rows:
        matrix.setdefault(row[row_field], {f"{row_field}\\{column_field}": row[row_field]})[
            str(row[column_field])] = row[value_field]
    return list(matrix.values())


def calculate_binary(rows: list[dict], left: str, operator: str, right: str, alias: str) -> list[dict]:
    """Grafana's calculateField in binary mode; a missing operand gives null, as in Grafana."""
    ops = {"-": lambda a, b: a - b, "+": lambda a, b: a + b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}
    out = []
    for row in rows:
        a, b = row.get(left), row.get(right)
        out.append({**row, alias: None if a is None or b is None else ops[operator](a, b)})
    return out


# ---------------------------------------------------------------- alert expressions


def reduce_last(series: list[dict]) -> dict[tuple, float]:
    """Grafana's reduce expression (last, drop non-numbers): labels -> last numeric value of each series."""
    out = {}
    for s in series:
        numbers = [v for _, v in s["values"] if isinstance(v, (int, float)) and not math.isnan(v)]
        if numbers:
            out[tuple(sorted(s.get("tags", {}).items()))] = numbers[-1]
    return out


def evaluate_math(expression: str, value: float, var: str = "$B") -> bool:
    """A Grafana math condition over one reduced value ($B), with its comparison and logic operators."""
    text = expression.replace(var, repr(float(value))).replace("||", " or ").replace("&&", " and ")
    if not re.fullmatch(r"[\d.eE+\-\s<>=!()orand]+", text):
        raise ValueError(f"unsupported math expression {expression!r}")
    return bool(eval(text, {"__builtins__": {}}, {}))  # noqa: S307 - text checked above: numbers and operators
