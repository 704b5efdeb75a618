"""LaneCore with a simulated clock: radiation alarms, the lot brand check, instrument health alarms,
and out-of-range belt-scale values (real PLC simulator and Modbus servers, no broker)."""

from __future__ import annotations

import numpy as np
import pytest

from edge import camera
from edge.instruments import InstrumentReader
from edge.lane import LaneCore
from orelane import config
from orelane.contract import messages as msg
from orelane.contract.registers import BELT_SCALE
from orelane.modbus_server import RegisterBank
from sampling_robot.driver import SamplerDriver
from sampling_robot.plc_sim import SamplerPlcSimulator
from sampling_robot.registry import SampleRegistry
from spectral import synth
from spectral.model import train_synthetic

LANE = "lane-3"


@pytest.fixture(scope="module")
def instrument():
    return synth.Instrument(synth.wavelength_grid())


@pytest.fixture(scope="module")
def model(instrument):
    return train_synthetic(instrument, np.random.default_rng(7))


@pytest.fixture
def lane_core(tmp_path, instrument, model):
    """A LaneCore on a simulated clock with a real PLC simulator; returns (core, clock, published, plc)."""
    clock = [1_000.0]
    plc = SamplerPlcSimulator(cycle_s=20.0, clock=lambda: clock[0])
    published: list[tuple[str, bytes]] = []
    made = []

    def make(**lane_keys):
        server = plc.serve(scan_interval_s=0.005)
        made.append(server)
        doc = {"site": {"id": "s"}, "lane": [{"id": LANE, "routine_increment_t": 1e9, "cutter_distance_m": 20.0,
                                              "belt_scale": {"host": "127.0.0.1", "port": 1},
                                              "robot": {"host": "127.0.0.1", "port": server.port}, **lane_keys}]}
        lane = config.parse(doc, "<test>", environ={}).lanes[0]
        registry = SampleRegistry(tmp_path / "samples.sqlite")
        robot = SamplerDriver("127.0.0.1", server.port)
        made.extend([registry, robot])
        core = LaneCore("s", lane, model, registry, robot, lambda leaf, p: published.append((leaf, p)),
                        clock=lambda: clock[0])
        w = instrument.wavelengths_nm
        for name, counts in (("dark", instrument.dark_reference()), ("white", instrument.white_reference())):
            core.handle_reference(msg.Reference(LANE, name, clock[0], 5.0, tuple(w), tuple(counts)))
        return core

    yield make, clock, published, plc
    for thing in reversed(made):
        (thing.stop if hasattr(thing, "stop") else thing.close)()


def run_belt(core, clock, seconds, instrument, rng, speed=3.0, brand=None, dose=None, counts_fn=None,
             spectra_per_step=5):
    """Advance the belt by `seconds` in 0.1 s steps, with spectra and (optionally) gamma readings."""
    w = instrument.wavelengths_nm
    seq = getattr(core, "_test_seq", 0)
    for _ in range(int(seconds * 10)):
        clock[0] += 0.1
        latest = core.tracker.latest
        total = (latest.totalizer_t if latest else 0.0) + speed * 0.1 * 0.4
        core.on_belt_reading(clock[0], {"speed_m_s": speed, "totalizer_t": total, "flow_t_h": speed * 1440})
        if dose is not None:
            core.on_radiation_reading({"dose_rate_usv_h": dose(core.tracker.position_at(clock[0])),
                                       "background_usv_h": 0.1, "alarm": 0})
        counts = (counts_fn(spectra_per_step) if counts_fn else
                  instrument.counts(synth.ore_reflectance(w, spectra_per_step, rng, brand), rng))
        times = clock[0] - np.arange(spectra_per_step)[::-1] * 0.1 / spectra_per_step
        core.handle_spectra("spectra/batch", msg.SpectrumBatch(
            LANE, w.astype(np.float32), np.arange(seq, seq + spectra_per_step, dtype=np.uint64),
            (times * 1e9).astype(np.int64), np.full(spectra_per_step, 5000, np.uint32), counts))
        seq += spectra_per_step
        core.step(clock[0])
    core._test_seq = seq


def events_of(published):
    return [msg.ContaminationEvent.from_json(p) for leaf, p in published if leaf == "events"]


def plastic_between(clock, instrument, rng, from_s: float, to_s: float = float("inf")):
    """counts_fn for run_belt: ore with 60 % plastic while the clock is from_s to to_s past 1000 s, else clean."""
    w = instrument.wavelengths_nm

    def counts(n):
        since = clock[0] - 1_000.0
        refl = (synth.mixed_reflectance("plastic", 0.6, w, n, rng) if from_s <= since < to_s
                else synth.ore_reflectance(w, n, rng))
        return instrument.counts(refl, rng)
    return counts


@pytest.mark.parametrize("radiation_cut", [False, True])
def test_radiation_over_threshold_is_an_event_on_the_belt_and_cut_only_if_configured(lane_core, instrument,
                                                                                     radiation_cut):
    make, clock, published, plc = lane_core
    core = make(radiation_threshold_usv_h=0.5, radiation_cut=radiation_cut)
    rng = np.random.default_rng(1)
    hot = lambda x: 2.0 if 30.0 <= x < 31.5 else 0.12  # noqa: E731
    run_belt(core, clock, 30.0, instrument, rng, dose=hot)
    closed = [e for e in events_of(published) if e.state == "closed"]
    assert [e.likely_class for e in closed] == ["radiation"]
    assert closed[0].start_m <= 31.5 and closed[0].end_m >= 30.0
    assert core.health()["radiation_dose_usv_h"] == pytest.approx(0.12)
    targeted = [leaf for leaf, _ in published if leaf == "samples/request"]
    assert len(targeted) == (1 if radiation_cut else 0)


