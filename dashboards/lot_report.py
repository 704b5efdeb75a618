"""`orelane report lot <lot>`: the document an inspector needs to decide on one lot of cargo.

Three layers, as everywhere in orelane:

- `build_lot_report` is pure: it takes the lot's points (as `orelane.contract.measurements.points_for`
  makes them) and the lot's samples from the registry, and returns a `LotReport` of plain values:
  the discharge (lanes, times, belt-scale tonnage), the contamination events along the tonnage axis
  with their evidence, every sample with its chain of custody and lab outcome, the model versions
  that judged the spectra, and the instruments' health while the lot went over the belt.
- The data layer reads those points from a `PointSource`: `EmbeddedSource` (the SQLite store of
  `ingest.store.EmbeddedStore`) or `InfluxQLSource` (InfluxQL over HTTP `/query`: InfluxDB 1.x as
  is, 2.x and 3.x through a DBRP mapping of the bucket). `gather_lot_report` asks only for what the
  lot needs: its time range, its lanes, and the spectra inside its events; spectra are counted per
  model version by the database, so millions of them never leave it.
- `main` is the command line; `dashboards.report_templates` renders the report as HTML and PDF.
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zoneinfo
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Protocol, Sequence

from orelane.contract.measurements import Point

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
# Read this far before a lot opens on a lane, for the totalizer and health counters as they stood at the opening.
LOOKBACK_S = 600.0
# Lane status arrives every 5 s (edge.daemon.STATUS_INTERVAL_S); a longer silence from an edge that said it
# was online is reported as an outage.
STATUS_SILENCE_S = 30.0
# Events longer than this (the edge's brand check spans a whole lot) are not searched for spectrum evidence.
MAX_EVIDENCE_EXTENT_M = 500.0

OUTAGE_BELT_LINK = "belt link"
OUTAGE_ROBOT_LINK = "robot link"
OUTAGE_RADIATION_LINK = "gamma portal link"
OUTAGE_RADIATION_FAULT = "gamma portal fault"
OUTAGE_EDGE_OFFLINE = "edge offline"
OUTAGE_NO_STATUS = "no status"
# lane_status field, the value it has while down, outage kind. The gamma portal's are the edge's alarms, which
# stay 0 on a lane without a portal; while either is raised the ore passing was not screened for radiation.
_DOWN_FIELDS = (("belt_link_up", 0, OUTAGE_BELT_LINK), ("robot_link_up", 0, OUTAGE_ROBOT_LINK),
                ("alarm_radiation_link", 1, OUTAGE_RADIATION_LINK),
                ("alarm_radiation_fault", 1, OUTAGE_RADIATION_FAULT), ("online", 0, OUTAGE_EDGE_OFFLINE))

LAB_RESULT = "result"
LAB_PENDING = "pending"
LAB_NONE = "no sample"
_NO_SAMPLE_STATUSES = ("missed", "failed")

Lane = tuple[str, str]  # (site, lane): lane ids are unique within a site only


class ReportError(RuntimeError):
    """The report cannot be made: a source is unreachable, a file is missing, a query failed."""


class LotNotFound(ReportError, LookupError):
    """No lot with this id opened in the data; `known_lots` names those that did."""

    def __init__(self, lot_id: str, where: str, known_lots: Sequence[tuple[str, str, str]]):
        self.lot_id, self.where, self.known_lots = lot_id, where, tuple(known_lots)
        if known_lots:
            shown = "; ".join(f"{lot} ({vessel}, voyage {voyage})" if vessel or voyage else lot
                              for lot, vessel, voyage in known_lots[:30])
            more = f"; and {len(known_lots) - 30} more" if len(known_lots) > 30 else ""
            lots = f"lots there: {shown}{more}"
        else:
            lots = "no lot has been opened there"
        super().__init__(f"lot {lot_id!r} was never opened in {where}; {lots}")


# ---------------------------------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class DischargePeriod:
    """One stretch of time a lane discharged the lot: from its `open` message to its end."""

    start_s: float
    end_s: float | None  # None: still discharging when the report was made
    ended_by: str  # "closed", "lot <id> opened" (the lane moved on without a close), or "" while open


@dataclass(frozen=True)
class LaneDischarge:
    site: str
    lane: str
    periods: tuple[DischargePeriod, ...]
    tonnage_t: float  # belt-scale totalizer increase over the periods
    totalizer_first_t: float | None
    totalizer_last_t: float | None
    totalizer_resets: int  # times the totalizer went backwards (scale reset); tonnage counts on from the new value
    belt_readings: int


@dataclass(frozen=True)
class Evidence:
    """What the sensors saw inside an event's stretch of belt (the spectra and camera frames in it)."""

    searched: bool  # False for events too long to search (MAX_EVIDENCE_EXTENT_M), e.g. a lot's brand check
    spectra: int = 0
    flagged_spectra: int = 0  # decision other than clean
    seq_first: int | None = None
    seq_last: int | None = None
    frame_seqs: tuple[int, ...] = ()  # camera frames with detected objects


@dataclass(frozen=True)
class EventEntry:
    event_id: str
    site: str
    lane: str
    state: str  # "closed", or "open" when no close was recorded
    likely_class: str
    start_m: float
    end_m: float
    peak_position_m: float
    peak_score: float
    totalizer_t: float  # the lane's totalizer when the ore passed (the event's tonnage_t)
    lot_tonnage_t: float | None  # tonnes of this lot through this lane before the event's ore
    opened_s: float | None
    closed_s: float | None
    lot_stamped: bool  # False: the edge sent it without a lot id; included because it fell in the discharge
    evidence: Evidence
    sample_ids: tuple[int, ...]  # targeted samples requested for it


@dataclass(frozen=True)
class CustodyStep:
    status: str
    who: str
    at_s: float
    note: str


@dataclass(frozen=True)
class LabOutcome:
    contaminant_found: bool
    contaminant_type: str
    mass_fraction: float | None
    note: str
    who: str
    at_s: float
    superseded: bool  # a later result of the same sample replaces it (results are append-only)


@dataclass(frozen=True)
class SampleEntry:
    sample_id: int
    barcode: str
    kind: str  # "targeted" or "routine"
    lane: str
    status: str  # the last custody step
    event_id: str | None
    belt_position_m: float | None
    totalizer_t: float | None
    lot_tonnage_t: float | None
    requested_s: float
    hold: str
    cup: str | None
    seal: str | None
    mass_kg: float | None
    model_version: str | None
    likely_class: str | None
    custody: tuple[CustodyStep, ...]
    results: tuple[LabOutcome, ...]
    lab_status: str  # LAB_RESULT, LAB_PENDING or LAB_NONE (missed or failed: no material to analyse)

    @property
    def result(self) -> LabOutcome | None:
        """The lab result in force: the latest one."""
        return self.results[-1] if self.results else None


