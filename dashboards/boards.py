"""The six orelane dashboards, as SDK builders: Lane, Site, Instruments, Samples and lab, Models, Ingest.

Every query filters by the `site` and `lane` variables (and `lot` where the
measurement carries a lot id) and by Grafana's `$timeFilter`; graphs group
by `time($__interval)`. Measurement, tag and field names are those of
orelane.contract.measurements and dashboards.schema.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.models import common, dashboard as dash

from dashboards import limits
from dashboards.influxql import DATASOURCE, LOT, InfluxQL, lane_where, where, SITE
from dashboards.panels import (ALARM, LINK, ONLINE, ROBOT_STATE, Board, bars, graph, stat, table, timeline)
from dashboards.schema import HEALTH_ALARMS

LANE_UID, SITE_UID, INSTRUMENTS_UID = "orelane-lane", "orelane-site", "orelane-instruments"
SAMPLES_UID, MODELS_UID, INGEST_UID = "orelane-samples", "orelane-models", "orelane-ingest"

BY_LANE = 'GROUP BY time($__interval), "site", "lane" fill(none)'
LANE_ALIAS = "$tag_site/$tag_lane"

# 1 for a spectrum outside the clean-ore limits (anomaly_score > 1), else 0: InfluxQL has no comparison
# operator in SELECT, so the sign of (score - 1) is taken with ceil(x / (|x| + eps)).
_OUTSIDE_LIMITS = ('ceil(("anomaly_score" - {level}) / (abs("anomaly_score" - {level}) + 0.000001))'
                   .format(level=limits.ANOMALY_SCORE.level))


def anomaly_rate_query(for_alert: bool = False) -> str:
    """Fraction of spectra outside the clean-ore limits per site, lane and model version.

    The panel filters by the dashboard's variables and groups by $__interval; the alert rule (which has no
    variables) takes every lane over its whole evaluation window.
    """
    inner_where = where() if for_alert else lane_where()
    group = 'GROUP BY "site", "lane", "model_version"' if for_alert \
        else 'GROUP BY time($__interval), "site", "lane", "model_version" fill(none)'
    return (f'SELECT mean("outside") AS "anomaly_rate" FROM (SELECT {_OUTSIDE_LIMITS} AS "outside" '
            f'FROM "spectrum_result" {inner_where} GROUP BY "site", "lane", "model_version") '
            f'{where()} {group}')


def tonnage_query() -> str:
    """Tonnes conveyed in the range: the sum of the totalizer's increases, so a totalizer reset loses nothing."""
    return ('SELECT sum("conveyed_t") AS "tonnage_t" FROM (SELECT non_negative_difference(last("totalizer_t")) '
            f'AS "conveyed_t" FROM "belt" {lane_where()} GROUP BY time(1m), "site", "lane") '
            f'{where()} GROUP BY "site", "lane"')


def awaiting_lab_query() -> str:
    """Samples sealed but not yet received by the lab: +1 per sealed record, -1 per received record.

    The subqueries keep the status tag, so a sealed and a received record at the same instant stay two
    points (merged into one series they would overwrite each other).
    """
    sign = ('SELECT "sample_id" * 0 {op} 1 AS "waiting" FROM "sample" '
            + lane_where('"status" = \'{status}\'') + ' GROUP BY "site", "lane", "status"')
    return (f'SELECT sum("waiting") AS "awaiting_lab" FROM ({sign.format(op="+", status="sealed")}), '
            f'({sign.format(op="-", status="received")}) {where()} GROUP BY "site", "lane"')


def _samples_per_interval(status: str) -> str:
    return ('SELECT count("sample_id") FROM "sample" ' + lane_where(f'"status" = \'{status}\'')
            + ' GROUP BY time($__interval), "kind" fill(0)')


# ---------------------------------------------------------------- variables


def _variable(name: str, label: str, query: str, description: str) -> dash_b.QueryVariable:
    return (dash_b.QueryVariable(name).label(label).description(description).query(query).datasource(DATASOURCE)
            .multi(True).include_all(True).all_value(".*").refresh(dash.VariableRefresh.ON_DASHBOARD_LOAD)
            .sort(dash.VariableSort.ALPHABETICAL_ASC)
            .current(dash.VariableOption(selected=True, text="All", value="$__all")))


SITE_VARIABLE_QUERY = 'SHOW TAG VALUES FROM "lane_status" WITH KEY = "site"'
LANE_VARIABLE_QUERY = f'SHOW TAG VALUES FROM "lane_status" WITH KEY = "lane" WHERE {SITE}'
LOT_VARIABLE_QUERY = f'SELECT DISTINCT("lot_id") FROM "lot" {lane_where(time=False)}'


