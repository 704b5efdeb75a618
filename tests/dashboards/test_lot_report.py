"""The lot report: numbers equal what the lanes did, the same from the embedded store and InfluxDB, HTML and PDF.

The scenario is half an hour of two lanes discharging lot LOT-2024-031 of the MV Pilbara <Dawn> & Co (a
name that must be escaped in HTML), built from contract messages passed through points_for as ingest
does, and a real SampleRegistry with custody histories and lab results. Its truth is written out by
hand below, with the arithmetic in the comments, rather than computed by code that could share a bug
with the report.

lane-1: lot LOT-2024-030 open from T0-600; LOT opens at T0 (ending 030 without a close), closes T0+1800.
        3600 t/h (1 t/s). Events ev1 wood, ev2 plastic, ev3 steel (still open at the close), plus ev0 of lot 030.
        Model v1, v2 from T0+900. Robot link down T0+1000..T0+1180; no status T0+1400..T0+1470; belt link down
        from T0+1790 (still down at the close). White reference never refreshed after T0-300.
lane-2: LOT opens T0+300, closes T0+1500; LOT-2024-032 opens T0+1600. 1800 t/h (0.5 t/s); the belt scale's
        totalizer is reset at T0+900. Events ev1 unknown anomaly, ev2 wood sent without a lot id, plus one
        unstamped event after the close and one of lot 032. Belt link down T0+500..T0+530; the edge goes offline
        at T0+1000 (last will) and is back at T0+1060 with its counters restarted and no reference yet.
"""

from __future__ import annotations

import base64
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dashboards import lot_report as lr
from dashboards import report_templates
from ingest.lineprotocol import encode
from ingest.store import EmbeddedStore
from orelane.contract import messages as m
from orelane.contract.measurements import Point, points_for
from sampling_robot.registry import SampleRegistry

SITE = "port-north"
LOT = "LOT-2024-031"
PREV_LOT, NEXT_LOT = "LOT-2024-030", "LOT-2024-032"
VESSEL, VOYAGE = "MV Pilbara <Dawn> & Co", "V-231"
T0 = 1709272800.0  # 2024-03-01 06:00:00 UTC
DATA_FROM, DATA_TO = T0 - 900, T0 + 2100
NOW = T0 + 2100
CLASS_NAMES = ("wood", "plastic", "steel")
BELT_EVERY_S = 2.0
STATUS_EVERY_S = 5.0
SPEED_M_S = 4.0
FLOW_T_S = {"lane-1": 1.0, "lane-2": 0.5}
POSITION_OFFSET_M = {"lane-1": 0.0, "lane-2": 50_000.0}
TOTALIZER_START_T = {"lane-1": 10_000.0, "lane-2": 20_000.0}
LANE2_RESET_S = T0 + 900  # lane-2's totalizer reads 1 t here: reset just after the reading at T0+898

# event id -> (lane, class, ore passes from, to, opened, closed or None, lot id stamped by the edge)
EVENTS = {
    "lane-1-ev0": ("lane-1", "wood", T0 - 300, T0 - 297, T0 - 290, T0 - 287, PREV_LOT),
    "lane-1-ev1": ("lane-1", "wood", T0 + 400, T0 + 404, T0 + 412, T0 + 416, LOT),
    "lane-1-ev2": ("lane-1", "plastic", T0 + 1200, T0 + 1203, T0 + 1210, T0 + 1214, LOT),
    "lane-1-ev3": ("lane-1", "steel", T0 + 1790, T0 + 1794, T0 + 1797, None, LOT),
    "lane-2-ev1": ("lane-2", "unknown", T0 + 700, T0 + 703, T0 + 708, T0 + 711, LOT),
    "lane-2-ev2": ("lane-2", "wood", T0 + 1300, T0 + 1302, T0 + 1306, T0 + 1309, None),
    "lane-2-ev3": ("lane-2", "wood", T0 + 1550, T0 + 1552, T0 + 1556, T0 + 1559, None),  # between lots
    "lane-2-ev9": ("lane-2", "steel", T0 + 1700, T0 + 1703, T0 + 1708, T0 + 1711, NEXT_LOT),
}


def position_m(lane: str, t: float) -> float:
    return POSITION_OFFSET_M[lane] + SPEED_M_S * (t - DATA_FROM)


def totalizer_t(lane: str, t: float) -> float:
    if lane == "lane-2" and t >= LANE2_RESET_S:
        return 1.0 + FLOW_T_S[lane] * (t - LANE2_RESET_S)
    return TOTALIZER_START_T[lane] + FLOW_T_S[lane] * (t - DATA_FROM)


def event_totalizer_t(event_id: str) -> float:
    lane, _, t_from, t_to, *_ = EVENTS[event_id]
    return totalizer_t(lane, (t_from + t_to) / 2)


def in_event(lane: str, t: float) -> str | None:
    for event_id, (ev_lane, _, t_from, t_to, *_) in EVENTS.items():
        if ev_lane == lane and t_from <= t < t_to:
            return event_id
    return None