def test_a_gamma_portal_that_cannot_be_read_places_no_alarm_and_raises_a_link_alarm(lane_core):
    make, clock, published, plc = lane_core
    assert make().health()["alarm_radiation_link"] == 0  # a lane without a portal
    core = make(radiation_threshold_usv_h=0.5, radiation={"host": "127.0.0.1", "port": 1})
    core.on_radiation_reading({"dose_rate_usv_h": 2.0, "background_usv_h": 0.1, "alarm": 0})
    assert core.radiation_alarm and core.health()["alarm_radiation_link"] == 0
    core.on_radiation_reading(None)  # the read failed while the dose was high
    assert not core.radiation_alarm and core.health()["alarm_radiation_link"] == 1


def test_a_gamma_portal_answering_nonsense_places_no_alarm_and_raises_a_fault_alarm(lane_core):
    make, clock, published, plc = lane_core
    core = make(radiation_threshold_usv_h=0.5, radiation={"host": "127.0.0.1", "port": 1})
    core.on_radiation_reading({"dose_rate_usv_h": 2.0, "background_usv_h": 0.1, "alarm": 0}, link_up=True)
    assert core.radiation_alarm
    core.on_radiation_reading(None, link_up=True)  # the link works; the values were refused as out of range
    health = core.health()
    assert not core.radiation_alarm and health["alarm_radiation_fault"] == 1 and health["alarm_radiation_link"] == 0
    core.on_radiation_reading({"dose_rate_usv_h": 50.0, "background_usv_h": 0.1, "alarm": 2}, link_up=True)
    assert not core.radiation_alarm and core.health()["alarm_radiation_fault"] == 1  # the portal's own fault
    assert core.health()["radiation_dose_usv_h"] == pytest.approx(2.0)  # the last trusted dose
    core.on_radiation_reading({"dose_rate_usv_h": 0.1, "background_usv_h": 0.1, "alarm": 0}, link_up=True)
    assert core.health()["alarm_radiation_fault"] == 0
    # a dose beyond the portal's range beside its own high alarm: a very hot load, marked (and a fault raised)
    core.on_radiation_reading(None, link_up=True, values_in_range={"background_usv_h": 0.1, "alarm": 1})
    assert core.radiation_alarm and core.health()["alarm_radiation_fault"] == 1


def test_every_numeric_health_field_is_one_the_dashboards_know(lane_core):
    from dashboards import schema
    make, clock, published, plc = lane_core
    health = make().health()
    numeric = {k for k, v in health.items() if isinstance(v, (int, float))}
    assert numeric == set(schema.HEALTH_FIELDS + schema.HEALTH_ALARMS)


@pytest.mark.parametrize("declared, actual, mismatch", [
    ("hematite_lump_63", "hematite_lump_63", False),
    ("hematite_lump_63", "goethite_fines_58", True),
])
def test_lot_whose_ore_is_not_its_declared_brand_raises_a_declaration_mismatch(lane_core, instrument, declared,
                                                                              actual, mismatch):
    make, clock, published, plc = lane_core
    core = make(brand_min_spectra=600)
    core.handle_lot(msg.Lot(LANE, "LOT-9", "MV Test", "V1", declared, 50000.0, "BR", "open", clock[0]))
    run_belt(core, clock, 15.0, instrument, np.random.default_rng(2), brand=actual)
    found = [e for e in events_of(published) if e.likely_class == "declaration_mismatch"]
    assert len(found) == int(mismatch)
    assert core.health()["events"] == len([e for e in events_of(published) if e.state == "closed"])
    if mismatch:
        assert found[0].lot_id == "LOT-9" and found[0].peak_score > 0.5


def test_health_alarms_follow_saturation_lamp_drift_and_reference_age(lane_core, instrument):
    make, clock, published, plc = lane_core
    core = make(reference_max_age_s=60.0)
    assert core.health()["robot_state"] in (-1, 0)
    rng = np.random.default_rng(3)
    run_belt(core, clock, 2.0, instrument, rng)
    h = core.health()
    assert h["spectra_snr"] > 50 and h["alarm_low_snr"] == 0 and h["alarm_saturation"] == 0
    assert h["alarm_reference_stale"] == 0 and h["alarm_lamp_drift"] == 0

    w = instrument.wavelengths_nm
    saturated = lambda n: np.full((n, w.size), 65535, dtype=np.uint16)  # noqa: E731
    run_belt(core, clock, 1.0, instrument, rng, counts_fn=saturated)
    assert core.health()["alarm_saturation"] == 1

    dim = instrument.dark_reference() + 0.8 * (instrument.white_reference() - instrument.dark_reference())
    core.handle_reference(msg.Reference(LANE, "white", clock[0], 5.0, tuple(w), tuple(dim)))
    h = core.health()
    assert h["lamp_drift_fraction"] == pytest.approx(-0.20, abs=0.005) and h["alarm_lamp_drift"] == 1

    clock[0] += 120.0
    assert core.health()["alarm_reference_stale"] == 1