@dataclass(frozen=True)
class ModelUse:
    site: str
    lane: str
    model_version: str
    spectra: int  # spectrum results with this model_version tag during the lot
    model_id: str = ""
    sha256: str = ""
    deployed_s: float | None = None


@dataclass(frozen=True)
class Outage:
    site: str
    lane: str
    kind: str  # OUTAGE_*
    start_s: float
    end_s: float
    ongoing: bool  # still down when the lane's discharge period ended (or when the report was made)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class LaneHealth:
    site: str
    lane: str
    status_reports: int
    max_reference_age_s: float | None  # None: no report carried a reference age
    reports_without_reference: int  # reference_age_s < 0: no dark/white reference at all
    reference_stale_reports: int  # the edge's own alarm_reference_stale
    seq_gaps: int  # spectra the spectrometer numbered but the edge never received
    spectra_in: int | None  # spectra the edge received (its counter), None without counters
    outages: tuple[Outage, ...]


@dataclass(frozen=True)
class HealthReading:
    """One lane status report, for the health-over-time plot."""

    lane: str
    time_s: float
    online: int
    reference_age_s: float | None
    belt_link_up: int | None
    robot_link_up: int | None


@dataclass(frozen=True)
class LotReport:
    lot_id: str
    site: str
    vessel: str
    voyage: str
    declared_brand: str
    declared_tonnage_t: float
    origin: str
    holds: tuple[str, ...]
    bills_of_lading: tuple[str, ...]
    lanes: tuple[LaneDischarge, ...]
    discharge_start_s: float
    discharge_end_s: float | None  # None: still discharging
    as_of_s: float
    tonnage_t: float
    events: tuple[EventEntry, ...]
    samples: tuple[SampleEntry, ...]
    models: tuple[ModelUse, ...]
    health: tuple[LaneHealth, ...]
    health_readings: tuple[HealthReading, ...]
    unregistered_sample_ids: tuple[int, ...]  # sample records on the lot's lanes that the registry lacks for it
    notes: tuple[str, ...]
    summary: str
    data_sources: tuple[str, ...] = ()

    @property
    def targeted_samples(self) -> tuple[SampleEntry, ...]:
        return tuple(s for s in self.samples if s.kind == "targeted")

    @property
    def pending_samples(self) -> tuple[SampleEntry, ...]:
        return tuple(s for s in self.samples if s.lab_status == LAB_PENDING)

    @property
    def outages(self) -> tuple[Outage, ...]:
        return tuple(o for h in self.health for o in h.outages)

    @property
    def in_progress(self) -> bool:
        return self.discharge_end_s is None


class RegisteredSample(NamedTuple):
    """A sample as the registry holds it (sampling_robot.registry): row, custody history, lab results."""

    row: Any  # SampleRow
    history: Sequence[Any]  # HistoryEntry
    results: Sequence[Any]  # LabResult


# ---------------------------------------------------------------------------------------------------- pure core


def _s(time_ns: int) -> float:
    return time_ns / NS_PER_S


def _ns(seconds: float) -> int:
    return int(round(seconds * NS_PER_S))


def _lane_of(p: Point) -> Lane:
    return (p.tags.get("site", ""), p.tags.get("lane", ""))


def _num(value: Any) -> float | None:
    """A numeric field as float (InfluxDB returns whole floats as JSON integers), None when absent."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _sorted(points: Iterable[Point]) -> list[Point]:
    """Points in time order, ties broken by series, so every source gives the same order."""
    return sorted(points, key=lambda p: (p.time_ns, sorted(p.tags.items())))


@dataclass(frozen=True)
class _Period:
    start_ns: int
    end_ns: int | None
    ended_by: str

    def end_or(self, as_of_ns: int) -> int:
        return self.end_ns if self.end_ns is not None else as_of_ns

    def contains(self, t_ns: int, as_of_ns: int) -> bool:
        return self.start_ns <= t_ns <= self.end_or(as_of_ns)


def known_lots(lot_points: Iterable[Point]) -> list[tuple[str, str, str]]:
    """(lot id, vessel, voyage) of every lot opened in the data, in the order they first opened."""
    seen: dict[str, tuple[str, str, str]] = {}
    for p in _sorted(lot_points):
        lot_id = str(p.fields.get("lot_id", ""))
        if p.tags.get("state") == "open" and lot_id and lot_id not in seen:
            seen[lot_id] = (lot_id, str(p.fields.get("vessel", "")), str(p.fields.get("voyage", "")))
    return list(seen.values())


def lot_periods(lot_id: str, lot_points: Iterable[Point], where: str = "the data") -> dict[Lane, list[_Period]]:
    """When each lane discharged the lot: from an `open` of it to its `closed`, or to the `open` of another lot
    on the same lane (the edge then works for the new lot). Raises LotNotFound when the lot never opened."""
    lot_points = _sorted(lot_points)
    periods: dict[Lane, list[_Period]] = {}
    by_lane: dict[Lane, list[Point]] = defaultdict(list)
    for p in lot_points:
        by_lane[_lane_of(p)].append(p)
    for lane, points in sorted(by_lane.items()):
        open_since: int | None = None
        for p in points:
            this_lot = p.fields.get("lot_id") == lot_id
            state = p.tags.get("state")
            if this_lot and state == "open":
                if open_since is None:
                    open_since = p.time_ns
            elif open_since is not None and this_lot and state == "closed":
                periods.setdefault(lane, []).append(_Period(open_since, p.time_ns, "closed"))
                open_since = None
            elif open_since is not None and not this_lot and state == "open":
                periods.setdefault(lane, []).append(
                    _Period(open_since, p.time_ns, f"lot {p.fields.get('lot_id', '?')} opened"))
                open_since = None
        if open_since is not None:
            periods.setdefault(lane, []).append(_Period(open_since, None, ""))
    if not periods:
        raise LotNotFound(lot_id, where, known_lots(lot_points))
    return periods


def _step(previous: float, current: float) -> float:
    """A counter's increase between two readings; one that went backwards was reset (a restart, a scale reset)
    and counts on from zero, so its new value is all increase."""
    return current - previous if current >= previous else current


def counter_increase(values: Sequence[float]) -> tuple[float, int]:
    """(increase, resets) of a counter read in time order."""
    total = sum(_step(a, b) for a, b in zip(values, values[1:]))
    return total, sum(b < a for a, b in zip(values, values[1:]))


class _TonnageAxis:
    """Tonnes of the lot through one lane as a function of time, from the belt totalizer's readings."""

    def __init__(self) -> None:
        self.times_ns: list[int] = []
        self.totalizer_t: list[float] = []
        self.lot_t: list[float] = []

    def add(self, time_ns: int, totalizer_t: float, lot_t: float) -> None:
        self.times_ns.append(time_ns)
        self.totalizer_t.append(totalizer_t)
        self.lot_t.append(lot_t)

    def at(self, time_ns: int, totalizer_t: float | None) -> float | None:
        """The lot tonnage when the totalizer read `totalizer_t`, looked up at the reading before `time_ns`
        (ore is reported after it passed): the lot tonnage then, less what went by since that reading."""
        if totalizer_t is None or not self.times_ns:
            return None
        i = bisect.bisect_right(self.times_ns, time_ns) - 1
        if i < 0:
            return 0.0
        since_t = max(0.0, self.totalizer_t[i] - totalizer_t)
        return min(self.lot_t[i], max(0.0, self.lot_t[i] - since_t))


