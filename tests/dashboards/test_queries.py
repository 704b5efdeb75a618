"""Every panel, annotation and variable query runs on a real InfluxDB 1.x and returns what the panel must show.

The database holds half an hour of simulated lanes (simlane.py), written as
ingest writes them. Each query is expanded the way Grafana expands it
(grafana.py) and its answer is compared with what the simulation did: the
right lanes, the right numbers, not merely "no error". A panel without a
check here fails `test_every_panel_query_has_a_check`.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Callable

import pytest

from dashboards import boards, build
from dashboards.schema import HEALTH_ALARMS
from tests.dashboards import grafana, simlane
from tests.dashboards.conftest import LaneDatabase

N1, N2, S1 = ("port-north", "lane-1"), ("port-north", "lane-2"), ("port-south", "lane-1")
ALL = {"site": grafana.Variable(), "lane": grafana.Variable(), "lot": grafana.Variable()}


def built_targets():
    for name in boards.DASHBOARDS:
        dashboard = build.dashboard_json(name)
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                yield dashboard["uid"], panel, target


def by(series: list[dict], *tags: str) -> dict[tuple, dict]:
    out = {}
    for s in series:
        key = tuple(s.get("tags", {}).get(t, "") for t in tags)
        assert key not in out, f"two series for {key}"
        out[key] = s
    return out


def col(s: dict, name: str) -> list:
    i = s["columns"].index(name)
    return [row[i] for row in s["values"] if row[i] is not None]


def last(s: dict, name: str):
    return col(s, name)[-1]


def approx(value: float, rel: float = 1e-6, abs_: float = 1e-6):
    return pytest.approx(value, rel=rel, abs=abs_)


# ---------------------------------------------------------------- checks, one per (dashboard, panel, refId)


def lane_state(series, t):
    got = {k: last(s, "online") for k, s in by(series, "site", "lane").items()}
    assert got == t.online_last


def tonnage(series, t):
    got = {k: sum(col(s, "tonnage_t")) for k, s in by(series, "site", "lane").items()}
    assert set(got) == {N1, N2, S1}
    for key, minutes in t.totalizer_by_minute.items():
        assert got[key] == approx(minutes[max(minutes)] - minutes[min(minutes)])


def events_closed(series, t):
    assert {k: sum(col(s, "events")) for k, s in by(series, "site", "lane").items()} == dict(t.events_closed)


def mean_by_lane(column: str, expected: Callable, rel: float):
    def check(series, t):
        got = by(series, "site", "lane")
        assert set(got) == {N1, N2, S1}
        for key, s in got.items():
            assert statistics.fmean(col(s, column)) == pytest.approx(expected(t, key), rel=rel)
    return check


def each_lane_has(column: str, predicate: Callable = lambda values, t, key: bool(values)):
    def check(series, t):
        got = by(series, "site", "lane")
        assert set(got) == {N1, N2, S1}
        for key, s in got.items():
            assert predicate(col(s, column), t, key), (key, col(s, column)[:10])
    return check


def health_constant(column: str, name: str):
    return each_lane_has(column, lambda v, t, key: all(x == approx(t.health[name]) for x in v))


def model_version(series, t):
    rows = grafana.table_rows(series)
    assert {(r["site"], r["lane"]): r["model_version"] for r in rows} == t.model_version_last


def contamination_nir(series, t):
    peaks = {k: max(col(s, "nir")) for k, s in by(series, "site", "lane").items()}
    assert peaks[N1] == approx(2.5) and peaks[N2] == approx(2.5)  # events
    assert peaks[S1] == approx(1.6)  # unexplained anomalies only, no event


def contamination_camera(series, t):
    peaks = {k: max(col(s, "camera")) for k, s in by(series, "site", "lane").items()}
    assert peaks == {N1: approx(0.9), N2: approx(0.9), S1: approx(0.1)}


def events_table(series, t):
    rows = grafana.table_rows(series)
    got = sorted((r["site"] if "site" in r else "", r["lane"], r["event_id"], r["class"], r["lot_id"]) for r in rows)
    expected = sorted(("", lane, ev, cls, lot) for site, lane, ev, cls, lot in t.event_rows)
    assert got == expected
    assert all(r["tonnage_t"] == approx(12.5) and r["end_m"] > r["start_m"] for r in rows)


def cuts_by_kind(status: str):
    def check(series, t):
        got = {k[0]: sum(col(s, "count")) for k, s in by(series, "kind").items()}
        expected = Counter()
        for (site, lane, kind, st), n in t.status_records.items():
            if st == status:
                expected[kind] += n
        assert got == dict(expected)
    return check


def robot_state(series, t):
    got = {k: set(col(s, "last")) for k, s in by(series, "site", "lane").items()}
    assert got == {k: v for k, v in t.robot_states.items()}
    assert 9 in got[N1]


def link(field_truth: str):
    def check(series, t):
        got = {k: set(col(s, "last")) for k, s in by(series, "site", "lane").items()}
        if field_truth == "robot":
            assert got == dict(t.robot_link) and 0 in got[S1]
        elif field_truth == "radiation":
            assert set(got) == t.radiation_lanes and all(v == {1} for v in got.values())
        else:
            assert set(got) == {N1, N2, S1} and all(v == {1} for v in got.values())
    return check


def alarm(name: str):
    def check(series, t):
        got = {k: set(col(s, "last")) for k, s in by(series, "site", "lane").items()}
        assert got == {k: v for (k, n), v in t.alarms.items() if n == name}
        if name in ("alarm_belt_scale_fault", "alarm_reference_stale", "alarm_robot_link"):
            assert got[S1] == {0, 1}  # the south lane raises them during the half hour
        if name == "alarm_radiation_fault":
            assert got[N1] == {0, 1}  # the north lane's portal faults near the end
    return check


def awaiting_lab(series, t):
    expected = Counter()
    for (site, lane, kind, status), n in t.status_records.items():
        expected[(site, lane)] += n if status == "sealed" else -n if status == "received" else 0
    assert {k: sum(col(s, "awaiting_lab")) for k, s in by(series, "site", "lane").items()} == dict(expected)


def reference_age(series, t):
    got = {k: max(col(s, "max")) for k, s in by(series, "site", "lane").items()}
    assert got == {k: approx(v) for k, v in t.max_reference_age_s.items()}
    assert got[S1] > 1800 > got[N1]


def refused(series, t):
    got = {k: sum(col(s, "count")) for k, s in by(series, "lane", "topic_leaf").items()}
    assert got == {("lane-1", "spectra/batch"): t.refused[N1]}


def rate(column: str, hz: float):
    return each_lane_has(column, lambda v, t, key: statistics.median(v) == pytest.approx(hz, rel=0.01))


def by_status(series, t):
    expected = Counter()
    for (site, lane, kind, status), n in t.status_records.items():
        expected[status] += n
    assert {k[0]: sum(col(s, "count")) for k, s in by(series, "status").items()} == dict(expected)


def missed_failed(series, t):
    got = {k[0]: sum(col(s, "count")) for k, s in by(series, "status").items()}
    assert got == {"missed": 1}


def lab_results_by_class(series, t):
    got = {k[0]: sum(col(s, "count")) for k, s in by(series, "result_class").items()}
    assert got == dict(t.result_classes) and "clean" in got and len(got) > 1


def turnaround(series, t):
    rows = grafana.table_rows(series)
    matrix = grafana.grouping_to_matrix(rows, "status", "sample_id", "Time")
    matrix = grafana.calculate_binary(matrix, "received", "-", "cut", "cut to receipt")
    matrix = grafana.calculate_binary(matrix, "analysed", "-", "cut", "cut to result")
    got = {r["sample_id\\status"]: (r["cut to receipt"], r["cut to result"]) for r in matrix}
    expected = {}
    for (site, lane, sample_id), times in t.sample_times.items():
        if "cut" in times:
            receipt = round((times["received"] - times["cut"]) * 1000) if "received" in times else None
            result = round((times["analysed"] - times["cut"]) * 1000) if "analysed" in times else None
            expected[sample_id] = (receipt, result)
    assert got == expected
    assert any(v[1] is not None for v in got.values())


def anomaly_rate(series, t):
    got = {k: statistics.fmean(col(s, "anomaly_rate")) for k, s in by(series, "site", "lane", "model_version").items()}
    assert set(got) == set(t.spectra)
    for key, n in t.spectra.items():
        assert got[key] == pytest.approx(t.outside[key] / n, abs=0.002), key
    assert got[N1 + ("v2",)] > 0.02 > got[N1 + ("v1",)]


def class_mix(series, t):
    got = {k: sum(col(s, "count")) for k, s in by(series, "model_version", "class").items()}
    assert {k: v for k, v in got.items() if v} == dict(t.anomaly_classes)


def decisions(series, t):
    got = {k: sum(col(s, "count")) for k, s in by(series, "model_version", "decision").items()}
    assert got == dict(t.decisions)


def p99(series, t):
    got = {k: max(col(s, "percentile")) for k, s in by(series, "lane", "model_version").items()}
    assert set(got) == {("lane-1", "v1"), ("lane-1", "v2"), ("lane-2", "v1")}  # grouped by lane, not site
    assert got[("lane-1", "v2")] > 1


def ingest_rate(per_s_w1: float):
    def check(series, t):
        got = {k[1]: statistics.median(col(s, "non_negative_derivative"))
               for k, s in by(series, "site", "worker").items()}
        assert got["w1"] == pytest.approx(per_s_w1)
        assert set(got) == {"w1", "w2"}
    return check


def ingest_gauge(column: str, name: str):
    def check(series, t):
        got = {k[1]: max(col(s, column)) for k, s in by(series, "site", "worker").items()}
        assert got == {"w1": 0, "w2": approx(t.ingest["w2"][name])}
    return check


def write_errors(series, t):
    got = {k[1]: max(col(s, "non_negative_derivative")) for k, s in by(series, "site", "worker").items()}
    assert got == {"w1": 0, "w2": approx(6.0)}  # one error per 10 s status


def speed(t, key):
    return t.mean_speed_m_s[key]


def flow(t, key):
    return t.flow_t_h[key]


CHECKS: dict[tuple[str, str, str], Callable] = {
    ("orelane-lane", "Lane state", "A"): lane_state,
    ("orelane-lane", "Model version", "A"): model_version,
    ("orelane-lane", "Tonnage in range", "A"): tonnage,
    ("orelane-lane", "Events in range", "A"): events_closed,
    ("orelane-lane", "Contamination score", "A"): contamination_nir,
    ("orelane-lane", "Contamination score", "B"): contamination_camera,
    ("orelane-lane", "Belt speed", "A"): mean_by_lane("mean", speed, rel=0.01),
    ("orelane-lane", "Flow", "A"): mean_by_lane("mean", flow, rel=1e-9),
    ("orelane-lane", "Tonnage (belt totalizer)", "A"):
        each_lane_has("last", lambda v, t, key: v[-1] == approx(t.totalizer_last_t[key])),
    ("orelane-lane", "Contamination events", "A"): events_table,
    ("orelane-lane", "Cuts", "A"): cuts_by_kind("cut"),
    ("orelane-lane", "Cuts", "B"): cuts_by_kind("missed"),
    ("orelane-lane", "Robot", "A"): robot_state,
    ("orelane-lane", "Robot", "B"): link("robot"),
    ("orelane-site", "Lane state", "A"): lane_state,
    ("orelane-site", "Tonnage today", "A"): tonnage,
    ("orelane-site", "Events today", "A"): events_closed,
    ("orelane-site", "Samples awaiting the lab", "A"): awaiting_lab,
    ("orelane-site", "Flow by lane", "A"): mean_by_lane("mean", flow, rel=1e-9),
    ("orelane-site", "Contamination score by lane", "A"): each_lane_has("max", lambda v, t, key: max(v) > 1),
    ("orelane-instruments", "White/dark reference age", "A"): reference_age,
    ("orelane-instruments", "Saturated spectra", "A"): health_constant("max", "spectra_saturated_fraction"),
    ("orelane-instruments", "Signal-to-noise", "A"): health_constant("min", "spectra_snr"),
    ("orelane-instruments", "Lamp drift since white reference", "A"): health_constant("max", "lamp_drift_fraction"),
    ("orelane-instruments", "Spectra refused", "A"): refused,
    ("orelane-instruments", "Spectra per second", "A"): rate("non_negative_derivative", simlane.SPECTRA_HZ),
    ("orelane-instruments", "Camera frame rate", "A"): rate("non_negative_derivative", simlane.CAMERA_FPS),
    ("orelane-instruments", "Camera brightness", "A"): health_constant("mean", "camera_mean_brightness"),
    ("orelane-instruments", "Camera saturated pixels", "A"): health_constant("max", "camera_saturated_fraction"),
    ("orelane-instruments", "Modbus links", "A"): link("belt"),
    ("orelane-instruments", "Modbus links", "B"): link("robot"),
    ("orelane-instruments", "Modbus links", "C"): link("radiation"),
    **{("orelane-instruments", "Alarms raised by the edge", chr(ord("A") + i)): alarm(name)
       for i, name in enumerate(HEALTH_ALARMS)},
    ("orelane-samples", "Samples by status", "A"): by_status,
    ("orelane-samples", "Missed and failed cuts", "A"): missed_failed,
    ("orelane-samples", "Lab results by contaminant class", "A"): lab_results_by_class,
    ("orelane-samples", "Time from cut to lab receipt and to result", "A"): turnaround,
    ("orelane-models", "Anomaly rate", "A"): anomaly_rate,
    ("orelane-models", "Class mix of anomalies", "A"): class_mix,
    ("orelane-models", "Decisions", "A"): decisions,
    ("orelane-models", "Anomaly score, 99th percentile", "A"): p99,
    ("orelane-ingest", "Throughput", "A"): ingest_rate(200.0),
    ("orelane-ingest", "Throughput", "B"): ingest_rate(40.0),
    ("orelane-ingest", "Buffer depth", "A"): ingest_gauge("max", "buffer_bytes"),
    ("orelane-ingest", "Batches buffered", "A"): ingest_gauge("max", "batches_buffered"),
    ("orelane-ingest", "Replay lag", "A"): ingest_gauge("max", "replay_lag_s"),
    ("orelane-ingest", "Write errors", "A"): write_errors,
}

# Panels the contract cannot feed yet; each is a strict xfail, so it turns red when the gap closes.
CONTRACT_GAPS: dict[tuple[str, str, str], str] = {}


def test_every_panel_query_has_a_check():
    keys = [(uid, panel["title"], target["refId"]) for uid, panel, target in built_targets()]
    assert len(keys) == len(set(keys)), "panel titles must be unique within a dashboard"
    assert sorted(keys) == sorted(CHECKS)


def _params():
    for uid, panel, target in built_targets():
        key = (uid, panel["title"], target["refId"])
        marks = [pytest.mark.xfail(reason=CONTRACT_GAPS[key], strict=True)] if key in CONTRACT_GAPS else []
        yield pytest.param(key, panel, target, id="/".join(key), marks=marks)


@pytest.mark.parametrize("key,panel,target", list(_params()))
def test_panel_query_returns_the_series_the_panel_shows(lane_db: LaneDatabase, key, panel, target):
    from_ms, to_ms = grafana.panel_range(panel.get("timeFrom"), lane_db.from_ms, lane_db.to_ms)
    series = lane_db.query(target["query"], from_ms, to_ms, ALL)
    assert series, f"{key}: no series"
    CHECKS[key](series, lane_db.truth)


def test_variables_list_sites_lanes_and_lots(lane_db: LaneDatabase):
    def values(query, **selected):
        variables = {**ALL, **{k: grafana.Variable((v,), all=False) for k, v in selected.items()}}
        series = lane_db.query(query, variables=variables)
        # Grafana's metricFindQuery takes the second column when there is one (SHOW TAG VALUES, SELECT DISTINCT)
        return sorted({row[1] if len(row) > 1 else row[0] for s in series for row in s["values"]})

    assert values(boards.SITE_VARIABLE_QUERY) == ["port-north", "port-south"]
    assert values(boards.LANE_VARIABLE_QUERY, site="port-north") == ["lane-1", "lane-2"]
    assert values(boards.LANE_VARIABLE_QUERY, site="port-south") == ["lane-1"]
    assert values(boards.LOT_VARIABLE_QUERY) == sorted(lane_db.truth.lots)
    assert values(boards.LOT_VARIABLE_QUERY, site="port-north", lane="lane-2") == ["L-002"]


def test_selected_site_lane_and_lot_narrow_every_lane_panel(lane_db: LaneDatabase):
    chosen = {"site": grafana.Variable(("port-north",), all=False),
              "lane": grafana.Variable(("lane-1",), all=False),
              "lot": grafana.Variable(("L-001",), all=False)}
    dashboard = build.dashboard_json("lane")
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            series = lane_db.query(target["query"], variables=chosen)
            lanes = {(s.get("tags", {}).get("site", "port-north"), s.get("tags", {}).get("lane", "lane-1"))
                     for s in series}
            assert lanes <= {N1}, (panel["title"], lanes)
            rows = grafana.table_rows(series)
            assert all(r.get("lane", "lane-1") == "lane-1" for r in rows), panel["title"]
    events = lane_db.query(next(p for p in dashboard["panels"] if p["title"] == "Contamination events")
                           ["targets"][0]["query"], variables=chosen)
    assert sorted(r["event_id"] for r in grafana.table_rows(events)) == ["lane-1-ev1", "lane-1-ev2"]


def test_multi_value_selection_is_a_regex_alternation(lane_db: LaneDatabase):
    both = {**ALL, "lane": grafana.Variable(("lane-1", "lane-2"), all=False),
            "site": grafana.Variable(("port-north",), all=False)}
    series = lane_db.query(f'SELECT mean("flow_t_h") FROM "belt" {boards.lane_where()} {boards.BY_LANE}',
                           variables=both)
    assert set(by(series, "site", "lane")) == {N1, N2}


def test_annotations_mark_events_and_lots(lane_db: LaneDatabase):
    annotations = {a["name"]: a for a in build.dashboard_json("lane")["annotations"]["list"]}
    events = grafana.table_rows(lane_db.query(annotations["Contamination events"]["target"]["query"],
                                              variables=ALL))
    assert sorted((r["lane"], r["event_id"], r["class"], r["Time"]) for r in events) == sorted(
        (lane, ev, cls, int(opened * 1000)) for site, lane, ev, cls, opened in lane_db.truth.events_opened)
    target = annotations["Contamination events"]["target"]
    assert {target["textColumn"], *target["tagsColumn"].split(",")} <= set(events[0])
    lots = grafana.table_rows(lane_db.query(annotations["Lots opened and closed"]["target"]["query"],
                                            variables=ALL))
    assert sorted(r["lot_id"] for r in lots) == sorted(lane_db.truth.lots)


def test_panels_show_no_data_rather_than_wrong_data_for_an_unknown_lane(lane_db: LaneDatabase):
    nowhere = {**ALL, "lane": grafana.Variable(("lane-9",), all=False)}
    for uid, panel, target in built_targets():
        if "$lane" in target["query"]:
            series = lane_db.query(target["query"], variables=nowhere)
            assert all(v is None or v == 0 for s in series for row in s["values"] for v in row[1:]
                       if not isinstance(v, str)), (uid, panel["title"])


def test_grafana_interval_matches_rangeutil():
    assert grafana.interval_ms(0, 30 * 60_000) == 5000  # the data source's 5 s minimum
    assert grafana.interval_ms(0, 6 * 3600_000) == 20000
    assert grafana.interval_ms(0, 7 * 86400_000) == 600000
    assert grafana.format_interval(500) == "500ms" and grafana.format_interval(120000) == "2m"


def test_expander_refuses_a_macro_it_does_not_know():
    with pytest.raises(ValueError, match=r"\$__rate_interval"):
        grafana.expand("SELECT 1 FROM x WHERE time > now() - $__rate_interval", 0, 1)


def test_two_samples_recorded_in_the_same_instant_stay_two_points(influxdb1_session):
    from ingest.lineprotocol import encode
    from orelane.contract import messages as m
    from orelane.contract.measurements import points_for

    db = "dashboards_sample_collision"
    influxdb1_session.create_database(db)
    points = [p for sample_id in (7, 8) for p in points_for("port-north", "lane-1", "samples/record", m.SampleRecord(
        sample_id, "lane-1", "routine", "received", simlane.T0_S, reason="lab batch receipt").to_json())]
    influxdb1_session.write(encode(points).decode(), db)
    result = influxdb1_session.query('SELECT count("sample_id") FROM "sample"', db)
    assert result["results"][0]["series"][0]["values"][0][1] == 2
