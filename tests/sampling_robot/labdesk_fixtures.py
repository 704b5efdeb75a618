"""Fixtures of the lab desk tests: a registry with samples in every status, users, a desk on a free port,
and a small HTTP client that keeps cookies and posts forms with their CSRF token.

Import the fixtures into a test module (`from tests.sampling_robot.labdesk_fixtures import ...`).
"""

from __future__ import annotations

import datetime as dt
import http.cookiejar
import os
import re
import secrets
import shutil
import struct
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import pytest

from orelane.contract.messages import SampleRequest
from sampling_robot.labdesk.server import DeskServer, make_app, serve
from sampling_robot.labdesk.users import UserStore
from sampling_robot.registry import SampleRegistry

UTC = dt.timezone.utc
CUT_S = dt.datetime(2025, 3, 1, 8, 0, tzinfo=UTC).timestamp()  # the first cut of the test lot
DESK_START_S = dt.datetime(2025, 3, 2, 9, 0, tzinfo=UTC).timestamp()  # the desk's clock when a test starts
PASSWORD = "correct horse battery"
USERS = {"ana": "lab", "bea": "lab", "ivo": "inspector", "eng": "engineer", "root": "admin"}
LIFE = ("requested", "cut", "sealed", "collected", "received", "analysed", "archived")

# sample id: (status, kind, lot, vessel, hold, hours after CUT_S)
SAMPLES = {
    1: ("sealed", "targeted", "LOT-7", "MV Ore Star", "3", 0),
    2: ("collected", "routine", "LOT-7", "MV Ore Star", "3", 1),
    3: ("cut", "targeted", "LOT-7", "MV Ore Star", "4", 2),
    4: ("received", "targeted", "LOT-7", "MV Ore Star", "4", 3),
    5: ("analysed", "targeted", "LOT-8", "MV Iron Duke", "1", 26),
    6: ("missed", "routine", "LOT-8", "MV Iron Duke", "1", 27),
    7: ("sealed", "routine", "LOT-8", "MV Iron Duke", "2", 50),
    8: ("sealed", "targeted", "LOT-8", "MV Iron Duke", "2", 51),
    9: ("sealed", "targeted", "=HYPERLINK(\"x\")", "-cmd", "", 52),  # spreadsheet formula injection
}


class DeskClock:
    """The desk's clock; tests move it to expire sessions."""

    def __init__(self, now_s: float = DESK_START_S):
        self.now = now_s

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def add_sample(registry: SampleRegistry, sample_id: int, status: str, *, kind: str = "targeted",
               lot_id: str | None = "LOT-7", vessel: str = "MV Ore Star", hold: str = "", at_s: float = CUT_S,
               lane: str = "L1") -> None:
    """Create a sample and walk its normal life up to `status` (or requested -> missed/failed)."""
    registry.create(SampleRequest(sample_id=sample_id, lane=lane, sample_kind=kind, target_belt_position_m=1234.5,
                                  tonnage_t=880.0 + sample_id, requested_s=at_s,
                                  event_id=f"{lane}-ev-{sample_id}" if kind == "targeted" else None, lot_id=lot_id),
                    "edge L1", vessel=vessel, voyage="0425", hold=hold, bill_of_lading="BL-9",
                    scores={"wood": 0.8} if kind == "targeted" else {}, likely_class="wood" if kind == "targeted"
                    else None, model_version="nir-2.3")
    if status in ("missed", "failed"):
        registry.record(sample_id, status, "edge L1", at_s + 1)
        return
    for i, step in enumerate(LIFE[1:LIFE.index(status) + 1], start=1):
        extra = {"cup": f"C-{sample_id:02d}", "seal": f"S-{1000 + sample_id}"} if step == "sealed" else {}
        who = "edge L1" if step in ("cut", "sealed") else "tom" if step == "collected" else "lab-old"
        if step == "analysed":
            registry.add_result(sample_id, False, who=who, at_s=at_s + 60 * i, note="clean")
        registry.record(sample_id, step, who, at_s + 60 * i, **extra)


def fill_registry(registry: SampleRegistry) -> None:
    for sample_id, (status, kind, lot, vessel, hold, hours) in SAMPLES.items():
        add_sample(registry, sample_id, status, kind=kind, lot_id=lot, vessel=vessel, hold=hold,
                   at_s=CUT_S + 3600 * hours)


@pytest.fixture(scope="session")
def users_template(tmp_path_factory) -> Path:
    """A user store with one user per role, made once (scrypt is slow on purpose) and copied per test."""
    path = tmp_path_factory.mktemp("labdesk-users") / "labdesk.sqlite"
    with UserStore(path) as users:
        for name, role in USERS.items():
            users.add_user(name, role, PASSWORD, who="test")
    return path


