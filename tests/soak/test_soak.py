"""The whole system under faults, in compressed time: a simulated lane, the edge daemon, the PLC simulator,
ingest (a separate process) into VictoriaMetrics, over a real Mosquitto with persistence.

While the lane runs, a fault injector restarts the broker, stops the database for a while, jams the robot
(and an operator resets it), restarts the edge daemon, SIGKILLs ingest and starts it again, and sends
malformed messages. At the end the accounting must close with no gap: every spectrum published is classified
or rejected with a reason, exactly once in the database; every event has a cut or a recorded missed
opportunity; every sample the registry holds as cut matches a PLC cycle and every PLC cycle a sample.

ORELANE_SOAK_MINUTES sets the simulated discharge (default 30; 10x compressed, so 3 real minutes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge.daemon import LaneDaemon
from edge.simulated_lane import LaneWorld, Patch, SimulatedLane
from orelane import config
from orelane.contract import topics
from sampling_robot.plc_sim import SamplerPlcSimulator
from sampling_robot.registry import SampleRegistry
from spectral.model import train_synthetic

SITE, LANE = "soak-port", "lane-1"
FACTOR = 10.0
SIM_MINUTES = float(os.environ.get("ORELANE_SOAK_MINUTES", "30"))
REPO = Path(__file__).resolve().parents[2]


class CompressedClock:
    """Unix seconds running FACTOR times faster than the wall clock, from now."""

    def __init__(self, factor: float):
        self.factor, self.t0, self.m0 = factor, time.time(), time.monotonic()

    def __call__(self) -> float:
        return self.t0 + self.factor * (time.monotonic() - self.m0)


def site_toml(path: Path, mqtt_port: int, vm_url: str, belt_port: int, robot_port: int) -> Path:
    path.write_text(f"""
[site]
id = "{SITE}"
data_dir = "data"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
keepalive_s = 5

[influx]
url = "{vm_url}"
timeout_s = 2.0

[ingest]
batch_size = 2000
flush_interval_s = 0.2

[[lane]]
id = "{LANE}"
cutter_distance_m = 100.0
robot_reaction_s = 0.5
robot_cycle_s = 20.0
routine_increment_t = 100.0
belt_poll_interval_s = 0.01
reference_max_age_s = 100000.0

[lane.belt_scale]
host = "127.0.0.1"
port = {belt_port}

[lane.robot]
host = "127.0.0.1"
port = {robot_port}
""")
    return path


_SPAWNED: list[subprocess.Popen] = []


@pytest.fixture
def no_stray_ingest():
    """A failing assertion must not leave an ingest worker running after the test."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def spawn_ingest(config_path: Path, tmp_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log = open(tmp_path / "ingest.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "ingest", "run", "--config", str(config_path), "--client-id",
                             "soak-ingest", "--buffer-dir", str(tmp_path / "buffer"), "--verbose"], cwd=REPO, env=env,
                            stdout=log, stderr=log)
    _SPAWNED.append(proc)
    return proc