def test_reference_age_is_that_of_the_older_reference(lane_core, instrument):
    make, clock, published, plc = lane_core
    core = make(reference_max_age_s=60.0)
    w = instrument.wavelengths_nm
    clock[0] += 50.0
    core.handle_reference(msg.Reference(LANE, "dark", clock[0], 5.0, tuple(w), tuple(instrument.dark_reference())))
    clock[0] += 20.0  # the white is 70 s old, the dark 20 s
    h = core.health()
    assert h["reference_age_s"] == pytest.approx(70.0) and h["alarm_reference_stale"] == 1


def test_a_camera_that_stops_sending_shows_a_frame_rate_of_zero_and_raises_its_alarm(lane_core):
    make, clock, published, plc = lane_core
    core = make(camera_fps_min=2.0)
    core.on_belt_reading(clock[0], {"speed_m_s": 3.0, "totalizer_t": 0.0, "flow_t_h": 3.0 * 1440})
    cam = camera.SimulatedCamera(width_px=160, height_px=120, rng=np.random.default_rng(4))
    for seq in range(12):
        clock[0] += 0.25
        core.handle_frame(msg.CameraFrame(LANE, seq, int(clock[0] * 1e9), 2.5, cam.frame()[0]))
    h = core.health()
    assert h["camera_fps"] == pytest.approx(4.0) and h["alarm_camera_fps"] == 0
    clock[0] += 4.0  # quiet, but not yet for 5 s
    assert core.health()["camera_fps"] == pytest.approx(4.0)
    clock[0] += 2.0
    h = core.health()
    assert h["camera_fps"] == 0.0 and h["alarm_camera_fps"] == 1
    for seq in range(12, 15):  # the camera is back at 2 frames/s: its rate is of the frames since, not the gap
        clock[0] += 0.5
        core.handle_frame(msg.CameraFrame(LANE, seq, int(clock[0] * 1e9), 2.5, cam.frame()[0]))
    assert core.health()["camera_fps"] == pytest.approx(2.0)


def test_a_faulted_speed_sensor_is_not_trusted_and_raises_the_belt_scale_alarm(lane_core):
    make, clock, published, plc = lane_core
    core = make()
    for _ in range(10):
        clock[0] += 0.1
        core.on_belt_reading(clock[0], {"speed_m_s": 3.0, "totalizer_t": 0.0, "flow_t_h": 3000.0, "status": 1})
    assert core.health()["alarm_belt_scale_fault"] == 0
    position = core.tracker.position_at(clock[0])
    for i in range(10):  # the faulted sensor reads 0: the belt carries on at its last good speed
        clock[0] += 0.1
        core.on_belt_reading(clock[0], {"speed_m_s": 0.0, "totalizer_t": 0.1 * (i + 1), "flow_t_h": 3000.0,
                                        "status": 1 | 2})
    assert core.tracker.position_at(clock[0]) == pytest.approx(position + 3.0)
    assert core.tracker.latest.totalizer_t == pytest.approx(1.0)  # the tonnage still counts for routine sampling
    assert core.health()["alarm_belt_scale_fault"] == 1
    core.on_belt_reading(clock[0] + 0.1, {"speed_m_s": 3.0, "totalizer_t": 0.0, "flow_t_h": 3000.0, "status": 1 | 4})
    assert core.health()["alarm_belt_scale_fault"] == 1  # a load-cell fault: tracked, but the tonnage is doubtful


def test_increments_the_totalizer_jumped_over_give_one_cut_and_are_recorded_missed(lane_core):
    make, clock, published, plc = lane_core
    core = make(routine_increment_t=10.0)
    for gap_s, total in ((0.1, 0.0), (0.1, 1.0), (0.1, 2.0), (30.0, 35.0)):  # 30 s without readings, then 33 t on
        clock[0] += gap_s
        core.on_belt_reading(clock[0], {"speed_m_s": 3.0, "totalizer_t": total, "flow_t_h": 3000.0, "status": 1})
        core.step(clock[0])
    requests = [msg.SampleRequest.from_json(p) for leaf, p in published if leaf == "samples/request"]
    records = [msg.SampleRecord.from_json(p) for leaf, p in published if leaf == "samples/record"]
    assert len(requests) == 3 and all(r.sample_kind == "routine" for r in requests)
    assert sorted(r.status for r in records) == ["cut", "missed", "missed"]  # the first cut went out at once
    missed = [r for r in records if r.status == "missed"]
    assert all("at once" in r.reason for r in missed) and sorted(r.tonnage_t for r in missed) == [10.0, 20.0]
    assert core.counters.cuts_missed == 2 and core.counters.cuts_routine == 1


def test_a_totalizer_jump_the_belt_could_not_carry_is_a_new_count_without_increments(lane_core):
    make, clock, published, plc = lane_core
    core = make(routine_increment_t=10.0, belt_rated_flow_t_h=8000.0)
    for total in (0.0, 1.0, 1e6, 1e6 + 10.0):  # a glitch of a million tonnes in 0.1 s, then 10 t in 5 s
        clock[0] += 0.1 if total < 1e6 + 1 else 5.0
        core.on_belt_reading(clock[0], {"speed_m_s": 3.0, "totalizer_t": total, "flow_t_h": 3000.0, "status": 1})
        core.step(clock[0])
    requests = [msg.SampleRequest.from_json(p) for leaf, p in published if leaf == "samples/request"]
    assert [r.tonnage_t for r in requests] == [1e6 + 10.0]  # 1 + 10 t since the first reading: one increment


