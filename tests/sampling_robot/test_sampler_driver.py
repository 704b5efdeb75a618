"""The sampler driver against the PLC simulator served by a real pymodbus TCP server on a free port."""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from orelane.contract.registers import KIND_CODES, SAMPLER_COMMAND, SAMPLER_STATUS
from orelane.modbus_server import ModbusDeviceServer, RegisterBank, free_port
from sampling_robot.plc_sim import SamplerPlcSimulator
from sampling_robot.driver import (CommandNotAnsweredError, ModbusExceptionError, RobotConnectionError,
                                   RobotTimeoutError, SamplerDriver, next_seq)


def driver_for(server, **kw) -> SamplerDriver:
    kw.setdefault("timeout_s", 0.5)
    kw.setdefault("retry_for_s", 1.0)
    return SamplerDriver("127.0.0.1", kw.pop("port", server.port), **kw)


def command_writes(plc) -> list[dict[str, float]]:
    """Decoded FC16 writes of the whole command block the PLC received."""
    return [SAMPLER_COMMAND.decode(list(words)) for address, words in plc.holding_writes
            if address == SAMPLER_COMMAND.start and len(words) == SAMPLER_COMMAND.count]


def test_cut_is_one_fc16_write_of_the_whole_command_block_and_is_accepted(plc_server, plc):
    with driver_for(plc_server) as robot:
        outcome = robot.request_cut(42, "targeted")
    assert (outcome.accepted, outcome.reason, outcome.command_seq) == (True, "accepted", 1)
    assert plc.holding_writes == [(0, tuple(SAMPLER_COMMAND.encode(
        {"edge_heartbeat": 1, "command": 1, "command_seq": 1, "sample_id": 42, "sample_kind": 1})))]
    status = plc.status()
    assert (status.state, status.active_sample_id, status.accepted_seq) == ("cutting", 42, 1)


def test_status_names_state_fault_and_counters(plc_server, plc, clock):
    with driver_for(plc_server) as robot:
        robot.request_cut(70000, "routine")  # a sample id above 16 bits travels in the register pair
        plc.tick(clock.advance(31.0))
        status = robot.status()
    assert status.state == "idle" and status.fault == "none" and status.ready
    assert (status.last_sealed_sample_id, status.cycles_completed, status.accepted_seq) == (70000, 1, 1)
    assert (status.carousel_used, status.carousel_capacity, status.plc_heartbeat) == (1, 24, 31)


def test_cut_while_busy_is_refused_naming_the_state_and_never_taken_later(plc_server, plc, clock):
    with driver_for(plc_server) as robot:
        assert robot.request_cut(1, "targeted").accepted
        plc.tick(clock.advance(10.0))
        refused = robot.request_cut(2, "targeted")
        assert (refused.accepted, refused.command_seq) == (False, 2)
        assert refused.reason == "busy: PLC dividing with sample 1"
        plc.tick(clock.advance(30.0))
        plc.tick(clock.advance(30.0))
        assert plc.cuts_of(2) == 0
        again = robot.request_cut(2, "targeted")
    assert (again.accepted, again.command_seq) == (True, 3)
    assert plc.cuts_of(2) == 1


@pytest.mark.parametrize("fault", ["jam", "door open", "power loss", "carousel full"])
def test_cut_while_faulted_is_refused_naming_the_fault(fault, clock):
    sim = SamplerPlcSimulator(cycle_s=10.0, carousel_capacity=1, clock=clock)
    with sim.serve(scan_interval_s=0.01) as server, driver_for(server) as robot:
        if fault == "carousel full":
            robot.request_cut(1, "routine")
            sim.tick(clock.advance(11.0))
        elif fault == "power loss":
            sim.power_loss()
            sim.tick(clock.advance(sim.power_up_s))
        else:
            sim.inject_fault(fault)
        outcome = robot.request_cut(5, "targeted")
        assert not outcome.accepted
        assert outcome.reason.startswith(f"faulted: {fault}")
        reset = robot.reset_fault()
        assert reset.accepted == (fault != "carousel full")
        if fault == "carousel full":
            sim.empty_carousel()
        assert robot.request_cut(5, "targeted").accepted


@pytest.mark.parametrize("where", ["ack_lost", "after_ack"])
@pytest.mark.parametrize("recovery", ["driver_reconnects", "caller_retries"])
def test_retried_command_after_dropped_connection_cuts_once(plc_server, plc, flaky_link, where, recovery):
    """The link breaks around the command write; the PLC has taken it. The retry repeats the seq: one cut."""
    down_s, retry_for_s = (0.3, 3.0) if recovery == "driver_reconnects" else (0.6, 0.2)
    with driver_for(plc_server, port=flaky_link.port, retry_for_s=retry_for_s) as robot:
        flaky_link.break_at_next_command(where, down_s)
        if recovery == "driver_reconnects":
            outcome = robot.request_cut(42, "targeted")
        else:
            with pytest.raises(RobotConnectionError, match=f"127.0.0.1:{flaky_link.port}"):
                robot.request_cut(42, "targeted")
            assert robot.pending_command_seq == 1
            assert plc.status().active_sample_id == 42  # the PLC took the first write
            while not flaky_link.up:
                time.sleep(0.02)
            outcome = robot.request_cut(42, "targeted")
        assert (outcome.accepted, outcome.command_seq, outcome.reason) == (True, 1, "accepted")
        assert robot.pending_command_seq is None
    writes = command_writes(plc)
    assert flaky_link.breaks == 1 and len(writes) >= 2
    assert {w["command_seq"] for w in writes} == {1}
    assert plc.cuts_of(42) == 1


