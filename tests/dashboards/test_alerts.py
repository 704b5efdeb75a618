"""Every alert rule's query runs on the simulated lanes, and exactly the lanes in trouble fire.

Each rule is evaluated as Grafana evaluates it at NOW: query A over its
relative time range, B = last value of each series, C = the math condition.
"""

from __future__ import annotations

import pytest

from dashboards import alerts, build
from tests.dashboards import grafana, simlane
from tests.dashboards.conftest import LaneDatabase

# rule uid -> labels of the series that must fire (each as sorted (label, value) pairs)
EXPECTED_FIRING = {
    "orelane-contamination-event": {(("class", "plastic"), ("lane", "lane-1"), ("site", "port-north"))},
    "orelane-robot-fault": {(("lane", "lane-1"), ("site", "port-north"))},
    "orelane-robot-link-down": {(("lane", "lane-1"), ("site", "port-south"))},
    "orelane-reference-stale": {(("lane", "lane-1"), ("site", "port-south"))},
    "orelane-belt-scale-fault": {(("lane", "lane-1"), ("site", "port-south"))},
    "orelane-radiation-fault": {(("lane", "lane-1"), ("site", "port-north"))},
    **{f"orelane-{name}": set() for name in ("spectra-silent", "saturation", "low-snr", "lamp-drift", "camera-fps",
                                             "belt-link", "radiation-link")},
    "orelane-lane-silent": {(("lane", "lane-2"), ("site", "port-north"))},
    "orelane-ingest-buffer-growing": {(("site", "port-north"), ("worker", "w2"))},
    "orelane-model-anomaly-rate": {(("lane", "lane-1"), ("model_version", "v2"), ("site", "port-north"))},
}


def evaluate(lane_db: LaneDatabase, api_rule: dict) -> tuple[dict, set]:
    """(reduced values by labels, labels that fire) of one provisioned rule at the simulation's NOW."""
    data = {d["refId"]: d for d in api_rule["data"]}
    query = data["A"]
    window_s = query["relativeTimeRange"]["from"]
    now_ms = int(simlane.NOW_S * 1000)
    series = lane_db.query(query["model"]["query"], now_ms - window_s * 1000,
                           now_ms - query["relativeTimeRange"]["to"] * 1000, interval=query["model"]["intervalMs"])
    assert data["B"]["model"] == {**data["B"]["model"], "type": "reduce", "expression": "A", "reducer": "last"}
    assert api_rule["condition"] == "C" and data["C"]["model"]["type"] == "math"
    reduced = grafana.reduce_last(series)
    firing = {labels for labels, value in reduced.items() if grafana.evaluate_math(data["C"]["model"]["expression"],
                                                                                   value)}
    return reduced, firing


def test_every_rule_has_an_expected_outcome():
    assert sorted(EXPECTED_FIRING) == sorted(spec.uid for spec in alerts.RULES)


@pytest.mark.parametrize("api_rule", build.alert_rules_api(), ids=lambda r: r["uid"])
def test_alert_rule_fires_for_exactly_the_lanes_in_trouble(lane_db: LaneDatabase, api_rule):
    reduced, firing = evaluate(lane_db, api_rule)
    assert firing == EXPECTED_FIRING[api_rule["uid"]], reduced
    if api_rule["uid"] not in ("orelane-contamination-event", "orelane-robot-fault"):
        assert len(reduced) > len(firing), f"{api_rule['uid']}: the query should also see healthy series"


def test_anomaly_rate_rule_and_panel_agree(lane_db: LaneDatabase):
    rule = next(r for r in build.alert_rules_api() if r["uid"] == "orelane-model-anomaly-rate")
    reduced, _ = evaluate(lane_db, rule)
    truth = lane_db.truth
    for (site, lane, version), n in truth.spectra.items():
        labels = (("lane", lane), ("model_version", version), ("site", site))
        assert reduced[labels] == pytest.approx(truth.outside[(site, lane, version)] / n)


def test_lane_silent_rule_sees_a_lane_that_stopped_two_minutes_ago_but_not_one_minute(lane_db: LaneDatabase):
    rule = next(r for r in build.alert_rules_api() if r["uid"] == "orelane-lane-silent")
    shifted = dict(rule)
    # evaluated 90 s after lane-2's last message (offline at NOW-295): not yet silent for 120 s
    query = rule["data"][0]
    now_ms = int((simlane.NOW_S - 205) * 1000)
    series = lane_db.query(query["model"]["query"], now_ms - query["relativeTimeRange"]["from"] * 1000, now_ms,
                           interval=1000)
    reduced = grafana.reduce_last(series)
    condition = shifted["data"][2]["model"]["expression"]
    assert not any(grafana.evaluate_math(condition, v) for v in reduced.values()), reduced
