"""Half an hour of two sites' lanes, as the contract's messages, mapped to points the way ingest maps them.

Every point is made by encoding a contract message (orelane.contract.messages)
and passing the payload through orelane.contract.measurements.points_for, so
the dashboards are tested against exactly what ingest writes. Only
`ingest_health` (ingest's own measurement, not a contract message) is built
as points directly. `Truth` records what a correct panel must show.

The scenario gives every alert rule something to find:
- port-north/lane-1: two events (the last one open 2 min before NOW), model v2 deployed halfway with a 5 %
  anomaly rate, sampler PLC faulted (jam) for the last 90 s, radiation portal fitted;
- port-north/lane-2: the edge dies 5 min before NOW (last will: offline), one missed targeted cut;
- port-south/lane-1: white reference never refreshed (stale), sampler link down for the last 3 min;
- ingest worker w2 of port-north buffers to disk for the last 10 min.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from dashboards.schema import HEALTH_ALARMS
from ingest.lineprotocol import encode
from orelane.contract import messages as m
from orelane.contract.measurements import Point, points_for

T0_S = 1709272800.0  # 2024-03-01 06:00:00 UTC
DURATION_S = 1800.0
NOW_S = T0_S + DURATION_S
CLASS_NAMES = ("wood", "plastic", "steel")
SPECTRA_HZ = 5
CAMERA_FPS = 2
BELT_EVERY_S = 2.0
STATUS_EVERY_S = 5.0
REFERENCE_EVERY_S = 600.0
ROUTINE_EVERY_S = 60.0


@dataclass(frozen=True)
class LaneSpec:
    site: str
    lane: str
    flow_t_h: float
    dies_at_s: float = NOW_S + 1  # the edge stops publishing (last will) at this time
    v2_from_s: float | None = None  # model v2 (drifting) deployed at this time
    fault_from_s: float | None = None  # PLC fault code 1 from this time
    link_down_from_s: float | None = None  # robot link down from this time
    reference_stale: bool = False
    radiation: bool = False
    events: tuple[tuple[float, float, str, str], ...] = ()  # (opened_s, closed_s, class, lot)
    lot: tuple[str, float] | None = None  # (lot id, opened at)
    missed_targeted: int = 0
    belt_scale_fault_from_s: float | None = None  # the integrator reports its load cell faulted from this time
    radiation_fault_from_s: float | None = None  # the gamma portal reports its own fault from this time


LANES = (
    LaneSpec("port-north", "lane-1", 3000.0, v2_from_s=T0_S + 900, fault_from_s=NOW_S - 90, radiation=True,
             radiation_fault_from_s=NOW_S - 150,
             events=((T0_S + 200, T0_S + 204, "wood", "L-001"), (NOW_S - 120, NOW_S - 116, "plastic", "L-001")),
             lot=("L-001", T0_S + 60)),
    LaneSpec("port-north", "lane-2", 2500.0, dies_at_s=NOW_S - 300,
             events=((T0_S + 300, T0_S + 304, "steel", "L-002"),), lot=("L-002", T0_S + 30), missed_targeted=1),
    LaneSpec("port-south", "lane-1", 2000.0, reference_stale=True, link_down_from_s=NOW_S - 180,
             belt_scale_fault_from_s=NOW_S - 240),
)


@dataclass
class Truth:
    """What the simulated lanes did, keyed by (site, lane) unless said otherwise."""

    online_last: dict = field(default_factory=dict)
    totalizer_last_t: dict = field(default_factory=dict)
    totalizer_by_minute: dict = field(default_factory=dict)  # (site, lane) -> {minute start s: last value}
    mean_speed_m_s: dict = field(default_factory=dict)
    flow_t_h: dict = field(default_factory=dict)
    model_version_last: dict = field(default_factory=dict)
    events_closed: dict = field(default_factory=Counter)
    event_rows: list = field(default_factory=list)  # (site, lane, event_id, class, lot_id) of closed events
    events_opened: list = field(default_factory=list)  # (site, lane, event_id, class, opened_s)
    lots: dict = field(default_factory=dict)  # lot id -> (site, lane)
    status_records: Counter = field(default_factory=Counter)  # (site, lane, kind, status) -> records
    sample_times: dict = field(default_factory=dict)  # (site, lane, sample_id) -> {status: time s}
    result_classes: Counter = field(default_factory=Counter)  # lab result class -> analysed records
    spectra: Counter = field(default_factory=Counter)  # (site, lane, version) -> spectra
    outside: Counter = field(default_factory=Counter)  # (site, lane, version) -> spectra with score > 1
    decisions: Counter = field(default_factory=Counter)  # (version, decision) -> spectra
    anomaly_classes: Counter = field(default_factory=Counter)  # (version, class) -> non-clean spectra
    refused: Counter = field(default_factory=Counter)  # (site, lane) -> spectrum dead letters
    max_reference_age_s: dict = field(default_factory=dict)
    robot_states: dict = field(default_factory=lambda: defaultdict(set))
    robot_link: dict = field(default_factory=lambda: defaultdict(set))
    radiation_lanes: set = field(default_factory=set)
    alarms: dict = field(default_factory=lambda: defaultdict(set))  # ((site, lane), alarm field) -> values seen
    health: dict = field(default_factory=dict)  # constant proposed health values
    ingest: dict = field(default_factory=dict)  # worker -> last values


HEALTH_CONSTANTS = {"spectra_saturated_fraction": 0.004, "spectra_snr": 350.0, "lamp_drift_fraction": 0.012,
                    "camera_mean_brightness": 118.0, "camera_saturated_fraction": 0.01}


def _points(spec: LaneSpec, leaf: str, message) -> list[Point]:
    payload = message.to_bytes() if hasattr(message, "to_bytes") else message.to_json()
    return points_for(spec.site, spec.lane, leaf, payload)


def _lane(spec: LaneSpec, truth: Truth) -> list[Point]:
    key = (spec.site, spec.lane)
    points: list[Point] = []
    end_s = min(spec.dies_at_s, NOW_S)
    seconds = np.arange(T0_S, end_s, 1.0)
    position_m = 1000.0
    totalizer_t = 50_000.0
    speeds = []
    minute_last: dict[float, float] = {}
    for t in np.arange(T0_S, end_s, BELT_EVERY_S):
        speed = 4.0 + 0.2 * math.sin((t - T0_S) / 60.0)
        position_m += speed * BELT_EVERY_S
        totalizer_t += spec.flow_t_h / 3600.0 * BELT_EVERY_S
        speeds.append(speed)
        minute_last[math.floor(t / 60) * 60] = totalizer_t
        points += _points(spec, "belt", m.BeltState(spec.lane, float(t), position_m, speed, spec.flow_t_h,
                                                    totalizer_t))
    truth.totalizer_last_t[key] = totalizer_t
    truth.totalizer_by_minute[key] = minute_last
    truth.mean_speed_m_s[key] = float(np.mean(speeds))
    truth.flow_t_h[key] = spec.flow_t_h

    # model deployments: v1 long before the range, v2 halfway on the drifting lane
    points += _points(spec, "model/deploy", m.ModelDeployment(spec.lane, "ore-brand-a", "v1", "a" * 64,
                                                              "file:///models/v1.npz", T0_S - 3600))
    truth.model_version_last[key] = "v1"
    if spec.v2_from_s is not None:
        points += _points(spec, "model/deploy", m.ModelDeployment(spec.lane, "ore-brand-a", "v2", "b" * 64,
                                                                  "file:///models/v2.npz", spec.v2_from_s))
        truth.model_version_last[key] = "v2"

    # spectrum results, one batch per second
    seq = 0
    n = SPECTRA_HZ
    for t in seconds:
        version = "v2" if spec.v2_from_s is not None and t >= spec.v2_from_s else "v1"
        every = 20 if version == "v2" else 500
        seqs = np.arange(seq, seq + n, dtype=np.uint64)
        times_ns = (np.int64(round(t * 1e9)) + np.arange(n, dtype=np.int64) * (1_000_000_000 // n))
        score = np.full(n, 0.3, dtype=np.float32)
        decision = np.zeros(n, dtype=np.uint8)
        class_index = np.full(n, m.NO_CLASS, dtype=np.uint8)
        in_event = [ev for ev in spec.events if ev[0] <= t < ev[1]]
        for i in range(n):
            if in_event:
                score[i], decision[i], class_index[i] = 2.5, 1, CLASS_NAMES.index(in_event[0][2])
            elif (seq + i) % every == 0:
                score[i], decision[i] = 1.6, 2
        for i in range(n):
            name = "none" if class_index[i] == m.NO_CLASS else CLASS_NAMES[class_index[i]]
            dname = m.DECISIONS[decision[i]]
            truth.spectra[key + (version,)] += 1
            truth.outside[key + (version,)] += int(score[i] > 1)
            truth.decisions[(version, dname)] += 1
            if dname != "clean":
                truth.anomaly_classes[(version, name)] += 1
        scores = np.zeros((n, len(CLASS_NAMES)), dtype=np.float32)
        res = m.SpectrumResults(spec.lane, version, CLASS_NAMES, seqs, times_ns,
                                np.full(n, 1000.0 + (t - T0_S) * 4.0), score, score * 10, score * 3,
                                class_index, decision, scores)
        points += _points(spec, "results/spectra", res)
        seq += n

    # camera frame results at CAMERA_FPS
    for k, t in enumerate(np.arange(T0_S, end_s, 1.0 / CAMERA_FPS)):
        max_score = 0.9 if any(ev[0] <= t < ev[1] for ev in spec.events) else 0.1
        points += _points(spec, "results/frames", m.FrameResult(spec.lane, k, float(t), 1000.0, max_score, ()))

    # lot
    if spec.lot:
        lot_id, opened = spec.lot
        truth.lots[lot_id] = key
        points += _points(spec, "lot", m.Lot(spec.lane, lot_id, "MV Iron Duke", "V-17", "brand-a", 80_000.0,
                                             "AU", "open", opened, hold="3", bill_of_lading="BL-9"))

    # events: published on open and on close
    for k, (opened, closed, cls, lot) in enumerate(spec.events):
        event_id = f"{spec.lane}-ev{k + 1}"
        common = dict(event_id=event_id, lane=spec.lane, start_m=2000.0 + k, end_m=2016.0 + k,
                      peak_position_m=2008.0 + k, tonnage_t=12.5, peak_score=0.93, likely_class=cls,
                      spectra_seq_first=0, spectra_seq_last=20, frame_seqs=(1, 2), opened_s=opened, lot_id=lot)
        points += _points(spec, "events", m.ContaminationEvent(state="open", **common))
        truth.events_opened.append(key + (event_id, cls, opened))
        if closed <= NOW_S:
            points += _points(spec, "events", m.ContaminationEvent(state="closed", closed_s=closed, **common))
            truth.events_closed[key] += 1
            truth.event_rows.append(key + (event_id, cls, lot))

    # samples: a routine cut every minute, a targeted cut after each event; full chain of custody
    chain = (("requested", 0.0), ("cut", 20.0), ("sealed", 60.0), ("collected", 300.0), ("received", 600.0),
             ("analysed", 1200.0))
    requests = [("routine", T0_S + 30 + i * ROUTINE_EVERY_S, None) for i in range(int(DURATION_S // 60))]
    requests += [("targeted", ev[1] + 5, f"{spec.lane}-ev{k + 1}") for k, ev in enumerate(spec.events)]
    # the lab finds what the event flagged in targeted samples; routine samples are clean
    found = {f"{spec.lane}-ev{k + 1}": ev[2] for k, ev in enumerate(spec.events)}
    sample_id = 100 if spec.lane == "lane-1" and spec.site == "port-north" else \
        (300 if spec.site == "port-north" else 500)
    missed_left = spec.missed_targeted
    for kind, requested_s, event_id in sorted(requests, key=lambda r: r[1]):
        sample_id += 1
        skey = key + (sample_id,)
        truth.sample_times[skey] = {}
        steps = chain
        if kind == "targeted" and missed_left:
            missed_left -= 1
            steps = (("requested", 0.0), ("missed", 40.0))
        for i, (status, delay_s) in enumerate(steps):
            # lab receipt and result vary per sample; the ms offset keeps two samples' records apart
            # (see test_two_samples_recorded_in_the_same_instant_are_one_point)
            delay_s += ((sample_id % 7) * 10.0 if i >= 4 else 0.0) + (sample_id % 1000) * 0.001
            at = requested_s + delay_s
            if at > min(NOW_S, end_s):
                break
            result_class = found.get(event_id, "clean") if status == "analysed" else None
            points += _points(spec, "samples/record", m.SampleRecord(
                sample_id, spec.lane, kind, status, at, reason="" if status != "missed" else "robot busy",
                belt_position_m=3000.0, tonnage_t=12.0, event_id=event_id, result_class=result_class))
            truth.status_records[key + (kind, status)] += 1
            if result_class:
                truth.result_classes[result_class] += 1
            truth.sample_times[skey][status] = at

    # refused spectra (dead letters from the edge) on the first lane
    if spec.radiation:
        for k in range(10):
            dl = m.DeadLetter(spec.lane, f"orelane/v1/{spec.site}/{spec.lane}/spectra/batch",
                              "spectrum not scored: detector saturated", T0_S + 100 + k, seq=90_000 + k,
                              message_timestamp_ns=int((T0_S + 100 + k) * 1e9))
            points += _points(spec, "deadletter", dl)
            truth.refused[key] += 1

    # status every 5 s with the edge's health; offline (last will) when the edge dies
    spectra_in = 0
    max_age = -math.inf
    for t in np.arange(T0_S, end_s, STATUS_EVERY_S):
        spectra_in = int((t - T0_S) * SPECTRA_HZ)
        age = (t - T0_S + 1500.0) if spec.reference_stale else (t - T0_S) % REFERENCE_EVERY_S
        max_age = max(max_age, age)
        fault = spec.fault_from_s is not None and t >= spec.fault_from_s
        link_up = not (spec.link_down_from_s is not None and t >= spec.link_down_from_s)
        health = {"reference_age_s": round(float(age), 1), "belt_link_up": 1, "robot_link_up": int(link_up),
                  "spectra_in": spectra_in, "spectra_classified": spectra_in, "spectra_rejected": 0,
                  "seq_gaps": 0, "frames_in": int((t - T0_S) * CAMERA_FPS), "events": 0, "cuts_targeted": 0,
                  "cuts_routine": 0, "cuts_missed": 0, "dead_letters": 0, "belt_position_m": 1000.0,
                  "model_version": "v1",  # a string: points_for keeps numbers only
                  "robot_state": 9 if fault else (1 if int(t) % 60 < 20 else 0), "robot_fault_code": int(fault),
                  **HEALTH_CONSTANTS}
        scale_fault = spec.belt_scale_fault_from_s is not None and t >= spec.belt_scale_fault_from_s
        health["belt_scale_fault"] = int(scale_fault)
        health.update({name: 0 for name in HEALTH_ALARMS}, alarm_belt_scale_fault=int(scale_fault),
                      alarm_reference_stale=int(age >= 1800.0), alarm_robot_link=int(not link_up))
        if spec.radiation:
            health["radiation_link_up"] = 1
            portal_fault = spec.radiation_fault_from_s is not None and t >= spec.radiation_fault_from_s
            health["radiation_fault"] = health["alarm_radiation_fault"] = int(portal_fault)
            truth.radiation_lanes.add(key)
        for name in HEALTH_ALARMS:
            truth.alarms[(key, name)].add(health[name])
        truth.robot_states[key].add(health["robot_state"])
        truth.robot_link[key].add(health["robot_link_up"])
        points += _points(spec, "status", m.LaneStatus(spec.lane, "online", float(t), health))
    truth.max_reference_age_s[key] = max_age
    truth.online_last[key] = 1
    if spec.dies_at_s <= NOW_S:
        points += _points(spec, "status", m.LaneStatus(spec.lane, "offline", spec.dies_at_s + 5.0, {}))
        truth.online_last[key] = 0
    return points


def _ingest_health(truth: Truth) -> list[Point]:
    """Two ingest workers every 10 s; w2 cannot write for the last 10 minutes and buffers to disk."""
    points = []
    for worker in ("w1", "w2"):
        messages = written = errors = 0
        buffered = batches = 0
        lag = 0.0
        for t in np.arange(T0_S, NOW_S + 1, 10.0):
            down = worker == "w2" and t > NOW_S - 600
            messages += 400
            if down:
                buffered += 250_000
                batches += 1
                errors += 1
                lag = t - (NOW_S - 600)
            else:
                written += 2000
            points.append(Point("ingest_health", {"site": "port-north", "worker": worker},
                                {"messages_in": messages, "points_written": written, "batches_buffered": batches,
                                 "buffer_bytes": buffered, "replay_lag_s": float(lag), "write_errors": errors},
                                int(t * 1e9)))
        truth.ingest[worker] = {"buffer_bytes": buffered, "batches_buffered": batches, "replay_lag_s": lag,
                                "write_errors": errors}
    return points


def simulate() -> tuple[list[Point], Truth]:
    truth = Truth(health=dict(HEALTH_CONSTANTS))
    points: list[Point] = []
    for spec in LANES:
        points += _lane(spec, truth)
    points += _ingest_health(truth)
    return points, truth


def line_protocol(points: list[Point], batch: int = 20_000) -> list[bytes]:
    """Line protocol bodies of at most `batch` points, encoded as ingest encodes them."""
    return [encode(points[i:i + batch]) for i in range(0, len(points), batch)]