def test_a_lane_polling_its_belt_scale_every_2_s_integrates_speed_changes_between_readings(lane_core):
    make, clock, published, plc = lane_core
    core = make(belt_poll_interval_s=2.0)
    core.on_belt_reading(clock[0], {"speed_m_s": 3.0, "totalizer_t": 0.0, "flow_t_h": 3000.0, "status": 1})
    core.on_belt_reading(clock[0] + 2.0, {"speed_m_s": 1.0, "totalizer_t": 0.0, "flow_t_h": 1000.0, "status": 1})
    assert core.tracker.latest.position_m == pytest.approx(4.0)  # the trapezoid, not 2 s at the last speed


def test_a_belt_three_times_as_fast_scores_the_same_share_of_flagged_spectra_as_certain(lane_core, instrument):
    make, clock, published, plc = lane_core
    core = make(results="segments")
    rng = np.random.default_rng(12)
    w = instrument.wavelengths_nm
    run_belt(core, clock, 10.0, instrument, rng, speed=1.0)  # 25 clean spectra a segment

    def two_in_five_plastic(n):  # 40 % of the spectra: certain
        refl = synth.ore_reflectance(w, n, rng)
        refl[:2] = synth.mixed_reflectance("plastic", 1.0, w, 2, rng)
        return instrument.counts(refl, rng)

    published.clear()
    run_belt(core, clock, 10.0, instrument, rng, speed=3.0, counts_fn=two_in_five_plastic)  # about 8 a segment
    fast = [s for s in (msg.SegmentResult.from_json(p) for leaf, p in published if leaf == "results/segments")
            if s.start_m >= 10.0 + 2.0 and s.n_spectra]
    assert len(fast) > 40
    # 3 or 4 flagged of 8-9: 0.78-1.0 against the segment's own count; against half the slow belt's 25 the
    # first dozen fast segments would read 0.47-0.73
    first = [s.nir_score for s in fast[:12]]
    assert min(first) >= 0.75 and np.mean(first) >= 0.85, [(s.n_spectra, s.n_flagged, s.nir_score) for s in fast[:12]]


def test_a_speed_fault_before_any_good_reading_leaves_the_belt_position_unknown(lane_core):
    make, clock, published, plc = lane_core
    core = make()
    core.on_belt_reading(clock[0], {"speed_m_s": 0.0, "totalizer_t": 5.0, "flow_t_h": 3000.0, "status": 1 | 2})
    assert core.tracker.latest is None and core.health()["alarm_belt_scale_fault"] == 1


@pytest.mark.parametrize("values, register", [
    ({"speed_m_s": -1.0, "flow_t_h": 100.0}, "speed_m_s"),
    ({"speed_m_s": 2.0, "flow_t_h": 50000.0}, "flow_t_h"),
])
def test_out_of_range_belt_scale_values_are_refused_naming_the_register(modbus_server, values, register):
    bank = RegisterBank(BELT_SCALE.count)
    for reg in BELT_SCALE.registers:  # raw words, bypassing the encoder's own checks
        if reg.name in values:
            import struct
            hi, lo = struct.unpack(">HH", struct.pack(">f", values[reg.name]))
            bank.input.values[reg.address:reg.address + 2] = [hi, lo]
    server = modbus_server(bank)
    reader = InstrumentReader(config.ModbusEndpoint("127.0.0.1", server.port), BELT_SCALE)
    assert reader.read() is None
    assert register in reader.last_error and reader.link_up
    reader.close()


def test_model_deployment_swaps_the_model_only_when_its_hash_matches(lane_core, instrument, tmp_path):
    make, clock, published, plc = lane_core
    core = make()
    new_model = train_synthetic(instrument, np.random.default_rng(99), model_id="lane-3-v2")
    path = new_model.save(tmp_path / "lane-3-v2.npz")
    before = core.model.version

    wrong = msg.ModelDeployment(LANE, "lane-3-v2", "2", "0" * 64, str(path), clock[0])
    core.handle_message(core.topic("model/deploy"), wrong.to_json())
    assert core.model.version == before
    letters = [msg.DeadLetter.from_json(p) for leaf, p in published if leaf == "deadletter"]
    assert letters and "sha256" in letters[-1].reason

    right = msg.ModelDeployment(LANE, "lane-3-v2", "2", new_model.sha256(), str(path), clock[0])
    core.handle_message(core.topic("model/deploy"), right.to_json())
    assert core.model.version == new_model.version != before


def test_model_deployment_is_refused_when_the_lanes_spectrometer_does_not_cover_its_grid(lane_core, tmp_path):
    make, clock, published, plc = lane_core
    core = make()  # references on the lane's 900-1700 nm grid
    assert core.reference_grid is not None
    longer = synth.Instrument(synth.wavelength_grid(224, 950.0, 1800.0))
    other = train_synthetic(longer, np.random.default_rng(98), model_id="swir-v1")
    path = other.save(tmp_path / "swir-v1.npz")
    before = core.model.version
    core.handle_message(core.topic("model/deploy"),
                        msg.ModelDeployment(LANE, "swir-v1", "1", other.sha256(), str(path), clock[0]).to_json())
    assert core.model.version == before
    letter = [msg.DeadLetter.from_json(p) for leaf, p in published if leaf == "deadletter"][-1]
    assert letter.topic == core.topic("model/deploy")
    assert "does not fit" in letter.reason and f"still scoring with {before}" in letter.reason


