"""Small panel factories over the SDK builders, so each dashboard reads as a list of what it shows.

Every factory takes the unit of the values (and an axis label for graphs),
so no panel leaves Grafana to guess; a `limits.Limit` or `limits.Range`
becomes the panel's thresholds, drawn as lines on graphs.
"""

from __future__ import annotations

import string

from typing import Iterable, Sequence

from grafana_foundation_sdk.builders import bargauge, common as common_b, dashboard as dash_b, stat as stat_b
from grafana_foundation_sdk.builders import statetimeline, table as table_b, timeseries
from grafana_foundation_sdk.models import common, dashboard as dash

from dashboards import limits
from dashboards.influxql import DATASOURCE, InfluxQL

GREEN, AMBER, RED, BLUE, GREY = "green", "#EAB839", "red", "blue", "text"


def thresholds(limit: limits.Limit | limits.Range | None) -> dash_b.ThresholdsConfig:
    """Grafana steps (a step applies from its value upwards) that turn red exactly where the alert fires."""
    steps: list[dash.Threshold]
    if limit is None:
        steps = [dash.Threshold(None, GREEN)]
    elif isinstance(limit, limits.Range):
        steps = [dash.Threshold(None, RED), dash.Threshold(limit.low, GREEN), dash.Threshold(limit.high, RED)]
    elif limit.direction == "above":
        steps = [dash.Threshold(None, GREEN)]
        if limit.warning is not None:
            steps.append(dash.Threshold(limit.warning, AMBER))
        steps.append(dash.Threshold(limit.level, RED))
    else:
        steps = [dash.Threshold(None, RED)]
        if limit.warning is not None:
            steps += [dash.Threshold(limit.level, AMBER), dash.Threshold(limit.warning, GREEN)]
        else:
            steps.append(dash.Threshold(limit.level, GREEN))
    return dash_b.ThresholdsConfig().mode(dash.ThresholdsMode.ABSOLUTE).steps(steps)


def value_map(mapping: dict[int | str, tuple[str, str]]) -> list[dash.ValueMapping]:
    """{value: (text, colour)} as one Grafana value mapping."""
    return [dash.ValueMap(options={str(k): dash.ValueMappingResult(text=text, color=color, index=i)
                                   for i, (k, (text, color)) in enumerate(mapping.items())})]


ONLINE = value_map({1: ("online", GREEN), 0: ("offline", RED)})
LINK = value_map({1: ("up", GREEN), 0: ("down", RED)})
ALARM = value_map({0: ("ok", GREEN), 1: ("raised", RED)})
ROBOT_STATE = value_map({0: ("idle", GREEN), 1: ("cutting", BLUE), 2: ("crushing/dividing", BLUE),
                         3: ("sealing", BLUE), 4: ("placing", BLUE), limits.ROBOT_FAULTED_STATE: ("faulted", RED),
                         10: ("power-up", AMBER)})


def _common(panel, title: str, description: str, targets: Sequence[InfluxQL], span: int, height: int,
            time_from: str | None):
    panel.title(title).description(description).datasource(DATASOURCE).span(span).height(height)
    if len(targets) > len(string.ascii_uppercase):
        raise ValueError(f"panel {title!r}: {len(targets)} queries, at most {len(string.ascii_uppercase)}")
    for ref, target in zip(string.ascii_uppercase, targets):
        panel.with_target(target.ref_id(ref))
    if time_from:
        panel.time_from(time_from)
    return panel


def graph(title: str, unit: str, axis_label: str, *targets: InfluxQL, description: str = "",
          limit: limits.Limit | limits.Range | None = None, span: int = 12, height: int = 8,
          stack: common.StackingMode | None = None, bars: bool = False, min_val: float | None = None,
          max_val: float | None = None, time_from: str | None = None) -> timeseries.Panel:
    panel = timeseries.Panel().unit(unit).axis_label(axis_label).thresholds(thresholds(limit))
    panel.legend(common_b.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                 .placement(common.LegendPlacement.BOTTOM).show_legend(True))
    if limit is not None:
        panel.thresholds_style(common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE))
    if stack is not None:
        panel.stacking(common_b.StackingConfig().mode(stack))
    if bars:
        panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80)
    if min_val is not None:
        panel.min(min_val)
    if max_val is not None:
        panel.max(max_val)
    return _common(panel, title, description, targets, span, height, time_from)


