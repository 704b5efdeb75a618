"""InfluxQL queries for the Grafana Foundation SDK, which ships no InfluxDB query type.

`InfluxQuery` is the JSON Grafana's InfluxDB data source stores for a raw
InfluxQL query (`rawQuery: true`), built as the SDK's documented custom query
type. It is used as a panel target, an annotation target and an alert-rule
model, so the same query text serves every place it appears.

The filter helpers write the WHERE clauses every panel shares: site, lane and
lot come from dashboard variables and are matched as anchored regular
expressions, which is how Grafana expands a multi-value or "All" variable for
InfluxQL (`/^(lane-1|lane-2)$/`, or `/^.*$/` for All).
"""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dash

# The provisioned data source (dashboards/provisioning/datasources/); push can point elsewhere.
DATASOURCE_UID = "orelane-influxdb"
DATASOURCE_TYPE = "influxdb"
DATASOURCE = dash.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)
DATABASE = "orelane"

ResultFormat = Literal["time_series", "table", "logs"]

# Optional keys in Grafana's InfluxQuery JSON, in the order they are written.
_OPTIONAL = (("alias", "alias"), ("hide", "hide"), ("interval_ms", "intervalMs"),
             ("max_data_points", "maxDataPoints"), ("from_annotations", "fromAnnotations"),
             ("text_column", "textColumn"), ("tags_column", "tagsColumn"), ("title_column", "titleColumn"),
             ("time_end_column", "timeEndColumn"))


class InfluxQuery(cogvariants.Dataquery):
    """A raw InfluxQL query as Grafana's InfluxDB data source stores it."""

    def __init__(self, query: str = "", ref_id: str | None = None, result_format: ResultFormat = "time_series",
                 datasource: dash.DataSourceRef | None = None, **optional: Any):
        self.query = query
        self.ref_id = ref_id
        self.result_format = result_format
        self.datasource = datasource or DATASOURCE
        unknown = set(optional) - {name for name, _ in _OPTIONAL}
        if unknown:
            raise TypeError(f"InfluxQuery: unknown option(s) {sorted(unknown)}; known: {[n for n, _ in _OPTIONAL]}")
        self.optional = optional

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {"datasource": self.datasource, "query": self.query, "rawQuery": True,
                                      "resultFormat": self.result_format}
        if self.ref_id is not None:
            payload["refId"] = self.ref_id
        for name, key in _OPTIONAL:
            if self.optional.get(name) is not None:
                payload[key] = self.optional[name]
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        optional = {name: data[key] for name, key in _OPTIONAL if key in data}
        ds = data.get("datasource") or {}
        return cls(data.get("query", ""), data.get("refId"), data.get("resultFormat", "time_series"),
                   dash.DataSourceRef(type_val=ds.get("type"), uid=ds.get("uid")), **optional)


cogruntime.register_dataquery_variant(cogruntime.DataqueryConfig(identifier=DATASOURCE_TYPE,
                                                                  from_json_hook=InfluxQuery.from_json))


class InfluxQL(cogbuilder.Builder[InfluxQuery]):
    """Builder of an InfluxQuery, in the SDK's style: `InfluxQL(sql).ref_id("A").alias("$tag_lane")`."""

    def __init__(self, query: str):
        self._internal = InfluxQuery(query)

    def build(self) -> InfluxQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def table(self) -> Self:
        """Rows instead of series (Grafana's "Format as: Table")."""
        self._internal.result_format = "table"
        return self

    def alias(self, alias: str) -> Self:
        """Series name pattern: $tag_<key>, $col, $m."""
        self._internal.optional["alias"] = alias
        return self

    def annotation_columns(self, text: str, tags: str = "", title: str = "") -> Self:
        self._internal.optional.update(from_annotations=True, text_column=text, tags_column=tags or None,
                                       title_column=title or None)
        return self

    def alert_model(self, interval_ms: int, max_data_points: int = 43200) -> Self:
        self._internal.optional.update(interval_ms=interval_ms, max_data_points=max_data_points)
        return self


# ---------------------------------------------------------------- query text helpers


def tag_matches(tag: str, variable: str) -> str:
    """`"lane" =~ /^$lane$/`: a tag (or string field) against a dashboard variable."""
    return f'"{tag}" =~ /^${variable}$/'


SITE = tag_matches("site", "site")
LANE = tag_matches("lane", "lane")
LOT = tag_matches("lot_id", "lot")  # a field of contamination_event and lot; lot is not a tag


def where(*conditions: str, time: bool = True) -> str:
    """WHERE clause of the site/lane filters, extra conditions and Grafana's $timeFilter."""
    parts = [*conditions] + (["$timeFilter"] if time else [])
    return "WHERE " + " AND ".join(parts)


def lane_where(*conditions: str, time: bool = True) -> str:
    return where(SITE, LANE, *conditions, time=time)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'