def test_spectra_before_the_references_are_held_and_judged_when_both_arrive(tmp_path, instrument, model):
    doc = {"site": {"id": "s"}, "lane": [{"id": LANE, "belt_scale": {"host": "127.0.0.1", "port": 1},
                                          "robot": {"host": "127.0.0.1", "port": 1}}]}
    lane = config.parse(doc, "<test>", environ={}).lanes[0]
    published: list[tuple[str, bytes]] = []
    with SampleRegistry(tmp_path / "s.sqlite") as registry:
        core = LaneCore("s", lane, model, registry, robot=None, publish=lambda leaf, p: published.append((leaf, p)),
                        clock=lambda: 100.0)
        core.on_belt_reading(100.0, {"speed_m_s": 3.0, "totalizer_t": 0.0, "flow_t_h": 4000.0})
        w = instrument.wavelengths_nm
        rng = np.random.default_rng(4)
        batch = msg.SpectrumBatch(LANE, w.astype(np.float32), np.arange(10, dtype=np.uint64),
                                  np.full(10, 100 * 10**9, np.int64), np.full(10, 5000, np.uint32),
                                  instrument.counts(synth.ore_reflectance(w, 10, rng), rng))
        core.handle_spectra("spectra/batch", batch)
        assert core.counters.spectra_in == 0 and "deadletter" not in [leaf for leaf, _ in published]  # held
        core.handle_reference(msg.Reference(LANE, "white", 100.0, 5.0, tuple(w), tuple(instrument.white_reference())))
        assert core.counters.spectra_in == 0
        core.handle_reference(msg.Reference(LANE, "dark", 100.0, 5.0, tuple(w), tuple(instrument.dark_reference())))
        assert core.counters.spectra_classified == 10 and core.counters.spectra_rejected == 0
        assert [leaf for leaf, _ in published if leaf != "belt"] == ["results/spectra"]


def test_an_event_longer_than_the_cutter_distance_is_cut_on_its_peak_while_still_open(lane_core, instrument):
    make, clock, published, plc = lane_core
    core = make()  # cutter 20 m from the sensors; the belt runs at 3 m/s
    rng = np.random.default_rng(6)
    plastic_from_5_to_25_s = plastic_between(clock, instrument, rng, 5.0, 25.0)  # 60 m of contaminated ore

    run_belt(core, clock, 35.0, instrument, rng, counts_fn=plastic_from_5_to_25_s)
    events = [e for e in events_of(published) if e.state == "closed"]
    assert len(events) == 1 and events[0].end_m - events[0].start_m > 50.0
    records = [msg.SampleRecord.from_json(p) for leaf, p in published if leaf == "samples/record"]
    targeted = [r for r in records if r.sample_kind == "targeted" and r.status in ("cut", "missed")]
    assert [r.status for r in targeted] == ["cut"], [(r.status, r.reason) for r in targeted]
    assert targeted[0].event_id == events[0].event_id
    assert abs(targeted[0].belt_position_m - events[0].peak_position_m) <= 0.5


def test_the_daemon_is_woken_where_an_open_event_s_cut_must_be_requested(lane_core, instrument):
    make, clock, published, plc = lane_core
    core = make()  # cutter 20 m, reaction 1 s, belt at 3 m/s: an open event's cut is requested 2 m before 17 m on
    rng = np.random.default_rng(6)
    plastic_from_5_s = plastic_between(clock, instrument, rng, 5.0)

    run_belt(core, clock, 8.0, instrument, rng, counts_fn=plastic_from_5_s)
    ev = core.events.current
    assert ev is not None and ev.announced and not ev.cut_requested
    due_s = core.next_cut_due_s(clock[0])
    lead_m = ev.peak_position_m + 20.0 - 3.0 * 1.0 - 2.0
    assert due_s == pytest.approx(clock[0] + (lead_m - core.tracker.position_at(clock[0])) / 3.0, abs=0.01)


def test_a_routine_increment_falling_due_while_an_event_is_open_waits_for_the_event_s_cut(lane_core,
                                                                                                   instrument):
    make, clock, published, plc = lane_core
    # the first increment falls due 8 s in: after the event opened at 15 m (5 s), before its cut is due (~10 s)
    core = make(routine_increment_t=9.6, robot_cycle_s=20.0)
    rng = np.random.default_rng(6)
    plastic_from_5_to_25_s = plastic_between(clock, instrument, rng, 5.0, 25.0)

    run_belt(core, clock, 60.0, instrument, rng, counts_fn=plastic_from_5_to_25_s)
    records = [msg.SampleRecord.from_json(p) for leaf, p in published if leaf == "samples/record"]
    targeted = [r for r in records if r.sample_kind == "targeted" and r.status in ("cut", "missed")]
    assert [r.status for r in targeted] == ["cut"], [(r.status, r.reason) for r in targeted]
    assert any(r.sample_kind == "routine" and r.status == "cut" for r in records)  # routine sampling went on


@pytest.mark.parametrize("camera_offset_m", [0.0, 3.0])
def test_a_camera_downstream_of_the_spectrometer_places_objects_that_far_back_and_none_too_late(
        lane_core, instrument, camera_offset_m):
    make, clock, published, plc = lane_core
    core = make(camera_offset_m=camera_offset_m)
    rng = np.random.default_rng(8)
    run_belt(core, clock, 5.0, instrument, rng)
    cam = camera.SimulatedCamera(rng=np.random.default_rng(9))
    wood = camera.SceneObject("wood", 0.8, 0.6, 0.15, 0.2)  # in the middle of the frame
    core.handle_frame(msg.CameraFrame(LANE, 1, int(clock[0] * 1e9), 2.5, cam.frame([wood])[0]))
    (result,) = [msg.FrameResult.from_json(p) for leaf, p in published if leaf == "results/frames"]
    found = max(result.objects, key=lambda o: o["score"])
    assert found["along_m"] == pytest.approx(core.tracker.position_at(clock[0]) - camera_offset_m, abs=0.03)
    assert result.belt_position_m == pytest.approx(core.tracker.position_at(clock[0]) - camera_offset_m)
    assert core.counters.late_objects == 0  # its segment waited for the camera
    run_belt(core, clock, 5.0, instrument, rng)
    assert any(e.state == "closed" for e in events_of(published))  # the wood, on the camera alone