def _discharge(lane: Lane, periods: list[_Period], belt: list[Point], as_of_ns: int
               ) -> tuple[LaneDischarge, _TonnageAxis]:
    axis = _TonnageAxis()
    readings = [(p.time_ns, _num(p.fields.get("totalizer_t"))) for p in belt]
    readings = [(t, v) for t, v in readings if v is not None]
    times = [t for t, _ in readings]
    tonnage, resets, used, first, last = 0.0, 0, 0, None, None
    for period in periods:
        lo, hi, base = _period_slice(times, period, as_of_ns)
        previous = None
        for k in range(base, hi):
            t_ns, value = readings[k]
            if previous is not None:
                tonnage += _step(previous, value)
                resets += value < previous
            previous = value
            first = value if first is None else first
            last = value
            if k >= lo:
                used += 1
                axis.add(t_ns, value, tonnage)
    site, lane_id = lane
    discharge_periods = tuple(DischargePeriod(_s(p.start_ns), None if p.end_ns is None else _s(p.end_ns), p.ended_by)
                              for p in periods)
    return LaneDischarge(site, lane_id, discharge_periods, tonnage, first, last, resets, used), axis


def _period_slice(times_ns: Sequence[int], period: _Period, as_of_ns: int) -> tuple[int, int, int]:
    """(lo, hi, base) indexes into readings sorted by time: [lo, hi) lie in the period, and base is the baseline,
    the last reading at or before the opening (LOOKBACK_S at most), else lo. Counters and the totalizer count
    from the baseline, so what happened before the opening is not the lot's."""
    lo = bisect.bisect_left(times_ns, period.start_ns)
    hi = bisect.bisect_right(times_ns, period.end_or(as_of_ns))
    base = bisect.bisect_right(times_ns, period.start_ns) - 1
    if base < 0 or times_ns[base] < period.start_ns - _ns(LOOKBACK_S):
        base = lo
    return lo, hi, base


def _in_periods(t_ns: int, periods: Sequence[_Period], as_of_ns: int) -> bool:
    return any(p.contains(t_ns, as_of_ns) for p in periods)


def evidence_window(periods: Sequence[_Period], event_end_ns: int) -> tuple[int, int]:
    """Times (ns) an event's spectra and frames can have: from before the lane's first opening to the event's
    close; together with the event's belt stretch this tells its ore apart from ore of other times."""
    return min(p.start_ns for p in periods) - _ns(LOOKBACK_S), event_end_ns


def _evidence(event_lane: Lane, stretch: tuple[float, float] | None, window: tuple[int, int],
              spectra: Sequence[Point], frames: Sequence[Point]) -> Evidence:
    if stretch is None:
        return Evidence(searched=False)
    start_m, end_m = stretch
    lo, hi = window

    def inside(p: Point) -> bool:
        pos = _num(p.fields.get("belt_position_m"))
        return (_lane_of(p) == event_lane and lo <= p.time_ns <= hi and pos is not None
                and start_m <= pos < end_m and p.fields.get("seq") is not None)

    seqs, flagged = [], 0
    for p in spectra:
        if inside(p):
            seqs.append(int(p.fields["seq"]))
            flagged += p.tags.get("decision", "clean") != "clean"
    frame_seqs = sorted({int(p.fields["seq"]) for p in frames
                         if inside(p) and (_num(p.fields.get("objects")) or 0) > 0})
    return Evidence(True, len(seqs), flagged, min(seqs) if seqs else None, max(seqs) if seqs else None,
                    tuple(frame_seqs))


def lot_event_points(lot_id: str, periods: Mapping[Lane, Sequence[_Period]], event_points: Iterable[Point],
                     as_of_ns: int) -> dict[tuple[str, str, str], list[Point]]:
    """Points (open and close) of the lot's events by (site, lane, event id).

    The edge stamps each message with the lot open when it sends it, so an event that opened during the lot
    may close after it, unstamped or stamped with the next lot: an event is the lot's when any of its
    messages is stamped with it, or when none is stamped at all and it opened on one of the lot's lanes
    while the lot discharged there.
    """
    by_event: dict[tuple[str, str, str], list[Point]] = defaultdict(list)
    for p in _sorted(event_points):
        by_event[_lane_of(p) + (str(p.fields.get("event_id", "")),)].append(p)
    events = {}
    for key, points in by_event.items():
        stamps = {p.fields.get("lot_id") or "" for p in points}
        lane = key[:2]
        if lot_id in stamps or (stamps == {""} and lane in periods
                                and _in_periods(points[0].time_ns, periods[lane], as_of_ns)):
            events[key] = points
    return events


def _final_event_point(points: Sequence[Point]) -> Point:
    """The point that describes an event as it ended: its last close, else its last open."""
    closed = [p for p in points if p.tags.get("state") == "closed"]
    return (closed or list(points))[-1]


def _event_end_ns(points: Sequence[Point], as_of_ns: int) -> int:
    final = _final_event_point(points)
    return final.time_ns if final.tags.get("state") == "closed" else as_of_ns


def _event_stretch(points: Sequence[Point]) -> tuple[float, float] | None:
    """(start_m, end_m) of the belt an event covers, None when it is too long to search for evidence."""
    fields = _final_event_point(points).fields
    start_m, end_m = _num(fields.get("start_m")), _num(fields.get("end_m"))
    if start_m is None or end_m is None or end_m - start_m > MAX_EVIDENCE_EXTENT_M:
        return None
    return start_m, end_m