@pytest.fixture
def desk_clock() -> DeskClock:
    return DeskClock()


@pytest.fixture
def desk_registry(tmp_path) -> SampleRegistry:
    with SampleRegistry(tmp_path / "samples.sqlite") as registry:
        fill_registry(registry)
        yield registry


@pytest.fixture
def desk_users(tmp_path, users_template, desk_clock) -> UserStore:
    path = tmp_path / "labdesk.sqlite"
    shutil.copyfile(users_template, path)
    with UserStore(path, clock=desk_clock) as users:
        yield users


@pytest.fixture
def desk_server(desk_registry, desk_users, desk_clock, tmp_path) -> DeskServer:
    app = make_app(desk_registry, desk_users, photo_dir=tmp_path / "photos", clock=desk_clock, tz=UTC)
    with serve(app) as server:
        yield server


# ---------------------------------------------------------------- HTTP client


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str
    set_cookies: list[str]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert m, f"no CSRF field on {self.url}:\n{self.text[:2000]}"
        return unescape(m.group(1))

    def alert(self) -> str:
        """The text of the page's error message ('' if none)."""
        m = re.search(r'role="alert" id="error">([^<]*)<', self.text)
        return unescape(m.group(1)) if m else ""

    def flash(self) -> str:
        m = re.search(r'role="status" id="flash">([^<]*)<', self.text)
        return unescape(m.group(1)) if m else ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class DeskClient:
    """A browser stand-in: cookies, forms with the page's CSRF token, optional redirect following."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        handlers = [urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.jar)]
        self._follow = urllib.request.build_opener(*handlers)
        self._stay = urllib.request.build_opener(*handlers, _NoRedirect())
        self.csrf_token = ""

    def request(self, method: str, path: str, data: bytes | None = None, headers: dict | None = None,
                follow: bool = True) -> Reply:
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers or {})
        opener = self._follow if follow else self._stay
        try:
            with opener.open(req, timeout=10) as resp:
                reply = Reply(resp.status, dict(resp.headers), resp.read(), resp.url,
                              resp.headers.get_all("Set-Cookie") or [])
        except urllib.error.HTTPError as err:
            reply = Reply(err.code, dict(err.headers), err.read(), err.url, err.headers.get_all("Set-Cookie") or [])
        if 'name="csrf"' in reply.text and reply.headers.get("Content-Type", "").startswith("text/html"):
            self.csrf_token = reply.csrf()
        return reply

    def get(self, path: str, follow: bool = True) -> Reply:
        return self.request("GET", path, follow=follow)

    def post(self, path: str, fields: dict[str, str], *, csrf: bool = True, follow: bool = True,
             files: dict[str, tuple[str, str, bytes]] | None = None, headers: dict | None = None) -> Reply:
        fields = dict(fields)
        if csrf and "csrf" not in fields:
            fields["csrf"] = self.csrf_token
        if files:
            body, ctype = encode_multipart(fields, files)
        else:
            body, ctype = urllib.parse.urlencode(fields).encode(), "application/x-www-form-urlencoded"
        return self.request("POST", path, body, {"Content-Type": ctype, **(headers or {})}, follow)

    def sign_in(self, username: str, password: str = PASSWORD) -> Reply:
        self.get("/login")
        reply = self.post("/login", {"username": username, "password": password}, follow=False)
        if reply.status == 303:
            self.get("/")  # picks up the session's CSRF token
        return reply


def encode_multipart(fields: dict[str, str], files: dict[str, tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = "----labdesk" + secrets.token_hex(8)
    out = []
    for name, value in fields.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, ctype, data) in files.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                   f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def signed_in(server: DeskServer, username: str) -> DeskClient:
    client = DeskClient(server.url)
    reply = client.sign_in(username)
    assert reply.status == 303, f"sign-in of {username} failed: {reply.status} {reply.alert()}"
    return client


def png_bytes(width: int = 4, height: int = 3) -> bytes:
    """A small valid grey PNG, made here so the tests need no imaging library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes([128]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_test_tool(problem: str | None) -> None:
    """Fail under CI=true (CI must never go green by skipping), skip elsewhere, when a test tool is missing."""
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"CI=true and {problem}", pytrace=False)
    pytest.skip(problem)


def zxing():
    """zxing-cpp, an independent barcode reader that proves the labels scan."""
    try:
        import zxingcpp
    except ImportError:
        require_test_tool("zxing-cpp is not installed: pip install zxing-cpp (a test dependency)")
    return zxingcpp
