"""A small stand-in for Grafana's HTTP API (stdlib only) that records every request.

Grafana cannot run on these machines, so `push` is tested against this
server. It keeps folders, dashboards and alert rules in memory and answers
the endpoints push uses the way Grafana's documentation says they answer
(status codes, 404 for a missing folder or rule, versions that grow on
overwrite); a request that breaks the documented shape (missing required
keys, wrong types, no bearer token) gets a 400 or 401 naming the problem.
Documentation followed: "Folder HTTP API", "Dashboard HTTP API"
(POST /api/dashboards/db) and "Alerting provisioning HTTP API"
(/api/v1/provisioning/alert-rules, /api/v1/provisioning/folder/{uid}/rule-groups/{group}).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# ProvisionedAlertRule: keys the API requires on POST and PUT
RULE_REQUIRED = {"title": str, "ruleGroup": str, "folderUID": str, "condition": str, "data": list,
                 "noDataState": str, "execErrState": str, "for": str, "orgID": int}
RULE_DATA_REQUIRED = {"refId": str, "datasourceUid": str, "model": dict, "relativeTimeRange": dict}
UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: object


@dataclass
class GrafanaState:
    token: str
    folders: dict = field(default_factory=dict)
    dashboards: dict = field(default_factory=dict)  # uid -> (folderUid, version, dashboard)
    rules: dict = field(default_factory=dict)  # uid -> (provenance, rule)
    groups: dict = field(default_factory=dict)  # (folderUid, group) -> interval
    requests: list[Request] = field(default_factory=list)
    fail: dict = field(default_factory=dict)  # (method, path regex) -> (status, message)


class FakeGrafana:
    def __init__(self, token: str):
        self.state = GrafanaState(token)
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _answer(self, status: int, body: object | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    return self._answer(400, {"message": "body is not JSON"})
                request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                state.requests.append(request)
                if request.headers.get("authorization") != f"Bearer {state.token}":
                    return self._answer(401, {"message": "Unauthorized"})
                for (method, pattern), (status, message) in state.fail.items():
                    if method == self.command and re.fullmatch(pattern, self.path):
                        return self._answer(status, {"message": message})
                status, answer = route(state, request)
                self._answer(status, answer)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeGrafana":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _missing(body: object, required: dict) -> str:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    for key, kind in required.items():
        if not isinstance(body.get(key), kind) or isinstance(body.get(key), bool) and kind is int:
            return f"{key} is required ({kind.__name__})"
    return ""


def _check_rule(body: dict) -> str:
    problem = _missing(body, RULE_REQUIRED)
    if problem:
        return problem
    refs = set()
    for item in body["data"]:
        problem = _missing(item, RULE_DATA_REQUIRED)
        if problem:
            return f"data: {problem}"
        refs.add(item["refId"])
    if body["condition"] not in refs:
        return f"condition {body['condition']} is not a refId of data"
    if body.get("uid") and not UID.match(body["uid"]):
        return f"uid {body['uid']!r} is not a valid uid"
    return ""


def route(state: GrafanaState, r: Request) -> tuple[int, object | None]:
    if m := re.fullmatch(r"/api/folders/([^/]+)", r.path):
        if r.method == "GET":
            folder = state.folders.get(m.group(1))
            return (200, folder) if folder else (404, {"message": "folder not found", "status": "not-found"})
    if r.path == "/api/folders" and r.method == "POST":
        problem = _missing(r.body, {"title": str})
        if problem:
            return 400, {"message": problem}
        uid = r.body.get("uid") or "generated"
        if uid in state.folders:
            return 409, {"message": "a folder with the same uid already exists"}
        state.folders[uid] = {"id": len(state.folders) + 1, "uid": uid, "title": r.body["title"]}
        return 200, state.folders[uid]
    if r.path == "/api/dashboards/db" and r.method == "POST":
        problem = _missing(r.body, {"dashboard": dict})
        if problem:
            return 400, {"message": problem}
        dashboard = r.body["dashboard"]
        if not dashboard.get("title") or not UID.match(dashboard.get("uid", "")):
            return 400, {"message": "dashboard title and a valid uid are required"}
        folder_uid = r.body.get("folderUid", "")
        if folder_uid and folder_uid not in state.folders:
            return 400, {"message": "folder not found"}
        old = state.dashboards.get(dashboard["uid"])
        if old and not r.body.get("overwrite"):
            return 412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
        version = old[1] + 1 if old else 1
        state.dashboards[dashboard["uid"]] = (folder_uid, version, dashboard)
        return 200, {"id": len(state.dashboards), "uid": dashboard["uid"], "status": "success",
                     "version": version, "url": f"/d/{dashboard['uid']}/x"}
    if m := re.fullmatch(r"/api/v1/provisioning/alert-rules/([^/]+)", r.path):
        uid = m.group(1)
        if r.method == "GET":
            return (200, state.rules[uid][1]) if uid in state.rules else (404, None)
        if r.method == "PUT":
            if uid not in state.rules:
                return 404, None
            problem = _check_rule(r.body)
            if problem:
                return 400, {"message": problem}
            provenance = "" if "x-disable-provenance" in r.headers else "api"
            state.rules[uid] = (provenance, {**r.body, "uid": uid, "provenance": provenance})
            return 200, state.rules[uid][1]
    if r.path == "/api/v1/provisioning/alert-rules" and r.method == "POST":
        problem = _check_rule(r.body)
        if problem:
            return 400, {"message": problem}
        if r.body["folderUID"] not in state.folders:
            return 400, {"message": "folder does not exist"}
        uid = r.body.get("uid") or f"generated{len(state.rules)}"
        if uid in state.rules:
            return 409, {"message": "rule uid already exists"}
        provenance = "" if "x-disable-provenance" in r.headers else "api"
        state.rules[uid] = (provenance, {**r.body, "uid": uid, "provenance": provenance})
        return 201, state.rules[uid][1]
    if m := re.fullmatch(r"/api/v1/provisioning/folder/([^/]+)/rule-groups/([^/]+)", r.path):
        if r.method == "PUT":
            problem = _missing(r.body, {"interval": int, "rules": list, "title": str})
            if problem:
                return 400, {"message": problem}
            for rule in r.body["rules"]:
                if rule.get("uid") not in state.rules:
                    return 400, {"message": f"rule {rule.get('uid')} does not exist"}
                problem = _check_rule(rule)
                if problem:
                    return 400, {"message": problem}
            state.groups[(m.group(1), m.group(2))] = r.body["interval"]
            return 200, r.body
    return 404, {"message": f"no route {r.method} {r.path}"}