def _outages(lane: Lane, period: _Period, before: Point | None, inside: Sequence[Point], as_of_ns: int
             ) -> list[Outage]:
    """Link outages, edge offline times and status silences within one discharge period; one still going at
    the period's end (or at the report time) ends there and is marked ongoing."""
    end_ns = period.end_or(as_of_ns)
    site, lane_id = lane
    found: list[Outage] = []

    def close(kind: str, start_ns: int, stop_ns: int | None) -> None:
        ongoing = stop_ns is None
        stop_ns = end_ns if stop_ns is None else stop_ns
        start_ns = max(start_ns, period.start_ns)
        if stop_ns > start_ns or ongoing:
            found.append(Outage(site, lane_id, kind, _s(start_ns), _s(stop_ns), ongoing))

    series = ([before] if before is not None else []) + list(inside)
    for name, down_value, kind in _DOWN_FIELDS:
        down_since: int | None = None
        for p in series:
            value = _num(p.fields.get(name))
            if value is None:
                continue
            if value == down_value and down_since is None:
                down_since = max(p.time_ns, period.start_ns)
            elif value != down_value and down_since is not None:
                close(kind, down_since, p.time_ns)
                down_since = None
        if down_since is not None:
            close(kind, down_since, None)
    # silence: an edge that last said it was online and then said nothing for STATUS_SILENCE_S
    limit_ns = _ns(STATUS_SILENCE_S)
    heard_ns = before.time_ns if before is not None else period.start_ns
    online = before is None or (_num(before.fields.get("online")) or 0) != 0
    for p in inside:
        if online and p.time_ns - heard_ns > limit_ns:
            close(OUTAGE_NO_STATUS, heard_ns, p.time_ns)
        heard_ns, online = p.time_ns, (_num(p.fields.get("online")) or 0) != 0
    if online and end_ns - heard_ns > limit_ns:
        close(OUTAGE_NO_STATUS, heard_ns, None)
    return sorted(found, key=lambda o: (o.start_s, o.kind))


def _lane_health(lane: Lane, periods: Sequence[_Period], status: Sequence[Point], as_of_ns: int
                 ) -> tuple[LaneHealth, list[HealthReading]]:
    times = [p.time_ns for p in status]
    reports, ages, without_ref, stale, gaps, spectra_in = 0, [], 0, 0, 0.0, None
    outages: list[Outage] = []
    readings: list[HealthReading] = []
    for period in periods:
        lo, hi, base = _period_slice(times, period, as_of_ns)
        inside = status[lo:hi]
        before = status[base] if base < lo else None
        reports += len(inside)
        for p in inside:
            age = _num(p.fields.get("reference_age_s"))
            if age is not None:
                if age < 0:
                    without_ref += 1
                else:
                    ages.append(age)
            stale += (_num(p.fields.get("alarm_reference_stale")) or 0) > 0
            readings.append(HealthReading(lane[1], _s(p.time_ns), int(_num(p.fields.get("online")) or 0), age,
                                          _int_or_none(p.fields.get("belt_link_up")),
                                          _int_or_none(p.fields.get("robot_link_up"))))
        counted = status[base:hi]
        gap_values = [_num(p.fields.get("seq_gaps")) for p in counted]
        gaps += counter_increase([v for v in gap_values if v is not None])[0]
        in_values = [v for v in (_num(p.fields.get("spectra_in")) for p in counted) if v is not None]
        if in_values:
            spectra_in = (spectra_in or 0) + int(counter_increase(in_values)[0])
        outages += _outages(lane, period, before, inside, as_of_ns)
    return (LaneHealth(lane[0], lane[1], reports, max(ages) if ages else None, without_ref, stale, int(gaps),
                       spectra_in, tuple(outages)), readings)


def _int_or_none(value: Any) -> int | None:
    number = _num(value)
    return None if number is None else int(number)


def _lab(row: Any, results: Sequence[Any]) -> tuple[tuple[LabOutcome, ...], str]:
    outcomes = tuple(LabOutcome(bool(r.contaminant_found), r.contaminant_type or "", r.mass_fraction, r.note or "",
                                r.who, float(r.at_s), superseded=i < len(results) - 1)
                     for i, r in enumerate(results))
    if outcomes:
        return outcomes, LAB_RESULT
    return outcomes, LAB_NONE if row.status in _NO_SAMPLE_STATUSES else LAB_PENDING


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def summary_sentence(events: int, targeted: int, pending: int) -> str:
    """The one plain sentence at the top: '3 events, 2 targeted samples, 1 lab result pending'."""
    return (f"{_plural(events, 'event')}, {_plural(targeted, 'targeted sample')}, "
            f"{_plural(pending, 'lab result')} pending")


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(str(i) for i in ids)