def publish_garbage(port: int, n: int) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"soak-garbage-{n}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    for leaf, payload in (("spectra/batch", b"\x00not a batch"), ("camera/frame", b"ORLB\x01"),
                          ("results/spectra", b"{}"), ("events", b'{"v": 1, "kind": "contamination_event"}'),
                          ("lot", b"\xff\xfe")):
        client.publish(topics.topic(SITE, LANE, leaf), payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def stored_values(vm, series: str) -> list[float]:
    # the compressed clock runs ahead of the wall clock: read up to a day ahead
    rows = vm.export(match=f'{{__name__="{series}"}}', until=lambda s: True, end=time.time() + 86400)
    return [v for row in rows for v in row["values"]]


def test_whole_system_soak_with_faults_closes_its_accounting(durable_mosquitto, victoria_metrics_dedup, tmp_path,
                                                             no_stray_ingest):
    broker, vm = durable_mosquitto, victoria_metrics_dedup
    clock = CompressedClock(FACTOR)
    run_real_s = SIM_MINUTES * 60.0 / FACTOR
    patches = [Patch(("plastic", "wood", "rubber", "paper", "textile")[i % 5], x, 1.0, fraction=0.85)
               for i, x in enumerate(np.arange(150.0, SIM_MINUTES * 60 * 3.0 - 400.0, 400.0))]
    world = LaneWorld(speed_m_s=3.0, patches=patches, clock=clock)
    mqtt_cfg = config.MqttConfig(host="127.0.0.1", port=broker.port, keepalive_s=5)
    lane_sim = SimulatedLane(world, mqtt_cfg, SITE, LANE, camera_fps=0.2, spectra_rate_hz=50.0)
    plc = SamplerPlcSimulator(cycle_s=20.0, carousel_capacity=1000, clock=clock)
    plc_server = plc.serve(scan_interval_s=0.01)
    site_path = site_toml(tmp_path / "site.toml", broker.port, vm.url, lane_sim.belt_scale_port, plc_server.port)
    site = config.load(site_path)
    model = train_synthetic(lane_sim.spectrometer.instrument, np.random.default_rng(7))
    registry_path = tmp_path / "samples.sqlite"
    daemons: list[LaneDaemon] = []
    closed_events = []

    def start_edge() -> tuple[LaneDaemon, threading.Event, threading.Thread]:
        daemon = LaneDaemon(site, site.lanes[0], model, SampleRegistry(registry_path), clock=clock,
                            client_id="soak-edge")
        stop = threading.Event()
        thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
        thread.start()
        daemons.append(daemon)
        return daemon, stop, thread

    ingest = spawn_ingest(site_path, tmp_path)
    # The first run of ingest has no session on the broker yet: results published before it subscribes are
    # not queued for it. Start the lane once it is connected (it subscribes before it says so).
    deadline = time.monotonic() + 60
    while b"connected to" not in (tmp_path / "ingest.log").read_bytes():
        assert ingest.poll() is None and time.monotonic() < deadline, \
            "ingest did not connect: " + (tmp_path / "ingest.log").read_text(errors="replace")[-2000:]
        time.sleep(0.1)
    lane_sim.start_belt_scale()
    edge, edge_stop, edge_thread = start_edge()
    assert edge.mqtt.connected.wait(10)
    time.sleep(0.5)
    lane_sim.start()
    faults = []
    fault_times: list[float] = []
    started = time.monotonic()

    def at(real_s: float) -> None:
        time.sleep(max(0.0, started + real_s - time.monotonic()))

    def restart_broker() -> None:
        broker.restart()
        faults.append("broker restarted")

    def restart_database_later() -> None:
        vm.start()
        faults.append("database stopped for 10% of the run")

    def reset_robot() -> None:
        # at the PLC's panel: a second Modbus writer of the command block would race the edge's commands
        plc.reset_at_panel()
        faults.append("robot jammed and reset")

    def restart_edge() -> None:
        nonlocal edge, edge_stop, edge_thread, closed_events
        edge_stop.set()
        edge_thread.join(30)
        assert not edge_thread.is_alive(), "the edge daemon did not stop within 30 s"
        closed_events += edge.closed_events
        edge, edge_stop, edge_thread = start_edge()
        faults.append("edge daemon restarted")

    def restart_ingest() -> None:
        nonlocal ingest
        ingest.send_signal(signal.SIGKILL)
        ingest.wait(10)
        time.sleep(1.0)
        ingest = spawn_ingest(site_path, tmp_path)
        faults.append("ingest SIGKILLed and restarted")

    # (fraction of the run, fault), taken in time order; garbage at five moments in between
    schedule = [(0.12, restart_broker), (0.22, vm.stop), (0.32, restart_database_later),
                (0.40, lambda: plc.inject_fault("jam")), (0.45, reset_robot), (0.55, restart_edge),
                (0.65, restart_ingest)]
    schedule += [(fraction, lambda n=n: publish_garbage(broker.port, n))
                 for n, fraction in enumerate((0.08, 0.3, 0.52, 0.75, 0.92))]
    try:
        for fraction, fault in sorted(schedule, key=lambda item: item[0]):
            at(run_real_s * fraction)
            fault()
            fault_times.append(round(time.monotonic() - started, 1))
        at(run_real_s)
    finally:
        lane_sim.stop()
        published = lane_sim.spectrometer.published_seqs
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(d.counters.spectra_in for d in daemons) < published:
            time.sleep(0.2)
        time.sleep(1.0)
        edge_stop.set()
        edge_thread.join(15)
        closed_events += edge.closed_events
        plc_server.stop()

    # every spectrum: classified or rejected with a reason, exactly once in the database
    deadline = time.monotonic() + 90
    while True:
        classified = stored_values(vm, "spectrum_result_seq")
        rejected = stored_values(vm, "spectrum_rejected_seq")
        seen = Counter(int(v) for v in classified + rejected if v >= 0)
        missing = set(range(published)) - set(seen)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    ingest.send_signal(signal.SIGTERM)
    ingest.wait(20)
    duplicated = sum(c - 1 for c in seen.values() if c > 1)
    print(f"\nsoak: {SIM_MINUTES:.0f} simulated minutes, faults: {', '.join(faults)}; {published} spectra published, "
          f"{len(classified)} classified, {len(rejected)} rejected; missing {len(missing)}, duplicated {duplicated}; "
          f"events {len(closed_events)}, PLC cycles {len(plc.cycles)}")
    print("edge counters:", [(d.counters.spectra_in, d.counters.spectra_classified, d.counters.spectra_rejected,
                               d.mqtt.connects) for d in daemons], "simulator connects:", lane_sim.link.connects)
    print("patches (material, sim s at the sensors):", [(p.material, round(float(p.start_m) / 3.0)) for p in patches])
    print("events (class, sim s opened, length m):", [(e.likely_class, round(e.opened_s - clock.t0),
                                                      round(e.end_m - e.start_m, 1)) for e in closed_events])
    print("faults at real s:", fault_times)
    assert not missing, f"{len(missing)} spectra neither classified nor rejected, e.g. {sorted(missing)[:10]}"
    assert duplicated == 0

    # every event: a cut, or a missed opportunity recorded with its reason
    with SampleRegistry(registry_path) as registry:
        samples = registry.samples()
        by_event = {s.event_id: s for s in samples if s.event_id}
        for event in closed_events:
            if event.likely_class in ("radiation", "declaration_mismatch"):
                continue
            sample = by_event.get(event.event_id)
            assert sample is not None, f"event {event.event_id} has no sample request"
            assert sample.status in ("cut", "sealed", "missed", "failed"), (event.event_id, sample.status)
            if sample.status in ("missed", "failed"):
                assert registry.history(sample.sample_id)[-1].note, "a missed opportunity names its reason"
        found = [e for e in closed_events if e.likely_class != "declaration_mismatch"]
        assert len(found) >= len(patches) - 1, (
            f"{len(found)} events for {len(patches)} patches; patches (material, start m, sim s): "
            f"{[(p.material, float(p.start_m), round(float(p.start_m) / 3.0)) for p in patches]}; events (class, "
            f"start m, sim s after start): {[(e.likely_class, e.start_m, round(e.opened_s - clock.t0)) for e in found]}; "
            f"faults at real s: {fault_times}")

        # every sample cut matches exactly one PLC cycle, and every cycle a sample
        cut = {s.sample_id for s in samples if s.status in ("cut", "sealed")}
        assert cut == {c.sample_id for c in plc.cycles if not c.aborted}
        assert all(plc.cuts_of(i) == 1 for i in cut)
        assert all(s.status != "requested" for s in samples if s.kind == "targeted"), \
            [(s.sample_id, s.status) for s in samples if s.status == "requested"]
