"""`orelane status`: every lane of a site at a glance, from the lanes' retained status messages.

Each lane daemon publishes a retained `lane_status` (online with its health every
5 s, offline at a clean stop or through its last will). This command reads them
from the broker, prints one line per configured lane (state, age of the status,
model, counts, alarms) and exits 0 only when every lane is online, recent and
without an alarm, so it also serves as a monitoring check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

from orelane.config import ConfigError, SiteConfig, load
from orelane.contract import ContractError, messages as msg, topics
from orelane.mqtt import MqttLink

STALE_AFTER_S = 30.0  # an online status older than this: the daemon stopped reporting (it publishes every 5 s)


@dataclass(frozen=True)
class LaneLine:
    lane: str
    ok: bool
    text: str


def judge_lane(lane: str, status: msg.LaneStatus | None, now_s: float) -> LaneLine:
    """One lane's line: ok only when online, recent and without an alarm raised."""
    if status is None:
        return LaneLine(lane, False, f"{lane}: no status on the broker (the daemon never ran against it, or the "
                                     f"broker lost its retained messages)")
    age = now_s - status.timestamp_s
    when = f"{_age(age)} ago" if status.timestamp_s > 0 else "at an unknown time (last will)"
    if status.state != "online":
        return LaneLine(lane, False, f"{lane}: OFFLINE since {when}")
    h = status.health
    alarms = sorted(name.removeprefix("alarm_") for name, on in h.items() if name.startswith("alarm_") and on)
    parts = [f"{lane}: online, status {when}", f"model {h.get('model_version', '?')}",
             f"spectra {h.get('spectra_classified', 0)} classified / {h.get('spectra_rejected', 0)} rejected",
             f"events {h.get('events', 0)}",
             f"cuts {h.get('cuts_targeted', 0)} targeted / {h.get('cuts_routine', 0)} routine / "
             f"{h.get('cuts_missed', 0)} missed"]
    problems = []
    if age > STALE_AFTER_S:
        problems.append(f"STALE: no status for {_age(age)}")
    if alarms:
        problems.append("ALARMS: " + ", ".join(alarms))
    return LaneLine(lane, not problems, ", ".join(parts + (problems or ["no alarms"])))


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def read_statuses(site: SiteConfig, wait_s: float = 2.0) -> dict[str, msg.LaneStatus]:
    """The retained status of each configured lane (the broker sends them on subscribing)."""
    lanes = {lane.id for lane in site.lanes}
    link = MqttLink(site.mqtt, f"{site.site_id}-status-{os.getpid()}",
                    [(topics.topic(site.site_id, lane, "status"), 0) for lane in sorted(lanes)], persistent=False)
    found: dict[str, msg.LaneStatus] = {}
    try:
        link.start(wait_s=10.0)
        for message in link.received(wait_s):
            try:
                _, lane, _ = topics.parse(message.topic)
                if lane in lanes:
                    found[lane] = msg.LaneStatus.from_json(message.payload)
            except ContractError:
                continue  # not a status this command can read; the lane shows as without one
            if len(found) == len(lanes):
                break
    finally:
        link.stop()
    return found


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="orelane status", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="site TOML (its [mqtt] section and lanes are used)")
    p.add_argument("--wait-s", type=float, default=2.0, help="how long to wait for the retained statuses")
    p.add_argument("--json", action="store_true", help="print the statuses as JSON instead of lines")
    args = p.parse_args(argv)
    try:
        site = load(args.config)
        statuses = read_statuses(site, args.wait_s)
    except ConfigError as exc:
        print(f"orelane status: configuration error: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:
        print(f"orelane status: {exc}", file=sys.stderr)
        return 1
    now_s = time.time()
    lines = [judge_lane(lane.id, statuses.get(lane.id), now_s) for lane in site.lanes]
    if args.json:
        print(json.dumps({line.lane: {"ok": line.ok, "status": json.loads(statuses[line.lane].to_json())
                                      if line.lane in statuses else None} for line in lines}, indent=2))
    else:
        print(f"site {site.site_id}, broker {site.mqtt.host}:{site.mqtt.port}, {len(lines)} lanes")
        for line in lines:
            print(("  ok   " if line.ok else "  FAIL ") + line.text)
    return 0 if all(line.ok for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
