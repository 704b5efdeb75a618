"""`orelane lab serve|add-user|passwd|activate|deactivate|users`: the lab desk on a threaded standard-library HTTP server.

wsgiref with one thread per request is plenty for a lab of a few desks and
scanners, needs nothing installed, and the app is plain WSGI, so a site that
wants TLS puts a reverse proxy in front and passes --secure-cookies.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sampling_robot.labdesk.app import LabDeskApp
from sampling_robot.labdesk.photos import MAX_PHOTO_BYTES, PhotoStore
from sampling_robot.labdesk.users import ROLES, UserStore
from sampling_robot.registry import SampleRegistry

log = logging.getLogger(__name__)

PHOTO_DIR = "lab_photos"  # beside the registry


def make_app(registry: SampleRegistry, users: UserStore, *, photo_dir: str | Path | None = None,
             clock: Callable[[], float] = time.time, tz: dt.tzinfo | None = None, secure_cookies: bool = False,
             max_photo_bytes: int = MAX_PHOTO_BYTES) -> LabDeskApp:
    """The lab desk WSGI app over a registry and a user store.

    photo_dir: where result photos go (default: lab_photos/ beside the registry). tz: the zone the desk
    shows and searches dates in (default: the machine's). secure_cookies: set when the desk is served
    over HTTPS (cookies get Secure and the __Host- prefix).
    """
    photos = PhotoStore(photo_dir if photo_dir is not None else registry.path.with_name(PHOTO_DIR), max_photo_bytes)
    return LabDeskApp(registry, users, photos, clock=clock, tz=tz, secure_cookies=secure_cookies)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to logging at DEBUG instead of stderr."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("lab desk %s: " + format, self.client_address[0], *args)


class DeskServer:
    """The app served on host:port from a background thread; a context manager for tests and the CLI."""

    def __init__(self, app: LabDeskApp, host: str = "127.0.0.1", port: int = 0):
        self.app = app
        self._httpd = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.host, self.port = self._httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "DeskServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"labdesk-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5.0)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "DeskServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(app: LabDeskApp, host: str = "127.0.0.1", port: int = 0) -> DeskServer:
    """A DeskServer bound to host:port (0: a free port), not yet started."""
    return DeskServer(app, host, port)


# ---------------------------------------------------------------- command line


def _registry_path(args, site) -> Path:
    if args.registry:
        return Path(args.registry)
    if site is not None:
        return site.data_dir / "samples.sqlite"
    raise SystemExit("give --registry PATH (the samples.sqlite) or --config SITE.toml")


def _add_location_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--registry", help="the sample registry (samples.sqlite); users go in labdesk.sqlite beside it")
    where.add_argument("--config", help="site configuration; the registry is <data_dir>/samples.sqlite")
    p.add_argument("--users", help="user store (default: labdesk.sqlite beside the registry)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orelane lab", description="The lab desk: receive samples, enter results.")
    sub = p.add_subparsers(dest="lab_command", required=True)
    s = sub.add_parser("serve", help="serve the lab desk over HTTP")
    _add_location_args(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=8470)
    s.add_argument("--photos", help=f"photo folder (default: {PHOTO_DIR}/ beside the registry)")
    s.add_argument("--timezone", help="IANA zone the desk shows dates in, e.g. Europe/Rotterdam (default: the "
                                      "machine's)")
    s.add_argument("--secure-cookies", action="store_true",
                   help="the desk is reached over HTTPS (through a TLS proxy): mark cookies Secure")
    a = sub.add_parser("add-user", help="add a lab desk user (the password is asked for, or read from stdin)")
    _add_location_args(a)
    a.add_argument("username")
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    pw = sub.add_parser("passwd", help="set a user's password (ends the user's sessions)")
    _add_location_args(pw)
    pw.add_argument("username")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    for name, what in (("deactivate", "stop a user signing in (ends the user's sessions)"),
                       ("activate", "let a deactivated user sign in again")):
        act = sub.add_parser(name, help=what)
        _add_location_args(act)
        act.add_argument("username")
    ls = sub.add_parser("users", help="list the users")
    _add_location_args(ls)
    return p


def main(argv: list[str] | None = None, *, stop: threading.Event | None = None) -> int:
    """`orelane lab serve|add-user|passwd|activate|deactivate|users ...`; serve runs until SIGINT/SIGTERM
    (or until `stop` is set)."""
    args = build_parser().parse_args(argv)
    site = None
    if args.config:
        from orelane.config import load
        site = load(args.config)
    registry_path = _registry_path(args, site)
    users_path = Path(args.users) if args.users else registry_path.with_name("labdesk.sqlite")
    if args.lab_command != "serve":
        return _manage_users(args, users_path)
    tz = None
    if args.timezone:
        try:
            tz = ZoneInfo(args.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            print(f"unknown time zone {args.timezone!r}: use an IANA name such as Europe/Rotterdam", file=sys.stderr)
            return 2
    if not registry_path.exists():
        print(f"no sample registry at {registry_path}: start the edge daemon first, or give --registry",
              file=sys.stderr)
        return 2
    registry = SampleRegistry(registry_path)
    users = UserStore(users_path)
    if not users.users():
        print(f"warning: {users_path} has no users yet: add one with `orelane lab add-user --registry "
              f"{registry_path} NAME --role admin`", file=sys.stderr)
    app = make_app(registry, users, photo_dir=args.photos, tz=tz, secure_cookies=args.secure_cookies)
    if stop is None:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    feed_thread, link = None, None
    if site is not None:
        from orelane.mqtt import MqttLink
        from sampling_robot.labdesk.feed import RecordFeed
        link = MqttLink(site.mqtt, f"orelane-labdesk-{site.site_id}").start()
        feed_thread = threading.Thread(target=RecordFeed(registry, link, site.site_id).run, args=(stop,),
                                       name="labdesk-feed", daemon=True)
        feed_thread.start()
        print(f"publishing the desk's sample records to MQTT {site.mqtt.host}:{site.mqtt.port}", flush=True)
    else:
        print("sample records stay in the registry: start the desk with --config SITE.toml to publish them to "
              "MQTT for the dashboards", file=sys.stderr)
    with serve(app, args.host, args.port) as server:
        print(f"lab desk on {server.url} (registry {registry_path}, users {users_path})", flush=True)
        stop.wait()
    if feed_thread is not None:
        feed_thread.join(30)
        link.stop()
    users.close()
    registry.close()
    return 0


def _read_password(args) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass(f"password for {args.username}: ")
    if getpass.getpass("again: ") != password:
        print("the passwords differ; nothing changed", file=sys.stderr)
        return None
    return password


def _manage_users(args, users_path: Path) -> int:
    """add-user, passwd, activate, deactivate and users; each change goes into the access log as cli:<login>."""
    who = f"cli:{getpass.getuser()}"
    if args.lab_command == "users":
        if not users_path.exists():
            print(f"no user store at {users_path}", file=sys.stderr)
            return 2
        with UserStore(users_path) as users:
            for user in users.users():
                print(f"{user.username}\t{user.role}\t{'active' if user.active else 'deactivated'}")
        return 0
    password = _read_password(args) if args.lab_command in ("add-user", "passwd") else ""
    if password is None:
        return 2
    users_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with UserStore(users_path) as users:
            if args.lab_command == "add-user":
                user = users.add_user(args.username, args.role, password, who=who)
                print(f"added {user.username} ({user.role}) to {users_path}")
            elif args.lab_command == "passwd":
                users.set_password(args.username, password, who=who)
                print(f"password of {args.username} changed; their sessions are ended")
            else:
                users.set_active(args.username, args.lab_command == "activate", who=who)
                print(f"{args.username} {args.lab_command}d")
    except (ValueError, LookupError) as exc:
        print(f"nothing changed: {exc}", file=sys.stderr)
        return 2
    return 0