def test_command_unanswered_while_plc_in_stop_is_retried_with_the_same_seq(plc_server, plc):
    with driver_for(plc_server, timeout_s=0.2) as robot:
        plc.scanning = False
        with pytest.raises(CommandNotAnsweredError, match="seq 1 neither taken nor refused"):
            robot.request_cut(42, "targeted")
        plc.scanning = True
        outcome = robot.request_cut(42, "targeted")
    assert (outcome.accepted, outcome.command_seq) == (True, 1)
    assert plc.cuts_of(42) == 1


def test_retry_after_power_loss_reads_accepted_but_says_the_cycle_is_gone(plc_server, plc, clock):
    with driver_for(plc_server, timeout_s=0.2) as robot:
        plc.scanning = False  # the PLC takes the write only after the edge gave up waiting
        with pytest.raises(CommandNotAnsweredError):
            robot.request_cut(42, "targeted")
        plc.tick(clock.advance(0.1))
        plc.power_loss(now=clock.advance(5.0))
        plc.tick(clock.advance(plc.power_up_s))
        plc.scanning = True
        outcome = robot.request_cut(42, "targeted")
    assert outcome.accepted and outcome.command_seq == 1
    assert "neither in a cycle nor sealed" in outcome.reason and "power loss" in outcome.reason
    assert plc.cuts_of(42) == 1


def test_new_driver_continues_after_the_seq_the_plc_holds(plc_server, plc, clock):
    with driver_for(plc_server) as first:
        for sample_id in (1, 2, 3):
            first.request_cut(sample_id, "routine")
            plc.tick(clock.advance(31.0))
    with driver_for(plc_server) as restarted:
        outcome = restarted.request_cut(4, "routine")
    assert (outcome.accepted, outcome.command_seq) == (True, 4)


def test_a_cut_after_an_operator_reset_from_another_driver_is_really_taken(plc_server, plc, clock):
    """The operator's RESET used the seq the edge would have used next; the edge must not take the PLC's
    accepted_seq for that RESET as the answer to its cut."""
    with driver_for(plc_server) as edge:
        edge.request_cut(1, "routine")
        plc.inject_fault("jam", now=clock.advance(1.0))
        with driver_for(plc_server) as operator:
            assert operator.reset_fault().accepted
        outcome = edge.request_cut(2, "targeted")
        status = edge.status()
    assert outcome.accepted and outcome.reason == "accepted"
    assert outcome.command_seq == 3, "continues after the operator's seq 2"
    assert (status.active_sample_id, status.state) == (2, "cutting")
    assert plc.cuts_of(2) == 1


@pytest.mark.parametrize("seq, following", [(0, 1), (1, 2), (65534, 65535), (65535, 1)])
def test_command_seq_wraps_to_1_skipping_0(seq, following):
    assert next_seq(seq) == following


def test_driver_wraps_seq_after_65535(plc_server, plc, clock):
    plc.receive_write(0, SAMPLER_COMMAND.encode({"command": 0, "command_seq": 65534}))
    plc.tick(clock())
    with driver_for(plc_server) as robot:
        assert robot.request_cut(1, "routine").command_seq == 65535
        plc.tick(clock.advance(31.0))
        assert robot.request_cut(2, "routine").command_seq == 1
    assert plc.cuts_of(1) == plc.cuts_of(2) == 1


@pytest.mark.parametrize("sample_id, kind", [(0, "targeted"), (2**32, "targeted"), (True, "routine"),
                                             (1.5, "routine"), (5, "random")])
def test_request_cut_refuses_bad_sample_id_or_kind_before_writing(plc_server, plc, sample_id, kind):
    with driver_for(plc_server) as robot, pytest.raises(ValueError, match="sample"):
        robot.request_cut(sample_id, kind)
    assert command_writes(plc) == []


def test_plc_alive_goes_false_when_the_plc_heartbeat_stops(plc_server, plc, clock):
    with driver_for(plc_server, clock=clock, plc_stale_s=3.0) as robot:
        assert robot.plc_alive  # first sighting
        plc.tick(clock.advance(1.0))
        robot.status()
        plc.scanning = False  # PLC in STOP: the heartbeat freezes
        clock.advance(2.9)
        robot.status()
        assert robot.plc_alive
        clock.advance(0.2)
        robot.status()
        assert not robot.plc_alive
        plc.scanning = True
        plc.tick(clock.advance(1.0))
        robot.status()
        assert robot.plc_alive