def stat(title: str, unit: str, *targets: InfluxQL, description: str = "",
         limit: limits.Limit | limits.Range | None = None, mappings: list[dash.ValueMapping] | None = None,
         calcs: Iterable[str] = ("lastNotNull",), fields: str = "", span: int = 6, height: int = 5,
         time_from: str | None = None, color_background: bool = False) -> stat_b.Panel:
    reduce = common_b.ReduceDataOptions().calcs(list(calcs)).values(False)
    if fields:
        reduce.fields(fields)
    panel = stat_b.Panel().unit(unit).thresholds(thresholds(limit)).reduce_options(reduce)
    panel.color_mode(common.BigValueColorMode.BACKGROUND if color_background else common.BigValueColorMode.VALUE)
    panel.graph_mode(common.BigValueGraphMode.NONE)
    if mappings:
        panel.mappings(mappings)
    return _common(panel, title, description, targets, span, height, time_from)


def timeline(title: str, unit: str, *targets: InfluxQL, mappings: list[dash.ValueMapping], description: str = "",
             span: int = 12, height: int = 6) -> statetimeline.Panel:
    panel = statetimeline.Panel().unit(unit).mappings(mappings).thresholds(thresholds(None))
    panel.show_value(common.VisibilityMode.AUTO).merge_values(True)
    return _common(panel, title, description, targets, span, height, None)


def table(title: str, *targets: InfluxQL, description: str = "", unit: str = "none", span: int = 24,
          height: int = 8, transformations: Sequence[dash.DataTransformerConfig] = (),
          units_by_field: dict[str, str] | None = None, time_from: str | None = None,
          footer_calcs: Sequence[str] = ()) -> table_b.Panel:
    panel = table_b.Panel().unit(unit).thresholds(thresholds(None))
    for transformation in transformations:
        panel.with_transformation(transformation)
    for field_name, field_unit in (units_by_field or {}).items():
        panel.override_by_name(field_name, [dash.DynamicConfigValue(id_val="unit", value=field_unit)])
    if footer_calcs:
        panel.footer(common_b.TableFooterOptions().show(True).reducer(list(footer_calcs)).count_rows(False))
    return _common(panel, title, description, [t.table() for t in targets], span, height, time_from)


def bars(title: str, unit: str, *targets: InfluxQL, description: str = "", span: int = 12, height: int = 8,
         limit: limits.Limit | None = None, time_from: str | None = None) -> bargauge.Panel:
    panel = bargauge.Panel().unit(unit).thresholds(thresholds(limit)).min(0)
    panel.reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    panel.orientation(common.VizOrientation.HORIZONTAL).display_mode(common.BarGaugeDisplayMode.BASIC)
    return _common(panel, title, description, targets, span, height, time_from)


class Board:
    """A dashboard builder that numbers its panels (Grafana needs unique ids) and lays them out left to right."""

    def __init__(self, uid: str, title: str, description: str, tags: Sequence[str]):
        self.builder = (dash_b.Dashboard(title).uid(uid).description(description).tags(["orelane", *tags])
                        .editable().timezone("browser").refresh("30s").time("now-6h", "now")
                        .tooltip(dash.DashboardCursorSync.CROSSHAIR)
                        .annotation(dash_b.AnnotationQuery().name("Annotations & Alerts").built_in(1).enable(True)
                                    .hide(True).icon_color("rgba(0, 211, 255, 1)").type("dashboard")
                                    .datasource(dash.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
                                    .target(dash_b.AnnotationTarget().limit(100).match_any(False).tags([])
                                            .type("dashboard"))))
        self._next_id = 1

    def add(self, *panels) -> "Board":
        for panel in panels:
            panel.id(self._next_id)
            self._next_id += 1
            self.builder.with_panel(panel)
        return self

    def row(self, title: str) -> "Board":
        self.builder.with_row(dash_b.Row(title).id(self._next_id))
        self._next_id += 1
        return self
