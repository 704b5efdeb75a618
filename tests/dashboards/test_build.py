"""The built files: no drift from the SDK, units, thresholds equal to the alarm limits, valid provisioning."""

from __future__ import annotations

import json
import re

import pytest
from grafana_foundation_sdk.models import dashboard as sdk_dashboard

from dashboards import alerts, boards, build, limits, panels, schema
from dashboards.influxql import DATASOURCE_UID
from tests.dashboards import grafana


def all_panels():
    for name in boards.DASHBOARDS:
        dashboard = build.dashboard_json(name)
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                yield dashboard["uid"], panel


def load_yaml_json(path) -> dict:
    """Our YAML files are JSON after a comment line; read them the way a YAML parser would."""
    text = path.read_text()
    assert text.startswith("# ")
    yaml = pytest.importorskip("yaml")
    document = yaml.safe_load(text)
    assert document == json.loads(text.split("\n", 1)[1])
    return document


def test_committed_files_equal_what_the_sdk_builds():
    assert build.drift() == [], "run `orelane dashboards build` (python -m dashboards.build) and commit the result"


def test_build_all_writes_dashboards_alerts_and_provisioning(tmp_path):
    paths = build.build_all(tmp_path)
    relative = sorted(str(p.relative_to(tmp_path)) for p in paths)
    assert relative == sorted([f"json/{n}.json" for n in boards.DASHBOARDS] + [
        "provisioning/alerting/orelane-alerts.yaml", "provisioning/dashboards/orelane.yaml",
        "provisioning/datasources/orelane-influxdb.yaml"])
    uids = {json.loads((tmp_path / f"json/{n}.json").read_text())["uid"] for n in boards.DASHBOARDS}
    assert len(uids) == len(boards.DASHBOARDS)


def test_main_check_fails_on_a_hand_edited_file(tmp_path, capsys):
    assert build.main(["--out", str(tmp_path)]) == 0
    assert build.main(["--out", str(tmp_path), "--check"]) == 0
    lane = tmp_path / "json/lane.json"
    lane.write_text(lane.read_text().replace("Belt speed", "Belt sped"))
    assert build.main(["--out", str(tmp_path), "--check"]) == 1
    assert "json/lane.json" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(boards.DASHBOARDS))
def test_dashboard_json_reads_back_into_the_sdk_model_unchanged(name):
    """The SDK's own model parses what we built, except InfluxDB annotation targets.

    The SDK (Grafana 11.6 schema) types an annotation's target as the built-in Grafana one (limit,
    matchAny, tags, type); Grafana's InfluxDB data source stores its query there instead. Those two
    targets are compared separately, the rest must survive the round trip unchanged.
    """
    data = build.dashboard_json(name)
    again = build.to_plain(sdk_dashboard.Dashboard.from_json(data))
    influx_targets = []
    for listed in (data["annotations"]["list"], again["annotations"]["list"]):
        influx_targets.append([a.pop("target") for a in listed if a["datasource"]["type"] == "influxdb"])
    assert again == data
    assert all(t["query"] and t["fromAnnotations"] for t in influx_targets[0])


def test_every_panel_has_a_unit_and_every_graph_an_axis_label():
    for uid, panel in all_panels():
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), (uid, panel["title"])
        if panel["type"] == "timeseries":
            assert defaults["custom"].get("axisLabel"), (uid, panel["title"])


def test_panel_ids_are_unique_and_every_target_uses_the_orelane_datasource():
    for name in boards.DASHBOARDS:
        dashboard = build.dashboard_json(name)
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
    for uid, panel in all_panels():
        assert panel["datasource"]["uid"] == DATASOURCE_UID
        assert all(t["datasource"]["uid"] == DATASOURCE_UID and t["rawQuery"] for t in panel["targets"])


# Queries that deliberately ignore the time range: the model deployed last, whenever that was.
NO_TIME_FILTER = {("orelane-lane", "Model version")}