def test_a_lane_set_to_segments_publishes_one_aggregate_per_settled_segment_instead_of_spectra(lane_core,
                                                                                              instrument):
    make, clock, published, plc = lane_core
    core = make(results="segments", segment_length_m=0.5)
    rng = np.random.default_rng(5)
    plastic_between_10_and_13_s = plastic_between(clock, instrument, rng, 10.0, 13.0)

    run_belt(core, clock, 25.0, instrument, rng, counts_fn=plastic_between_10_and_13_s)
    assert not [leaf for leaf, _ in published if leaf == "results/spectra"]
    segments = [msg.SegmentResult.from_json(p) for leaf, p in published if leaf == "results/segments"]
    assert segments and all(s.end_m - s.start_m == pytest.approx(0.5) for s in segments)
    starts = [s.start_m for s in segments]
    assert starts == sorted(starts) and len(set(starts)) == len(starts), "each segment once, in belt order"
    # every classified spectrum is on exactly one segment, until the last stretch that has not settled yet
    on_segments = sum(s.n_spectra for s in segments)
    assert 0 < core.counters.spectra_classified - on_segments <= 5 * 10 * 2  # < 2 s of spectra still open
    seqs = sorted((s.seq_first, s.seq_last) for s in segments if s.n_spectra)
    assert all(a[1] < b[0] for a, b in zip(seqs, seqs[1:])), "seq ranges do not overlap"
    hot = [s for s in segments if s.score > 0.5]
    assert hot and {s.likely_class for s in hot} == {"plastic"}
    assert min(s.start_m for s in hot) >= 3.0 * 9.5 and max(s.end_m for s in hot) <= 3.0 * 13.5
    assert all(s.n_flagged <= 0.2 * s.n_spectra for s in segments if s.end_m < 3.0 * 9.5)


def test_spectra_delivered_late_are_still_fused_on_their_segments_and_a_lone_flag_opens_no_event(lane_core,
                                                                                                  instrument):
    """The daemon polls the belt scale on time but may handle queued spectra a few tenths of a second late
    (a camera frame being searched, a loaded host, the compressed clock of the soak). Segments must wait for
    their spectra: handed over with only the first few, a segment's one stray flagged spectrum is a share of
    25-100 % and opens a false event (the soak's extra 0.5 m events)."""
    make, clock, published, plc = lane_core
    core = make()
    rng = np.random.default_rng(6)
    w = instrument.wavelengths_nm
    stray = instrument.counts(synth.mixed_reflectance("plastic", 1.0, w, 1, rng), rng)[0]
    assert core.model.score(stray[None, :], core.dark, core.white).decision[0] > 0
    ore = instrument.counts(synth.ore_reflectance(w, 7000, rng), rng)
    ore = ore[core.model.score(ore, core.dark, core.white).decision == 0]  # the strays are the only flags
    pending: list[tuple[float, msg.SpectrumBatch]] = []
    seq = 0
    for step in range(1200):  # 120 s at 3 m/s, spectra at 50 Hz in batches of 5
        clock[0] += 0.1
        latest = core.tracker.latest
        total = (latest.totalizer_t if latest else 0.0) + 3.0 * 0.1 * 0.4
        core.on_belt_reading(clock[0], {"speed_m_s": 3.0, "totalizer_t": total, "flow_t_h": 3.0 * 1440})
        counts = ore[5 * step:5 * step + 5].copy()
        if step % 37 == 10:  # one stray flag every 11 m or so, at every phase of the batches and segments
            counts[step % 5] = stray
        times = clock[0] - np.arange(5)[::-1] * 0.02
        delay_s = (0.05, 0.25, 0.45, 0.6)[step % 4]  # handled 0.05-0.6 s after the last spectrum was taken
        pending.append((clock[0] + delay_s, msg.SpectrumBatch(
            LANE, w.astype(np.float32), np.arange(seq, seq + 5, dtype=np.uint64), (times * 1e9).astype(np.int64),
            np.full(5, 5000, np.uint32), counts)))
        seq += 5
        while pending and pending[0][0] <= clock[0] + 1e-9:  # in order, as the broker delivers them
            core.handle_spectra("spectra/batch", pending.pop(0)[1])
        core.step(clock[0])
    assert core.counters.late_spectra == 0
    assert core.counters.spectra_flagged == 33
    assert [e for e in events_of(published) if e.state == "closed"] == []


def test_a_belt_scale_flow_above_the_belt_s_rating_is_refused_and_counted(lane_core, caplog):
    make, clock, published, plc = lane_core
    core = make(belt_rated_flow_t_h=8000.0)
    for _ in range(10):
        clock[0] += 0.1
        core.on_belt_reading(clock[0], {"speed_m_s": 4.0, "totalizer_t": 1.0, "flow_t_h": 6000.0, "status": 1})
    position = core.tracker.latest.position_m
    for _ in range(3):
        clock[0] += 0.1
        core.on_belt_reading(clock[0], {"speed_m_s": 0.5, "totalizer_t": 1.0, "flow_t_h": 9500.0, "status": 1})
    assert core.tracker.latest.position_m == position  # the reading did not reach belt tracking
    assert core.health()["belt_readings_refused"] == 3
    refusals = [r.getMessage() for r in caplog.records if "belt-scale reading refused" in r.getMessage()]
    assert len(refusals) == 1 and "9500 t/h" in refusals[0] and "belt_rated_flow_t_h" in refusals[0]


