"""One lane end to end against a real Mosquitto and real Modbus TCP servers (belt scale, sampler PLC).

Every injected patch must yield one event and one targeted cut that lands on the
patch, and every spectrum published must be in the store: classified, or
rejected with a reason.
"""

from __future__ import annotations

import math

import numpy as np
import paho.mqtt.client as mqtt

from edge.simulated_lane import Patch
from ingest.store import EmbeddedStore
from orelane import demo
from orelane.config import MqttConfig
from orelane.contract import messages as msg, topics
from sampling_robot.registry import SampleRegistry

CUTTER_M = 20.0
REACTION_S = 0.5  # what orelane.demo configures
PATCHES = [Patch("plastic", 30.0, 0.8, fraction=0.8), Patch("wood", 75.0, 1.0, fraction=0.8),
           Patch("rubber", 120.0, 1.0, fraction=0.9)]
INJECTED_SEQ = 50_000_000


def inject_bad_spectra(mqtt_cfg: MqttConfig, lane_sim) -> dict[int, str]:
    """Publish spectra the edge must refuse, with known sequence numbers; returns seq -> expected reason."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-injector")
    client.connect(mqtt_cfg.host, mqtt_cfg.port)
    client.loop_start()
    grid = lane_sim.spectrometer.instrument.wavelengths_nm.astype(np.float32)
    # clean ore, so the two good rows are judged clean and open no event of their own
    counts = lane_sim.spectrometer.spectra_at(np.full(3, lane_sim.world.t0)).astype(np.float32)
    counts[1, 7] = np.nan
    now_ns = int(lane_sim.world.t0 * 1e9)  # integer ns: float ns near 1.8e18 has a 256 ns grain
    nan_batch = msg.SpectrumBatch(demo.DEMO_LANE, grid, np.arange(INJECTED_SEQ, INJECTED_SEQ + 3, dtype=np.uint64),
                                  np.full(3, now_ns, dtype=np.int64) + np.arange(3), np.full(3, 5000, np.uint32),
                                  counts)
    other_grid = np.linspace(950, 1650, 128).astype(np.float32)
    grid_batch = msg.SpectrumBatch(demo.DEMO_LANE, other_grid,
                                   np.arange(INJECTED_SEQ + 10, INJECTED_SEQ + 12, dtype=np.uint64),
                                   np.full(2, now_ns + 100, dtype=np.int64) + np.arange(2),
                                   np.full(2, 5000, np.uint32), np.full((2, 128), 9000, dtype=np.uint16))
    topic = topics.topic(demo.DEMO_SITE, demo.DEMO_LANE, "spectra/batch")
    for payload in (nan_batch.to_bytes(), grid_batch.to_bytes(), b"\x00garbage that is no batch"):
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()
    return {INJECTED_SEQ + 1: "NaN", INJECTED_SEQ + 10: "wavelength grid", INJECTED_SEQ + 11: "wavelength grid"}


def test_every_patch_is_sampled_and_every_spectrum_accounted_for(mosquitto, tmp_path):
    mqtt_cfg = MqttConfig(host=mosquitto.host, port=mosquitto.port)
    handles: dict = {}

    def started(h):
        handles.update(h)
        handles["injected"] = inject_bad_spectra(mqtt_cfg, h["lane_sim"])

    summary = demo.run_lane(mqtt_cfg, tmp_path, patches=PATCHES, cutter_distance_m=CUTTER_M, plc_cycle_s=3.0,
                            routine_increment_t=30.0, on_started=started, camera_fps=4.0)
    world, plc = handles["world"], handles["plc"]

    # one event per patch, of the patch's class
    assert [e.likely_class for e in summary.events] == [p.material for p in PATCHES], summary.render()
    assert summary.cuts_targeted == len(PATCHES) and summary.cuts_missed == 0
    assert summary.cuts_routine >= 1

    registry = SampleRegistry(tmp_path / "samples.sqlite")
    samples = registry.samples()
    targeted = [s for s in samples if s.kind == "targeted"]
    assert sorted(s.event_id for s in targeted) == sorted(e.event_id for e in summary.events)

    # each targeted cut landed on its patch: where was the patch when the cutter crossed the stream?
    cycles = {c.sample_id: c for c in plc.cycles}
    for sample, patch in zip(sorted(targeted, key=lambda s: s.sample_id), PATCHES):
        cycle = cycles[sample.sample_id]
        landed_m = world.position_at(cycle.started_s + REACTION_S) - CUTTER_M
        assert patch.start_m - 0.5 <= landed_m <= patch.end_m + 0.5, (patch, landed_m)

    # every sample the registry holds as cut or sealed matches exactly one PLC cycle, and vice versa
    cut_ids = {s.sample_id for s in samples if s.status in ("cut", "sealed")}
    assert cut_ids == {c.sample_id for c in plc.cycles}
    assert all(plc.cuts_of(i) == 1 for i in cut_ids)

    # every published spectrum is in the store exactly once: classified or rejected with a reason
    store = EmbeddedStore(tmp_path / "orelane-points.sqlite")
    classified = [p.fields["seq"] for p in store.points("spectrum_result")]
    rejected = {p.fields["seq"]: p.fields["reason"] for p in store.points("spectrum_rejected")}
    assert len(classified) == len(set(classified))
    published = set(range(summary.spectra_published)) | {INJECTED_SEQ + i for i in (0, 1, 2, 10, 11)}
    assert set(classified) | set(rejected) >= published
    assert not set(classified) & set(rejected)
    for seq, expected in handles["injected"].items():
        assert expected in rejected[seq]
    assert {INJECTED_SEQ, INJECTED_SEQ + 2} <= set(classified)  # the NaN row's neighbours were judged
    assert -1 in rejected and "ORLB" in rejected[-1]  # the garbage message, refused unread
    assert summary.spectra_classified + summary.spectra_rejected == summary.spectra_published + 6

    # belt and tonnage made it to the store too
    belt = list(store.points("belt"))
    assert belt and math.isclose(max(p.fields["totalizer_t"] for p in belt), summary.tonnage_t, rel_tol=0.1)
