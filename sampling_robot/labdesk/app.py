"""The lab desk as a WSGI application: a small router over the desk's operations.

Standard library only (wsgiref-compatible), so it runs on the edge computer as
it is, and behind any WSGI server or TLS proxy if a site wants one. Sessions
are random tokens in HttpOnly, SameSite=Strict cookies; every POST carries the
session's CSRF token in a hidden field (the sign-in form a double-submit
cookie), and a cross-site Origin header is refused outright.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Callable, Iterable
from urllib.parse import parse_qs, urlencode

from sampling_robot.labdesk import code128, desk, pages
from sampling_robot.labdesk.photos import PhotoError, PhotoStore
from sampling_robot.labdesk.users import ROLES, Session, SignInError, UserStore
from sampling_robot.registry import SampleRegistry, UnknownSampleError

log = logging.getLogger(__name__)

EVERYONE = ROLES
RECORDERS = ("lab", "admin")  # who may receive samples and enter results
AUDITORS = ("inspector", "admin")
MAX_FORM_BYTES = 64 * 1024
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
]


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    files: dict[str, Upload]
    cookies: dict[str, str]
    remote: str
    environ: dict
    session: Session | None = None
    token: str | None = None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def html(cls, text: str, status: int = 200) -> "Response":
        return cls(status, text.encode("utf-8"))

    @classmethod
    def redirect(cls, location: str) -> "Response":
        return cls(303, b"", headers=[("Location", location)])


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


Handler = Callable[..., Response]


class LabDeskApp:
    """WSGI callable; build it with server.make_app."""

    def __init__(self, registry: SampleRegistry, users: UserStore, photos: PhotoStore, *,
                 clock: Callable[[], float] = time.time, tz: dt.tzinfo | None = None, secure_cookies: bool = False):
        self.registry = registry
        self.users = users
        self.photos = photos
        self.clock = clock
        self.tz = tz
        self.secure_cookies = secure_cookies
        # The __Host- prefix makes browsers refuse the cookie unless it is Secure, host-only and Path=/.
        self.session_cookie = "__Host-labdesk" if secure_cookies else "labdesk_session"
        self.login_cookie = "__Host-labdesk-login" if secure_cookies else "labdesk_login"
        self._flashes: dict[str, list[tuple[str, str]]] = {}
        self._flash_lock = threading.Lock()
        # Result entry is two registry steps (add_result, then 'analysed'); one desk process runs them in turn.
        self._result_lock = threading.Lock()
        self.routes: list[tuple[str, re.Pattern, Handler, tuple[str, ...] | None]] = [
            ("GET", re.compile(r"/login"), self.login_form, None),
            ("POST", re.compile(r"/login"), self.login, None),
            ("GET", re.compile(r"/static/desk\.css"), self.static_css, None),
            ("GET", re.compile(r"/static/desk\.js"), self.static_js, None),
            ("GET", re.compile(r"/static/favicon\.svg|/favicon\.ico"), self.static_icon, None),
            ("POST", re.compile(r"/logout"), self.logout, EVERYONE),
            ("GET", re.compile(r"/"), self.queue, EVERYONE),
            ("POST", re.compile(r"/receive"), self.receive, RECORDERS),
            ("GET", re.compile(r"/sample/(\d{1,10})"), self.sample, EVERYONE),
            ("POST", re.compile(r"/sample/(\d{1,10})/result"), self.result, RECORDERS),
            ("POST", re.compile(r"/sample/(\d{1,10})/status"), self.status, RECORDERS),
            ("GET", re.compile(r"/sample/(\d{1,10})/label"), self.label, EVERYONE),
            ("GET", re.compile(r"/sample/(\d{1,10})/label\.svg"), self.label_svg, EVERYONE),
            ("GET", re.compile(r"/sample/(\d{1,10})/photo/(\d{1,10})"), self.photo, EVERYONE),
            ("GET", re.compile(r"/search"), self.search, EVERYONE),
            ("GET", re.compile(r"/lot"), self.lot, EVERYONE),
            ("GET", re.compile(r"/export\.csv"), self.export_csv, EVERYONE),
            ("GET", re.compile(r"/audit"), self.audit, AUDITORS),
        ]

    # ------------------------------------------------------------ WSGI plumbing

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        try:
            response = self._dispatch(environ)
        except HttpError as exc:
            response = self._error(exc.status, str(exc), None)
        except Exception:
            log.exception("lab desk: %s %s failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            response = self._error(500, "internal error: the desk logged the details; tell the engineer", None)
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body))),
                   *SECURITY_HEADERS, *response.headers]
        if not any(k == "Cache-Control" for k, _ in response.headers):
            headers.append(("Cache-Control", "no-store"))
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        return [response.body] if environ.get("REQUEST_METHOD") != "HEAD" else [b""]

    def _dispatch(self, environ: dict) -> Response:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        method = "GET" if method == "HEAD" else method
        path = environ.get("PATH_INFO", "/") or "/"
        allowed = []
        for route_method, pattern, handler, roles in self.routes:
            m = pattern.fullmatch(path)
            if not m:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            req = self._request(environ, method, path)
            if roles is not None:
                if req.session is None:
                    if method == "GET":
                        return Response.redirect("/login?" + urlencode({"next": _local_path(environ)}))
                    raise HttpError(401, "you are not signed in (or your session expired): sign in and try again")
                if method == "POST":
                    self._check_csrf(req, req.session.csrf_token)
                if req.session.user.role not in roles:
                    self.users.log(req.session.user.username, "forbidden", f"{method} {path}", req.remote, ok=False)
                    return self._error(403, f"a {req.session.user.role} user cannot do this here; it needs the "
                                            f"role {' or '.join(roles)}", req)
            return handler(req, *m.groups())
        if allowed:
            return Response(405, b"method not allowed", "text/plain; charset=utf-8",
                            [("Allow", ", ".join(sorted(set(allowed))))])
        session = self._session(environ)
        return self._error(404, f"no page {path}", Request(method, path, {}, {}, {}, {}, "", environ, session))

    def _session(self, environ: dict) -> Session | None:
        return self.users.session(_cookies(environ).get(self.session_cookie))

    def _request(self, environ: dict, method: str, path: str) -> Request:
        cookies = _cookies(environ)
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}
        form, files = {}, {}
        if method == "POST":
            form, files = _read_body(environ, self.photos.max_bytes)
        token = cookies.get(self.session_cookie)
        session = self.users.session(token)
        remote = environ.get("REMOTE_ADDR", "")
        return Request(method, path, query, form, files, cookies, remote, environ, session,
                       token if session else None)

    def _check_csrf(self, req: Request, expected: str) -> None:
        origin = req.environ.get("HTTP_ORIGIN")
        if origin and origin != "null":
            host = req.environ.get("HTTP_HOST", "")
            if origin.split("://", 1)[-1] != host:
                self._log_refusal(req, "csrf", f"cross-site POST from {origin}")
                raise HttpError(403, f"refused: the form was posted from {origin}, not from this desk")
        sent = req.form.get("csrf", "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            self._log_refusal(req, "csrf", f"missing or wrong CSRF token on POST {req.path}")
            raise HttpError(403, "the form has expired or did not come from this desk: reload the page and "
                                 "try again")

    def _log_refusal(self, req: Request, action: str, detail: str) -> None:
        who = req.session.user.username if req.session else "?"
        self.users.log(who, action, detail, req.remote, ok=False)

    def _cookie(self, name: str, value: str, max_age_s: int | None = None) -> tuple[str, str]:
        parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if max_age_s is not None:
            parts.append(f"Max-Age={max_age_s}")
        if self.secure_cookies:
            parts.append("Secure")
        return "Set-Cookie", "; ".join(parts)

    def _flash(self, req: Request, kind: str, message: str) -> None:
        if req.token:
            with self._flash_lock:
                self._flashes.setdefault(req.token, []).append((kind, message))

    def _take_flashes(self, req: Request) -> list[tuple[str, str]]:
        if not req.token:
            return []
        with self._flash_lock:
            return self._flashes.pop(req.token, [])

    def _error(self, status: int, message: str, req: Request | None) -> Response:
        user = req.session.user if req and req.session else None
        csrf = req.session.csrf_token if req and req.session else ""
        return Response.html(pages.error_page(status, message, user, csrf), status)

    def _who(self, req: Request) -> str:
        assert req.session is not None
        return req.session.user.username

    def _can_record(self, req: Request) -> bool:
        return req.session is not None and req.session.user.role in RECORDERS

    def _sample_row(self, sample_id: str):
        try:
            return self.registry.sample(int(sample_id))
        except UnknownSampleError:
            raise HttpError(404, f"there is no sample {sample_id} in the registry") from None

    # ------------------------------------------------------------ sign-in

    def login_form(self, req: Request, error: str = "", username: str = "", status: int = 200) -> Response:
        token = secrets.token_urlsafe(32)
        next_path = _safe_next(req.query.get("next") or req.form.get("next") or "/")
        flashes = [("error", error)] if error else []
        resp = Response.html(pages.login_page(csrf=token, next_path=next_path, username=username, flashes=flashes),
                             status)
        resp.headers.append(self._cookie(self.login_cookie, token, 3600))
        return resp

    def login(self, req: Request) -> Response:
        expected = req.cookies.get(self.login_cookie, "")
        try:
            self._check_csrf(req, expected)
        except HttpError as exc:
            return self.login_form(req, f"{exc} (your browser must accept cookies from the desk)",
                                   req.form.get("username", ""), 403)
        try:
            token, session = self.users.sign_in(req.form.get("username", ""), req.form.get("password", ""),
                                                req.remote)
        except SignInError as exc:
            return self.login_form(req, str(exc), req.form.get("username", ""), 401)
        resp = Response.redirect(_safe_next(req.form.get("next", "/")))
        resp.headers.append(self._cookie(self.session_cookie, token))
        resp.headers.append(self._cookie(self.login_cookie, "", 0))
        log.info("lab desk: %s (%s) signed in from %s", session.user.username, session.user.role, req.remote)
        return resp

    def logout(self, req: Request) -> Response:
        if req.token:
            self.users.sign_out(req.token, req.remote)
            with self._flash_lock:
                self._flashes.pop(req.token, None)
        resp = Response.redirect("/login")
        resp.headers.append(self._cookie(self.session_cookie, "", 0))
        return resp

    # ------------------------------------------------------------ static

    def static_css(self, req: Request) -> Response:
        return Response(200, pages.CSS.encode(), "text/css; charset=utf-8", [("Cache-Control", "max-age=300")])

    def static_js(self, req: Request) -> Response:
        return Response(200, pages.JS.encode(), "text/javascript; charset=utf-8", [("Cache-Control", "max-age=300")])

    def static_icon(self, req: Request) -> Response:
        return Response(200, pages.FAVICON_SVG.encode(), "image/svg+xml", [("Cache-Control", "max-age=86400")])

    # ------------------------------------------------------------ queue and receipt

    def _queue_page(self, req: Request, flashes: list[tuple[str, str]], status: int = 200,
                    mass_kg: str = "") -> Response:
        assert req.session is not None
        return Response.html(pages.queue_page(
            desk.queue(self.registry), desk.awaiting_result(self.registry), user=req.session.user,
            csrf=req.session.csrf_token, can_receive=self._can_record(req), tz=self.tz, flashes=flashes,
            mass_kg=mass_kg), status)

    def queue(self, req: Request) -> Response:
        return self._queue_page(req, self._take_flashes(req))

    def receive(self, req: Request) -> Response:
        scanned = req.form.get("barcode", "")
        mass_text = req.form.get("mass_kg", "").strip().replace(",", ".")
        try:
            mass_kg = None
            if mass_text:
                try:
                    mass_kg = float(mass_text)
                except ValueError:
                    raise desk.DeskError(f"mass {mass_text!r} is not a number of kilograms") from None
            receipt = desk.receive(self.registry, scanned, self._who(req), self.clock(), mass_kg=mass_kg, tz=self.tz)
        except desk.DeskError as exc:
            self.users.log(self._who(req), "receive", f"refused {scanned.strip()[:64]!r}: {exc}", req.remote,
                           ok=False)
            return self._queue_page(req, [("error", str(exc))], exc.http_status, mass_text)
        row = receipt.sample
        lot = f", lot {row.lot_id}" if row.lot_id else ""
        vessel = f" ({row.vessel})" if row.vessel else ""
        collected = " (collected and received)" if receipt.collected_here else ""
        self._flash(req, "ok", f"Received {row.barcode}: sample {row.sample_id}{lot}{vessel}{collected}")
        return Response.redirect("/")

    # ------------------------------------------------------------ sample, result, status

    def _sample_page(self, req: Request, sample_id: int, flashes: list[tuple[str, str]], status: int = 200,
                     form: dict[str, str] | None = None) -> Response:
        assert req.session is not None
        row = self._sample_row(str(sample_id))
        return Response.html(pages.sample_page(
            row, self.registry.history(sample_id), self.registry.results(sample_id), self.photos.photos(sample_id),
            user=req.session.user, csrf=req.session.csrf_token, can_edit=self._can_record(req), tz=self.tz,
            flashes=flashes, form=form), status)

    def sample(self, req: Request, sample_id: str) -> Response:
        return self._sample_page(req, self._sample_row(sample_id).sample_id, self._take_flashes(req))

    def result(self, req: Request, sample_id_text: str) -> Response:
        sample_id = self._sample_row(sample_id_text).sample_id
        form = req.form
        found = {"yes": True, "no": False}.get(form.get("contaminant_found", ""))
        upload = req.files.get("photo")
        staged = None
        try:
            fraction = desk.parse_percent(form.get("mass_fraction_pct"))
            with self._result_lock:
                if upload is not None and upload.data:
                    try:
                        staged = self.photos.stage(sample_id, upload.data)
                    except PhotoError as exc:
                        raise desk.BadResult(f"photo {upload.filename!r}: {exc}") from None
                entry = desk.enter_result(
                    self.registry, sample_id, contaminant_found=found,
                    contaminant_type=form.get("contaminant_type", ""), mass_fraction=fraction,
                    note=form.get("note", ""), who=self._who(req), at_s=self.clock(),
                    photo_sha256=staged.sha256 if staged else None, tz=self.tz)
                if staged is not None:
                    self.photos.commit(staged, entry.result.id)
                    staged = None
        except desk.DeskError as exc:
            self.users.log(self._who(req), "result", f"refused for sample {sample_id}: {exc}", req.remote, ok=False)
            return self._sample_page(req, sample_id, [("error", str(exc))], exc.http_status,
                                     {k: v for k, v in form.items() if k != "csrf"})
        finally:
            if staged is not None:
                self.photos.discard(staged)
        what = "clean" if not entry.result.contaminant_found else entry.result.contaminant_type
        self._flash(req, "ok", f"{'Corrected result' if entry.correction else 'Result'} saved for "
                               f"{entry.sample.barcode}: {what}; status {entry.sample.status}")
        return Response.redirect(f"/sample/{sample_id}")

    def status(self, req: Request, sample_id_text: str) -> Response:
        sample_id = self._sample_row(sample_id_text).sample_id
        wanted = req.form.get("status", "")
        try:
            desk.record_status(self.registry, sample_id, wanted, self._who(req), self.clock(),
                               req.form.get("note", "").strip(), self.tz)
        except desk.DeskError as exc:
            self.users.log(self._who(req), "status", f"refused {wanted!r} for sample {sample_id}: {exc}",
                           req.remote, ok=False)
            return self._sample_page(req, sample_id, [("error", str(exc))], exc.http_status)
        self._flash(req, "ok", f"Sample {sample_id} recorded {wanted}")
        return Response.redirect(f"/sample/{sample_id}")

    def photo(self, req: Request, sample_id_text: str, result_id: str) -> Response:
        sample_id = self._sample_row(sample_id_text).sample_id
        stored = self.photos.photos(sample_id).get(int(result_id))
        if stored is None:
            raise HttpError(404, f"sample {sample_id} has no photo for result {result_id}")
        data, intact = stored.read_verified()
        if not intact:
            log.error("photo %s no longer matches its SHA-256 %s", stored.path, stored.sha256)
            raise HttpError(409, f"the photo of result {result_id} has changed on disk since it was stored "
                                 f"(SHA-256 mismatch): tell the engineer")
        return Response(200, data, stored.content_type, [("X-Photo-SHA256", stored.sha256)])

    # ------------------------------------------------------------ labels

    def label(self, req: Request, sample_id: str) -> Response:
        row = self._sample_row(sample_id)
        assert req.session is not None
        self.users.log(self._who(req), "print_label", row.barcode, req.remote)
        return Response.html(pages.label_page(row, user=req.session.user, csrf=req.session.csrf_token))

    def label_svg(self, req: Request, sample_id: str) -> Response:
        row = self._sample_row(sample_id)
        svg = code128.label_svg(row.barcode, pages.label_lines(row, self.tz))
        return Response(200, svg.encode(), "image/svg+xml; charset=utf-8")

    # ------------------------------------------------------------ search, lot, export, audit

    def search(self, req: Request) -> Response:
        assert req.session is not None
        searched = any(req.query.get(k) for k in ("lot", "vessel", "from", "to", "status")) or "all" in req.query
        try:
            query = desk.SearchQuery.from_form(req.query)
            rows = desk.search(self.registry, query, self.tz) if searched else None
        except desk.DeskError as exc:
            return Response.html(pages.search_page(desk.SearchQuery(), None, user=req.session.user,
                                                   csrf=req.session.csrf_token, tz=self.tz,
                                                   flashes=[("error", str(exc))]), exc.http_status)
        return Response.html(pages.search_page(query, rows, user=req.session.user, csrf=req.session.csrf_token,
                                               tz=self.tz))

    def lot(self, req: Request) -> Response:
        assert req.session is not None
        lot_id = req.query.get("id", "").strip()
        if not lot_id:
            return Response.redirect("/search")
        try:
            summary = desk.lot_summary(self.registry, lot_id)
        except desk.DeskError as exc:
            raise HttpError(exc.http_status, str(exc)) from None
        return Response.html(pages.lot_page(summary, user=req.session.user, csrf=req.session.csrf_token, tz=self.tz))

    def export_csv(self, req: Request) -> Response:
        lot_id = req.query.get("lot_id", "").strip()
        try:
            if lot_id:
                rows, what = self.registry.samples(lot_id=lot_id), f"lot_id={lot_id}"
            else:
                query = desk.SearchQuery.from_form(req.query)
                rows, what = desk.search(self.registry, query, self.tz), query.describe()
        except desk.DeskError as exc:
            raise HttpError(exc.http_status, str(exc)) from None
        text = desk.to_csv(self.registry, rows, self.tz)
        self.users.log(self._who(req), "export_csv", f"{what}: {len(rows)} samples", req.remote)
        stamp = dt.datetime.fromtimestamp(self.clock(), self.tz).strftime("%Y%m%d-%H%M")
        name = f"orelane-samples-{re.sub(r'[^A-Za-z0-9_-]', '_', lot_id) + '-' if lot_id else ''}{stamp}.csv"
        return Response(200, ("\ufeff" + text).encode("utf-8"), "text/csv; charset=utf-8",
                        [("Content-Disposition", f'attachment; filename="{name}"')])

    def audit(self, req: Request) -> Response:
        assert req.session is not None
        return Response.html(pages.audit_page(self.users.access_log(500), user=req.session.user,
                                              csrf=req.session.csrf_token, tz=self.tz))


# ---------------------------------------------------------------- request parsing


def _cookies(environ: dict) -> dict[str, str]:
    jar = SimpleCookie()
    try:
        jar.load(environ.get("HTTP_COOKIE", ""))
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


def _local_path(environ: dict) -> str:
    qs = environ.get("QUERY_STRING", "")
    return (environ.get("PATH_INFO", "/") or "/") + (f"?{qs}" if qs else "")


def _safe_next(path: str) -> str:
    """Only a path on this desk: no scheme, no //host, no backslash tricks."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path or any(ord(c) < 32 for c in path):
        return "/"
    return path