def build_lot_report(lot_id: str, points_by_measurement: Mapping[str, Iterable[Point]],
                     samples: Iterable[RegisteredSample], *,
                     spectra_by_version: Mapping[tuple[str, str, str], int] | None = None,
                     as_of_s: float | None = None, data_sources: Sequence[str] = (),
                     where: str = "the data") -> LotReport:
    """The report of one lot from its points and its registered samples.

    `points_by_measurement` maps measurement names (lot, belt, contamination_event, sample, lane_status,
    model_deployment, spectrum_result, frame_result) to points; missing ones count as empty. Spectra are
    counted per model version from the spectrum_result points unless `spectra_by_version` ((site, lane,
    model_version) -> spectra during the lot) is given, as the data layer does so that only the spectra
    inside events need to be read. `as_of_s` ends a discharge still in progress (default: the latest point).
    """
    pts = {name: _sorted(points) for name, points in points_by_measurement.items()}
    lot_points = pts.get("lot", [])
    periods = lot_periods(lot_id, lot_points, where)
    if as_of_s is None:
        latest = [p.time_ns for points in pts.values() for p in points[-1:]]
        as_of_ns = max(latest)
    else:
        as_of_ns = _ns(as_of_s)
    lanes = sorted(periods)

    # ------------------------------------------------ the declaration
    opens = [p for p in lot_points if p.fields.get("lot_id") == lot_id and p.tags.get("state") == "open"]
    declared = opens[-1].fields  # a re-sent declaration corrects the earlier one
    samples = sorted(samples, key=lambda s: s.row.sample_id)

    # ------------------------------------------------ discharge and tonnage
    belt_by_lane: dict[Lane, list[Point]] = defaultdict(list)
    for p in pts.get("belt", []):
        belt_by_lane[_lane_of(p)].append(p)
    discharges, axes = [], {}
    for lane in lanes:
        discharge, axes[lane] = _discharge(lane, periods[lane], belt_by_lane.get(lane, []), as_of_ns)
        discharges.append(discharge)
    in_progress = any(p.end_ns is None for lane in lanes for p in periods[lane])
    start_ns = min(p.start_ns for lane in lanes for p in periods[lane])
    end_ns = None if in_progress else max(p.end_or(as_of_ns) for lane in lanes for p in periods[lane])

    # ------------------------------------------------ events and their evidence
    targeted_by_event: dict[str, list[int]] = defaultdict(list)
    for s in samples:
        if s.row.event_id:
            targeted_by_event[s.row.event_id].append(s.row.sample_id)
    spectra, frames = pts.get("spectrum_result", []), pts.get("frame_result", [])
    events = []
    for (site, lane_id, event_id), points in lot_event_points(lot_id, periods, pts.get("contamination_event", []),
                                                              as_of_ns).items():
        lane = (site, lane_id)
        final = _final_event_point(points)
        opened = [p.time_ns for p in points if p.tags.get("state") == "open"]
        f = final.fields
        start_m, end_m = float(f.get("start_m", 0.0)), float(f.get("end_m", 0.0))
        totalizer_t = float(f.get("tonnage_t", 0.0))
        event_time_ns = min(opened) if opened else final.time_ns
        evidence = Evidence(searched=False)
        if lane in periods:
            window = evidence_window(periods[lane], _event_end_ns(points, as_of_ns))
            evidence = _evidence(lane, _event_stretch(points), window, spectra, frames)
        events.append(EventEntry(
            event_id=event_id, site=site, lane=lane_id, state=final.tags.get("state", "open"),
            likely_class=final.tags.get("class", "unknown"), start_m=start_m, end_m=end_m,
            peak_position_m=float(f.get("peak_position_m", 0.0)), peak_score=float(f.get("peak_score", 0.0)),
            totalizer_t=totalizer_t,
            lot_tonnage_t=axes[lane].at(event_time_ns, totalizer_t) if lane in axes else None,
            opened_s=_s(min(opened)) if opened else None,
            closed_s=_s(final.time_ns) if final.tags.get("state") == "closed" else None,
            lot_stamped=any(p.fields.get("lot_id") == lot_id for p in points), evidence=evidence,
            sample_ids=tuple(sorted(targeted_by_event.get(event_id, ())))))
    events.sort(key=lambda e: (e.lane, e.lot_tonnage_t if e.lot_tonnage_t is not None else math.inf,
                               e.opened_s or 0.0, e.event_id))

    # ------------------------------------------------ samples and custody
    sample_entries = []
    site_of_lane = {lane_id: site for site, lane_id in lanes}
    for s in samples:
        row = s.row
        outcomes, lab_status = _lab(row, s.results)
        lane = (site_of_lane.get(row.lane, ""), row.lane)
        axis = axes.get(lane)
        sample_entries.append(SampleEntry(
            sample_id=row.sample_id, barcode=row.barcode, kind=row.kind, lane=row.lane, status=row.status,
            event_id=row.event_id, belt_position_m=row.belt_position_m, totalizer_t=row.tonnage_t,
            lot_tonnage_t=axis.at(_ns(row.created_s), row.tonnage_t) if axis else None,
            requested_s=float(row.created_s), hold=row.hold or "", cup=row.cup, seal=row.seal,
            mass_kg=row.mass_kg, model_version=row.model_version, likely_class=row.likely_class,
            custody=tuple(CustodyStep(h.status, h.who, float(h.at_s), h.note or "") for h in s.history),
            results=outcomes, lab_status=lab_status))
    registered = {s.sample_id for s in sample_entries}
    unregistered = sorted({int(p.fields["sample_id"]) for p in pts.get("sample", [])
                           if _lane_of(p) in periods and _in_periods(p.time_ns, periods[_lane_of(p)], as_of_ns)
                           and p.fields.get("sample_id") is not None and int(p.fields["sample_id"]) not in registered})

    # ------------------------------------------------ models
    if spectra_by_version is None:
        counts: Counter = Counter()
        for p in spectra:
            lane = _lane_of(p)
            if lane in periods and _in_periods(p.time_ns, periods[lane], as_of_ns):
                counts[lane + (p.tags.get("model_version", ""),)] += 1
    else:
        counts = Counter(dict(spectra_by_version))
    deployments: dict[tuple[str, str, str], Point] = {}
    for p in pts.get("model_deployment", []):
        if p.time_ns <= as_of_ns:  # in time order, so the latest deployment of each version wins
            deployments[_lane_of(p) + (p.tags.get("model_version", ""),)] = p
    models = []
    for (site, lane_id, version), n in sorted(counts.items()):
        if n <= 0:
            continue
        d = deployments.get((site, lane_id, version))
        models.append(ModelUse(site, lane_id, version, int(n),
                               str(d.fields.get("model_id", "")) if d else "", str(d.fields.get("sha256", "")) if d
                               else "", _s(d.time_ns) if d else None))

    # ------------------------------------------------ instrument health
    status_by_lane: dict[Lane, list[Point]] = defaultdict(list)
    for p in pts.get("lane_status", []):
        status_by_lane[_lane_of(p)].append(p)
    health, readings = [], []
    for lane in lanes:
        lane_health, lane_readings = _lane_health(lane, periods[lane], status_by_lane.get(lane, []), as_of_ns)
        health.append(lane_health)
        readings += lane_readings

    # ------------------------------------------------ what the inspector should know first
    targeted = [s for s in sample_entries if s.kind == "targeted"]
    pending = [s for s in sample_entries if s.lab_status == LAB_PENDING]
    notes = []
    if in_progress:
        notes.append("Discharge still in progress on " + ", ".join(
            lane_id for (site, lane_id) in lanes if any(p.end_ns is None for p in periods[(site, lane_id)]))
            + "; figures are as of the report time.")
    found = [s for s in sample_entries if s.result is not None and s.result.contaminant_found]
    if found:
        notes.append("Lab found contamination in " + "; ".join(
            f"sample {s.sample_id} ({s.result.contaminant_type or 'unspecified'}"
            + (f", {100 * s.result.mass_fraction:.3g} % by mass" if s.result.mass_fraction is not None else "")
            + ")" for s in found) + ".")
    no_sample = [s for s in sample_entries if s.lab_status == LAB_NONE]
    if no_sample:
        notes.append("No material for the lab from " + "; ".join(f"{s.kind} sample {s.sample_id} ({s.status})"
                                                                   for s in no_sample) + ".")
    unsampled = [e for e in events if not e.sample_ids and e.state == "closed"]
    if unsampled:
        notes.append("Events without a targeted sample: " + ", ".join(e.event_id for e in unsampled) + ".")
    unstamped = [e for e in events if not e.lot_stamped]
    if unstamped:
        notes.append("Events sent without a lot id, included because they fell in the discharge: "
                     + ", ".join(e.event_id for e in unstamped) + ".")
    for site, lane_id in lanes:
        versions = sorted({m.model_version for m in models if (m.site, m.lane) == (site, lane_id)})
        if len(versions) > 1:
            notes.append(f"Model changed during the lot on {lane_id}: {', '.join(versions)}.")
    outages = [o for h in health for o in h.outages]
    if outages:
        by_kind = Counter(f"{o.kind} on {o.lane}" for o in outages)
        notes.append("Outages during the discharge: " + ", ".join(f"{k} ({n}x)" if n > 1 else k
                                                                    for k, n in sorted(by_kind.items())) + ".")
    gaps = [h for h in health if h.seq_gaps]
    if gaps:
        notes.append("Spectra lost before the edge (sequence gaps): " + ", ".join(
            f"{h.seq_gaps} on {h.lane}" for h in gaps) + ".")
    if unregistered:
        notes.append(f"Sample records on the lot's lanes during the discharge that the registry does not list for "
                     f"this lot: {_ids(unregistered)}.")
    resets = [d for d in discharges if d.totalizer_resets]
    if resets:
        notes.append("Belt totalizer reset during the discharge on " + ", ".join(
            f"{d.lane} ({d.totalizer_resets}x)" for d in resets) + "; tonnage counts on from the reset.")

    rows = [s.row for s in samples]
    return LotReport(
        lot_id=lot_id, site=", ".join(sorted({site for site, _ in lanes})),
        vessel=str(declared.get("vessel", "")), voyage=str(declared.get("voyage", "")),
        declared_brand=str(declared.get("declared_brand", "")),
        declared_tonnage_t=float(declared.get("declared_tonnage_t", 0.0)), origin=str(declared.get("origin", "")),
        holds=tuple(sorted({r.hold for r in rows if r.hold})),
        bills_of_lading=tuple(sorted({r.bill_of_lading for r in rows if r.bill_of_lading})),
        lanes=tuple(discharges), discharge_start_s=_s(start_ns), discharge_end_s=None if end_ns is None else _s(end_ns),
        as_of_s=_s(as_of_ns), tonnage_t=sum(d.tonnage_t for d in discharges), events=tuple(events),
        samples=tuple(sample_entries), models=tuple(models), health=tuple(health),
        health_readings=tuple(sorted(readings, key=lambda r: (r.lane, r.time_s))),
        unregistered_sample_ids=tuple(unregistered), notes=tuple(notes),
        summary=summary_sentence(len(events), len(targeted), len(pending)), data_sources=tuple(data_sources))


