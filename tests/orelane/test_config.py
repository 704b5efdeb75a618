"""Site configuration: every refusal names the file, the key, the value and what is allowed; secrets stay out."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from orelane.config import ConfigError, load, parse
from orelane.contract.topics import TOPICS, topic
from orelane.contract.topics import parse as parse_topic

SOURCE = "/etc/orelane/port-a.toml"


def minimal() -> dict[str, Any]:
    """The smallest valid site: one lane with a belt scale and a sampler robot."""
    return {
        "site": {"id": "port-a"},
        "lane": [{"id": "lane-1",
                  "belt_scale": {"host": "10.0.0.10", "port": 502},
                  "robot": {"host": "10.0.0.11", "port": 502, "unit_id": 2}}],
    }


def refused(data: dict[str, Any], environ: dict[str, str] | None = None, base_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as failure:
        parse(data, SOURCE, environ={} if environ is None else environ, base_dir=base_dir)
    return str(failure.value)


def edited(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(minimal())
    change(data)
    return data


def write_secret(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# ---------------------------------------------------------------- what a valid file gives


def test_minimal_site_gets_documented_defaults(tmp_path):
    config = parse(minimal(), SOURCE, environ={}, base_dir=tmp_path)
    assert config.site_id == "port-a" and config.source == SOURCE
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.password) == ("127.0.0.1", 1883, "")
    assert config.influx is None
    assert (config.ingest.batch_size, config.ingest.flush_interval_s) == (5000, 1.0)
    assert config.data_dir == tmp_path / "var" and config.model_path is None
    lane = config.lane("lane-1")
    assert (lane.belt_scale.host, lane.belt_scale.port, lane.belt_scale.unit_id) == ("10.0.0.10", 502, 1)
    assert lane.robot.unit_id == 2 and lane.radiation is None
    assert (lane.event_open_score, lane.event_close_score, lane.cutter_distance_m) == (0.5, 0.2, 40.0)


def test_integers_are_accepted_where_a_float_is_expected():
    data = edited(lambda d: d["lane"][0].update(cutter_distance_m=35, event_open_score=1))
    lane = parse(data, SOURCE, environ={}).lanes[0]
    assert lane.cutter_distance_m == 35.0 and isinstance(lane.cutter_distance_m, float)
    assert lane.event_open_score == 1.0


def test_unknown_lane_is_refused_listing_the_lanes():
    config = parse(minimal(), SOURCE, environ={})
    with pytest.raises(ConfigError, match=re.escape(f"{SOURCE}: no lane 'lane-9'; lanes are ['lane-1']")):
        config.lane("lane-9")


# ---------------------------------------------------------------- refusals name file, key, value, what is allowed

REFUSALS = {
    "wrong type": (lambda d: d.setdefault("mqtt", {}).update(port="1883"),
                   ["root.mqtt.port = '1883'", "must be a int"]),
    "bool is not an int": (lambda d: d["lane"][0]["belt_scale"].update(port=True),
                           ["lane[0].belt_scale.port = True", "must be a int"]),
    "string is not a float": (lambda d: d["lane"][0].update(cutter_distance_m="40 m"),
                              ["lane[0].cutter_distance_m = '40 m'", "must be a float"]),
    "port above range": (lambda d: d["lane"][0]["belt_scale"].update(port=70000),
                         ["lane[0].belt_scale.port = 70000", "<= 65535"]),
    "port below range": (lambda d: d.setdefault("mqtt", {}).update(port=0),
                         ["root.mqtt.port = 0", ">= 1", "<= 65535"]),
    "modbus unit id above 247": (lambda d: d["lane"][0]["robot"].update(unit_id=248),
                                 ["lane[0].robot.unit_id = 248", "<= 247"]),
    "zero timeout": (lambda d: d["lane"][0]["robot"].update(timeout_s=0),
                     ["lane[0].robot.timeout_s = 0.0", "must be > 0"]),
    "camera too far downstream": (lambda d: d["lane"][0].update(cutter_distance_m=12.0, camera_offset_m=10.0),
                                  ["lane[0].cutter_distance_m = 12.0", "must be more than 12.5 m",
                                   "camera_offset_m 10"]),
    "zero cutter distance": (lambda d: d["lane"][0].update(cutter_distance_m=0),
                             ["lane[0].cutter_distance_m = 0.0", "> 0", "<= 2000.0"]),
    "segment too short": (lambda d: d["lane"][0].update(segment_length_m=0.01),
                          ["lane[0].segment_length_m = 0.01", ">= 0.05", "<= 10.0"]),
    "belt too narrow": (lambda d: d["lane"][0].update(belt_width_m=0.1), ["lane[0].belt_width_m = 0.1", ">= 0.3"]),
    "keepalive too long": (lambda d: d.setdefault("mqtt", {}).update(keepalive_s=7200),
                           ["root.mqtt.keepalive_s = 7200", "<= 3600"]),
    "batch size zero": (lambda d: d.setdefault("ingest", {}).update(batch_size=0),
                        ["root.ingest.batch_size = 0", ">= 1"]),
    "typo in a section": (lambda d: d.setdefault("mqtt", {}).update(prot=1883),
                          ["unknown key(s) ['prot'] in [root.mqtt]", "allowed:", "'port'"]),
    "typo in a lane": (lambda d: d["lane"][0].update(cuter_distance_m=40.0),
                       ["unknown key(s) ['cuter_distance_m'] in [lane[0]]", "'cutter_distance_m'"]),
    "typo in an endpoint": (lambda d: d["lane"][0]["robot"].update(unit=2),
                            ["unknown key(s) ['unit'] in [lane[0].robot]", "'unit_id'"]),
    "unknown section": (lambda d: d.update(grafana={"url": "http://x"}),
                        ["unknown key(s) ['grafana'] in [root]", "'mqtt'"]),
    "missing site id": (lambda d: d["site"].pop("id"), ["root.site.id is missing", "str is required"]),
    "missing site table": (lambda d: d.pop("site"), ["[root.site] is missing"]),
    "missing endpoint table": (lambda d: d["lane"][0].pop("robot"), ["[lane[0].robot] is missing"]),
    "missing endpoint host": (lambda d: d["lane"][0]["belt_scale"].pop("host"),
                              ["lane[0].belt_scale.host is missing", "str is required"]),
    "missing influx url": (lambda d: d.update(influx={"org": "o"}), ["root.influx.url is missing"]),
    "influx url without scheme": (lambda d: d.update(influx={"url": "influx:8086"}),
                                  ["influx.url = 'influx:8086'", "must start with http:// or https://"]),
    "no lanes": (lambda d: d.update(lane=[]), ["at least one [[lane]] table is required"]),
    "lane is not a table": (lambda d: d.update(lane=["lane-1"]), ["[lane[0]] must be a table, got str"]),
    "section is not a table": (lambda d: d.update(mqtt="localhost"), ["[root.mqtt] must be a table, got str"]),
    "duplicate lane ids": (lambda d: d["lane"].append(copy.deepcopy(d["lane"][0])),
                           ["lane ids must be unique", "['lane-1', 'lane-1']"]),
    "lane id with a slash": (lambda d: d["lane"][0].update(id="lane/1"),
                             ["lane[0].id = 'lane/1'", "without '/', '+', '#', space"]),
    "lane id with a space": (lambda d: d["lane"][0].update(id="lane 1"), ["lane[0].id = 'lane 1'"]),
    "empty lane id": (lambda d: d["lane"][0].update(id=""), ["lane[0].id = ''", "must be non-empty"]),
    "site id with a wildcard": (lambda d: d["site"].update(id="port+a"),
                                ["site.id = 'port+a'", "without '/', '+', '#', space"]),
    "close score equal to open score": (lambda d: d["lane"][0].update(event_open_score=0.5, event_close_score=0.5),
                                        ["lane[0].event_close_score = 0.5", "must be below event_open_score (0.5)",
                                         "hysteresis"]),
    "close score above open score": (lambda d: d["lane"][0].update(event_open_score=0.4, event_close_score=0.6),
                                     ["lane[0].event_close_score = 0.6", "event_open_score (0.4)"]),
    "open score zero": (lambda d: d["lane"][0].update(event_open_score=0.0),
                        ["lane[0].event_open_score = 0.0", "must be > 0"]),
    "unknown results mode": (lambda d: d["lane"][0].update(results="batches"),
                             ["lane[0].results = 'batches'", "spectra, segments"]),
}


@pytest.mark.parametrize("change,fragments", REFUSALS.values(), ids=REFUSALS.keys())
def test_invalid_config_is_refused_naming_file_key_value_and_what_is_allowed(change, fragments):
    message = refused(edited(change))
    assert message.startswith(f"{SOURCE}: ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("change,fragment", [
    (lambda d: d["site"].update(id="$port-a"), "site.id = '$port-a'"),
    (lambda d: d["site"].update(id="$SYS"), "site.id = '$SYS'"),
    (lambda d: d["lane"][0].update(id="$lane-1"), "lane[0].id = '$lane-1'"),
    (lambda d: d["lane"][0].update(id="$"), "lane[0].id = '$'"),
], ids=["site", "site-$SYS", "lane", "lane-only-$"])
def test_ids_the_topic_tree_refuses_are_refused(change, fragment):
    message = refused(edited(change))
    assert message.startswith(f"{SOURCE}: ")
    assert fragment in message and "leading '$'" in message


@pytest.mark.parametrize("change,ids", [
    (lambda d: d["site"].update(id="port$a"), ("port$a", "lane-1")),
    (lambda d: d["lane"][0].update(id="lane$1"), ("port-a", "lane$1")),
], ids=["site", "lane"])
def test_ids_with_a_dollar_sign_after_the_first_character_are_accepted(change, ids):
    config = parse(edited(change), SOURCE, environ={})
    assert (config.site_id, config.lanes[0].id) == ids


@given(site_id=st.text(max_size=12), lane_id=st.text(max_size=12))
@example(site_id="$SYS", lane_id="lane-1")
@example(site_id="port-a", lane_id="$lane")
@example(site_id="", lane_id="lane-1")
@example(site_id="port+a", lane_id="lane#1")
def test_every_id_the_config_accepts_builds_topics(site_id, lane_id):
    data = edited(lambda d: (d["site"].update(id=site_id), d["lane"][0].update(id=lane_id)))
    try:
        config = parse(data, SOURCE, environ={})
    except ConfigError:
        return
    for leaf in TOPICS:
        assert parse_topic(topic(config.site_id, config.lane(lane_id).id, leaf)) == (site_id, lane_id, leaf)


def test_second_lane_problems_name_the_second_lane():
    def second_lane_with_bad_port(d):
        lane = copy.deepcopy(d["lane"][0])
        lane.update(id="lane-2", belt_poll_interval_s=10.0)
        d["lane"].append(lane)

    assert "lane[1].belt_poll_interval_s = 10.0: must be <= 5.0" in refused(edited(second_lane_with_bad_port))


# ---------------------------------------------------------------- secrets

SECRETS = [("mqtt", "password", "ORELANE_MQTT_PASSWORD"), ("influx", "token", "ORELANE_INFLUX_TOKEN")]


def with_section(section: str, **values) -> dict[str, Any]:
    base = {"url": "http://127.0.0.1:8086"} if section == "influx" else {}
    return edited(lambda d: d.update({section: {**base, **values}}))


def secret_of(config, section: str, key: str) -> str:
    return getattr(getattr(config, section), key)


@pytest.mark.parametrize("section,key,env_var", SECRETS)
def test_secret_written_in_the_config_is_refused_without_echoing_it(section, key, env_var):
    message = refused(with_section(section, **{key: "hunter2-secret"}))
    assert f"root.{section}.{key} must not be written in the config" in message
    assert env_var in message and f"{key}_file" in message
    assert "hunter2-secret" not in message


@pytest.mark.parametrize("section,key,env_var", SECRETS)
def test_secret_comes_from_the_environment(section, key, env_var):
    config = parse(with_section(section), SOURCE, environ={env_var: "from-env"})
    assert secret_of(config, section, key) == "from-env"


@pytest.mark.parametrize("section,key,env_var", SECRETS)
def test_environment_overrides_the_secret_file(tmp_path, section, key, env_var):
    path = write_secret(tmp_path / "secret", "from-file\n", 0o600)
    config = parse(with_section(section, **{f"{key}_file": str(path)}), SOURCE, environ={env_var: "from-env"})
    assert secret_of(config, section, key) == "from-env"


@pytest.mark.parametrize("section,key,env_var", SECRETS)
def test_secret_comes_from_an_owner_only_file_without_its_newline(tmp_path, section, key, env_var):
    path = write_secret(tmp_path / "secret", "from-file\n", 0o600)
    config = parse(with_section(section, **{f"{key}_file": str(path)}), SOURCE, environ={env_var: ""})
    assert secret_of(config, section, key) == "from-file"


@pytest.mark.parametrize("mode,shown", [(0o644, "-rw-r--r--"), (0o640, "-rw-r-----"), (0o604, "-rw----r--")])
@pytest.mark.parametrize("section,key,env_var", SECRETS)
def test_secret_file_others_can_read_is_refused(tmp_path, section, key, env_var, mode, shown):
    path = write_secret(tmp_path / "secret", "from-file", mode)
    message = refused(with_section(section, **{f"{key}_file": str(path)}))
    assert f"root.{section}.{key}_file = {str(path)!r}" in message
    assert f"mode {shown} lets others read it" in message and f"chmod 600 {path}" in message
    assert "from-file" not in message


def test_missing_secret_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "absent"
    message = refused(with_section("mqtt", password_file=str(path)))
    assert f"root.mqtt.password_file = {str(path)!r}: cannot read" in message


@pytest.mark.parametrize("section,key,env_var", SECRETS)
def test_secrets_do_not_appear_in_the_config_repr(section, key, env_var):
    config = parse(with_section(section), SOURCE, environ={env_var: "hunter2-secret"})
    assert "hunter2-secret" not in repr(config)


# ---------------------------------------------------------------- load() from a TOML file

SITE_TOML = """\
[site]
id = "port-a"
data_dir = "state"
model_path = "models/pca.npz"