# ---------------------------------------------------------------------------------------------------- truth

# tonnes: lane-1 1800 s x 1 t/s; lane-2 1200 s x 0.5 t/s (the reset reading counts its 1 t)
TONNAGE_T = {"lane-1": 1800.0, "lane-2": 600.0}
# lot tonnage at each event's ore: seconds since the lane opened the lot x flow
EVENT_LOT_TONNAGE_T = {"lane-1-ev1": 402.0, "lane-1-ev2": 1201.5, "lane-1-ev3": 1792.0,
                       "lane-2-ev1": (701.5 - 300) * 0.5, "lane-2-ev2": (1301 - 300) * 0.5}
EVENT_CLASS = {"lane-1-ev1": "wood", "lane-1-ev2": "plastic", "lane-1-ev3": "steel", "lane-2-ev1": "unknown",
               "lane-2-ev2": "wood"}
# 2 spectra a second, seq from 0 at DATA_FROM: a spectrum at t has seq 2 (t - DATA_FROM); stretch [from, to)
EVENT_SEQS = {"lane-1-ev1": (2 * 1300, 2 * 1304 - 1), "lane-1-ev2": (2 * 2100, 2 * 2103 - 1),
              "lane-1-ev3": (2 * 2690, 2 * 2694 - 1), "lane-2-ev1": (2 * 1600, 2 * 1603 - 1),
              "lane-2-ev2": (2 * 2200, 2 * 2202 - 1)}
# one frame a second, seq from 0 at DATA_FROM; objects seen while the event's ore passed
EVENT_FRAMES = {"lane-1-ev1": (1300, 1301, 1302, 1303), "lane-1-ev2": (2100, 2101, 2102),
                "lane-1-ev3": (2690, 2691, 2692, 2693), "lane-2-ev1": (1600, 1601, 1602),
                "lane-2-ev2": (2200, 2201)}
# spectra in [open, close], both ends: lane-1 v1 T0..T0+899.5 (1800), v2 T0+900..T0+1800 (1801); lane-2 1200 s
SPECTRA_BY_VERSION = {(SITE, "lane-1", "v1"): 1800, (SITE, "lane-1", "v2"): 1801, (SITE, "lane-2", "v1"): 2401}


def outage(lane: str, kind: str, start: float, end: float, ongoing: bool = False) -> lr.Outage:
    return lr.Outage(SITE, lane, kind, start, end, ongoing)


OUTAGES = {
    "lane-1": (outage("lane-1", lr.OUTAGE_ROBOT_LINK, T0 + 1000, T0 + 1180),
               outage("lane-1", lr.OUTAGE_NO_STATUS, T0 + 1400, T0 + 1470),
               outage("lane-1", lr.OUTAGE_BELT_LINK, T0 + 1790, T0 + 1800, ongoing=True)),
    "lane-2": (outage("lane-2", lr.OUTAGE_BELT_LINK, T0 + 500, T0 + 530),
               outage("lane-2", lr.OUTAGE_RADIATION_FAULT, T0 + 700, T0 + 760),
               outage("lane-2", lr.OUTAGE_EDGE_OFFLINE, T0 + 1000, T0 + 1060)),
}
HEALTH = {
    # status every 5 s over 1800 s, less the 13 silent reports (T0+1405..T0+1465): 361 - 13
    "lane-1": dict(status_reports=348, max_reference_age_s=2100.0, reports_without_reference=0,
                   # reference from T0-300 is stale (>= 1800 s) from T0+1500: T0+1500..T0+1800 is 61 reports
                   reference_stale_reports=61, seq_gaps=7,
                   # the counter is 2 x (t - DATA_FROM): 5400 at T0+1800 less 1800 at the opening
                   spectra_in=3600),
    # T0+300..T0+1500 is 241 reports, less the 11 missing while offline (T0+1005..T0+1055)
    "lane-2": dict(status_reports=230, max_reference_age_s=595.0, reports_without_reference=4,
                   # the edge raises the stale alarm when it has no reference at all, as here after its restart
                   reference_stale_reports=4, seq_gaps=8,
                   # 2400 at the opening to 3800 at T0+1000 (last will), then restarted: 10 at T0+1065 to 880
                   spectra_in=(3800 - 2400) + 880),
}


# ---------------------------------------------------------------------------------------------------- scenario


def _points(lane: str, leaf: str, message) -> list[Point]:
    payload = message.to_bytes() if hasattr(message, "to_bytes") else message.to_json()
    return points_for(SITE, lane, leaf, payload)


def _lot(lane: str, lot_id: str, state: str, t: float) -> list[Point]:
    return _points(lane, "lot", m.Lot(lane, lot_id, VESSEL, VOYAGE, "blend_fines_61", 2500.0, "AU", state, t,
                                      hold="3", bill_of_lading="BL-77"))


def _belt(lane: str) -> list[Point]:
    return [p for t in np.arange(DATA_FROM, DATA_TO + 1, BELT_EVERY_S)
            for p in _points(lane, "belt", m.BeltState(lane, float(t), position_m(lane, t), SPEED_M_S,
                                                       FLOW_T_S[lane] * 3600, totalizer_t(lane, t)))]