# ---------------------------------------------------------------------------------------------------- data layer


@dataclass(frozen=True)
class Selection:
    """Which points of one measurement to read: a time range (ns, both ends inclusive), some (site, lane)
    series, and numeric bounds on fields (`low <= field` and `field < high`). Both sources read the same
    Selection, one by filtering points, the other as an InfluxQL WHERE clause."""

    measurement: str
    start_ns: int | None = None
    end_ns: int | None = None
    lanes: tuple[Lane, ...] | None = None  # None: every lane; () would select nothing, so it is refused
    at_least: tuple[tuple[str, float], ...] = ()
    below: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.lanes is not None and not self.lanes:
            raise ValueError(f"Selection of {self.measurement}: lanes is empty; give lanes or None for every lane")

    def matches(self, p: Point) -> bool:
        if p.measurement != self.measurement:
            return False
        if self.start_ns is not None and p.time_ns < self.start_ns:
            return False
        if self.end_ns is not None and p.time_ns > self.end_ns:
            return False
        if self.lanes is not None and _lane_of(p) not in self.lanes:
            return False
        for name, low in self.at_least:
            value = _num(p.fields.get(name))
            if value is None or value < low:
                return False
        for name, high in self.below:
            value = _num(p.fields.get(name))
            if value is None or value >= high:
                return False
        return True

    def where(self) -> str:
        """The InfluxQL WHERE clause (empty when nothing is selected)."""
        clauses = []
        if self.start_ns is not None:
            clauses.append(f"time >= {self.start_ns}")
        if self.end_ns is not None:
            clauses.append(f"time <= {self.end_ns}")
        if self.lanes:
            clauses.append("(" + " OR ".join(f"({_ident('site')} = {_literal(site)} AND "
                                             f"{_ident('lane')} = {_literal(lane)})" for site, lane in self.lanes)
                           + ")")
        clauses += [f"{_ident(name)} >= {float(low)!r}" for name, low in self.at_least]
        clauses += [f"{_ident(name)} < {float(high)!r}" for name, high in self.below]
        return " WHERE " + " AND ".join(clauses) if clauses else ""


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class PointSource(Protocol):
    """Where the points come from. `describe` names the source in errors and in the report."""

    def describe(self) -> str: ...

    def points(self, selection: Selection) -> list[Point]: ...

    def count_by(self, selection: Selection, field_name: str, tags: Sequence[str]) -> dict[tuple[str, ...], int]:
        """Points of the selection with `field_name` set, counted per value of `tags`."""
        ...


class EmbeddedSource:
    """The embedded store (ingest.store.EmbeddedStore, `orelane-points.sqlite`) read through its public
    `points(measurement, start_ns, end_ns)`; the store reads the selection's time range page by page (its
    other filters apply here), which suits the sites and demos it is made for (InfluxDB is the answer for
    months of spectra)."""

    def __init__(self, path: str | Path):
        from ingest.store import EmbeddedStore  # the store is ingest's; only this source needs it
        self.path = Path(path)
        if not self.path.is_file():
            raise ReportError(f"embedded store {self.path} does not exist; give the orelane-points.sqlite that "
                              f"ingest writes (in the site's data_dir)")
        self._store = EmbeddedStore(self.path)

    def describe(self) -> str:
        return f"embedded store {self.path}"

    def points(self, selection: Selection) -> list[Point]:
        return [p for p in self._read(selection) if selection.matches(p)]

    def count_by(self, selection: Selection, field_name: str, tags: Sequence[str]) -> dict[tuple[str, ...], int]:
        counts: Counter = Counter()
        for p in self._read(selection):
            if selection.matches(p) and field_name in p.fields:
                counts[tuple(p.tags.get(t, "") for t in tags)] += 1
        return dict(counts)

    def _read(self, selection: Selection):
        return self._store.points(selection.measurement, selection.start_ns, selection.end_ns)

    def close(self) -> None:
        self._store.close()