def _read_body(environ: dict, max_photo_bytes: int) -> tuple[dict[str, str], dict[str, Upload]]:
    ctype = environ.get("CONTENT_TYPE", "")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise HttpError(400, "bad Content-Length") from None
    multipart = ctype.startswith("multipart/form-data")
    limit = max_photo_bytes + MAX_FORM_BYTES if multipart else MAX_FORM_BYTES
    if length > limit:
        raise HttpError(413, f"the form is {length / 1e6:.1f} MB; the desk takes at most {limit / 1e6:.1f} MB")
    body = environ["wsgi.input"].read(length) if length else b""
    if multipart:
        return _parse_multipart(ctype, body)
    if not ctype or ctype.startswith("application/x-www-form-urlencoded"):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "the form is not UTF-8") from None
        return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}, {}
    raise HttpError(415, f"unsupported form type {ctype!r}")


def _parse_multipart(ctype: str, body: bytes) -> tuple[dict[str, str], dict[str, Upload]]:
    """multipart/form-data with the standard library's MIME parser (the cgi module is gone from Python 3.13)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"MIME-Version: 1.0\r\nContent-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise HttpError(400, "malformed multipart form")
    form: dict[str, str] = {}
    files: dict[str, Upload] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = Upload(filename, part.get_content_type(), payload)
        else:
            try:
                form.setdefault(name, payload.decode("utf-8"))
            except UnicodeDecodeError:
                raise HttpError(400, f"form field {name!r} is not UTF-8") from None
    return form, files