def _spectra_and_frames(lane: str) -> list[Point]:
    points = []
    for k, t in enumerate(np.arange(DATA_FROM, DATA_TO + 1, 1.0)):
        times = np.array([t, t + 0.5])
        version = "v2" if lane == "lane-1" and t >= T0 + 900 else "v1"
        events = [in_event(lane, x) for x in times]
        decision = np.array([0 if e is None or x < EVENTS[e][2] + 1 else (2 if EVENTS[e][1] == "unknown" else 1)
                             for e, x in zip(events, times)], dtype=np.uint8)
        class_index = np.array([CLASS_NAMES.index(EVENTS[e][1]) if d == 1 else m.NO_CLASS
                                for e, d in zip(events, decision)], dtype=np.uint8)
        score = np.where(decision > 0, 2.4, 0.3).astype(np.float32)
        result = m.SpectrumResults(lane, version, CLASS_NAMES, np.array([2 * k, 2 * k + 1], dtype=np.uint64),
                                   np.round(times * 1e9).astype(np.int64),
                                   np.array([position_m(lane, x) for x in times]), score, score * 10, score * 3,
                                   class_index, decision, np.zeros((2, len(CLASS_NAMES)), dtype=np.float32))
        points += _points(lane, "results/spectra", result)
        objects = (({"area_cm2": 12.0, "bbox_px": [10, 10, 40, 40], "across_m": 0.4,
                     "along_m": position_m(lane, t), "score": 0.9},) if in_event(lane, t) else ())
        points += _points(lane, "results/frames", m.FrameResult(lane, k, float(t), position_m(lane, t),
                                                                0.9 if objects else 0.1, objects))
    return points


def _events() -> list[Point]:
    points = []
    for event_id, (lane, cls, t_from, t_to, opened, closed, lot_id) in EVENTS.items():
        seqs = [2 * round(t - DATA_FROM) + i for t in np.arange(t_from, t_to, 1.0) for i in (0, 1)]
        common = dict(event_id=event_id, lane=lane, start_m=position_m(lane, t_from), end_m=position_m(lane, t_to),
                      peak_position_m=position_m(lane, (t_from + t_to) / 2), tonnage_t=event_totalizer_t(event_id),
                      peak_score=0.93, likely_class=cls, spectra_seq_first=min(seqs), spectra_seq_last=max(seqs),
                      frame_seqs=tuple(round(t - DATA_FROM) for t in np.arange(t_from, t_to, 1.0)), opened_s=opened,
                      lot_id=lot_id)
        points += _points(lane, "events", m.ContaminationEvent(state="open", **common))
        if closed is not None:
            points += _points(lane, "events", m.ContaminationEvent(state="closed", closed_s=closed, **common))
    return points