def test_edge_heartbeat_feeds_the_plc_watchdog(plc_server, plc, clock):
    with driver_for(plc_server) as robot:
        values = []
        for _ in range(6):
            values.append(robot.heartbeat())
            plc.tick(clock.advance(5.0))
        assert values == [1, 2, 3, 4, 5, 6] and not plc.watchdog_expired
        plc.tick(clock.advance(10.0))
        assert plc.watchdog_expired
        robot.heartbeat()
        plc.tick(clock.advance(0.1))
        assert not plc.watchdog_expired and plc.watchdog_trips == 1


def serve_bank(bank: RegisterBank, unit_id: int = 1) -> ModbusDeviceServer:
    return ModbusDeviceServer(bank, unit_id=unit_id).start()


def refuse_write(address, values):
    raise RuntimeError("write-protected")


@pytest.mark.parametrize("bank_sizes, unit_id, call, function, address, count, code", [
    pytest.param((13, 6), 7, "status", "read holding registers (FC3)", 0, 6, 11, id="no-such-unit"),
    pytest.param((5, 6), 1, "status", "read input registers (FC4)", 0, 13, 2, id="short-status-block"),
    pytest.param((13, 0), 1, "status", "read holding registers (FC3)", 0, 6, 2, id="no-command-block"),
    pytest.param((13, 6), 1, "cut", "write multiple registers (FC16)", 0, 6, 4, id="write-refused"),
])
def test_modbus_exception_names_function_address_and_code(bank_sizes, unit_id, call, function, address, count, code):
    on_write = refuse_write if call == "cut" else (lambda a, v: None)
    server = serve_bank(RegisterBank(*bank_sizes, on_write=on_write))
    try:
        robot = SamplerDriver("127.0.0.1", server.port, unit_id=unit_id, timeout_s=0.5, retry_for_s=0.5)
        if call == "cut":
            server.bank.set_input(SAMPLER_STATUS, {"carousel_capacity": 24})
        with pytest.raises(ModbusExceptionError) as raised, robot:  # connecting already reads both blocks
            robot.request_cut(1, "targeted") if call == "cut" else robot.status()
    finally:
        server.stop()
    err = raised.value
    assert (err.function_name, err.address, err.count, err.exception_code) == (function, address, count, code)
    assert f"127.0.0.1:{server.port}" in str(err) and f"exception {code}" in str(err)


def test_connection_refused_names_host_and_port():
    port = free_port()
    robot = SamplerDriver("127.0.0.1", port, retry_for_s=0.0)
    with pytest.raises(RobotConnectionError, match=f"127.0.0.1:{port} unit 1: cannot connect: Connection refused"):
        robot.status()


def test_silent_plc_times_out_naming_host_and_port():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts TCP, never answers Modbus
        port = silent.getsockname()[1]
        robot = SamplerDriver("127.0.0.1", port, timeout_s=0.2, retry_for_s=0.0)
        started = time.monotonic()
        with pytest.raises(RobotTimeoutError, match=f"127.0.0.1:{port} unit 1: no answer .* within 0.2 s"):
            robot.status()
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reconnect_backoff_is_capped_exponential_with_jitter(seed, clock):
    port = free_port()
    robot = SamplerDriver("127.0.0.1", port, clock=clock, sleep=clock.sleep, retry_for_s=10.0,
                          backoff_initial_s=0.05, backoff_max_s=0.4, rng=random.Random(seed))
    with pytest.raises(RobotConnectionError, match=r"gave up on read status after \d+ attempts"):
        robot.status()
    assert len(clock.sleeps) > 20
    for attempt, pause in enumerate(clock.sleeps):
        ceiling = min(0.05 * 2 ** attempt, 0.4)
        assert ceiling / 2 <= pause <= ceiling
    assert sum(clock.sleeps) <= 10.0
    assert len(set(clock.sleeps[5:])) > 1  # jittered, not a fixed beat


def test_status_recovers_after_the_plc_link_comes_back(plc_server, plc):
    with driver_for(plc_server, retry_for_s=3.0) as robot:
        robot.status()
        plc_server.link_down()
        back = threading.Timer(0.3, plc_server.link_up)
        back.start()
        assert robot.status().carousel_capacity == 24
        back.join()


def test_kind_codes_on_the_wire_follow_the_contract(plc_server, plc, clock):
    with driver_for(plc_server) as robot:
        for sample_id, kind in ((1, "targeted"), (2, "routine")):
            robot.request_cut(sample_id, kind)
            plc.tick(clock.advance(31.0))
    assert [w["sample_kind"] for w in command_writes(plc)] == [KIND_CODES["targeted"], KIND_CODES["routine"]]
    assert [c.kind for c in plc.completed_cycles] == ["targeted", "routine"]


def test_serve_returns_a_running_server_whose_start_is_a_no_op(clock):
    sim = SamplerPlcSimulator(clock=clock)
    server = sim.serve("127.0.0.1", free_port())
    try:
        assert server.start() is server
        with driver_for(server) as robot:
            assert robot.connected and robot.status().carousel_capacity == 24
    finally:
        server.stop()
    with pytest.raises(RobotConnectionError, match="Connection refused"):
        driver_for(server, retry_for_s=0.0).status()
