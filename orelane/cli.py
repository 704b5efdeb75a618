"""The `orelane` command: one entry point, a subcommand per part.

This is the composition root: each subcommand imports the part it runs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from orelane.config import ConfigError, load


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_demo(args) -> int:
    from orelane import demo
    return demo.main(args)


def cmd_config_check(args) -> int:
    site = load(args.config)
    print(f"{args.config}: site {site.site_id}, lanes {[lane.id for lane in site.lanes]}, "
          f"store {'InfluxDB ' + site.influx.url if site.influx else 'embedded (' + str(site.data_dir) + ')'}")
    return 0


def cmd_edge_run(args) -> int:
    from edge.daemon import LaneDaemon
    from sampling_robot.registry import SampleRegistry
    from spectral.model import LaneModel
    site = load(args.config)
    lane = site.lane(args.lane)
    if site.model_path is None:
        raise ConfigError(f"{args.config}: site.model_path is required to run the edge daemon")
    model = LaneModel.load(site.model_path)
    registry = SampleRegistry(site.data_dir / "samples.sqlite")
    daemon = LaneDaemon(site, lane, model, registry)
    daemon.run(_stop_on_signals())
    return 0


def cmd_ingest_run(args) -> int:
    from ingest.service import IngestOptions, IngestService, sink_for
    site = load(args.config)
    options = IngestOptions.from_site(site)
    service = IngestService(site, sink_for(site), client_id=args.client_id, share_group=args.share_group,
                            options=options)
    service.run(_stop_on_signals())
    return 0


def cmd_ingest_replay(args) -> int:
    from ingest import replay
    return replay.main(args.rest)


def cmd_robot_sim(args) -> int:
    from sampling_robot.plc_sim import SamplerPlcSimulator
    sim = SamplerPlcSimulator(cycle_s=args.cycle_s, carousel_capacity=args.capacity)
    server = sim.serve(args.host, args.port)
    server.start()
    print(f"sampler PLC simulator on {args.host}:{server.port} (cycle {args.cycle_s} s)", flush=True)
    _stop_on_signals().wait()
    server.stop()
    return 0


def cmd_spectral(args) -> int:
    from spectral import workbench
    return workbench.main(args.rest)


def cmd_model(args) -> int:
    from edge import deploy
    return deploy.main(args.rest)


def cmd_status(args) -> int:
    from orelane import status
    return status.main(args.rest)


def cmd_mqtt_acl(args) -> int:
    from orelane import mosquitto_acl
    return mosquitto_acl.main([str(args.config)])


def cmd_report(args) -> int:
    from dashboards import lot_report
    return lot_report.main(args.rest)


def cmd_lab(args) -> int:
    from sampling_robot.labdesk import server
    return server.main(args.rest)


def cmd_dashboards(args) -> int:
    if args.action == "build":
        from dashboards import build
        return build.main(args.rest)
    from dashboards import push
    return push.main(args.rest)


def _passthrough(subparsers, name: str, text: str, func) -> None:
    """A subcommand whose arguments go, unparsed, to the part's own parser (its main(argv))."""
    p = subparsers.add_parser(name, help=text, add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orelane", description="Watches iron-ore unloading lanes.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run one simulated lane end to end on embedded defaults")
    d.add_argument("--duration-s", type=float, default=None,
                   help="stop after this many seconds (default: until the last patch is sampled)")
    d.add_argument("--data-dir", default="var/demo", help="where the embedded store and registry go")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("config", help="site configuration")
    csub = c.add_subparsers(dest="action", required=True)
    cc = csub.add_parser("check", help="validate a site TOML file")
    cc.add_argument("config", type=Path)
    cc.set_defaults(func=cmd_config_check)

    e = sub.add_parser("edge", help="the lane daemon")
    esub = e.add_subparsers(dest="action", required=True)
    er = esub.add_parser("run", help="run the daemon for one lane")
    er.add_argument("--config", type=Path, required=True)
    er.add_argument("--lane", required=True)
    er.set_defaults(func=cmd_edge_run)

    i = sub.add_parser("ingest", help="MQTT to InfluxDB or the embedded store")
    isub = i.add_subparsers(dest="action", required=True)
    ir = isub.add_parser("run", help="run an ingest worker")
    ir.add_argument("--config", type=Path, required=True)
    ir.add_argument("--client-id", default=None, help="MQTT client id (unique per worker)")
    ir.add_argument("--share-group", default=None, help="MQTT 5 shared-subscription group for scale-out")
    ir.set_defaults(func=cmd_ingest_run)
    _passthrough(isub, "replay", "load a disk buffer or an embedded store into InfluxDB", cmd_ingest_replay)

    r = sub.add_parser("robot", help="sampling robot")
    rsub = r.add_subparsers(dest="action", required=True)
    rs = rsub.add_parser("sim", help="serve the sampler PLC simulator over Modbus TCP")
    rs.add_argument("--host", default="127.0.0.1")
    rs.add_argument("--port", type=int, default=5020)
    rs.add_argument("--cycle-s", type=float, default=30.0)
    rs.add_argument("--capacity", type=int, default=24)
    rs.set_defaults(func=cmd_robot_sim)

    _passthrough(sub, "spectral", "calibration workbench (fit, validate, report)", cmd_spectral)

    _passthrough(sub, "status", "every lane at a glance from their retained status (exit 0: all online, no alarm)",
                 cmd_status)

    mo = sub.add_parser("model", help="model files on the lanes")
    mosub = mo.add_subparsers(dest="action", required=True)
    _passthrough(mosub, "deploy", "deploy a model file to lanes and wait for their answer (rollback: deploy the "
                                  "previous file)", cmd_model)

    mq = sub.add_parser("mqtt", help="broker set-up")
    mqsub = mq.add_subparsers(dest="action", required=True)
    acl = mqsub.add_parser("acl", help="print the Mosquitto acl_file for a site's lanes (docs/security.md)")
    acl.add_argument("config", type=Path)
    acl.set_defaults(func=cmd_mqtt_acl)

    _passthrough(sub, "report", "the inspector's lot report (HTML and PDF)", cmd_report)
    _passthrough(sub, "lab", "the lab desk: serve it, manage its users", cmd_lab)

    dash = sub.add_parser("dashboards", help="Grafana dashboards and alert rules as code")
    dsub = dash.add_subparsers(dest="action", required=True)
    for action, text in (("build", "build the dashboard JSON and provisioning files"),
                         ("push", "upload dashboards and alert rules to Grafana")):
        _passthrough(dsub, action, text, cmd_dashboards)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Subcommands that hand their arguments to a part's own parser take unknown options too.
    args, unknown = parser.parse_known_args(argv)
    if hasattr(args, "rest"):
        args.rest = list(args.rest) + unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command != "demo":
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"orelane: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