def _status(lane: str) -> list[Point]:
    points = []
    for t in np.arange(DATA_FROM, DATA_TO + 1, STATUS_EVERY_S):
        t = float(t)
        if lane == "lane-1" and T0 + 1400 < t < T0 + 1470:
            continue  # the status messages of this minute never arrived
        if lane == "lane-2" and T0 + 1000 < t < T0 + 1060:
            continue  # the edge is down
        if lane == "lane-2" and t == T0 + 1060:
            points += _points(lane, "status", m.LaneStatus(lane, "online", t, {}))  # birth message
            continue
        restarted = lane == "lane-2" and t > T0 + 1060
        started = T0 + 1060 if restarted else DATA_FROM
        if lane == "lane-1":
            reference_s = T0 - 300 if t >= T0 - 300 else DATA_FROM
        elif restarted:
            reference_s = None if t <= T0 + 1080 else T0 + 1085 + 600 * ((t - T0 - 1085) // 600)
        else:
            reference_s = DATA_FROM + 600 * ((t - DATA_FROM) // 600)
        age = -1.0 if reference_s is None else round(t - reference_s, 1)
        if lane == "lane-1":
            gaps = 3 if t < T0 + 500 else (5 if t < T0 + 1300 else (10 if t < T0 + 1900 else 12))
        else:
            gaps = (2 if t < T0 + 400 else 6) if not restarted else (0 if t < T0 + 1200 else (4 if t < T0 + 1550
                                                                                              else 9))
        health = {"reference_age_s": age,
                  "belt_link_up": int(not ((lane == "lane-1" and T0 + 1790 <= t < T0 + 1850)
                                           or (lane == "lane-2" and T0 + 500 <= t < T0 + 530))),
                  "robot_link_up": int(not (lane == "lane-1" and T0 + 1000 <= t < T0 + 1180)),
                  "alarm_radiation_link": 0,
                  "alarm_radiation_fault": int(lane == "lane-2" and T0 + 700 <= t < T0 + 760),
                  "spectra_in": int(2 * (t - started)), "seq_gaps": gaps, "model_version": "v1",
                  "alarm_reference_stale": int(age < 0 or age >= 1800)}
        state = "offline" if lane == "lane-2" and t == T0 + 1000 else "online"
        points += _points(lane, "status", m.LaneStatus(lane, state, t, health))
    return points


# sample id -> (lane, kind, event, requested at, lot, custody after "requested": (status, at), results)
SAMPLES = {
    100: ("lane-1", "routine", None, T0 - 200, PREV_LOT, (("cut", T0 - 190), ("sealed", T0 - 150)), ()),
    101: ("lane-1", "routine", None, T0 + 300, LOT,
          (("cut", T0 + 310), ("sealed", T0 + 350), ("collected", T0 + 900), ("received", T0 + 1000),
           ("result", T0 + 1500, False, "", None, ""), ("analysed", T0 + 1510), ("archived", T0 + 1600)), ()),
    102: ("lane-1", "targeted", "lane-1-ev1", T0 + 416, LOT,
          (("cut", T0 + 430), ("sealed", T0 + 470), ("collected", T0 + 900), ("received", T0 + 1000),
           ("result", T0 + 1400, True, "wood", 0.008, ""), ("analysed", T0 + 1410)), ()),
    103: ("lane-1", "routine", None, T0 + 900, LOT,
          (("cut", T0 + 910), ("sealed", T0 + 950), ("collected", T0 + 1500), ("received", T0 + 1700)), ()),
    104: ("lane-1", "targeted", "lane-1-ev2", T0 + 1214, LOT, (("cut", T0 + 1230), ("sealed", T0 + 1270)), ()),
    105: ("lane-1", "routine", None, T0 + 1500, LOT,
          (("cut", T0 + 1510), ("sealed", T0 + 1550), ("collected", T0 + 1600), ("received", T0 + 1650),
           ("result", T0 + 1750, False, "", None, ""),
           ("result", T0 + 1790, True, "plastic", 0.002, "re-test after sieving")), ()),
    201: ("lane-2", "routine", None, T0 + 600, LOT, (("cut", T0 + 610), ("failed", T0 + 640)), ()),
    202: ("lane-2", "targeted", "lane-2-ev1", T0 + 711, LOT, (("missed", T0 + 760),), ()),
    203: ("lane-2", "routine", None, T0 + 1200, LOT, (("cut", T0 + 1210), ("sealed", T0 + 1250)), ()),
}
# the edge recorded a cut on lane-1 during the lot for a sample the registry does not have
UNREGISTERED = 999
PENDING = (103, 104, 203)  # received or sealed, no result yet
SUMMARY = "5 events, 3 targeted samples, 3 lab results pending"


def _registry_and_records(path: Path) -> list[Point]:
    """Fill a real SampleRegistry as the edge and the lab desk do; return the sample records the edge sent."""
    records = []
    with SampleRegistry(path) as registry:
        for sample_id, (lane, kind, event_id, requested, lot_id, steps, _) in SAMPLES.items():
            tonnage = event_totalizer_t(event_id) if event_id else totalizer_t(lane, requested)
            target = EVENTS[event_id] if event_id else None
            position = position_m(lane, (target[2] + target[3]) / 2) if target else position_m(lane, requested) - 40
            request = m.SampleRequest(sample_id, lane, kind, position, tonnage, requested, event_id, lot_id)
            registry.create(request, who="edge", vessel=VESSEL, voyage=VOYAGE, hold="3", bill_of_lading="BL-77",
                            likely_class=target[1] if target else None, model_version="v1")
            for step in steps:
                if step[0] == "result":
                    _, at, found, kind_found, fraction, note = step
                    registry.add_result(sample_id, found, who="lab:anna", at_s=at, contaminant_type=kind_found,
                                        mass_fraction=fraction, note=note)
                    continue
                status, at = step
                who = "edge" if status in ("cut", "sealed", "missed", "failed") else "lab:anna"
                extra = dict(cup=f"C{sample_id}", seal=f"S-{sample_id}") if status == "sealed" else {}
                registry.record(sample_id, status, who, at, note="jam" if status == "failed" else "", **extra)
                if who == "edge":
                    records += _points(lane, "samples/record", m.SampleRecord(
                        sample_id, lane, kind, status, at, "", position, tonnage, event_id))
    records += _points("lane-1", "samples/record", m.SampleRecord(UNREGISTERED, "lane-1", "routine", "cut",
                                                                  T0 + 1000, "", 123.0, 11900.0))
    return records


def _deployments() -> list[Point]:
    return (_points("lane-1", "model/deploy", m.ModelDeployment("lane-1", "ore-brand", "v1", "a" * 64, "file:///v1",
                                                                T0 - 3600))
            + _points("lane-1", "model/deploy", m.ModelDeployment("lane-1", "ore-brand", "v2", "b" * 64,
                                                                  "file:///v2", T0 + 900))
            + _points("lane-2", "model/deploy", m.ModelDeployment("lane-2", "ore-brand", "v1", "a" * 64,
                                                                  "file:///v1", T0 - 3600)))


class Scenario:
    def __init__(self, directory: Path):
        self.dir = directory
        self.store_path = directory / "orelane-points.sqlite"
        self.registry_path = directory / "samples.sqlite"
        points = (_lot("lane-1", PREV_LOT, "open", T0 - 600) + _lot("lane-1", LOT, "open", T0)
                  + _lot("lane-1", LOT, "closed", T0 + 1800) + _lot("lane-2", LOT, "open", T0 + 300)
                  + _lot("lane-2", LOT, "closed", T0 + 1500) + _lot("lane-2", NEXT_LOT, "open", T0 + 1600))
        for lane in ("lane-1", "lane-2"):
            points += _belt(lane) + _spectra_and_frames(lane) + _status(lane)
        points += _events() + _deployments() + _registry_and_records(self.registry_path)
        self.points = points
        store = EmbeddedStore(self.store_path)
        store.write(points)
        store.close()

    def by_measurement(self) -> dict[str, list[Point]]:
        out: dict[str, list[Point]] = {}
        for p in self.points:
            out.setdefault(p.measurement, []).append(p)
        return out

    def samples(self) -> list[lr.RegisteredSample]:
        with SampleRegistry(self.registry_path) as registry:
            return lr.registered_samples(registry, LOT)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Scenario:
    return Scenario(tmp_path_factory.mktemp("lot-report"))


@pytest.fixture(scope="module")
def report(scenario) -> lr.LotReport:
    source = lr.EmbeddedSource(scenario.store_path)
    with SampleRegistry(scenario.registry_path) as registry:
        made = lr.gather_lot_report(source, registry, LOT, clock=lambda: NOW)
    source.close()
    return made


# ---------------------------------------------------------------------------------------------------- numbers


def test_report_names_the_lot_and_its_discharge(report):
    assert (report.lot_id, report.site, report.vessel, report.voyage) == (LOT, SITE, VESSEL, VOYAGE)
    assert (report.declared_brand, report.declared_tonnage_t, report.origin) == ("blend_fines_61", 2500.0, "AU")
    assert (report.holds, report.bills_of_lading) == (("3",), ("BL-77",))
    assert [d.lane for d in report.lanes] == ["lane-1", "lane-2"]
    assert (report.discharge_start_s, report.discharge_end_s) == (T0, T0 + 1800)
    lane1, lane2 = report.lanes
    assert lane1.periods == (lr.DischargePeriod(T0, T0 + 1800, "closed"),)
    assert lane2.periods == (lr.DischargePeriod(T0 + 300, T0 + 1500, "closed"),)
    assert report.as_of_s == NOW


def test_tonnage_comes_from_the_belt_totalizer_across_a_scale_reset(report):
    lane1, lane2 = report.lanes
    assert lane1.tonnage_t == pytest.approx(TONNAGE_T["lane-1"])
    assert lane2.tonnage_t == pytest.approx(TONNAGE_T["lane-2"])
    assert (lane1.totalizer_resets, lane2.totalizer_resets) == (0, 1)
    assert report.tonnage_t == pytest.approx(2400.0)
    # lane-1's baseline is its reading at the opening: 10000 t + 900 s x 1 t/s
    assert lane1.totalizer_first_t == pytest.approx(10_900.0)
    assert (lane1.belt_readings, lane2.belt_readings) == (901, 601)


def test_events_of_the_lot_along_the_tonnage_with_class_and_evidence(report):
    by_id = {e.event_id: e for e in report.events}
    assert set(by_id) == set(EVENT_CLASS)  # not ev0 (lot 030), ev3 of lane-2 (between lots) or ev9 (lot 032)
    for event_id, event in by_id.items():
        assert event.likely_class == EVENT_CLASS[event_id], event_id
        assert event.lot_tonnage_t == pytest.approx(EVENT_LOT_TONNAGE_T[event_id]), event_id
        assert (event.evidence.seq_first, event.evidence.seq_last) == EVENT_SEQS[event_id], event_id
        assert event.evidence.spectra == EVENT_SEQS[event_id][1] - EVENT_SEQS[event_id][0] + 1
        assert event.evidence.flagged_spectra == event.evidence.spectra - 2  # the first second is not flagged
        assert event.evidence.frame_seqs == EVENT_FRAMES[event_id], event_id
    assert by_id["lane-1-ev3"].state == "open" and by_id["lane-1-ev3"].closed_s is None
    assert by_id["lane-1-ev1"].opened_s == T0 + 412 and by_id["lane-1-ev1"].closed_s == T0 + 416
    assert not by_id["lane-2-ev2"].lot_stamped and by_id["lane-1-ev1"].lot_stamped
    assert {e: by_id[e].sample_ids for e in by_id} == {"lane-1-ev1": (102,), "lane-1-ev2": (104,), "lane-1-ev3": (),
                                                       "lane-2-ev1": (202,), "lane-2-ev2": ()}
    # in lane order, then along the tonnage
    assert [e.event_id for e in report.events] == ["lane-1-ev1", "lane-1-ev2", "lane-1-ev3", "lane-2-ev1",
                                                   "lane-2-ev2"]


def test_every_sample_with_its_custody_and_lab_outcome(report):
    by_id = {s.sample_id: s for s in report.samples}
    assert set(by_id) == set(SAMPLES) - {100}  # 100 belongs to the previous lot
    for sample_id, sample in by_id.items():
        lane, kind, event_id, requested, _, steps, _ = SAMPLES[sample_id]
        assert (sample.lane, sample.kind, sample.event_id, sample.requested_s) == (lane, kind, event_id, requested)
        statuses = ["requested"] + [step[0] for step in steps if step[0] != "result"]
        assert [c.status for c in sample.custody] == statuses
        assert sample.status == statuses[-1]
        assert len(sample.results) == sum(step[0] == "result" for step in steps)
    assert sorted(s.sample_id for s in report.pending_samples) == list(PENDING)
    assert [s.sample_id for s in report.targeted_samples] == [102, 104, 202]
    assert by_id[102].result.contaminant_found and by_id[102].result.contaminant_type == "wood"
    assert by_id[102].result.mass_fraction == pytest.approx(0.008)
    assert by_id[101].lab_status == lr.LAB_RESULT and not by_id[101].result.contaminant_found
    # a corrected result replaces the first one, which stays visible as superseded
    assert [r.superseded for r in by_id[105].results] == [True, False]
    assert by_id[105].result.contaminant_type == "plastic"
    assert (by_id[201].lab_status, by_id[202].lab_status) == (lr.LAB_NONE, lr.LAB_NONE)
    assert by_id[102].lot_tonnage_t == pytest.approx(402.0)  # the targeted sample sits at its event
    assert by_id[101].lot_tonnage_t == pytest.approx(300.0)  # routine: requested 300 s after the opening
    assert (by_id[102].cup, by_id[102].seal) == ("C102", "S-102")
    assert report.unregistered_sample_ids == (UNREGISTERED,)


def test_summary_sentence_counts_events_targeted_samples_and_pending_results(report):
    assert report.summary == SUMMARY
    assert lr.summary_sentence(1, 1, 1) == "1 event, 1 targeted sample, 1 lab result pending"


def test_model_versions_are_counted_per_lane(report):
    assert {(mu.site, mu.lane, mu.model_version): mu.spectra for mu in report.models} == SPECTRA_BY_VERSION
    v2 = next(mu for mu in report.models if mu.model_version == "v2")
    assert (v2.sha256, v2.deployed_s) == ("b" * 64, T0 + 900)


def test_instrument_health_during_the_discharge(report):
    for health in report.health:
        expected = HEALTH[health.lane]
        assert {k: getattr(health, k) for k in expected} == expected, health.lane
        assert health.outages == OUTAGES[health.lane], health.lane
    assert report.outages == OUTAGES["lane-1"] + OUTAGES["lane-2"]


def test_notes_say_what_an_inspector_must_not_miss(report):
    notes = "\n".join(report.notes)
    assert "sample 102 (wood, 0.8 % by mass)" in notes and "sample 105 (plastic" in notes
    assert "routine sample 201 (failed)" in notes and "targeted sample 202 (missed)" in notes
    assert "Events without a targeted sample: lane-2-ev2" in notes
    assert "without a lot id" in notes and "Model changed during the lot on lane-1: v1, v2" in notes
    assert f"does not list for this lot: {UNREGISTERED}" in notes
    assert "reset during the discharge on lane-2 (1x)" in notes
    assert "in progress" not in notes


def test_the_data_layer_reads_less_but_reports_the_same_as_all_points(scenario, report):
    whole = lr.build_lot_report(LOT, scenario.by_measurement(), scenario.samples(), as_of_s=NOW)
    assert whole == replace(report, data_sources=())


def test_a_lot_still_discharging_is_reported_as_of_now(scenario):
    cut_ns = round((T0 + 1000) * 1e9)
    points = {name: [p for p in pts if p.time_ns <= cut_ns] for name, pts in scenario.by_measurement().items()}
    partial = lr.build_lot_report(LOT, points, scenario.samples(), as_of_s=T0 + 1000)
    assert partial.discharge_end_s is None and partial.in_progress
    assert [d.periods[0].end_s for d in partial.lanes] == [None, None]
    assert partial.tonnage_t == pytest.approx(1000.0 + 700 * 0.5)
    assert partial.notes[0].startswith("Discharge still in progress on lane-1, lane-2")
    # the edge of lane-2 went offline at T0+1000, the last instant of this report: still down
    assert partial.health[1].outages[-1] == outage("lane-2", lr.OUTAGE_EDGE_OFFLINE, T0 + 1000, T0 + 1000, True)


# ---------------------------------------------------------------------------------------------------- pure parts


def _lot_point(lane: str, lot_id: str, state: str, t: float) -> Point:
    return Point("lot", {"site": SITE, "lane": lane, "state": state}, {"lot_id": lot_id}, round(t * 1e9))


@pytest.mark.parametrize("messages, expected", [
    pytest.param([("A", "open", 10), ("A", "closed", 20)], [(10, 20, "closed")], id="open-then-closed"),
    pytest.param([("A", "open", 10), ("B", "open", 30), ("A", "closed", 40)], [(10, 30, "lot B opened")],
                 id="next-lot-ends-it"),
    pytest.param([("A", "open", 10), ("A", "open", 15), ("A", "closed", 20), ("A", "open", 50)],
                 [(10, 20, "closed"), (50, None, "")], id="re-sent-open-and-reopened"),
    pytest.param([("A", "closed", 5), ("A", "open", 10)], [(10, None, "")], id="close-before-open-ignored"),
])
def test_lot_periods(messages, expected):
    periods = lr.lot_periods("A", [_lot_point("lane-1", lot, state, t) for lot, state, t in messages])
    assert [(p.start_ns / 1e9, None if p.end_ns is None else p.end_ns / 1e9, p.ended_by)
            for p in periods[(SITE, "lane-1")]] == expected


def _event_point(state: str, t: float, lot_id: str | None, event_id: str = "ev") -> Point:
    return _points("lane-1", "events", m.ContaminationEvent(
        event_id, "lane-1", state, 10.0, 12.0, 11.0, 5.0, 0.9, "wood", 1, 2, (), opened_s=t,
        closed_s=t if state == "closed" else None, lot_id=lot_id))[0]


@pytest.mark.parametrize("messages, belongs", [
    pytest.param([("open", 15, "A"), ("closed", 18, "A")], True, id="stamped"),
    pytest.param([("open", 19, "A"), ("closed", 25, "B")], True, id="closed-after-the-lot-by-the-next-lot"),
    pytest.param([("open", 19, "A"), ("closed", 25, None)], True, id="closed-after-the-lot-unstamped"),
    pytest.param([("open", 15, None), ("closed", 25, None)], True, id="unstamped-opened-during-the-lot"),
    pytest.param([("open", 25, None), ("closed", 26, None)], False, id="unstamped-after-the-lot"),
    pytest.param([("open", 15, "B"), ("closed", 18, "B")], False, id="another-lot"),
])
def test_an_event_is_the_lots_when_any_message_says_so(messages, belongs):
    periods = {(SITE, "lane-1"): [lr._Period(10 * 10**9, 20 * 10**9, "closed")]}
    events = lr.lot_event_points("A", periods, [_event_point(state, t, lot) for state, t, lot in messages], 10**12)
    assert bool(events) == belongs
    if belongs:
        assert [p.tags["state"] for p in events[(SITE, "lane-1", "ev")]] == ["open", "closed"]


@pytest.mark.parametrize("values, expected", [
    ([3, 3, 5, 10], (7, 0)),
    ([2, 6, 0, 4], (8, 1)),  # a restart: the counter counts on from zero
    ([100.0, 150.5, 1.0, 3.0], (53.5, 1)),
    ([7], (0, 0)),
])
def test_counter_increase_survives_resets(values, expected):
    assert lr.counter_increase(values) == expected


def test_selection_reads_the_same_in_python_and_influxql():
    selection = lr.Selection("spectrum_result", 10, 20, ((SITE, "lane'1"),), at_least=(("belt_position_m", 5.0),),
                             below=(("belt_position_m", 7.5),))
    assert selection.where() == (" WHERE time >= 10 AND time <= 20 AND ((\"site\" = 'port-north' AND "
                                 "\"lane\" = 'lane\\'1')) AND \"belt_position_m\" >= 5.0 AND "
                                 "\"belt_position_m\" < 7.5")
    inside = Point("spectrum_result", {"site": SITE, "lane": "lane'1"}, {"belt_position_m": 5.0}, 20)
    assert selection.matches(inside)
    assert not selection.matches(inside._replace(fields={"belt_position_m": 7.5}))
    assert not selection.matches(inside._replace(time_ns=21))
    with pytest.raises(ValueError, match="lanes is empty"):
        lr.Selection("belt", lanes=())


# ---------------------------------------------------------------------------------------------------- rendering


def _pdf_pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf))


