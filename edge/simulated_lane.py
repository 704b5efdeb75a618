"""A simulated lane: belt motion, contamination patches at known belt positions, and the instruments
that see them (spectrometer and camera over MQTT, belt scale over Modbus).

For the demo and the tests; the edge daemon cannot tell it from a real lane.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edge import camera
from edge.belt import BeltTracker
from orelane.config import MqttConfig
from orelane.contract import messages as msg, topics
from orelane.contract.registers import BELT_SCALE, SCALE_RUNNING
from orelane.modbus_server import ModbusDeviceServer, RegisterBank
from orelane.mqtt import MqttLink
from spectral import synth

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Patch:
    """Contaminant on the belt: `length_m` of belt from `start_m` (world belt coordinate), covering
    `fraction` of the spectrometer's field of view and `width_m` across the belt."""

    material: str
    start_m: float
    length_m: float
    fraction: float = 0.7
    width_m: float = 0.4
    across_m: float = 0.8

    @property
    def end_m(self) -> float:
        return self.start_m + self.length_m


@dataclass
class LaneWorld:
    """The true belt: speed over time (with optional stops) and what lies where."""

    speed_m_s: float = 3.0
    load_kg_m: float = 460.0
    patches: list[Patch] = field(default_factory=list)
    stops: list[tuple[float, float]] = field(default_factory=list)  # (start, end) seconds after t0 with speed 0
    clock: Callable[[], float] = time.time  # Unix seconds; a compressed clock runs the lane faster than life

    def __post_init__(self):
        self.t0 = self.clock()
        self.truth = BeltTracker(history_s=7200.0)
        self._lock = threading.Lock()
        self.totalizer_t = 0.0
        self.truth.update(self.t0, self.speed_at(self.t0), 0.0)

    def speed_at(self, t_s: float) -> float:
        rel = t_s - self.t0
        return 0.0 if any(a <= rel < b for a, b in self.stops) else self.speed_m_s

    def flow_t_h(self, speed_m_s: float) -> float:
        return self.load_kg_m * speed_m_s * 3.6

    def advance(self, t_s: float) -> None:
        with self._lock:
            last = self.truth.latest
            if t_s <= last.t_s:
                return
            speed = self.speed_at(t_s)
            self.totalizer_t += self.flow_t_h(speed) / 3600.0 * (t_s - last.t_s)
            self.truth.update(t_s, speed, self.totalizer_t)

    def position_at(self, t_s: float) -> float:
        with self._lock:
            return self.truth.position_at(t_s)

    def patch_at(self, position_m: float) -> Patch | None:
        for patch in self.patches:
            if patch.start_m <= position_m < patch.end_m:
                return patch
        return None


class BeltScaleSimulator:
    """The belt-scale integrator's registers, refreshed from the world every 20 ms."""

    def __init__(self, world: LaneWorld, host: str = "127.0.0.1", port: int = 0):
        self.world = world
        self.bank = RegisterBank(BELT_SCALE.count)
        self.server = ModbusDeviceServer(self.bank, host, port)

    def refresh(self, t_s: float) -> None:
        self.world.advance(t_s)
        speed = self.world.speed_at(t_s)
        self.bank.set_input(BELT_SCALE, {"flow_t_h": self.world.flow_t_h(speed), "belt_load_kg_m": self.world.load_kg_m,
                                         "speed_m_s": speed, "totalizer_t": self.world.totalizer_t,
                                         "status": SCALE_RUNNING if speed > 0 else 0})


class SimulatedSpectrometer:
    """Publishes batches of spectra of whatever the world has under the sensor, and its references."""

    def __init__(self, world: LaneWorld, link: MqttLink, site: str, lane: str, rate_hz: float = 100.0,
                 batch_size: int = 10, n_bands: int = 224, seed: int = 1, brand: str | None = None):
        self.world, self.link, self.site, self.lane = world, link, site, lane
        self.rate_hz, self.batch_size = rate_hz, batch_size
        self.instrument = synth.Instrument(synth.wavelength_grid(n_bands))
        self.rng = np.random.default_rng(seed)
        self.brand = brand  # the ore product on the belt (None: a random mix)
        self.next_seq = 0
        self.published_seqs = 0

    def publish_references(self, t_s: float) -> None:
        w = self.instrument.wavelengths_nm
        for name, counts in (("dark", self.instrument.dark_reference()), ("white", self.instrument.white_reference())):
            ref = msg.Reference(self.lane, name, t_s, 5.0, tuple(map(float, w)), tuple(map(float, counts)))
            leaf = topics.reference_leaf(name)
            self.link.publish(topics.topic(self.site, self.lane, leaf), ref.to_json(), topics.qos(leaf), retain=True)

    def spectra_at(self, times_s: np.ndarray) -> np.ndarray:
        w = self.instrument.wavelengths_nm
        refl = synth.ore_reflectance(w, len(times_s), self.rng, self.brand)
        for i, t in enumerate(times_s):
            patch = self.world.patch_at(self.world.position_at(float(t)))
            if patch is not None:
                refl[i] = synth.mixed_reflectance(patch.material, patch.fraction, w, 1, self.rng, self.brand)[0]
        return self.instrument.counts(refl, self.rng)

    def publish_batch(self, end_t_s: float) -> int:
        n = self.batch_size
        times = end_t_s - (np.arange(n)[::-1] / self.rate_hz)
        batch = msg.SpectrumBatch(self.lane, self.instrument.wavelengths_nm.astype(np.float32),
                                  np.arange(self.next_seq, self.next_seq + n, dtype=np.uint64),
                                  (times * 1e9).astype(np.int64), np.full(n, 5000, dtype=np.uint32),
                                  self.spectra_at(times))
        self.link.publish(topics.topic(self.site, self.lane, "spectra/batch"), batch.to_bytes(),
                          topics.qos("spectra/batch"))
        self.next_seq += n
        self.published_seqs += n
        return n


