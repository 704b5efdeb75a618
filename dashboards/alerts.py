"""Grafana-managed alert rules, built with the SDK from the limits the panels draw.

Each rule is one InfluxQL query (A), reduced to one number per series (B:
last value), and a math condition (C) written from dashboards.limits, so a
rule fires exactly where its panel turns red. The same rules are written as a
file-provisioning document (dashboards/provisioning/alerting/) and uploaded
by dashboards.push through the alerting provisioning HTTP API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from grafana_foundation_sdk.builders import alerting as alerting_b, expr as expr_b
from grafana_foundation_sdk.models import alerting, dashboard as dash

from dashboards import boards, limits
from dashboards.influxql import DATASOURCE_UID, InfluxQL, where

RULE_GROUP = "orelane"
FOLDER_UID = "orelane"
FOLDER_TITLE = "orelane"
EVALUATION_INTERVAL_S = 60
EXPRESSION_DATASOURCE = dash.DataSourceRef(type_val="__expr__", uid="__expr__")

LANE_SILENT_BUCKET_S = 10
LANE_SILENT_WINDOW_S = 6 * 3600  # a lane silent for longer than this drops out of the rule (see docs)


def above(limit: limits.Limit, var: str = "$B") -> str:
    return f"{var} >= {limit.level:g}" if limit.direction == "above" else f"{var} < {limit.level:g}"


def outside(rng: limits.Range, var: str = "$B") -> str:
    return f"{var} < {rng.low:g} || {var} > {rng.high:g}"


@dataclass(frozen=True)
class RuleSpec:
    """What one alert rule watches; `condition` is a Grafana math expression over $B (the reduced query)."""

    uid: str
    title: str
    query: str
    window_s: int  # the query's relative time range: $timeFilter spans the last window_s seconds
    condition: str
    summary: str
    for_duration: str = "0s"
    severity: Literal["critical", "warning"] = "warning"
    no_data: Literal["OK", "NoData", "Alerting"] = "OK"
    dashboard_uid: str = boards.LANE_UID


LANE_GROUP = 'GROUP BY "site", "lane"'

# Health alarms the edge raises at its own lane's limits (edge.health.alarms), one rule each: a lane whose site
# file sets its own limits is alerted at them, not at the defaults the panels draw, and a lane whose edge does
# not publish an alarm yet (an older release) leaves only that rule without data. The reference age and the
# robot link have rules of their own. (field, title, severity, what it means for the inspector)
INSTRUMENT_ALARMS = (
    ("alarm_spectra_silent", "Spectrometer silent", "critical", "the belt runs and no spectrum reaches the edge: "
                                                               "the ore passing is not judged"),
    ("alarm_saturation", "Spectra saturated", "warning", "saturated spectra are refused, not judged"),
    ("alarm_low_snr", "Spectrometer signal-to-noise low", "warning", "noisy spectra blur the clean-ore limits"),
    ("alarm_lamp_drift", "Spectrometer lamp drift", "warning", "reflectance is biased until a new white reference"),
    ("alarm_camera_fps", "Camera frame rate low", "warning", "objects pass the camera unseen"),
    ("alarm_belt_link", "Belt scale unreachable", "critical", "belt position is extrapolated; cuts may miss"),
    ("alarm_belt_scale_fault", "Belt scale fault", "critical", "the integrator reports a speed or load-cell fault"),
    ("alarm_radiation_link", "Gamma portal unreachable", "critical", "the ore passing is not screened for radiation"),
    ("alarm_radiation_fault", "Gamma portal fault", "critical", "the ore passing is not screened for radiation"),
)

RULES: tuple[RuleSpec, ...] = (
    RuleSpec("orelane-contamination-event", "Contamination event",
             'SELECT count("event_id") FROM "contamination_event" ' + where('"state" = \'open\'')
             + ' GROUP BY "site", "lane", "class"',
             300, above(limits.EVENTS), severity="critical",
             summary="Contamination event on {{ $labels.site }}/{{ $labels.lane }}, likely {{ $labels.class }}"),
    RuleSpec("orelane-robot-fault", "Sampling robot fault",
             f'SELECT max("robot_fault_code") FROM "lane_status" {where()} {LANE_GROUP}',
             120, above(limits.ROBOT_FAULT_CODE), severity="critical",
             summary="Sampler PLC on {{ $labels.site }}/{{ $labels.lane }} reports fault code {{ $values.B.Value }}"),
    RuleSpec("orelane-robot-link-down", "Sampling robot unreachable",
             f'SELECT last("robot_link_up") FROM "lane_status" {where()} {LANE_GROUP}',
             120, above(limits.LINK_UP), for_duration="1m", severity="critical",
             summary="The edge on {{ $labels.site }}/{{ $labels.lane }} cannot reach the sampler PLC"),
    RuleSpec("orelane-reference-stale", "Spectrometer reference stale",
             f'SELECT last("reference_age_s") FROM "lane_status" {where()} {LANE_GROUP}',
             300, f"{above(limits.REFERENCE_AGE_S)} || $B < 0",
             summary="White/dark reference on {{ $labels.site }}/{{ $labels.lane }} is older than "
                     f"{limits.REFERENCE_AGE_S.level:g} s, or missing"),
    RuleSpec("orelane-lane-silent", "Lane silent",
             f'SELECT moving_average(count("online"), {int(limits.LANE_SILENT_S.level) // LANE_SILENT_BUCKET_S}) '
             f'FROM "lane_status" {where()} GROUP BY time({LANE_SILENT_BUCKET_S}s), "site", "lane" fill(0)',
             LANE_SILENT_WINDOW_S, "$B <= 0", severity="critical", no_data="Alerting",
             dashboard_uid=boards.SITE_UID,
             summary=f"No status from {{{{ $labels.site }}}}/{{{{ $labels.lane }}}} for "
                     f"{limits.LANE_SILENT_S.level:g} s"),
    RuleSpec("orelane-ingest-buffer-growing", "Ingest buffer growing",
             'SELECT last("buffer_bytes") - first("buffer_bytes") AS "growth" FROM "ingest_health" '
             f'{where()} GROUP BY "site", "worker"',
             600, above(limits.INGEST_BUFFER_GROWTH_BYTES), for_duration="5m", dashboard_uid=boards.INGEST_UID,
             summary="Ingest worker {{ $labels.worker }} buffers to disk: the database refuses or is unreachable"),
    RuleSpec("orelane-model-anomaly-rate", "Model anomaly rate out of range",
             boards.anomaly_rate_query(for_alert=True), limits.ANOMALY_RATE_WINDOW_S,
             outside(limits.ANOMALY_RATE), for_duration="15m", dashboard_uid=boards.MODELS_UID,
             summary="Anomaly rate of model {{ $labels.model_version }} on {{ $labels.site }}/{{ $labels.lane }} "
                     "is outside " + f"{limits.ANOMALY_RATE.low:g}-{limits.ANOMALY_RATE.high:g}"),
) + tuple(
    RuleSpec("orelane-" + name.removeprefix("alarm_").replace("_", "-"), title,
             f'SELECT last("{name}") FROM "lane_status" {where()} {LANE_GROUP}', 300, "$B >= 1", for_duration="1m",
             severity=severity, dashboard_uid=boards.INSTRUMENTS_UID,
             summary=f"{title} on {{{{ $labels.site }}}}/{{{{ $labels.lane }}}} ({name}, raised by the edge at the "
                     f"lane's own limit): {meaning}")
    for name, title, severity, meaning in INSTRUMENT_ALARMS)


def rule(spec: RuleSpec, folder_uid: str = FOLDER_UID, datasource_uid: str = DATASOURCE_UID) -> alerting_b.Rule:
    query = InfluxQL(spec.query).ref_id("A").alert_model(interval_ms=1000)
    query.build().datasource = dash.DataSourceRef(type_val="influxdb", uid=datasource_uid)
    return (alerting_b.Rule(spec.title).uid(spec.uid).org_id(1).folder_uid(folder_uid).rule_group(RULE_GROUP)
            .with_query(alerting_b.Query("A").datasource_uid(datasource_uid).query_type("")
                        .relative_time_range(alerting.RelativeTimeRange(from_val=spec.window_s, to=0))
                        .model(query))
            .with_query(alerting_b.Query("B").datasource_uid("__expr__")
                        .relative_time_range(alerting.RelativeTimeRange(from_val=0, to=0))
                        .model(expr_b.TypeReduce().ref_id("B").expression("A").reducer("last")
                               .settings(expr_b.ExprTypeReduceSettings().mode("dropNN"))
                               .datasource(EXPRESSION_DATASOURCE)))
            .with_query(alerting_b.Query("C").datasource_uid("__expr__")
                        .relative_time_range(alerting.RelativeTimeRange(from_val=0, to=0))
                        .model(expr_b.TypeMath().ref_id("C").expression(spec.condition)
                               .datasource(EXPRESSION_DATASOURCE)))
            .condition("C").for_val(spec.for_duration).no_data_state(spec.no_data).exec_err_state("Error")
            .labels({"service": "orelane", "severity": spec.severity})
            .annotations({"summary": spec.summary, "__dashboardUid__": spec.dashboard_uid}))


def rule_group(folder_uid: str = FOLDER_UID, datasource_uid: str = DATASOURCE_UID) -> alerting_b.RuleGroup:
    group = alerting_b.RuleGroup(RULE_GROUP).folder_uid(folder_uid).interval(EVALUATION_INTERVAL_S)
    for spec in RULES:
        group.with_rule(rule(spec, folder_uid, datasource_uid))
    return group


# Keys of a rule in Grafana's file-provisioning format (the HTTP API adds folderUID, ruleGroup and orgID).
_FILE_RULE_KEYS = ("uid", "title", "condition", "data", "noDataState", "execErrState", "for", "annotations",
                   "labels", "isPaused")


def provisioning_document(api_rules: list[dict], folder_title: str = FOLDER_TITLE) -> dict:
    """The alert rules as Grafana's file-provisioning document (`apiVersion: 1`, `groups:`)."""
    rules = [{key: r[key] for key in _FILE_RULE_KEYS if key in r} for r in api_rules]
    return {"apiVersion": 1, "groups": [{"orgId": 1, "name": RULE_GROUP, "folder": folder_title,
                                         "interval": f"{EVALUATION_INTERVAL_S}s", "rules": rules}]}
