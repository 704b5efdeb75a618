"""The generated access list, without a broker: who may do what, its text, and ids that would break it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.daemon import INPUT_LEAVES
from orelane.config import parse
from orelane.contract import measurements, topics
from orelane.mosquitto_acl import Grant, acl_file_text, device_user, edge_user, site_grants

REPO = Path(__file__).resolve().parents[2]


def site(site_id: str = "port-a", lanes: tuple[str, ...] = ("lane-1", "lane-2")):
    return parse({"site": {"id": site_id},
                  "lane": [{"id": lane, "belt_scale": {"host": "10.0.0.10", "port": 502},
                            "robot": {"host": "10.0.0.11", "port": 502}} for lane in lanes]},
                 "<test>", environ={})


def grants_by_user(site_config) -> dict[str, Grant]:
    return {g.username: g for g in site_grants(site_config)}


def leaves(filters: tuple[str, ...], site_id: str, lane: str) -> set[str]:
    """The contract leaves of one lane that a grant's filters cover (a trailing /# covers a subtree)."""
    prefix = f"{topics.ROOT}/{site_id}/{lane}/"
    covered = set()
    for leaf in topics.TOPICS:
        for f in filters:
            if f == prefix + leaf or (f.endswith("/#") and (prefix + leaf).startswith(f[:-1])) \
                    or f == f"{topics.ROOT}/{site_id}/#":
                covered.add(leaf)
    return covered


def test_a_lanes_devices_may_publish_only_their_lanes_spectra_and_camera_topics():
    grants = grants_by_user(site())
    devices = grants["port-a-lane-1-devices"]
    assert devices.read == ()
    assert devices.write == ("orelane/v1/port-a/lane-1/spectra/#", "orelane/v1/port-a/lane-1/camera/#")


def test_every_grant_stays_inside_the_site_and_lane_users_inside_their_lane():
    config = site()
    lane_of = {user(config.site_id, lane.id): lane.id for lane in config.lanes for user in (device_user, edge_user)}
    for grant in site_grants(config):
        for f in grant.read + grant.write:
            assert f.startswith("orelane/v1/port-a/"), (grant.username, f)
            if grant.username in lane_of:
                assert f.startswith(f"orelane/v1/port-a/{lane_of[grant.username]}/"), (grant.username, f)
            if f != "orelane/v1/port-a/#":  # ingest's; every other grant names its lanes one by one
                assert "+" not in f, (grant.username, f)


def test_the_edge_may_read_what_the_daemon_subscribes_to_and_write_what_it_produces():
    edge = grants_by_user(site())["port-a-lane-1-edge"]
    assert set(INPUT_LEAVES) <= leaves(edge.read, "port-a", "lane-1")
    edge_outputs = {leaf for leaf, spec in topics.TOPICS.items() if "edge" in spec.producer}
    assert edge_outputs | {"deadletter"} == leaves(edge.write, "port-a", "lane-1")


def test_ingest_may_read_every_ingested_leaf_of_every_lane_and_write_nothing():
    ingest = grants_by_user(site())["port-a-ingest"]
    for lane in ("lane-1", "lane-2", "a-lane-added-later"):
        assert set(measurements.INGESTED_LEAVES) <= leaves(ingest.read, "port-a", lane)
    assert ingest.write == ()


# Each producer named in the contract, and the broker user it publishes as.
PRODUCER_USERS = {"spectrometer": "lane-1-devices", "camera": "lane-1-devices", "edge": "lane-1-edge",
                  "people debugging": "lane-1-devices", "operator": "operator", "customs system": "operator",
                  "engineer": "engineer", "lab desk": "lab", "any consumer": "lane-1-edge"}


@pytest.mark.parametrize("leaf", sorted(topics.TOPICS))
def test_every_producer_in_the_contract_has_a_user_allowed_to_publish_its_leaf(leaf):
    grants = grants_by_user(site())
    for producer in (p.strip() for p in topics.TOPICS[leaf].producer.split(",")):
        user = f"port-a-{PRODUCER_USERS[producer]}"
        assert leaf in leaves(grants[user].write, "port-a", "lane-1"), f"{producer} ({user}) cannot publish {leaf}"


def test_acl_file_has_one_user_block_per_grant_and_nothing_for_anonymous_clients():
    text = acl_file_text(site_grants(site(lanes=("lane-1",))), "/etc/orelane/port-a.toml")
    before_first_user = text.split("\nuser ", 1)[0]
    assert all(line.startswith("#") or not line for line in before_first_user.splitlines())
    assert "pattern" not in text
    assert "\nuser port-a-lane-1-devices\n" \
           "topic write orelane/v1/port-a/lane-1/spectra/#\n" \
           "topic write orelane/v1/port-a/lane-1/camera/#\n\n" in text
    assert [line.split()[1] for line in text.splitlines() if line.startswith("user ")] == \
        ["port-a-lane-1-devices", "port-a-lane-1-edge", "port-a-ingest", "port-a-operator", "port-a-engineer",
         "port-a-lab"]
    assert "from /etc/orelane/port-a.toml" in text.splitlines()[0]


@pytest.mark.parametrize("site_id,lane_id,offending", [
    ("port:a", "lane-1", "':'"),  # would split a password-file line
    ("port-a", "lane-1\nuser", "'\\n'"),  # would start a new ACL line
    ("port-a", "lane\t1", "'\\t'"),
])
def test_ids_that_would_corrupt_the_password_or_acl_file_are_refused(site_id, lane_id, offending):
    config = site(site_id, (lane_id,))  # the site config accepts them today
    with pytest.raises(ValueError, match="must be non-empty, printable, without spaces") as failure:
        site_grants(config)
    assert offending in str(failure.value)


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orelane.mosquitto_acl", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_command_prints_the_acl_for_the_sample_site_without_its_secrets():
    done = run_module(str(REPO / "examples" / "site.toml"))
    assert done.returncode == 0, done.stderr
    assert "\nuser port-north-lane-1-devices\ntopic write orelane/v1/port-north/lane-1/spectra/#\n" in done.stdout


def test_command_refuses_a_broken_site_file_with_the_reason(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('[site]\nid = "port a"\n')
    done = run_module(str(path))
    assert done.returncode == 2 and done.stdout == ""
    assert f"{path}: site.id = 'port a'" in done.stderr