def test_every_query_filters_by_time_and_by_the_dashboard_variables():
    for uid, panel in all_panels():
        variables = {v["name"] for v in build.dashboard_json(uid.removeprefix("orelane-"))["templating"]["list"]}
        for target in panel["targets"]:
            query = target["query"]
            if (uid, panel["title"]) not in NO_TIME_FILTER:
                assert "$timeFilter" in query, (uid, panel["title"])
            assert '"site" =~ /^$site$/' in query, (uid, panel["title"])
            if "lane" in variables:
                assert '"lane" =~ /^$lane$/' in query, (uid, panel["title"])
            if "GROUP BY time(" in query and "GROUP BY time(1m)" not in query:
                assert "GROUP BY time($__interval)" in query, (uid, panel["title"])


def _identifiers(query: str) -> tuple[set[str], set[str]]:
    measurements = set(re.findall(r'FROM "(\w+)"', query))
    aliases = set(re.findall(r'AS "(\w+)"', query))
    quoted = set(re.findall(r'"(\w+)"', query)) - measurements - aliases
    return measurements, quoted


def test_queries_name_only_measurements_tags_and_fields_that_exist():
    queries = [(f"{uid}/{p['title']}", t["query"]) for uid, p in all_panels() for t in p["targets"]]
    queries += [(rule.uid, rule.query) for rule in alerts.RULES]
    queries += [("variables", q) for q in (boards.SITE_VARIABLE_QUERY, boards.LANE_VARIABLE_QUERY,
                                           boards.LOT_VARIABLE_QUERY)]
    for where, query in queries:
        measurements, names = _identifiers(query)
        assert measurements, where
        known = set()
        for measurement in measurements:
            known |= set(schema.tags_of(measurement)) | set(schema.fields_of(measurement))
        assert names <= known, (where, sorted(names - known))


def test_health_fields_the_dashboards_read_are_listed_in_the_schema():
    read = set()
    for uid, panel in all_panels():
        for target in panel["targets"]:
            if 'FROM "lane_status"' in target["query"]:
                read |= _identifiers(target["query"])[1] - {"site", "lane"}
    assert read <= set(schema.fields_of("lane_status"))
    assert {"spectra_snr", "lamp_drift_fraction", "spectra_saturated_fraction"} <= read


def _colour_at(steps: list[dict], value: float) -> str:
    colour = steps[0]["color"]
    for step in steps[1:]:
        if value >= step["value"]:
            colour = step["color"]
    return colour


# (dashboard uid, panel title, alert rule uid or None, limit)
LIMITED_PANELS = [
    ("orelane-lane", "Contamination score", None, limits.ANOMALY_SCORE),
    ("orelane-lane", "Events in range", "orelane-contamination-event", limits.EVENTS),
    ("orelane-site", "Events today", "orelane-contamination-event", limits.EVENTS),
    ("orelane-instruments", "White/dark reference age", "orelane-reference-stale", limits.REFERENCE_AGE_S),
    ("orelane-instruments", "Saturated spectra", None, limits.SATURATED_FRACTION),
    ("orelane-instruments", "Signal-to-noise", None, limits.SNR),
    ("orelane-instruments", "Lamp drift since white reference", None, limits.LAMP_DRIFT),
    ("orelane-instruments", "Camera frame rate", None, limits.CAMERA_FPS),
    ("orelane-instruments", "Camera saturated pixels", None, limits.CAMERA_SATURATED_FRACTION),
    ("orelane-models", "Anomaly rate", "orelane-model-anomaly-rate", limits.ANOMALY_RATE),
    ("orelane-ingest", "Buffer depth", None, limits.INGEST_BUFFER_BYTES),
    ("orelane-ingest", "Replay lag", None, limits.INGEST_REPLAY_LAG_S),
    ("orelane-ingest", "Write errors", None, limits.INGEST_WRITE_ERRORS),
]