def test_the_daemon_counts_a_refused_belt_reading_and_faults_a_portal_answering_nonsense(modbus_server, model,
                                                                                         tmp_path):
    import struct

    from edge.daemon import LaneDaemon
    from orelane.contract.registers import RADIATION_PORTAL

    def raw_f32(bank, regmap, name, value):  # words the encoder itself would refuse
        reg = next(r for r in regmap.registers if r.name == name)
        bank.input.values[reg.address:reg.address + 2] = list(struct.unpack(">HH", struct.pack(">f", value)))

    scale = RegisterBank(BELT_SCALE.count)
    scale.set_input(BELT_SCALE, {"speed_m_s": 4.0, "flow_t_h": 5000.0, "totalizer_t": 10.0, "status": 1})
    portal = RegisterBank(RADIATION_PORTAL.count)
    portal.set_input(RADIATION_PORTAL, {"dose_rate_usv_h": 0.1, "background_usv_h": 0.1, "alarm": 0})
    scale_server, portal_server = modbus_server(scale), modbus_server(portal)
    doc = {"site": {"id": "s", "data_dir": str(tmp_path)}, "mqtt": {"host": "127.0.0.1", "port": 1},
           "lane": [{"id": LANE, "belt_scale": {"host": "127.0.0.1", "port": scale_server.port},
                     "radiation": {"host": "127.0.0.1", "port": portal_server.port},
                     "robot": {"host": "127.0.0.1", "port": 1, "timeout_s": 0.2}}]}
    site = config.parse(doc, "<test>", environ={})
    registry = SampleRegistry(tmp_path / "samples.sqlite")
    daemon = LaneDaemon(site, site.lanes[0], model, registry)
    try:
        daemon.poll_instruments()
        assert daemon.core.tracker.latest is not None
        raw_f32(scale, BELT_SCALE, "speed_m_s", -1.0)
        raw_f32(portal, RADIATION_PORTAL, "dose_rate_usv_h", 2e5)
        daemon.poll_instruments()
        health = daemon.core.health()
        assert health["belt_readings_refused"] == 1 and health["alarm_belt_link"] == 0
        assert health["alarm_radiation_fault"] == 1 and health["alarm_radiation_link"] == 0
        assert not daemon.core.radiation_alarm
        portal.set_input(RADIATION_PORTAL, {"alarm": 1})  # the portal's own high alarm beside the saturated dose
        daemon.poll_instruments()
        assert daemon.core.radiation_alarm and daemon.core.health()["alarm_radiation_fault"] == 1
    finally:
        daemon.robot.close()
        daemon.belt_scale.close()
        daemon.radiation.close()
        registry.close()


@pytest.mark.parametrize("stamp", ["1970", "an hour ahead"])
def test_evidence_stamped_far_from_the_edge_s_clock_is_refused_naming_the_clock(lane_core, instrument, stamp):
    make, clock, published, plc = lane_core
    core = make()
    rng = np.random.default_rng(14)
    run_belt(core, clock, 2.0, instrument, rng)
    t_ns = int(5e9) if stamp == "1970" else int((clock[0] + 3600.0) * 1e9)
    w = instrument.wavelengths_nm
    counts = instrument.counts(synth.ore_reflectance(w, 3, rng), rng)
    core.handle_spectra("spectra/batch", msg.SpectrumBatch(
        LANE, w.astype(np.float32), np.arange(10_000, 10_003, dtype=np.uint64), np.full(3, t_ns, np.int64),
        np.full(3, 5000, np.uint32), counts))
    cam = camera.SimulatedCamera(width_px=160, height_px=120, rng=np.random.default_rng(4))
    core.handle_frame(msg.CameraFrame(LANE, 1, t_ns, 2.5, cam.frame()[0]))
    run_belt(core, clock, 2.0, instrument, rng)  # settling goes on as before (it would not end for 1970)
    letters = [msg.DeadLetter.from_json(p) for leaf, p in published if leaf == "deadletter"]
    assert len(letters) == 4 and all("the edge's clock" in d.reason for d in letters)
    assert core.counters.spectra_rejected == 3 and core.counters.frames_rejected == 1


def test_a_model_with_other_brands_deployed_mid_lot_keeps_judging_and_keeps_votes_by_name(lane_core, instrument,
                                                                                       tmp_path):
    make, clock, published, plc = lane_core
    core = make(brand_min_spectra=10**6)
    core.handle_lot(msg.Lot(LANE, "LOT-9", "MV Test", "V1", "hematite_lump_63", 50000.0, "BR", "open", clock[0]))
    rng = np.random.default_rng(15)
    run_belt(core, clock, 3.0, instrument, rng, brand="hematite_lump_63")
    before = dict(zip(core.model.brand_names, core._brand_votes))
    new_model = train_synthetic(instrument, np.random.default_rng(99), model_id="lane-3-v2",
                                brands=("goethite_fines_58", "hematite_lump_63", "magnetite_concentrate_66"))
    core.handle_deployment(msg.ModelDeployment(LANE, "lane-3-v2", "2", new_model.sha256(),
                                               str(new_model.save(tmp_path / "v2.npz")), clock[0]))
    assert core.model.version == new_model.version
    assert dict(zip(new_model.brand_names, core._brand_votes)) == {b: before[b] for b in new_model.brand_names}
    judged = core.counters.spectra_classified
    run_belt(core, clock, 2.0, instrument, rng)
    assert core.counters.spectra_classified == judged + 100  # every batch still judged