class InfluxQLError(ReportError):
    """InfluxDB refused a query or could not be reached."""


_LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$")


class InfluxQLSource:
    """InfluxDB through InfluxQL over HTTP (`POST /query`, chunked JSON, epoch ns).

    Works with InfluxDB 1.x (database `database`), and with 2.x and 3.x when the bucket has a DBRP mapping
    (database = the mapped name, usually the bucket's); the token goes in `Authorization: Token ...`.
    """

    def __init__(self, url: str, database: str, *, token: str = "", retention_policy: str = "",
                 timeout_s: float = 30.0, chunk_size: int = 10_000):
        if not url.startswith(("http://", "https://")):
            raise ReportError(f"InfluxDB url {url!r} must start with http:// or https://")
        if not database:
            raise ReportError("InfluxDB database is empty; give the database (or the bucket's DBRP name)")
        self.url, self.database, self.retention_policy = url.rstrip("/"), database, retention_policy
        self._token, self.timeout_s, self.chunk_size = token, timeout_s, chunk_size
        host = urllib.parse.urlsplit(self.url).hostname or ""
        # A proxy from http_proxy must not sit between us and a database on this machine.
        handlers = [urllib.request.ProxyHandler({})] if _LOOPBACK.match(host) or host == "::1" else []
        self._opener = urllib.request.build_opener(*handlers)

    def describe(self) -> str:
        return f"InfluxDB {self.url} database {self.database}"

    def query(self, statement: str) -> list[dict]:
        """The series of one statement, chunks merged: [{"name", "tags", "columns", "values"}]."""
        form = {"q": statement, "db": self.database, "epoch": "ns", "chunked": "true",
                "chunk_size": str(self.chunk_size)}
        if self.retention_policy:
            form["rp"] = self.retention_policy
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Token {self._token}"
        request = urllib.request.Request(f"{self.url}/query", urllib.parse.urlencode(form).encode(), headers,
                                         method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise InfluxQLError(f"{self.describe()}: /query answered HTTP {exc.code} to {statement!r}: "
                                f"{exc.read()[:300].decode(errors='replace')}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise InfluxQLError(f"cannot reach {self.describe()}: {getattr(exc, 'reason', exc)}") from None
        merged: dict[tuple, dict] = {}
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                chunk = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InfluxQLError(f"{self.describe()}: /query answered something that is not JSON: "
                                    f"{line[:200]!r} ({exc})") from None
            errors = [chunk["error"]] if "error" in chunk else []
            errors += [r["error"] for r in chunk.get("results", []) if "error" in r]
            if errors:
                raise InfluxQLError(f"{self.describe()}: query {statement!r} failed: {'; '.join(errors)}")
            for result in chunk.get("results", []):
                for series in result.get("series", []):
                    key = (series.get("name"), tuple(sorted((series.get("tags") or {}).items())))
                    if key in merged:
                        merged[key]["values"] += series.get("values", [])
                    else:
                        merged[key] = {"name": series.get("name"), "tags": dict(series.get("tags") or {}),
                                       "columns": list(series["columns"]), "values": list(series.get("values", []))}
        return list(merged.values())

    def points(self, selection: Selection) -> list[Point]:
        # GROUP BY * returns the tags per series, so the columns are the fields alone.
        statement = f"SELECT * FROM {_ident(selection.measurement)}{selection.where()} GROUP BY *"
        out = []
        for series in self.query(statement):
            tags = {k: v for k, v in series["tags"].items() if v != ""}
            columns = series["columns"]
            for row in series["values"]:
                fields = {c: v for c, v in zip(columns[1:], row[1:]) if v is not None}
                if fields:
                    out.append(Point(series["name"], tags, fields, int(row[0])))
        return out

    def count_by(self, selection: Selection, field_name: str, tags: Sequence[str]) -> dict[tuple[str, ...], int]:
        group = ", ".join(_ident(t) for t in tags)
        statement = (f"SELECT count({_ident(field_name)}) FROM {_ident(selection.measurement)}{selection.where()}"
                     + (f" GROUP BY {group}" if tags else ""))
        counts: Counter = Counter()
        for series in self.query(statement):
            key = tuple(series["tags"].get(t, "") for t in tags)
            for row in series["values"]:
                counts[key] += int(row[1] or 0)
        return dict(counts)


def registered_samples(registry: Any, lot_id: str) -> list[RegisteredSample]:
    """The lot's samples from a SampleRegistry, each with its custody history and lab results."""
    return [RegisteredSample(row, registry.history(row.sample_id), registry.results(row.sample_id))
            for row in registry.samples(lot_id=lot_id)]


# Measurements read over the whole discharge, from LOOKBACK_S before it (the state at the opening).
_WINDOW_MEASUREMENTS = ("belt", "sample", "lane_status")


def gather_lot_report(source: PointSource, registry: Any, lot_id: str, *, clock: Callable[[], float] = time.time,
                      data_sources: Sequence[str] | None = None) -> LotReport:
    """Read what the lot needs from `source` and the registry, and build its report.

    Raises LotNotFound (naming the lots there are) when the lot never opened in the source.
    """
    as_of_s = clock()
    as_of_ns = _ns(as_of_s)
    lot_points = source.points(Selection("lot"))
    periods = lot_periods(lot_id, lot_points, source.describe())
    lanes = tuple(sorted(periods))
    start_ns = min(p.start_ns for ps in periods.values() for p in ps) - _ns(LOOKBACK_S)
    end_ns = max(p.end_or(as_of_ns) for ps in periods.values() for p in ps)
    points: dict[str, list[Point]] = {"lot": lot_points}
    for measurement in _WINDOW_MEASUREMENTS:
        points[measurement] = source.points(Selection(measurement, start_ns, end_ns, lanes))
    points["model_deployment"] = source.points(Selection("model_deployment", lanes=lanes))
    # events close after their ore passed: one stamped with the lot may come after the lot closed
    points["contamination_event"] = source.points(Selection("contamination_event", start_ns, None, lanes))

    # only the spectra and frames inside each event's stretch of belt
    spectra, frames = [], []
    for (site, lane_id, _), event_points in lot_event_points(lot_id, periods, points["contamination_event"],
                                                             as_of_ns).items():
        lane, stretch = (site, lane_id), _event_stretch(event_points)
        if lane not in periods or stretch is None:
            continue
        lo, hi = evidence_window(periods[lane], _event_end_ns(event_points, as_of_ns))
        on_stretch = dict(at_least=(("belt_position_m", stretch[0]),), below=(("belt_position_m", stretch[1]),))
        spectra += source.points(Selection("spectrum_result", lo, hi, (lane,), **on_stretch))
        frames += source.points(Selection("frame_result", lo, hi, (lane,),
                                          at_least=on_stretch["at_least"] + (("objects", 1.0),),
                                          below=on_stretch["below"]))
    points["spectrum_result"], points["frame_result"] = _unique(spectra), _unique(frames)

    counts: Counter = Counter()
    for lane, lane_periods in periods.items():
        for period in lane_periods:
            counts.update(source.count_by(Selection("spectrum_result", period.start_ns, period.end_or(as_of_ns),
                                                    (lane,)), "seq", ("site", "lane", "model_version")))
    samples = registered_samples(registry, lot_id)
    log.info("lot %s: lanes %s, points read %s, %d samples", lot_id, [lane for _, lane in lanes],
             {name: len(p) for name, p in points.items()}, len(samples))
    return build_lot_report(lot_id, points, samples, spectra_by_version=dict(counts), as_of_s=as_of_s,
                            data_sources=data_sources if data_sources is not None else (source.describe(),),
                            where=source.describe())


def _unique(points: Iterable[Point]) -> list[Point]:
    """Points once each (series and time identify a point, as in InfluxDB)."""
    seen: dict[tuple, Point] = {}
    for p in points:
        seen[(p.measurement, tuple(sorted(p.tags.items())), p.time_ns)] = p
    return list(seen.values())


# ---------------------------------------------------------------------------------------------------- command line


def safe_filename(lot_id: str) -> str:
    """A lot id as a file name: letters, digits, '.', '_' and '-' kept, anything else '_'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", lot_id).strip(".")
    return name or "lot"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orelane report", description="Reports for inspectors.")
    sub = p.add_subparsers(dest="report", required=True)
    lot = sub.add_parser("lot", help="the report of one lot: discharge, events, samples, lab, health (HTML and PDF)",
                         description="Write lot-<LOT>.html and lot-<LOT>.pdf. The points come from the site's "
                                     "InfluxDB or embedded store (--config), or from --store PATH or "
                                     "--influx-url URL --db DB; the samples from the registry.")
    lot.add_argument("lot_id", metavar="LOT", help="the lot id as declared (the lot message's lot_id)")
    lot.add_argument("--config", type=Path, help="site configuration: its [influx] section, else the embedded "
                                                 "store and the registry in its data_dir")
    lot.add_argument("--store", type=Path, help="embedded store (orelane-points.sqlite)")
    lot.add_argument("--influx-url", help="InfluxDB URL, e.g. http://influx:8086 (token: ORELANE_INFLUX_TOKEN)")
    lot.add_argument("--db", help="InfluxDB database (2.x/3.x: the bucket's DBRP database)")
    lot.add_argument("--registry", type=Path, help="sample registry (samples.sqlite)")
    lot.add_argument("--out", type=Path, required=True, help="directory to write the report into")
    lot.add_argument("--timezone", type=_timezone, default="UTC",
                     help="IANA zone the report shows times in, e.g. Europe/Rotterdam (default UTC)")
    return p


def _timezone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"{name!r} is not an IANA time zone (e.g. UTC, Europe/Rotterdam)") from None


def _open_sources(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[PointSource, Path]:
    from orelane.config import load
    site = load(args.config, dict(environ)) if args.config else None
    if args.store and args.influx_url:
        raise ReportError("give either --store or --influx-url, not both")
    if not (args.config or args.store or args.influx_url):
        raise ReportError("give --config SITE.toml, or --store PATH or --influx-url URL --db DB, with --registry")
    registry = args.registry or (site.data_dir / "samples.sqlite" if site else None)
    if registry is None:
        raise ReportError("give --registry PATH (samples.sqlite) or --config SITE.toml")
    if not Path(registry).is_file():
        raise ReportError(f"sample registry {registry} does not exist; give the samples.sqlite the edge writes")
    if args.influx_url or (site and site.influx and not args.store):
        url = args.influx_url or site.influx.url
        database = args.db or (site.influx.bucket if site and site.influx else "")
        if not database:
            raise ReportError("--influx-url needs --db (the database, or the bucket's DBRP database)")
        token = environ.get("ORELANE_INFLUX_TOKEN", "") or (site.influx.token if site and site.influx else "")
        timeout_s = site.influx.timeout_s if site and site.influx else 30.0
        source: PointSource = InfluxQLSource(url, database, token=token, timeout_s=max(timeout_s, 30.0))
    else:
        source = EmbeddedSource(args.store or site.data_dir / "orelane-points.sqlite")
    return source, Path(registry)


def main(argv: Sequence[str] | None = None, *, clock: Callable[[], float] = time.time,
         environ: Mapping[str, str] | None = None) -> int:
    """`orelane report lot LOT ...`: write the lot's HTML and PDF report under --out; 0 when written, 1 when the
    lot or a source is missing, 2 for wrong arguments."""
    from orelane.config import ConfigError
    from sampling_robot.registry import SampleRegistry

    try:
        args = build_parser().parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, or argparse's own message for wrong arguments
        return int(exc.code or 0)
    environ = os.environ if environ is None else environ
    try:
        source, registry_path = _open_sources(args, environ)
        registry = SampleRegistry(registry_path)
        try:
            report = gather_lot_report(source, registry, args.lot_id, clock=clock,
                                       data_sources=(source.describe(), f"sample registry {registry_path}"))
        finally:
            registry.close()
            if isinstance(source, EmbeddedSource):
                source.close()
        from dashboards import report_templates
        paths = report_templates.write_report(report, args.out, tz=args.timezone,
                                              stem=f"lot-{safe_filename(args.lot_id)}")
    except ConfigError as exc:
        print(f"orelane report: configuration error: {exc}", file=sys.stderr)
        return 2
    except ReportError as exc:
        print(f"orelane report: {exc}", file=sys.stderr)
        return 1
    print(report.summary)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
