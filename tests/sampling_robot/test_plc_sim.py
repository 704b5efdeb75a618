"""The simulated sampler PLC, scanned with explicit times and written to as the Modbus server would."""

from __future__ import annotations

import pytest

from orelane.contract.registers import COMMAND_CUT, COMMAND_NONE, COMMAND_RESET, KIND_CODES, SAMPLER_COMMAND
from sampling_robot.plc_sim import SamplerPlcSimulator

T0 = 100.0


def command(sim: SamplerPlcSimulator, seq: int, sample_id: int = 0, kind: str = "targeted",
            code: int = COMMAND_CUT, edge_heartbeat: int = 0) -> None:
    sim.receive_write(0, SAMPLER_COMMAND.encode({"edge_heartbeat": edge_heartbeat, "command": code,
                                                 "command_seq": seq, "sample_id": sample_id,
                                                 "sample_kind": KIND_CODES.get(kind, 0)}))


@pytest.fixture
def sim() -> SamplerPlcSimulator:
    s = SamplerPlcSimulator(cycle_s=30.0, carousel_capacity=24, clock=lambda: T0)
    s.tick(T0)
    return s


def cut(sim: SamplerPlcSimulator, seq: int, sample_id: int, at_s: float, kind: str = "targeted") -> str:
    command(sim, seq, sample_id, kind)
    sim.tick(at_s)
    return sim.status().command_result


@pytest.mark.parametrize("elapsed_s, state", [
    (0.0, "cutting"), (4.4, "cutting"), (4.5, "dividing"), (17.9, "dividing"), (18.0, "sealing"),
    (23.9, "sealing"), (24.0, "placing"), (29.9, "placing"), (30.0, "idle"), (300.0, "idle")])
def test_cycle_passes_cutting_dividing_sealing_placing_then_idle(sim, elapsed_s, state):
    assert cut(sim, 1, 42, T0) == "accepted"
    sim.tick(T0 + elapsed_s)
    status = sim.status()
    assert status.state == state
    assert status.active_sample_id == (0 if state == "idle" else 42)
    assert status.last_sealed_sample_id == (42 if state == "idle" else 0)


def test_completed_cycle_is_counted_and_recorded_with_its_times(sim):
    cut(sim, 1, 42, T0, kind="routine")
    sim.tick(T0 + 3600.0)  # one long scan gap still completes the cycle at started + cycle_s
    status = sim.status()
    assert (status.cycles_completed, status.carousel_used, status.accepted_seq) == (1, 1, 1)
    (record,) = sim.completed_cycles
    assert (record.sample_id, record.kind, record.command_seq) == (42, "routine", 1)
    assert (record.started_s, record.sealed_s, record.aborted) == (T0, T0 + 30.0, "")


def test_repeated_seq_is_ignored_and_never_cuts_twice(sim):
    cut(sim, 7, 42, T0)
    sim.tick(T0 + 31)
    assert cut(sim, 7, 42, T0 + 32) == "accepted"  # the old result stands; nothing new happens
    sim.tick(T0 + 100)
    assert sim.cuts_of(42) == 1
    assert sim.status().state == "idle"


def test_busy_command_is_refused_and_not_taken_when_the_plc_becomes_idle(sim):
    cut(sim, 1, 42, T0)
    assert cut(sim, 2, 43, T0 + 5) == "busy"
    assert sim.status().accepted_seq == 1
    sim.tick(T0 + 31)
    sim.tick(T0 + 100)
    assert sim.cuts_of(43) == 0
    assert cut(sim, 3, 43, T0 + 101) == "accepted"


def test_new_command_write_clears_the_previous_result_until_the_next_scan(sim):
    cut(sim, 1, 42, T0)
    command(sim, 2, 43)
    assert sim.status().command_result == "none"
    sim.tick(T0 + 1)
    assert sim.status().command_result == "busy"


@pytest.mark.parametrize("code, sample_id, kind", [(COMMAND_CUT, 0, "targeted"), (COMMAND_CUT, 5, "unknown"),
                                                   (9, 5, "targeted")])
def test_malformed_command_is_answered_bad_command(sim, code, sample_id, kind):
    command(sim, 1, sample_id, kind, code=code)
    sim.tick(T0 + 1)
    status = sim.status()
    assert (status.command_result, status.accepted_seq, status.state) == ("bad command", 0, "idle")


def test_command_none_with_a_new_seq_does_nothing(sim):
    command(sim, 1, 42, code=COMMAND_NONE)
    sim.tick(T0 + 1)
    assert (sim.status().command_result, sim.cycles) == ("none", [])


@pytest.mark.parametrize("fault", ["jam", "door open"])
def test_machine_fault_aborts_the_cycle_and_refuses_cuts_until_reset(sim, fault):
    cut(sim, 1, 42, T0)
    sim.inject_fault(fault, now=T0 + 10)
    status = sim.status()
    assert (status.state, status.fault, status.active_sample_id) == ("faulted", fault, 42)
    assert sim.cycles[0].aborted == fault and sim.cycles[0].sealed_s is None
    assert cut(sim, 2, 43, T0 + 11) == "faulted"
    command(sim, 3, code=COMMAND_RESET)
    sim.tick(T0 + 12)
    status = sim.status()
    assert (status.state, status.fault, status.command_result, status.accepted_seq) == ("idle", "none", "accepted", 3)
    assert status.active_sample_id == 0 and status.last_sealed_sample_id == 0
    assert cut(sim, 4, 43, T0 + 13) == "accepted"