def site_variable():
    return _variable("site", "Site", SITE_VARIABLE_QUERY, "Port or terminal (site.id in the site configuration)")


def lane_variable():
    return _variable("lane", "Lane", LANE_VARIABLE_QUERY, "Unloading lane of the selected sites")


def lot_variable():
    return _variable("lot", "Lot", LOT_VARIABLE_QUERY,
                     "Customs lot; filters events and lot details (spectra and belt carry no lot id)")


def with_variables(board: Board, *names: str) -> Board:
    makers = {"site": site_variable, "lane": lane_variable, "lot": lot_variable}
    for name in names:
        board.builder.with_variable(makers[name]())
    return board


# ---------------------------------------------------------------- annotations


def event_annotation() -> dash_b.AnnotationQuery:
    query = (InfluxQL('SELECT "event_id", "class", "lane", "peak_score", "tonnage_t" FROM "contamination_event" '
                      + lane_where(LOT, '"state" = \'open\''))
             .ref_id("events").table().annotation_columns(text="event_id", tags="class,lane"))
    return (dash_b.AnnotationQuery().name("Contamination events").datasource(DATASOURCE).enable(True)
            .icon_color("red").target(query))


def lot_annotation() -> dash_b.AnnotationQuery:
    query = (InfluxQL('SELECT "lot_id", "vessel", "state", "lane" FROM "lot" ' + lane_where(LOT))
             .ref_id("lots").table().annotation_columns(text="lot_id", tags="state,vessel"))
    return (dash_b.AnnotationQuery().name("Lots opened and closed").datasource(DATASOURCE).enable(True)
            .icon_color("blue").target(query))


# ---------------------------------------------------------------- dashboards


def lane() -> dash_b.Dashboard:
    board = with_variables(Board(LANE_UID, "orelane / Lane",
                                 "One lane for the inspector: belt, contamination, events, cuts, robot, model.",
                                 ["lane"]), "site", "lane", "lot")
    board.builder.annotation(event_annotation()).annotation(lot_annotation())
    board.add(
        stat("Lane state", "none",
             InfluxQL(f'SELECT last("online") AS "online" FROM "lane_status" {lane_where()} GROUP BY "site", "lane"')
             .alias(LANE_ALIAS),
             mappings=ONLINE, span=6, color_background=True,
             description="online while the edge daemon publishes its status (every 5 s)"),
        stat("Model version", "none",
             InfluxQL(f'SELECT "model_version", "model_id" FROM "model_deployment" {lane_where(time=False)} '
                      'GROUP BY "site", "lane" ORDER BY time DESC LIMIT 1').table(),
             fields="/^model_version$/", span=6,
             description="the model version last deployed to the lane (model/deploy)"),
        stat("Tonnage in range", "masst", InfluxQL(tonnage_query()).alias(LANE_ALIAS), calcs=("sum",), span=6,
             description="sum of the belt totalizer's increases over the time range"),
        stat("Events in range", "short",
             InfluxQL('SELECT count("event_id") AS "events" FROM "contamination_event" '
                      + lane_where(LOT, '"state" = \'closed\'') + ' GROUP BY "site", "lane"').alias(LANE_ALIAS),
             calcs=("sum",), span=6, limit=limits.EVENTS),
    )
    board.add(
        graph("Contamination score", "none", "anomaly score (1 = clean-ore limit)",
              InfluxQL(f'SELECT max("anomaly_score") AS "nir" FROM "spectrum_result" {lane_where()} {BY_LANE}')
              .alias("NIR $tag_lane"),
              InfluxQL(f'SELECT max("max_score") AS "camera" FROM "frame_result" {lane_where()} {BY_LANE}')
              .alias("camera $tag_lane"),
              limit=limits.ANOMALY_SCORE, span=24, min_val=0,
              description="highest NIR anomaly score and camera object score per interval; events are annotations"),
    )
    board.add(
        graph("Belt speed", "velocityms", "speed (m/s)",
              InfluxQL(f'SELECT mean("speed_m_s") FROM "belt" {lane_where()} {BY_LANE}').alias(LANE_ALIAS),
              span=8, min_val=0),
        graph("Flow", "suffix: t/h", "mass flow (t/h)",
              InfluxQL(f'SELECT mean("flow_t_h") FROM "belt" {lane_where()} {BY_LANE}').alias(LANE_ALIAS),
              span=8, min_val=0),
        graph("Tonnage (belt totalizer)", "masst", "totalizer (t)",
              InfluxQL(f'SELECT last("totalizer_t") FROM "belt" {lane_where()} {BY_LANE}').alias(LANE_ALIAS),
              span=8),
    )
    board.add(
        table("Contamination events",
              InfluxQL('SELECT "lane", "event_id", "class", "start_m", "end_m", "peak_position_m", "tonnage_t", '
                       '"peak_score", "lot_id" FROM "contamination_event" '
                       + lane_where(LOT, '"state" = \'closed\'')),
              units_by_field={"start_m": "lengthm", "end_m": "lengthm", "peak_position_m": "lengthm",
                              "tonnage_t": "masst", "peak_score": "none"},
              description="closed events: belt stretch, tonnage, peak fused score, likely class, lot"),
    )
    board.add(
        graph("Cuts", "short", "cuts per interval",
              InfluxQL(_samples_per_interval("cut")).alias("$tag_kind"),
              InfluxQL(_samples_per_interval("missed")).alias("missed $tag_kind"),
              bars=True, stack=common.StackingMode.NORMAL, span=12, min_val=0,
              description="targeted and routine cuts, and missed sampling opportunities"),
        timeline("Robot", "none",
                 InfluxQL(f'SELECT last("robot_state") FROM "lane_status" {lane_where()} '
                          'GROUP BY time($__interval), "site", "lane" fill(previous)').alias("PLC $tag_lane"),
                 InfluxQL(f'SELECT last("robot_link_up") FROM "lane_status" {lane_where()} '
                          'GROUP BY time($__interval), "site", "lane" fill(previous)').alias("link $tag_lane"),
                 mappings=ROBOT_STATE + LINK, span=12,
                 description="sampler PLC state and its Modbus link"),
    )
    return board.builder