def test_html_and_pdf_written_with_plots(scenario, tmp_path, capsys):
    out = tmp_path / "out"
    code = lr.main(["lot", LOT, "--store", str(scenario.store_path), "--registry", str(scenario.registry_path),
                    "--out", str(out)], clock=lambda: NOW)
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.splitlines()[0] == SUMMARY
    page = (out / f"lot-{LOT}.html").read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    for image in images:
        png = base64.b64decode(image)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert "MV Pilbara &lt;Dawn&gt; &amp; Co" in page and VESSEL not in page
    assert SUMMARY in page and "2,400.0 t" in page
    for event_id in EVENT_CLASS:
        assert event_id in page
    for sample in scenario.samples():
        assert sample.row.barcode in page
    assert "spectra seq 2600-2607 (8 spectra, 6 flagged); frames 1300, 1301, 1302, 1303" in page
    pdf = (out / f"lot-{LOT}.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert _pdf_pages(pdf) >= 4  # text pages and the two plots


def test_pdf_text_pages_carry_custody_and_health(report):
    lines = "\n".join(text for _, text in report_templates.report_lines(report))
    assert "Sample 105 (" in lines and "replaces 1 earlier result" in lines
    assert "robot link: 2024-03-01 06:16:40 UTC to 2024-03-01 06:19:40 UTC (3 min 00 s)" in lines
    assert SUMMARY + "." in lines


def test_unknown_lot_names_the_lots_that_exist(scenario, tmp_path, capsys):
    code = lr.main(["lot", "LOT-1999-001", "--store", str(scenario.store_path), "--registry",
                    str(scenario.registry_path), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "lot 'LOT-1999-001' was never opened" in err
    for lot in (PREV_LOT, LOT, NEXT_LOT):
        assert lot in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--store", "missing.sqlite", "--registry", "REGISTRY"], "embedded store missing.sqlite does not exist"),
    (["--store", "STORE", "--registry", "missing.sqlite"], "sample registry missing.sqlite does not exist"),
    (["--store", "STORE"], "give --registry PATH"),
    (["--registry", "REGISTRY"], "give --config SITE.toml, or --store PATH or --influx-url URL --db DB"),
    (["--influx-url", "http://127.0.0.1:9", "--registry", "REGISTRY"], "--influx-url needs --db"),
    (["--influx-url", "http://127.0.0.1:9", "--db", "x", "--store", "STORE", "--registry", "REGISTRY"],
     "either --store or --influx-url"),
])
def test_missing_or_conflicting_sources_are_named(scenario, tmp_path, capsys, args, message):
    args = [str(scenario.store_path) if a == "STORE" else str(scenario.registry_path) if a == "REGISTRY" else a
            for a in args]
    assert lr.main(["lot", LOT, *args, "--out", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


def test_a_wrong_time_zone_is_a_usage_error(scenario, tmp_path, capsys):
    assert lr.main(["lot", LOT, "--store", str(scenario.store_path), "--registry", str(scenario.registry_path),
                    "--out", str(tmp_path), "--timezone", "Mars/Olympus"]) == 2
    assert "'Mars/Olympus' is not an IANA time zone" in capsys.readouterr().err


def test_site_config_finds_store_and_registry_in_its_data_dir(scenario, tmp_path, capsys):
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    shutil.copy(scenario.store_path, data_dir / "orelane-points.sqlite")
    shutil.copy(scenario.registry_path, data_dir / "samples.sqlite")
    config = tmp_path / "site.toml"
    config.write_text('[site]\nid = "port-north"\ndata_dir = "var"\n\n[[lane]]\nid = "lane-1"\n'
                      'belt_scale = { host = "127.0.0.1", port = 5020 }\nrobot = { host = "127.0.0.1", port = 5021 }\n')
    code = lr.main(["lot", LOT, "--config", str(config), "--out", str(tmp_path / "out"), "--timezone",
                    "Australia/Perth"], clock=lambda: NOW)
    assert code == 0, capsys.readouterr().err
    page = (tmp_path / "out" / f"lot-{LOT}.html").read_text(encoding="utf-8")
    assert "2024-03-01 14:00:00 AWST" in page  # T0 in Perth


# ---------------------------------------------------------------------------------------------------- InfluxDB


def test_influxdb_gives_the_same_report_as_the_embedded_store(scenario, report, influxdb1, tmp_path, capsys):
    influxdb1.create_database("orelane")
    lines = encode(scenario.points).decode().splitlines()
    for i in range(0, len(lines), 5000):
        influxdb1.write(lines[i:i + 5000], "orelane")
    # small chunks: a lane's belt and status series arrive split over several chunks, to be merged
    source = lr.InfluxQLSource(influxdb1.url, "orelane", chunk_size=500)
    assert len(source.points(lr.Selection("belt", lanes=((SITE, "lane-1"),)))) == 1501
    with SampleRegistry(scenario.registry_path) as registry:
        from_influx = lr.gather_lot_report(source, registry, LOT, clock=lambda: NOW)
        with pytest.raises(lr.LotNotFound) as missing:
            lr.gather_lot_report(source, registry, "LOT-1999-001", clock=lambda: NOW)
    assert from_influx == replace(report, data_sources=(source.describe(),))
    assert [lot for lot, _, _ in missing.value.known_lots] == [PREV_LOT, LOT, NEXT_LOT]
    assert f"InfluxDB {influxdb1.url} database orelane" in str(missing.value)

    code = lr.main(["lot", LOT, "--influx-url", influxdb1.url, "--db", "orelane", "--registry",
                    str(scenario.registry_path), "--out", str(tmp_path)], clock=lambda: NOW, environ={})
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / f"lot-{LOT}.pdf").read_bytes().startswith(b"%PDF-")


def test_influxdb_errors_name_the_database(influxdb1):
    source = lr.InfluxQLSource(influxdb1.url, "no_such_db")
    with pytest.raises(lr.InfluxQLError, match="database not found"):
        source.points(lr.Selection("lot"))