def test_reset_at_the_panel_clears_a_jam_and_leaves_the_command_block_alone(sim):
    cut(sim, 1, 42, T0)
    sim.inject_fault("jam", now=T0 + 10)
    sim.reset_at_panel(now=T0 + 11)
    status = sim.status()
    assert (status.state, status.fault, status.active_sample_id, status.accepted_seq) == ("idle", "none", 0, 1)
    assert cut(sim, 2, 43, T0 + 12) == "accepted", "the edge's next seq is still free"


def test_unknown_fault_cannot_be_injected(sim):
    with pytest.raises(ValueError, match="'flood'.*jam"):
        sim.inject_fault("flood")


def test_full_carousel_refuses_cuts_and_reset_until_emptied():
    sim = SamplerPlcSimulator(cycle_s=10.0, carousel_capacity=2, clock=lambda: 0.0)
    for i, t in enumerate((0.0, 20.0), start=1):
        assert cut(sim, i, 100 + i, t) == "accepted"
        sim.tick(t + 10)
    status = sim.status()
    assert (status.state, status.fault, status.carousel_used) == ("faulted", "carousel full", 2)
    assert cut(sim, 3, 103, 50.0) == "faulted"
    command(sim, 4, code=COMMAND_RESET)
    sim.tick(51.0)
    assert (sim.status().command_result, sim.status().fault) == ("faulted", "carousel full")
    sim.empty_carousel(now=52.0)
    assert (sim.status().fault, sim.status().carousel_used) == ("none", 0)
    assert cut(sim, 5, 103, 53.0) == "accepted"


def test_power_loss_mid_cycle_loses_the_sample_but_keeps_accepted_seq(sim):
    cut(sim, 1, 42, T0)
    sim.tick(T0 + 31)  # sample 42 sealed
    cut(sim, 2, 43, T0 + 40)
    sim.power_loss(now=T0 + 50)  # 43 is dividing
    status = sim.status()
    assert (status.state, status.fault, status.active_sample_id) == ("power-up", "power loss", 0)
    assert (status.accepted_seq, status.last_sealed_sample_id, status.carousel_used) == (2, 42, 1)
    assert (status.cycles_completed, status.plc_heartbeat) == (0, 0)
    sim.tick(T0 + 50 + sim.power_up_s)
    assert (sim.status().state, sim.status().fault) == ("idle", "power loss")
    # the edge retries seq 2 after the power comes back: ignored, reads as accepted, nothing is cut
    command(sim, 2, 43)
    sim.tick(T0 + 60)
    assert sim.status().accepted_seq == 2 and sim.cuts_of(43) == 1
    assert sim.cycles[-1].aborted == "power loss" and sim.cycles[-1].sealed_s is None
    assert cut(sim, 3, 44, T0 + 61) == "faulted"
    command(sim, 4, code=COMMAND_RESET)
    sim.tick(T0 + 62)
    assert cut(sim, 5, 44, T0 + 63) == "accepted"


def test_commands_wait_while_the_plc_powers_up(sim):
    sim.power_loss(now=T0)
    command(sim, 1, code=COMMAND_RESET)
    sim.tick(T0 + 1)
    assert sim.status().command_result == "none"
    sim.tick(T0 + sim.power_up_s)
    assert (sim.status().command_result, sim.status().fault) == ("accepted", "none")


@pytest.mark.parametrize("times, beats", [((0.0,), 0), ((0.5,), 0), ((1.0,), 1), ((0.5, 1.2, 3.7), 3),
                                          ((65536.0,), 0), ((2.0, 1.0), 2)])
def test_plc_heartbeat_counts_whole_seconds(times, beats):
    sim = SamplerPlcSimulator(clock=lambda: 0.0)
    sim.tick(0.0)
    for t in times:
        sim.tick(t)
    assert sim.status().plc_heartbeat == beats


def test_watchdog_trips_when_edge_heartbeat_stops_and_clears_when_it_returns(sim):
    for i in range(1, 7):  # a heartbeat every 5 s for 30 s
        sim.receive_write(0, [i])
        sim.tick(T0 + 5 * i)
    assert not sim.watchdog_expired
    sim.tick(T0 + 30 + 9.9)
    assert not sim.watchdog_expired
    sim.tick(T0 + 30 + 10)
    assert sim.watchdog_expired and sim.watchdog_trips == 1
    sim.tick(T0 + 60)
    assert sim.watchdog_trips == 1  # one trip per outage
    sim.receive_write(0, [7])
    sim.tick(T0 + 61)
    assert not sim.watchdog_expired


def test_a_full_carousel_of_samples_in_simulated_time():
    sim = SamplerPlcSimulator(cycle_s=30.0, carousel_capacity=24, clock=lambda: 0.0)
    t = 0.0
    for i in range(1, 25):
        assert cut(sim, i, 1000 + i, t) == "accepted"
        t += 31.0
        sim.tick(t)
    status = sim.status()
    assert (status.cycles_completed, status.carousel_used, status.fault) == (24, 24, "carousel full")
    assert [c.sample_id for c in sim.completed_cycles] == list(range(1001, 1025))