def site() -> dash_b.Dashboard:
    board = with_variables(Board(SITE_UID, "orelane / Site", "All lanes of a port at a glance.", ["site"]),
                           "site", "lane")
    board.add(
        stat("Lane state", "none",
             InfluxQL(f'SELECT last("online") AS "online" FROM "lane_status" {lane_where()} GROUP BY "site", "lane"')
             .alias(LANE_ALIAS),
             mappings=ONLINE, span=24, height=4, color_background=True),
        stat("Tonnage today", "masst", InfluxQL(tonnage_query()).alias(LANE_ALIAS), calcs=("sum",), span=8,
             time_from="now/d"),
        stat("Events today", "short",
             InfluxQL('SELECT count("event_id") AS "events" FROM "contamination_event" '
                      + lane_where('"state" = \'closed\'') + ' GROUP BY "site", "lane"').alias(LANE_ALIAS),
             calcs=("sum",), span=8, time_from="now/d", limit=limits.EVENTS),
        stat("Samples awaiting the lab", "short", InfluxQL(awaiting_lab_query()).alias(LANE_ALIAS),
             calcs=("sum",), span=8, time_from="7d",
             description="sealed in the last 7 days and not yet received by the lab"),
    )
    board.add(
        graph("Flow by lane", "suffix: t/h", "mass flow (t/h)",
              InfluxQL(f'SELECT mean("flow_t_h") FROM "belt" {lane_where()} {BY_LANE}').alias(LANE_ALIAS),
              span=12, min_val=0),
        graph("Contamination score by lane", "none", "anomaly score (1 = clean-ore limit)",
              InfluxQL(f'SELECT max("anomaly_score") FROM "spectrum_result" {lane_where()} {BY_LANE}')
              .alias(LANE_ALIAS),
              limit=limits.ANOMALY_SCORE, span=12, min_val=0),
    )
    return board.builder