class SimulatedCameraPublisher:
    """Renders the ore stream under the camera with the world's patches in view, and publishes JPEG frames."""

    def __init__(self, world: LaneWorld, link: MqttLink, site: str, lane: str, fps: float = 4.0, seed: int = 2,
                 pixel_size_mm: float = 2.5, width_px: int = 640, height_px: int = 480):
        self.world, self.link, self.site, self.lane, self.fps = world, link, site, lane, fps
        self.pixel_size_mm = pixel_size_mm
        self.camera = camera.SimulatedCamera(width_px, height_px, pixel_size_mm, np.random.default_rng(seed))
        self.view_length_m = height_px * pixel_size_mm / 1000.0
        self.next_seq = 0

    def publish_frame(self, t_s: float) -> None:
        position = self.world.position_at(t_s)
        half = self.view_length_m / 2
        objects = []
        for p in self.world.patches:
            if p.end_m > position - half and p.start_m < position + half:
                # the image's top edge is upstream; ore with a larger belt coordinate has not arrived yet
                objects.append(camera.SceneObject(p.material, centre_x_m=p.across_m,
                                                  centre_y_m=half + position - (p.start_m + p.end_m) / 2,
                                                  width_m=p.width_m, length_m=p.length_m, angle_deg=0.0))
        jpeg, _ = self.camera.frame(objects)
        frame = msg.CameraFrame(self.lane, self.next_seq, int(t_s * 1e9), self.pixel_size_mm, jpeg)
        self.link.publish(topics.topic(self.site, self.lane, "camera/frame"), frame.to_bytes(),
                          topics.qos("camera/frame"))
        self.next_seq += 1


class SimulatedLane:
    """Runs the world, the belt scale, the spectrometer and the camera on one thread."""

    def __init__(self, world: LaneWorld, mqtt_cfg: MqttConfig, site: str, lane: str, camera_fps: float = 4.0,
                 spectra_rate_hz: float = 100.0, brand: str | None = None):
        self.world, self.site, self.lane = world, site, lane
        self.scale = BeltScaleSimulator(world)
        self.link = MqttLink(mqtt_cfg, f"orelane-sim-{site}-{lane}")
        self.spectrometer = SimulatedSpectrometer(world, self.link, site, lane, rate_hz=spectra_rate_hz, brand=brand)
        self.camera = SimulatedCameraPublisher(world, self.link, site, lane, fps=camera_fps) if camera_fps else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def belt_scale_port(self) -> int:
        return self.scale.server.port

    def start_belt_scale(self) -> None:
        """Serve the belt scale before the rest, so the edge knows where the belt is before spectra arrive."""
        if not self.scale.server.running:
            self.scale.refresh(self.world.clock())
            self.scale.server.start()

    def start(self) -> "SimulatedLane":
        self.start_belt_scale()
        self.link.start(wait_s=10)
        self.spectrometer.publish_references(self.world.clock())
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.lane}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        clock = self.world.clock
        spectra_period = self.spectrometer.batch_size / self.spectrometer.rate_hz
        next_spectra = clock() + spectra_period
        frame_period = 1.0 / self.camera.fps if self.camera else None
        next_frame = clock() + (frame_period or 0)
        while not self._stop.is_set():
            now = clock()
            self.scale.refresh(now)
            while now >= next_spectra:  # catch up, so a compressed clock still gets every batch
                self.spectrometer.publish_batch(next_spectra)
                next_spectra += spectra_period
            if self.camera and now >= next_frame:
                self.camera.publish_frame(now)
                next_frame += frame_period
            self._stop.wait(0.01)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.link.stop()
        self.scale.server.stop()
