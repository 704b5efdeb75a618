"""`python -m ingest run|replay`: the ingest worker and the replay tool without the `orelane` command.

`run` is `orelane ingest run` with a few of the site file's [ingest] keys overridable
from the command line (tests and the bench give each worker its own buffer); `replay` is
`orelane ingest replay` (ingest.replay.main).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from orelane.config import ConfigError, load


def _run(argv: list[str]) -> int:
    from ingest.service import IngestOptions, IngestService, sink_for
    p = argparse.ArgumentParser(prog="python -m ingest run", description="Run one ingest worker.")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--client-id", default=None, help="MQTT client id (unique per worker, stable across restarts)")
    p.add_argument("--share-group", default=None, help="MQTT 5 shared-subscription group for scale-out")
    p.add_argument("--buffer-dir", type=Path, default=None)
    p.add_argument("--buffer-limit-bytes", type=int, default=None)
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics (0: any free port)")
    p.add_argument("--health-interval-s", type=float, default=None)
    p.add_argument("--deadletter-file", type=Path, default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        site = load(args.config)
    except ConfigError as exc:
        print(f"ingest: configuration error: {exc}", file=sys.stderr)
        return 2
    overrides = dict(buffer_dir=args.buffer_dir, buffer_limit_bytes=args.buffer_limit_bytes,
                     metrics_port=args.metrics_port, health_interval_s=args.health_interval_s,
                     deadletter_file=args.deadletter_file)
    options = IngestOptions.from_site(site, **{k: v for k, v in overrides.items() if v is not None})
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    service = IngestService(site, sink_for(site), client_id=args.client_id, share_group=args.share_group,
                            options=options)
    service.run(stop)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return _run(argv[1:])
    if argv[:1] == ["replay"]:
        from ingest import replay
        return replay.main(argv[1:])
    print("usage: python -m ingest {run,replay} ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