def instruments() -> dash_b.Dashboard:
    board = with_variables(Board(INSTRUMENTS_UID, "orelane / Instruments",
                                 "Spectrometer, camera and Modbus links, for engineers.", ["instruments"]),
                           "site", "lane")

    def health(title, field_name, unit, axis, limit, agg="max", description=""):
        return graph(title, unit, axis,
                     InfluxQL(f'SELECT {agg}("{field_name}") FROM "lane_status" {lane_where()} {BY_LANE}')
                     .alias(LANE_ALIAS), limit=limit, span=8, min_val=0, description=description)

    board.row("Spectrometer")
    board.add(
        health("White/dark reference age", "reference_age_s", "s", "age (s)", limits.REFERENCE_AGE_S,
               description="-1 while no reference has been received"),
        health("Saturated spectra", "spectra_saturated_fraction", "percentunit", "saturated spectra",
               limits.SATURATED_FRACTION),
        health("Signal-to-noise", "spectra_snr", "none", "SNR (white level / dark noise)", limits.SNR,
               agg="min"),
        health("Lamp drift since white reference", "lamp_drift_fraction", "percentunit", "intensity change",
               limits.LAMP_DRIFT),
        graph("Spectra refused", "short", "spectra per interval",
              InfluxQL(f'SELECT count("seq") FROM "spectrum_rejected" {lane_where()} '
                       'GROUP BY time($__interval), "lane", "topic_leaf" fill(0)').alias("$tag_lane $tag_topic_leaf"),
              span=8, min_val=0, bars=True, description="spectra refused one by one, with a reason (dead letters)"),
        graph("Spectra per second", "hertz", "spectra/s",
              InfluxQL('SELECT non_negative_derivative(max("spectra_in"), 1s) FROM "lane_status" '
                       f'{lane_where()} {BY_LANE}').alias(LANE_ALIAS), span=8, min_val=0),
    )
    board.row("Camera")
    board.add(
        graph("Camera frame rate", "hertz", "frames/s",
              InfluxQL('SELECT non_negative_derivative(max("seq"), 1s) FROM "frame_result" '
                       f'{lane_where()} {BY_LANE}').alias(LANE_ALIAS),
              limit=limits.CAMERA_FPS, span=8, min_val=0,
              description="from the frame sequence numbers the edge reports"),
        health("Camera brightness", "camera_mean_brightness", "none", "mean luma (0-255)", None, agg="mean"),
        health("Camera saturated pixels", "camera_saturated_fraction", "percentunit", "saturated pixels",
               limits.CAMERA_SATURATED_FRACTION),
    )
    board.row("Modbus links")
    board.add(
        timeline("Modbus links", "none",
                 *[InfluxQL(f'SELECT last("{link}_link_up") FROM "lane_status" {lane_where()} '
                            'GROUP BY time($__interval), "site", "lane" fill(previous)').alias(f"{link} $tag_lane")
                   for link in ("belt", "robot", "radiation")],
                 mappings=LINK, span=24, description="belt scale, sampler PLC and radiation portal"),
    )
    board.row("Alarms raised by the edge")
    board.add(
        timeline("Alarms raised by the edge", "none",
                 *[InfluxQL(f'SELECT last("{alarm}") FROM "lane_status" {lane_where()} '
                            'GROUP BY time($__interval), "site", "lane" fill(previous)')
                   .alias(f"{alarm.removeprefix('alarm_')} $tag_lane") for alarm in HEALTH_ALARMS],
                 mappings=ALARM, span=24, height=9,
                 description="each health alarm as the edge raised it, at its own lane's limits (docs/lane.md, "
                             "section 7); the panels above draw the default limits"),
    )
    return board.builder


def samples() -> dash_b.Dashboard:
    board = with_variables(Board(SAMPLES_UID, "orelane / Samples and lab",
                                 "Chain of custody: samples by status, lab turnaround, lab results.", ["samples"]),
                           "site", "lane")
    turnaround = [
        dash.DataTransformerConfig(id_val="groupingToMatrix",
                                   options={"columnField": "status", "rowField": "sample_id", "valueField": "Time"}),
        dash.DataTransformerConfig(id_val="calculateField", options={
            "mode": "binary", "alias": "cut to receipt", "replaceFields": False,
            "binary": {"left": "received", "operator": "-", "right": "cut"}}),
        dash.DataTransformerConfig(id_val="calculateField", options={
            "mode": "binary", "alias": "cut to result", "replaceFields": False,
            "binary": {"left": "analysed", "operator": "-", "right": "cut"}}),
        dash.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"cut": True, "received": True, "analysed": True},
            "renameByName": {"sample_id\\status": "sample"}}),
    ]
    board.add(
        bars("Samples by status", "short",
             InfluxQL(f'SELECT count("sample_id") FROM "sample" {lane_where()} GROUP BY "status"')
             .alias("$tag_status"), span=8,
             description="state changes recorded in the range, by status reached"),
        graph("Missed and failed cuts", "short", "samples per interval",
              InfluxQL('SELECT count("sample_id") FROM "sample" ' + lane_where('"status" =~ /^(missed|failed)$/')
                       + ' GROUP BY time($__interval), "status" fill(0)').alias("$tag_status"),
              bars=True, span=8, min_val=0),
        bars("Lab results by contaminant class", "short",
             InfluxQL('SELECT count("sample_id") FROM "sample" ' + lane_where('"status" = \'analysed\'')
                      + ' GROUP BY "result_class"').alias("$tag_result_class"),
             span=8, description="analysed samples by the class the lab found: clean, or the contaminant type "
                                 "(the lab desk publishes it)"),
        table("Time from cut to lab receipt and to result",
              InfluxQL('SELECT "sample_id", "status" FROM "sample" '
                       + lane_where('"status" =~ /^(cut|received|analysed)$/')),
              transformations=turnaround, units_by_field={"cut to receipt": "ms", "cut to result": "ms",
                                                          "sample": "none"},
              footer_calcs=("mean",), description="per sample; the footer shows the mean"),
    )
    return board.builder


