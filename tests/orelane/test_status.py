"""`orelane status` against a real Mosquitto holding the lanes' retained statuses."""

from __future__ import annotations

import re
import time

from orelane import status
from orelane.config import MqttConfig
from orelane.contract import messages as msg, topics
from orelane.mqtt import MqttLink

HEALTHY = {"model_version": "lane-v3@0123456789ab", "spectra_classified": 7210, "spectra_rejected": 2,
           "events": 3, "cuts_targeted": 3, "cuts_routine": 2, "cuts_missed": 0,
           "alarm_reference_stale": 0, "alarm_belt_link": 0}


def site_file(tmp_path, broker, lanes: list[str]):
    path = tmp_path / "site.toml"
    path.write_text(f'[site]\nid = "s"\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n' + "".join(
        f'[[lane]]\nid = "{lane}"\nbelt_scale = {{ host = "127.0.0.1", port = 1 }}\n'
        f'robot = {{ host = "127.0.0.1", port = 2 }}\n' for lane in lanes))
    return path


def test_status_shows_each_lane_and_fails_on_offline_stale_alarmed_or_silent_lanes(mosquitto, tmp_path, capsys):
    now = time.time()
    retained = {"lane-1": msg.LaneStatus("lane-1", "online", now - 3, HEALTHY),
                "lane-2": msg.LaneStatus("lane-2", "online", now - 2, {**HEALTHY, "alarm_belt_link": 1}),
                "lane-3": msg.LaneStatus("lane-3", "offline", 0.0),  # the last will
                "lane-4": msg.LaneStatus("lane-4", "online", now - 600, HEALTHY)}
    with MqttLink(MqttConfig(mosquitto.host, mosquitto.port), "test-edges", persistent=False) as link:
        assert link.connected.wait(5)
        for lane, st in retained.items():
            link.publish(topics.topic("s", lane, "status"), st.to_json(), qos=1, retain=True)
        assert link.drain(5) == 0

    code = status.main(["--config", str(site_file(tmp_path, mosquitto, ["lane-1", "lane-2", "lane-3", "lane-4",
                                                                         "lane-5"]))])
    out = capsys.readouterr().out
    assert code == 1
    lines = {line.split(":")[0].split()[-1]: line for line in out.splitlines()[1:]}
    assert re.match(r"  ok   lane-1: online, status [3-9] s ago, model lane-v3@0123456789ab", lines["lane-1"])
    assert "spectra 7210 classified / 2 rejected" in lines["lane-1"] and "no alarms" in lines["lane-1"]
    assert lines["lane-2"].startswith("  FAIL ") and "ALARMS: belt_link" in lines["lane-2"]
    assert lines["lane-3"].startswith("  FAIL ") and "OFFLINE" in lines["lane-3"]
    assert lines["lane-4"].startswith("  FAIL ") and "STALE: no status for 10 min" in lines["lane-4"]
    assert lines["lane-5"].startswith("  FAIL ") and "no status on the broker" in lines["lane-5"]

    assert status.main(["--config", str(site_file(tmp_path, mosquitto, ["lane-1"]))]) == 0


def test_status_says_when_the_broker_cannot_be_reached(tmp_path, capsys):
    from tests.servers import free_port

    class Down:
        host, port = "127.0.0.1", free_port()

    assert status.main(["--config", str(site_file(tmp_path, Down, ["lane-1"]))]) == 1
    assert f"no connection to 127.0.0.1:{Down.port}" in capsys.readouterr().err