[mqtt]
host = "broker.lan"
port = 8883
password_file = "{secret}"

[influx]
url = "https://influx.lan:8086"
bucket = "ore"

[[lane]]
id = "lane-1"
cutter_distance_m = 38.5
belt_scale = { host = "10.0.0.10", port = 502 }
robot = { host = "10.0.0.11", port = 502, unit_id = 2 }
radiation = { host = "10.0.0.12", port = 5020 }

[[lane]]
id = "lane-2"
belt_scale = { host = "10.0.1.10", port = 502 }
robot = { host = "10.0.1.11", port = 502 }
"""


def write_site(directory: Path, secret: str = "mqtt.secret", text: str = SITE_TOML) -> Path:
    write_secret(directory / "mqtt.secret", "s3cret\n", 0o600)
    path = directory / "site.toml"
    path.write_text(text.replace("{secret}", secret))
    return path


def test_load_reads_a_site_file_with_paths_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    write_site(tmp_path, secret=str(tmp_path / "mqtt.secret"))

    config = load(tmp_path / "site.toml", environ={"ORELANE_INFLUX_TOKEN": "tok"})

    assert config.source == str(tmp_path / "site.toml")
    assert config.data_dir == tmp_path / "state" and config.model_path == tmp_path / "models" / "pca.npz"
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.password) == ("broker.lan", 8883, "s3cret")
    assert (config.influx.url, config.influx.bucket, config.influx.org, config.influx.token) == \
        ("https://influx.lan:8086", "ore", "orelane", "tok")
    assert [lane.id for lane in config.lanes] == ["lane-1", "lane-2"]
    assert config.lane("lane-1").radiation.port == 5020 and config.lane("lane-2").radiation is None
    assert config.lane("lane-1").cutter_distance_m == 38.5


@pytest.mark.parametrize("secret", ["mqtt.secret", "./mqtt.secret"])
def test_load_reads_a_relative_secret_file_beside_the_site_file(tmp_path, monkeypatch, secret):
    monkeypatch.chdir("/")
    config = load(write_site(tmp_path, secret=secret), environ={"ORELANE_INFLUX_TOKEN": "tok"})
    assert config.mqtt.password == "s3cret"


def test_load_reads_a_relative_secret_file_in_a_directory_beside_the_site_file(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    site = tmp_path / "etc"
    site.mkdir()
    (tmp_path / "secrets").mkdir()
    write_secret(tmp_path / "secrets" / "mqtt", "from-sibling\n", 0o600)
    config = load(write_site(site, secret="../secrets/mqtt"), environ={"ORELANE_INFLUX_TOKEN": "tok"})
    assert config.mqtt.password == "from-sibling"


def test_load_does_not_read_a_relative_secret_file_from_the_working_directory(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    write_secret(elsewhere / "only-here.secret", "from-cwd\n", 0o600)
    monkeypatch.chdir(elsewhere)
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    path = write_site(site_dir, secret="only-here.secret")
    with pytest.raises(ConfigError) as failure:
        load(path, environ={"ORELANE_INFLUX_TOKEN": "tok"})
    resolved = path.resolve().parent / "only-here.secret"
    assert f"root.mqtt.password_file = {str(resolved)!r}: cannot read" in str(failure.value)


@pytest.mark.parametrize("section,key,env_var", SECRETS)
def test_relative_secret_file_resolves_against_the_base_directory(tmp_path, monkeypatch, section, key, env_var):
    monkeypatch.chdir("/")
    write_secret(tmp_path / "secret", "from-file\n", 0o600)
    config = parse(with_section(section, **{f"{key}_file": "secret"}), SOURCE, environ={}, base_dir=tmp_path)
    assert secret_of(config, section, key) == "from-file"


@pytest.mark.parametrize("section,key,env_var", SECRETS)
def test_absolute_secret_file_is_read_where_it_is(tmp_path, section, key, env_var):
    path = write_secret(tmp_path / "secret", "from-file\n", 0o600)
    base = tmp_path / "elsewhere"
    config = parse(with_section(section, **{f"{key}_file": str(path)}), SOURCE, environ={}, base_dir=base)
    assert secret_of(config, section, key) == "from-file"


@pytest.mark.parametrize("section,key,env_var", SECRETS)
def test_relative_secret_file_others_can_read_is_refused_naming_the_resolved_path(tmp_path, section, key, env_var):
    path = write_secret(tmp_path / "secret", "from-file", 0o644)
    message = refused(with_section(section, **{f"{key}_file": "secret"}), base_dir=tmp_path)
    assert f"root.{section}.{key}_file = {str(path)!r}" in message
    assert f"chmod 600 {path}" in message and "from-file" not in message


def test_load_refusal_names_the_file(tmp_path):
    path = write_site(tmp_path, secret=str(tmp_path / "mqtt.secret"),
                      text=SITE_TOML.replace("cutter_distance_m = 38.5", "cutter_distance_m = -1.0"))
    with pytest.raises(ConfigError) as failure:
        load(path, environ={})
    assert str(failure.value).startswith(f"{path}: lane[0].cutter_distance_m = -1.0: must be > 0")


def test_load_refuses_invalid_toml_naming_the_file(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('[site]\nid = "port-a\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not valid TOML")):
        load(path, environ={})


def test_load_refuses_a_missing_file_naming_it(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read: No such file or directory")):
        load(path, environ={})
