"""`orelane dashboards push`: upload the dashboards and alert rules to a running Grafana, idempotently by uid.

Uses grafana-client and Grafana's documented HTTP API:

- folder: GET /api/folders/{uid}, and POST /api/folders {uid, title} when it is missing;
- dashboards: POST /api/dashboards/db {dashboard, folderUid, overwrite: true, message};
- alert rules: GET /api/v1/provisioning/alert-rules/{uid}, then POST /api/v1/provisioning/alert-rules
  (new) or PUT /api/v1/provisioning/alert-rules/{uid} (existing), and PUT
  /api/v1/provisioning/folder/{folderUid}/rule-groups/{group} for the evaluation interval.

Pushed rules carry the "api" provenance, so the Grafana UI shows them read-only (the code is their source);
`editable_in_ui=True` sends X-Disable-Provenance to leave them editable. The token comes from the
environment (ORELANE_GRAFANA_TOKEN) or a file only its owner can read, never from code or arguments.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from dashboards import alerts, boards, build
from dashboards.influxql import DATASOURCE_TYPE, DATASOURCE_UID
from orelane.config import ConfigError, read_secret_file

log = logging.getLogger(__name__)

TOKEN_ENV = "ORELANE_GRAFANA_TOKEN"
URL_ENV = "ORELANE_GRAFANA_URL"


@dataclass
class PushReport:
    folder_created: bool = False
    dashboards: list[str] = field(default_factory=list)
    rules_created: list[str] = field(default_factory=list)
    rules_updated: list[str] = field(default_factory=list)


def with_datasource(document: Any, datasource_uid: str) -> Any:
    """A copy of a dashboard or rule whose InfluxDB references point at datasource_uid."""
    doc = copy.deepcopy(document)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == DATASOURCE_TYPE and node.get("uid") == DATASOURCE_UID:
                node["uid"] = datasource_uid
            if node.get("datasourceUid") == DATASOURCE_UID:
                node["datasourceUid"] = datasource_uid
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return doc


def _exists(call, *args) -> bool:
    try:
        call(*args)
        return True
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return False
        raise


def push(url: str, token: str, folder: str = alerts.FOLDER_TITLE, *, folder_uid: str = alerts.FOLDER_UID,
         datasource_uid: str = DATASOURCE_UID, editable_in_ui: bool = False, timeout_s: float = 10.0,
         api: GrafanaApi | None = None) -> PushReport:
    """Create the folder if needed, then create or overwrite every dashboard and alert rule by uid."""
    if not token:
        raise ValueError(f"no Grafana token: set {TOKEN_ENV} or pass a token file")
    grafana = api or GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    report = PushReport()

    if not _exists(grafana.folder.get_folder, folder_uid):
        grafana.folder.create_folder(folder, uid=folder_uid)
        report.folder_created = True
        log.info("grafana %s: created folder %s (%s)", url, folder, folder_uid)

    for name in boards.DASHBOARDS:
        dashboard = with_datasource(build.dashboard_json(name), datasource_uid)
        dashboard["id"] = None  # Grafana matches by uid; an id from another instance would be wrong here
        grafana.dashboard.update_dashboard({"dashboard": dashboard, "folderUid": folder_uid, "overwrite": True,
                                            "message": "orelane dashboards push"})
        report.dashboards.append(dashboard["uid"])

    rules = with_datasource(build.alert_rules_api(folder_uid, datasource_uid), datasource_uid)
    provisioning = grafana.alertingprovisioning
    for rule in rules:
        if _exists(provisioning.get_alertrule, rule["uid"]):
            provisioning.update_alertrule(rule["uid"], rule, disable_provenance=editable_in_ui)
            report.rules_updated.append(rule["uid"])
        else:
            provisioning.create_alertrule(rule, disable_provenance=editable_in_ui)
            report.rules_created.append(rule["uid"])
    provisioning.update_rule_group(folder_uid, alerts.RULE_GROUP, {
        "title": alerts.RULE_GROUP, "folderUid": folder_uid, "interval": alerts.EVALUATION_INTERVAL_S,
        "rules": rules}, disable_provenance=editable_in_ui)
    log.info("grafana %s: %d dashboards, %d rules created, %d updated in folder %s", url, len(report.dashboards),
             len(report.rules_created), len(report.rules_updated), folder_uid)
    return report


def token_from(environ: dict[str, str], token_file: Path | None) -> str:
    """The token from ORELANE_GRAFANA_TOKEN, else from a file only its owner can read."""
    if environ.get(TOKEN_ENV):
        return environ[TOKEN_ENV]
    if token_file is not None:
        return read_secret_file(token_file, "--token-file")
    raise ConfigError(f"no Grafana token: set {TOKEN_ENV} or pass --token-file FILE (mode 600)")


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ) if environ is None else environ
    parser = argparse.ArgumentParser(prog="orelane dashboards push",
                                     description="Upload the orelane dashboards and alert rules to Grafana.")
    parser.add_argument("--url", default=environ.get(URL_ENV, ""),
                        help=f"Grafana base URL, e.g. https://grafana.port.example (default: ${URL_ENV})")
    parser.add_argument("--token-file", type=Path, default=None,
                        help=f"file holding a service-account token, mode 600 (default: ${TOKEN_ENV})")
    parser.add_argument("--folder", default=alerts.FOLDER_TITLE, help="folder title (default: %(default)s)")
    parser.add_argument("--folder-uid", default=alerts.FOLDER_UID, help="folder uid (default: %(default)s)")
    parser.add_argument("--datasource-uid", default=DATASOURCE_UID,
                        help="uid of the InfluxDB (InfluxQL) data source in that Grafana (default: %(default)s)")
    parser.add_argument("--editable-in-ui", action="store_true",
                        help="send X-Disable-Provenance so the alert rules stay editable in the Grafana UI")
    parser.add_argument("--timeout-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        print(f"orelane dashboards push: --url (or ${URL_ENV}) must be an http(s) URL, got {args.url!r}",
              file=sys.stderr)
        return 2
    try:
        token = token_from(environ, args.token_file)
        report = push(args.url, token, args.folder, folder_uid=args.folder_uid, datasource_uid=args.datasource_uid,
                      editable_in_ui=args.editable_in_ui, timeout_s=args.timeout_s)
    except ConfigError as exc:
        print(f"orelane dashboards push: {exc}", file=sys.stderr)
        return 2
    except GrafanaException as exc:
        print(f"orelane dashboards push: Grafana at {args.url} answered {exc.status_code}: {exc.message}",
              file=sys.stderr)
        return 1
    print(f"{args.url}: folder {args.folder_uid}{' (created)' if report.folder_created else ''}, "
          f"{len(report.dashboards)} dashboards, alert rules: {len(report.rules_created)} created, "
          f"{len(report.rules_updated)} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