@pytest.mark.parametrize("uid,title,rule_uid,limit", LIMITED_PANELS, ids=[f"{u}/{t}" for u, t, *_ in LIMITED_PANELS])
def test_panel_turns_red_exactly_where_the_limit_and_its_alert_do(uid, title, rule_uid, limit):
    panel = next(p for u, p in all_panels() if u == uid and p["title"] == title)
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    levels = [limit.low, limit.high] if isinstance(limit, limits.Range) else [limit.level]
    probes = sorted({x * f for x in levels for f in (0.5, 0.999, 1.0, 1.001, 2.0)} | {0.0})
    rule = next((r for r in build.alert_rules_api() if r["uid"] == rule_uid), None)
    for value in probes:
        red = _colour_at(steps, value) == panels.RED
        if isinstance(limit, limits.Range) and value == limit.high:
            continue  # Grafana's step starts at high, the range is closed: they differ at this one value only
        assert red == limit.breached(value), (title, value)
        if rule is not None:
            condition = next(d for d in rule["data"] if d["refId"] == rule["condition"])["model"]["expression"]
            assert grafana.evaluate_math(condition, value) == limit.breached(value), (rule_uid, value)


def test_alert_rules_use_the_limits_module():
    text = json.dumps(build.alert_rules_api())
    for limit in (limits.REFERENCE_AGE_S, limits.EVENTS, limits.ROBOT_FAULT_CODE, limits.LINK_UP,
                  limits.INGEST_BUFFER_GROWTH_BYTES):
        assert f"{limit.level:g}" in text
    assert f"{limits.ANOMALY_RATE.low:g}" in text and f"{limits.ANOMALY_RATE.high:g}" in text


def test_alert_rule_file_is_grafana_file_provisioning_format():
    document = load_yaml_json(build.PACKAGE_DIR / "provisioning/alerting/orelane-alerts.yaml")
    assert document["apiVersion"] == 1
    (group,) = document["groups"]
    assert group["folder"] == alerts.FOLDER_TITLE and group["interval"] == "60s" and group["orgId"] == 1
    uids = [r["uid"] for r in group["rules"]]
    assert uids == [spec.uid for spec in alerts.RULES] and len(set(uids)) == len(uids)
    for rule in group["rules"]:
        assert len(rule["uid"]) <= 40 and re.fullmatch(r"[A-Za-z0-9_-]+", rule["uid"])
        assert not {"folderUID", "ruleGroup", "orgID"} & set(rule), "API-only keys in a provisioning file"
        refs = {d["refId"]: d for d in rule["data"]}
        assert rule["condition"] in refs
        assert refs["A"]["datasourceUid"] == DATASOURCE_UID and refs["A"]["relativeTimeRange"]["from"] > 0
        assert all(refs[r]["datasourceUid"] == "__expr__" for r in ("B", "C"))
        assert "$site" not in refs["A"]["model"]["query"] and "$lane" not in refs["A"]["model"]["query"]
        assert rule["noDataState"] in ("OK", "NoData", "Alerting") and rule["execErrState"] in ("OK", "Error",
                                                                                                 "Alerting")


def test_datasource_file_uses_influxql_and_takes_secrets_from_the_environment():
    document = load_yaml_json(build.PACKAGE_DIR / "provisioning/datasources/orelane-influxdb.yaml")
    (ds,) = document["datasources"]
    assert ds["uid"] == DATASOURCE_UID and ds["type"] == "influxdb"
    assert ds["jsonData"]["version"] == "InfluxQL" and ds["jsonData"]["dbName"] == "orelane"
    assert ds["url"] == "${ORELANE_INFLUX_URL}"
    assert ds["secureJsonData"]["httpHeaderValue1"] == "Token ${ORELANE_INFLUX_TOKEN}"


def test_dashboard_provider_file_points_grafana_at_the_json():
    document = load_yaml_json(build.PACKAGE_DIR / "provisioning/dashboards/orelane.yaml")
    (provider,) = document["providers"]
    assert provider["type"] == "file" and provider["folderUid"] == alerts.FOLDER_UID
    assert provider["options"]["path"] == build.GRAFANA_DASHBOARDS_DIR
