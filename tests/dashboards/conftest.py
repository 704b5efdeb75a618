"""A real InfluxDB 1.x filled once per run with the simulated lanes (tests/dashboards/simlane.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.dashboards import grafana, simlane
from tests.servers import InfluxDB1


@dataclass
class LaneDatabase:
    server: InfluxDB1
    db: str
    truth: simlane.Truth
    from_ms: int = int(simlane.T0_S * 1000)
    to_ms: int = int(simlane.NOW_S * 1000)

    def query(self, text: str, from_ms: int | None = None, to_ms: int | None = None,
              variables: dict[str, grafana.Variable] | None = None, interval: int | None = None) -> list[dict]:
        """Expand Grafana's macros like Grafana, run on InfluxDB, return the series (InfluxDB's JSON)."""
        expanded = grafana.expand(text, self.from_ms if from_ms is None else from_ms,
                                  self.to_ms if to_ms is None else to_ms, variables, interval)
        result = self.server.query(expanded, self.db, epoch="ms")
        (statement,) = result["results"]
        return statement.get("series", [])


@pytest.fixture(scope="session")
def lane_db(influxdb1_session) -> LaneDatabase:
    points, truth = simlane.simulate()
    db = "dashboards_simulated_lanes"
    influxdb1_session.create_database(db)
    for body in simlane.line_protocol(points):
        influxdb1_session.write(body.decode(), db)
    return LaneDatabase(influxdb1_session, db, truth)
