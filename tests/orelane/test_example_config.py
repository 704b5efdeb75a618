from pathlib import Path

from orelane import config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site.toml"


def test_documented_sample_config_loads_with_its_defaults():
    site = config.load(EXAMPLE, environ={"ORELANE_INFLUX_TOKEN": "t0ken"})
    lane = site.lane("lane-1")
    assert site.site_id == "port-north"
    assert site.influx is not None and site.influx.token == "t0ken"
    assert lane.cutter_distance_m == 40.0 and lane.radiation is not None
    assert lane.event_close_score < lane.event_open_score
