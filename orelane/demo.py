"""`orelane demo`: one simulated lane end to end on one machine, with nothing installed beforehand.

A broker (Mosquitto when on PATH, else the in-process amqtt broker), the
simulated belt scale, spectrometer and camera, the sampler PLC simulator, the
edge daemon, ingest into the embedded store and the sample registry. This
module is a composition root: it imports the parts to run them together.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from orelane import config as config_mod
from orelane.config import MqttConfig, SiteConfig
from orelane.contract import messages as msg, topics
from orelane.modbus_server import free_port

log = logging.getLogger(__name__)

DEMO_SITE = "demo-port"
DEMO_LANE = "lane-1"
DEMO_BRAND = "blend_fines_61"  # a brand the synthetic model knows, so the lot's brand check runs


# ---------------------------------------------------------------------- broker
class Broker:
    """A private broker on a free loopback port for the demo's lifetime."""

    def __init__(self, prefer_mosquitto: bool = True):
        self.port = free_port()
        self.kind = "mosquitto" if prefer_mosquitto and shutil.which("mosquitto") else "amqtt"
        self._proc: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="orelane-broker-")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def mqtt_config(self) -> MqttConfig:
        # amqtt speaks MQTT 3.1.1 only
        return MqttConfig(host="127.0.0.1", port=self.port, protocol=5 if self.kind == "mosquitto" else 4)

    def start(self) -> "Broker":
        if self.kind == "mosquitto":
            conf = Path(self._tmp.name) / "mosquitto.conf"
            conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                            "max_queued_messages 100000\n")
            self._proc = subprocess.Popen([shutil.which("mosquitto"), "-c", str(conf)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            ready = threading.Event()

            def run() -> None:
                from amqtt.broker import Broker as AmqttBroker
                self._loop = asyncio.new_event_loop()
                asyncio.set_event_loop(self._loop)

                async def serve():
                    broker = AmqttBroker({"listeners": {"default": {"type": "tcp",
                                                                    "bind": f"127.0.0.1:{self.port}"}},
                                          "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                                                      {"allow_anonymous": True}}})
                    await broker.start()
                    return broker

                self._amqtt = self._loop.run_until_complete(serve())
                ready.set()
                self._loop.run_forever()

            self._thread = threading.Thread(target=run, name="amqtt", daemon=True)
            self._thread.start()
            ready.wait(15)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} broker did not listen on 127.0.0.1:{self.port} within 15 s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._loop is not None:
            fut = asyncio.run_coroutine_threadsafe(self._amqtt.shutdown(), self._loop)
            try:
                fut.result(5)
            except Exception as exc:
                log.warning("amqtt shutdown: %s", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._tmp.cleanup()


# ---------------------------------------------------------------------- the lane
@dataclass
class DemoSummary:
    duration_s: float
    tonnage_t: float
    belt_m: float
    spectra_published: int
    spectra_classified: int
    spectra_rejected: int
    frames_published: int
    frames_classified: int
    events: list[msg.ContaminationEvent]
    cuts_targeted: int
    cuts_routine: int
    cuts_missed: int
    plc_cycles: list = field(default_factory=list)
    store_path: Path | None = None
    registry_path: Path | None = None
    points_written: int = 0
    broker: str = ""

    def render(self) -> str:
        lines = [
            "orelane demo summary",
            f"  discharged        {self.tonnage_t:9.1f} t over {self.belt_m:.0f} m of belt in {self.duration_s:.0f} s",
            f"  spectra           {self.spectra_published:9d} published, {self.spectra_classified} classified, "
            f"{self.spectra_rejected} rejected with a reason",
            f"  camera frames     {self.frames_published:9d} published, {self.frames_classified} classified",
            f"  events            {len(self.events):9d}",
        ]
        for e in self.events:
            lines.append(f"    {e.event_id}: {e.start_m:7.1f}-{e.end_m:7.1f} m, {e.likely_class:8s} "
                         f"peak {e.peak_score:.2f} at {e.tonnage_t:.1f} t")
        lines += [
            f"  samples cut       {self.cuts_targeted:9d} targeted, {self.cuts_routine} routine, "
            f"{self.cuts_missed} missed opportunities",
            f"  points stored     {self.points_written:9d} in {self.store_path}",
            f"  sample registry   {self.registry_path}",
            f"  broker            {self.broker}",
            "  lot report        .venv/bin/orelane report lot LOT-DEMO-001 "
            f"--store {self.store_path} --registry {self.registry_path} --out var/reports",
        ]
        return "\n".join(lines)


def default_patches():
    from edge.simulated_lane import Patch
    return [Patch("plastic", 40.0, 0.8, fraction=0.8, width_m=0.5),
            Patch("wood", 100.0, 1.0, fraction=0.8, width_m=0.3),
            Patch("rubber", 160.0, 1.0, fraction=0.9, width_m=0.5)]


def site_config(mqtt_cfg: MqttConfig, data_dir: Path, belt_scale_port: int, robot_port: int,
                cutter_distance_m: float, robot_cycle_s: float, routine_increment_t: float) -> SiteConfig:
    doc = {
        "site": {"id": DEMO_SITE, "data_dir": str(data_dir)},
        "mqtt": {"host": mqtt_cfg.host, "port": mqtt_cfg.port, "protocol": mqtt_cfg.protocol},
        "ingest": {"batch_size": 5000, "flush_interval_s": 0.5},
        "lane": [{"id": DEMO_LANE, "cutter_distance_m": cutter_distance_m, "robot_reaction_s": 0.5,
                  "robot_cycle_s": robot_cycle_s, "routine_increment_t": routine_increment_t,
                  "belt_scale": {"host": "127.0.0.1", "port": belt_scale_port},
                  "robot": {"host": "127.0.0.1", "port": robot_port}}],
    }
    return config_mod.parse(doc, "<demo>", environ={}, base_dir=Path.cwd())


def run_lane(mqtt_cfg: MqttConfig, data_dir: Path, patches=None, duration_s: float | None = None,
             speed_m_s: float = 3.0, cutter_distance_m: float = 30.0, plc_cycle_s: float = 4.0,
             routine_increment_t: float = 40.0, stop: threading.Event | None = None,
             progress: Callable[[str], None] | None = None, on_started: Callable[[dict], None] | None = None,
             camera_fps: float = 4.0) -> DemoSummary:
    """Run the simulated lane until its last patch has been sampled (or `duration_s`, or `stop`)."""
    from edge.daemon import LaneDaemon
    from edge.simulated_lane import LaneWorld, SimulatedLane
    from ingest.service import IngestService
    from ingest.store import EmbeddedStore
    from sampling_robot.plc_sim import SamplerPlcSimulator
    from sampling_robot.registry import SampleRegistry
    from spectral.model import train_synthetic

    stop = stop or threading.Event()
    edge_stop, ingest_stop = threading.Event(), threading.Event()
    data_dir.mkdir(parents=True, exist_ok=True)
    patches = default_patches() if patches is None else patches
    if duration_s is None:
        last = max((p.end_m for p in patches), default=0.0)
        duration_s = (last + cutter_distance_m + speed_m_s * plc_cycle_s + 12.0) / speed_m_s
    world = LaneWorld(speed_m_s=speed_m_s, patches=list(patches))
    lane_sim = SimulatedLane(world, mqtt_cfg, DEMO_SITE, DEMO_LANE, camera_fps=camera_fps, brand=DEMO_BRAND)
    plc = SamplerPlcSimulator(cycle_s=plc_cycle_s, carousel_capacity=500, clock=time.time)
    plc_server = plc.serve("127.0.0.1", free_port())
    site = site_config(mqtt_cfg, data_dir, lane_sim.belt_scale_port, plc_server.port, cutter_distance_m,
                       plc_cycle_s, routine_increment_t)
    lane_cfg = site.lanes[0]
    model = train_synthetic(lane_sim.spectrometer.instrument, np.random.default_rng(7))
    model.save(data_dir / "models" / f"{model.model_id}.npz")
    registry = SampleRegistry(data_dir / "samples.sqlite")
    store = EmbeddedStore(data_dir / "orelane-points.sqlite")
    ingest = IngestService(site, store)
    daemon = LaneDaemon(site, lane_cfg, model, registry)
    ingest_thread = threading.Thread(target=ingest.run, args=(ingest_stop,), name="ingest", daemon=True)
    edge_thread = threading.Thread(target=daemon.run, args=(edge_stop,), name="edge", daemon=True)
    started = time.time()
    try:
        plc_server.start()
        lane_sim.start_belt_scale()
        ingest_thread.start()
        edge_thread.start()
        if not (daemon.mqtt.connected.wait(10) and ingest.mqtt.connected.wait(10)):
            raise RuntimeError(f"edge or ingest could not connect to the broker at {mqtt_cfg.host}:{mqtt_cfg.port}")
        _wait_until(lambda: daemon.tracker.latest is not None, timeout_s=10.0)
        lane_sim.start()
        lot = msg.Lot(DEMO_LANE, "LOT-DEMO-001", "MV Demo Carrier", "V042", DEMO_BRAND, 180000.0,
                      "AU", "open", time.time(), hold="3", bill_of_lading="BL-0001")
        lane_sim.link.publish(topics.topic(DEMO_SITE, DEMO_LANE, "lot"), lot.to_json(), 1, retain=True)
        if on_started:
            on_started({"site": site, "world": world, "plc": plc, "lane_sim": lane_sim, "daemon": daemon})
        while not stop.is_set() and time.time() - started < duration_s:
            stop.wait(1.0)
            if progress:
                c = daemon.counters
                progress(f"[{time.time() - started:5.0f}/{duration_s:.0f} s] belt {world.position_at(time.time()):6.1f} m "
                         f"{world.totalizer_t:7.1f} t | spectra {c.spectra_classified:6d} ok {c.spectra_rejected} "
                         f"rejected | frames {c.frames_in:4d} | events {c.events_closed} | cuts "
                         f"{c.cuts_targeted} targeted {c.cuts_routine} routine {c.cuts_missed} missed")
    finally:
        # Stop in data-flow order so nothing published is left unjudged or unstored.
        lane_sim.stop()
        _wait_until(lambda: daemon.counters.spectra_in >= lane_sim.spectrometer.published_seqs
                    and daemon.mqtt.inbox.empty(), timeout_s=10.0)
        edge_stop.set()
        edge_thread.join(15)
        _wait_quiet(lambda: ingest.counters.messages_in, ingest.mqtt.inbox, quiet_s=1.0, timeout_s=15.0)
        ingest_stop.set()
        ingest_thread.join(15)
        plc_server.stop()
    c = daemon.counters
    summary = DemoSummary(
        duration_s=time.time() - started, tonnage_t=world.totalizer_t, belt_m=world.position_at(time.time()),
        spectra_published=lane_sim.spectrometer.published_seqs, spectra_classified=c.spectra_classified,
        spectra_rejected=c.spectra_rejected,
        frames_published=lane_sim.camera.next_seq if lane_sim.camera else 0, frames_classified=c.frames_in,
        events=list(daemon.closed_events), cuts_targeted=c.cuts_targeted, cuts_routine=c.cuts_routine,
        cuts_missed=c.cuts_missed, plc_cycles=list(plc.completed_cycles), store_path=store.path,
        registry_path=registry.path, points_written=ingest.counters.points_written)
    store.close()
    registry.close()
    return summary


def _wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _wait_quiet(counter: Callable[[], int], inbox, quiet_s: float, timeout_s: float) -> None:
    """Wait until `counter` has not moved for quiet_s and the inbox is empty (or timeout_s)."""
    deadline = time.time() + timeout_s
    last, since = counter(), time.time()
    while time.time() < deadline:
        time.sleep(0.05)
        now_value = counter()
        if now_value != last or not inbox.empty():
            last, since = now_value, time.time()
        elif time.time() - since >= quiet_s:
            return


def main(args) -> int:
    logging.basicConfig(level=logging.WARNING if not args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = Path(args.data_dir)
    if data_dir.exists():
        for name in ("orelane-points.sqlite", "samples.sqlite"):
            for suffix in ("", "-wal", "-shm"):
                (data_dir / (name + suffix)).unlink(missing_ok=True)
    broker = Broker().start()
    print(f"orelane demo: {broker.kind} broker on 127.0.0.1:{broker.port}; data in {data_dir}", flush=True)
    stop = threading.Event()
    try:
        summary = run_lane(broker.mqtt_config, data_dir, duration_s=args.duration_s, stop=stop,
                           progress=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        stop.set()
        print("\ninterrupted; stopping", file=sys.stderr)
        return 130
    finally:
        broker.stop()
    summary.broker = f"{broker.kind} (stopped)"
    print(summary.render())
    return 0