def test_a_lot_message_delivered_again_does_not_restart_the_lot_s_brand_check(lane_core, instrument):
    make, clock, published, plc = lane_core
    core = make(brand_min_spectra=600)
    lot = msg.Lot(LANE, "LOT-9", "MV Test", "V1", "hematite_lump_63", 50000.0, "BR", "open", clock[0])
    core.handle_lot(lot)
    run_belt(core, clock, 15.0, instrument, np.random.default_rng(2), brand="goethite_fines_58")
    core.handle_lot(lot)  # the retained message again, after a reconnection
    run_belt(core, clock, 15.0, instrument, np.random.default_rng(3), brand="goethite_fines_58")
    assert len([e for e in events_of(published) if e.likely_class == "declaration_mismatch"]) == 1


def test_a_cut_requested_before_the_first_plc_poll_is_not_settled_as_left_over_from_an_earlier_run(lane_core):
    make, clock, published, plc = lane_core
    core = make()
    core.on_belt_reading(clock[0], {"speed_m_s": 3.0, "totalizer_t": 0.0, "flow_t_h": 3000.0, "status": 1})
    core._request_cut("targeted", 50.0, 1.0, "ev-1")  # before the PLC has answered once (it was not reachable)
    core.poll_robot()  # the first answer: samples left open by an earlier run are settled now
    (sample,) = core.registry.samples()
    assert sample.status == "requested" and [c.sample_id for c in core.scheduler.pending] == [sample.sample_id]


def test_polls_of_an_unreachable_plc_back_off_so_the_lane_keeps_up(lane_core, caplog):
    from tests.servers import free_port
    make, clock, published, plc = lane_core
    core = make()
    core.robot = SamplerDriver("127.0.0.1", free_port(), timeout_s=0.1)
    try:
        for _ in range(100):  # 10 s of steps
            clock[0] += 0.1
            core.on_belt_reading(clock[0], {"speed_m_s": 3.0, "totalizer_t": 0.0, "flow_t_h": 3000.0, "status": 1})
            core.step(clock[0])
    finally:
        core.robot.close()
    polls = [r for r in caplog.records if "(attempt 1)" in r.getMessage()]
    assert 2 <= len(polls) <= 6, len(polls)  # every 0.5 s it would be 20
    assert core.health()["alarm_robot_link"] == 1


def test_ore_is_labelled_with_the_lot_it_came_in_even_after_the_next_lot_opened(lane_core, instrument):
    make, clock, published, plc = lane_core
    core = make()
    rng = np.random.default_rng(16)
    core.on_belt_reading(clock[0], {"speed_m_s": 3.0, "totalizer_t": 0.0, "flow_t_h": 3000.0, "status": 1})
    core.handle_lot(msg.Lot(LANE, "LOT-A", "MV A", "V1", "hematite_lump_63", 50000.0, "BR", "open", clock[0]))
    run_belt(core, clock, 5.0, instrument, rng)  # 15 m of LOT-A
    core.handle_lot(msg.Lot(LANE, "LOT-A", "MV A", "V1", "hematite_lump_63", 50000.0, "BR", "closed", clock[0]))
    core.handle_lot(msg.Lot(LANE, "LOT-B", "MV B", "V2", "hematite_lump_63", 50000.0, "BR", "open", clock[0]))
    run_belt(core, clock, 2.0, instrument, rng)
    core._request_cut("targeted", 10.0, 1.0, "ev-a")  # ore of LOT-A, cut after LOT-B opened
    core._request_cut("targeted", 17.0, 1.0, "ev-b")
    requests = [msg.SampleRequest.from_json(p) for leaf, p in published if leaf == "samples/request"]
    assert [r.lot_id for r in requests] == ["LOT-A", "LOT-B"]
    assert [core.registry.sample(r.sample_id).vessel for r in requests] == ["MV A", "MV B"]


def test_a_running_belt_without_spectra_raises_the_silent_spectrometer_alarm(lane_core, instrument):
    make, clock, published, plc = lane_core
    core = make()
    run_belt(core, clock, 2.0, instrument, np.random.default_rng(17))
    assert core.health()["alarm_spectra_silent"] == 0
    for _ in range(95):  # 9.5 s of belt, no spectra
        clock[0] += 0.1
        core.on_belt_reading(clock[0], {"speed_m_s": 3.0, "totalizer_t": 0.0, "flow_t_h": 3000.0, "status": 1})
    assert core.health()["alarm_spectra_silent"] == 0
    clock[0] += 0.6
    core.on_belt_reading(clock[0], {"speed_m_s": 3.0, "totalizer_t": 0.0, "flow_t_h": 3000.0, "status": 1})
    assert core.health()["alarm_spectra_silent"] == 1
    core.on_belt_reading(clock[0] + 0.1, {"speed_m_s": 0.0, "totalizer_t": 0.0, "flow_t_h": 0.0, "status": 1})
    assert core.health()["alarm_spectra_silent"] == 0  # a stopped belt carries no ore to judge
