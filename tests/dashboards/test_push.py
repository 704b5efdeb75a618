"""`push` against a recording stand-in for Grafana's HTTP API (Grafana itself cannot run on these machines)."""

from __future__ import annotations

import json
import os

import pytest

from dashboards import alerts, boards, build, push
from tests.dashboards.fake_grafana import FakeGrafana

TOKEN = "glsa_test-token-not-a-secret"


@pytest.fixture
def grafana():
    with FakeGrafana(TOKEN) as server:
        yield server


def calls(server) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.state.requests]


def test_first_push_creates_folder_dashboards_rules_and_group_interval(grafana):
    report = push.push(grafana.url, TOKEN, "Ore lanes", folder_uid="ore-lanes")
    state = grafana.state
    rule_uids = [spec.uid for spec in alerts.RULES]
    assert report.folder_created and report.rules_created == rule_uids and report.rules_updated == []
    expected = [("GET", "/api/folders/ore-lanes"), ("POST", "/api/folders")]
    expected += [("POST", "/api/dashboards/db")] * len(boards.DASHBOARDS)
    for uid in rule_uids:
        expected += [("GET", f"/api/v1/provisioning/alert-rules/{uid}"), ("POST", "/api/v1/provisioning/alert-rules")]
    expected += [("PUT", "/api/v1/provisioning/folder/ore-lanes/rule-groups/orelane")]
    assert calls(grafana) == expected
    assert state.folders["ore-lanes"]["title"] == "Ore lanes"
    assert {uid: (folder, version) for uid, (folder, version, _) in state.dashboards.items()} == {
        build.dashboard_json(n)["uid"]: ("ore-lanes", 1) for n in boards.DASHBOARDS}
    assert state.groups == {("ore-lanes", "orelane"): alerts.EVALUATION_INTERVAL_S}
    assert all(rule["folderUID"] == "ore-lanes" and rule["ruleGroup"] == "orelane" and provenance == "api"
               for provenance, rule in state.rules.values())


def test_every_request_carries_the_bearer_token_and_json(grafana):
    push.push(grafana.url, TOKEN)
    for request in grafana.state.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        if request.method in ("POST", "PUT"):
            assert request.headers["content-type"].startswith("application/json")


def test_dashboard_bodies_follow_the_dashboard_api(grafana):
    push.push(grafana.url, TOKEN)
    bodies = [r.body for r in grafana.state.requests if r.path == "/api/dashboards/db"]
    for body, name in zip(bodies, boards.DASHBOARDS):
        assert set(body) == {"dashboard", "folderUid", "overwrite", "message"}
        assert body["overwrite"] is True and body["folderUid"] == alerts.FOLDER_UID
        built = build.dashboard_json(name)
        assert body["dashboard"] == {**built, "id": None}


def test_second_push_changes_nothing_but_versions(grafana):
    push.push(grafana.url, TOKEN)
    first_rules = {uid: rule for uid, (_, rule) in grafana.state.rules.items()}
    first_dashboards = {uid: d for uid, (_, _, d) in grafana.state.dashboards.items()}
    grafana.state.requests.clear()

    report = push.push(grafana.url, TOKEN)

    assert not report.folder_created and report.rules_created == []
    assert report.rules_updated == [spec.uid for spec in alerts.RULES]
    assert ("POST", "/api/folders") not in calls(grafana)
    assert ("POST", "/api/v1/provisioning/alert-rules") not in calls(grafana)
    assert {uid: rule for uid, (_, rule) in grafana.state.rules.items()} == first_rules
    assert {uid: d for uid, (_, _, d) in grafana.state.dashboards.items()} == first_dashboards
    assert {v for _, v, _ in grafana.state.dashboards.values()} == {2}
    assert len(grafana.state.folders) == 1


def test_editable_in_ui_sends_x_disable_provenance_on_rule_writes_only(grafana):
    push.push(grafana.url, TOKEN)
    assert not any("x-disable-provenance" in r.headers for r in grafana.state.requests)
    grafana.state.requests.clear()
    push.push(grafana.url, TOKEN, editable_in_ui=True)
    marked = {(r.method, r.path.split("/")[4] if r.path.startswith("/api/v1/") else r.path)
              for r in grafana.state.requests if r.headers.get("x-disable-provenance") == "true"}
    assert marked == {("PUT", "alert-rules"), ("PUT", "folder")}
    assert all(provenance == "" for provenance, _ in grafana.state.rules.values())


def test_datasource_uid_is_rewritten_everywhere(grafana):
    push.push(grafana.url, TOKEN, datasource_uid="site-influx")
    text = json.dumps([d for _, _, d in grafana.state.dashboards.values()] +
                      [rule for _, rule in grafana.state.rules.values()])
    assert "orelane-influxdb" not in text and "site-influx" in text


def test_a_refused_dashboard_stops_the_push_with_grafanas_message(grafana):
    grafana.state.fail[("POST", "/api/dashboards/db")] = (403, "Access denied to save dashboard")
    assert push.main(["--url", grafana.url], environ={push.TOKEN_ENV: TOKEN}) == 1
    assert ("GET", "/api/v1/provisioning/alert-rules/orelane-contamination-event") not in calls(grafana)


def test_main_reads_the_token_from_the_environment(grafana, capsys):
    assert push.main(["--url", grafana.url], environ={push.TOKEN_ENV: TOKEN}) == 0
    assert f"6 dashboards, alert rules: {len(alerts.RULES)} created, 0 updated" in capsys.readouterr().out


def test_main_reads_the_token_from_an_owner_only_file(grafana, tmp_path):
    token_file = tmp_path / "grafana.token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    assert push.main(["--url", grafana.url, "--token-file", str(token_file)], environ={}) == 0


def test_main_refuses_a_token_file_others_can_read(grafana, tmp_path, capsys):
    token_file = tmp_path / "grafana.token"
    token_file.write_text(TOKEN)
    os.chmod(token_file, 0o644)
    assert push.main(["--url", grafana.url, "--token-file", str(token_file)], environ={}) == 2
    assert "chmod 600" in capsys.readouterr().err
    assert grafana.state.requests == []


def test_main_without_a_token_or_url_says_what_is_missing(capsys):
    assert push.main(["--url", "http://127.0.0.1:9"], environ={}) == 2
    assert push.TOKEN_ENV in capsys.readouterr().err
    assert push.main([], environ={push.TOKEN_ENV: TOKEN}) == 2
    assert push.URL_ENV in capsys.readouterr().err


def test_a_wrong_token_is_reported_as_unauthorized(grafana, capsys):
    assert push.main(["--url", grafana.url], environ={push.TOKEN_ENV: "wrong"}) == 1
    assert "401" in capsys.readouterr().err