def models() -> dash_b.Dashboard:
    board = with_variables(Board(MODELS_UID, "orelane / Models",
                                 "Anomaly rate and class mix per lane and model version: a drifting or badly "
                                 "calibrated model shows here first.", ["models"]), "site", "lane")
    board.add(
        graph("Anomaly rate", "percentunit", "spectra outside the clean-ore limits",
              InfluxQL(anomaly_rate_query()).alias("$tag_lane $tag_model_version"),
              limit=limits.ANOMALY_RATE, span=24, min_val=0,
              description="fraction of spectra with anomaly score > 1; alert outside the green band"),
        graph("Class mix of anomalies", "percentunit", "share of anomalous spectra",
              InfluxQL('SELECT count("anomaly_score") FROM "spectrum_result" '
                       + lane_where('"decision" != \'clean\'')
                       + ' GROUP BY time($__interval), "model_version", "class" fill(0)')
              .alias("$tag_model_version $tag_class"),
              stack=common.StackingMode.PERCENT, span=12, min_val=0),
        graph("Decisions", "percentunit", "share of spectra",
              InfluxQL('SELECT count("anomaly_score") FROM "spectrum_result" ' + lane_where()
                       + ' GROUP BY time($__interval), "model_version", "decision" fill(0)')
              .alias("$tag_model_version $tag_decision"),
              stack=common.StackingMode.PERCENT, span=12, min_val=0),
        graph("Anomaly score, 99th percentile", "none", "anomaly score (1 = clean-ore limit)",
              InfluxQL('SELECT percentile("anomaly_score", 99) FROM "spectrum_result" ' + lane_where()
                       + ' GROUP BY time($__interval), "lane", "model_version" fill(none)')
              .alias("$tag_lane $tag_model_version"),
              limit=limits.ANOMALY_SCORE, span=24, min_val=0),
    )
    return board.builder


def ingest() -> dash_b.Dashboard:
    board = with_variables(Board(INGEST_UID, "orelane / Ingest", "MQTT to InfluxDB: throughput, buffer, lag, errors.",
                                 ["ingest"]), "site")
    by_worker = 'GROUP BY time($__interval), "site", "worker" fill(none)'
    board.add(
        graph("Throughput", "suffix: /s", "per second",
              InfluxQL(f'SELECT non_negative_derivative(max("points_written"), 1s) FROM "ingest_health" '
                       f'{where(SITE)} {by_worker}').alias("points $tag_worker"),
              InfluxQL(f'SELECT non_negative_derivative(max("messages_in"), 1s) FROM "ingest_health" '
                       f'{where(SITE)} {by_worker}').alias("messages $tag_worker"),
              span=12, min_val=0),
        graph("Buffer depth", "bytes", "disk buffer",
              InfluxQL(f'SELECT max("buffer_bytes") FROM "ingest_health" {where(SITE)} {by_worker}')
              .alias("$tag_worker"), limit=limits.INGEST_BUFFER_BYTES, span=12, min_val=0),
        graph("Batches buffered", "short", "batches on disk",
              InfluxQL(f'SELECT max("batches_buffered") FROM "ingest_health" {where(SITE)} {by_worker}')
              .alias("$tag_worker"), span=8, min_val=0),
        graph("Replay lag", "s", "lag (s)",
              InfluxQL(f'SELECT max("replay_lag_s") FROM "ingest_health" {where(SITE)} {by_worker}')
              .alias("$tag_worker"), limit=limits.INGEST_REPLAY_LAG_S, span=8, min_val=0),
        graph("Write errors", "suffix: /min", "errors per minute",
              InfluxQL(f'SELECT non_negative_derivative(max("write_errors"), 1m) FROM "ingest_health" '
                       f'{where(SITE)} {by_worker}').alias("$tag_worker"),
              limit=limits.INGEST_WRITE_ERRORS, span=8, min_val=0),
    )
    return board.builder


DASHBOARDS = {"lane": lane, "site": site, "instruments": instruments, "samples": samples, "models": models,
              "ingest": ingest}
