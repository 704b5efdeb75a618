"""`orelane model deploy`: the engineer's side of the contract's `model/deploy` topic.

The command checks the model file as an edge will (format, content hash, signature
with ORELANE_MODEL_KEY), publishes a retained `model_deployment` to each lane, and
waits until each lane's daemon either reports the model in its status
(`health.model_version`) or refuses it in a dead letter naming the reason. A daemon
that is down takes the retained deployment when it comes back. Deploying the
previous model file again is the rollback.

The edge loads the file from the deployment's `uri`: a path on the edge host (a
shared model folder, or where the file was copied); `--uri` gives it when that path
differs from the one on the engineer's machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orelane.config import ConfigError, SiteConfig, load
from orelane.contract import ContractError, messages as msg, topics
from orelane.mqtt import MqttLink
from spectral.model import LaneModel

RUNNING, REFUSED, NO_ANSWER = "running", "refused", "no answer"


@dataclass(frozen=True)
class LaneAnswer:
    lane: str
    state: str  # RUNNING, REFUSED or NO_ANSWER
    detail: str


def answer_in(leaf: str, payload: bytes, model: LaneModel, deploy_topic: str) -> tuple[str, str] | None:
    """What one status or dead-letter message of a lane says about the deployment of `model`, if anything."""
    try:
        if leaf == "status":
            status = msg.LaneStatus.from_json(payload)
            if status.state == "online" and status.health.get("model_version") == model.version:
                return RUNNING, f"scoring with {model.version}"
        elif leaf == "deadletter":
            letter = msg.DeadLetter.from_json(payload)
            if letter.topic == deploy_topic and model.model_id in letter.reason:
                return REFUSED, letter.reason
    except ContractError:
        return None  # someone else's malformed message is not an answer
    return None


def deploy(site: SiteConfig, model_path: Path, lanes: list[str], uri: str | None = None, wait_s: float = 30.0,
           client_id: str | None = None, progress=print) -> list[LaneAnswer]:
    """Deploy a model file to lanes and collect each lane's answer (within wait_s)."""
    model = LaneModel.load(model_path)
    known = [lane.id for lane in site.lanes]
    unknown = [lane for lane in lanes if lane not in known]
    if unknown:
        raise ConfigError(f"{site.source}: no lane {', '.join(unknown)} in this site (lanes: {', '.join(known)})")
    uri = uri or str(Path(model_path).resolve())
    subscriptions = [(topics.topic(site.site_id, lane, leaf), 0) for lane in lanes for leaf in ("status", "deadletter")]
    link = MqttLink(site.mqtt, client_id or f"{site.site_id}-engineer-deploy-{os.getpid()}", subscriptions,
                    persistent=False)
    try:
        link.start(wait_s=10.0)
        started = time.monotonic()
        for lane in lanes:
            deployment = msg.ModelDeployment(lane, model.model_id, model.version, model.sha256(), uri, time.time())
            link.publish(topics.topic(site.site_id, lane, "model/deploy"), deployment.to_json(), qos=1, retain=True)
        if link.drain(10.0):
            raise ConnectionError(f"MQTT {site.mqtt.host}:{site.mqtt.port}: the broker did not acknowledge the "
                                  f"deployment ({link.last_error or 'no reason given'}); nothing was deployed")
        progress(f"deployed {model.version} to {', '.join(lanes)} ({uri}); waiting up to {wait_s:g} s for the lanes")
        answers: dict[str, LaneAnswer] = {}
        for message in link.received(wait_s - (time.monotonic() - started)):
            try:
                _, lane, leaf = topics.parse(message.topic)
            except ContractError:
                continue
            if lane in answers or lane not in lanes:
                continue
            found = answer_in(leaf, message.payload, model, topics.topic(site.site_id, lane, "model/deploy"))
            if found is not None:
                answers[lane] = LaneAnswer(lane, *found)
                progress(f"  {lane}: {found[0]} after {time.monotonic() - started:.1f} s: {found[1]}")
                if len(answers) == len(lanes):
                    break
        for lane in lanes:
            answers.setdefault(lane, LaneAnswer(lane, NO_ANSWER, f"no status with {model.version} nor a refusal "
                                                                 f"within {wait_s:g} s; is the lane's daemon "
                                                                 f"running? The deployment is retained and applies "
                                                                 f"when it comes back"))
        return [answers[lane] for lane in lanes]
    finally:
        link.stop()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="orelane model deploy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="model file (.npz) written by `orelane spectral fit`")
    p.add_argument("--config", type=Path, required=True, help="site TOML (its [mqtt] section is used)")
    lanes = p.add_mutually_exclusive_group(required=True)
    lanes.add_argument("--lane", action="append", help="lane id (repeat for several)")
    lanes.add_argument("--all-lanes", action="store_true", help="every lane of the site")
    p.add_argument("--uri", help="path of the model file on the edge hosts (default: this file's absolute path)")
    p.add_argument("--wait-s", type=float, default=30.0, help="how long to wait for the lanes' answers")
    p.add_argument("--client-id", help="MQTT client id (default <site>-engineer-deploy-<pid>)")
    args = p.parse_args(argv)
    try:
        site = load(args.config)
        lane_ids = [lane.id for lane in site.lanes] if args.all_lanes else args.lane
        answers = deploy(site, args.model, lane_ids, args.uri, args.wait_s, args.client_id)
    except ConfigError as exc:
        print(f"orelane model deploy: configuration error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, ConnectionError) as exc:  # ModelFileError is a ValueError: a file the edge would refuse
        print(f"orelane model deploy: {exc}", file=sys.stderr)
        return 1
    for a in answers:
        print(f"{a.lane}: {a.state}: {a.detail}")
    return 0 if all(a.state == RUNNING for a in answers) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
