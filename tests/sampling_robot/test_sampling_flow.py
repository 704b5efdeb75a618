"""Registry, driver, PLC simulator and reconciliation together: an edge restart after a PLC power loss."""

from __future__ import annotations

from orelane.contract.messages import SampleRequest
from sampling_robot.driver import SamplerDriver
from sampling_robot.reconcile import LOST_POWER_LOSS, PENDING, SEALED, reconcile
from sampling_robot.registry import SampleRegistry


def requested(sample_id: int, at_s: float) -> SampleRequest:
    return SampleRequest(sample_id=sample_id, lane="L1", sample_kind="targeted", target_belt_position_m=500.0,
                         tonnage_t=1200.0, requested_s=at_s, event_id="ev-9", lot_id="LOT-1")


def apply(registry: SampleRegistry, decisions, at_s: float) -> None:
    for d in decisions:
        for status in d.record:
            registry.record(d.sample_id, status, "reconcile", at_s, d.reason)


def unfinished(registry: SampleRegistry):
    return registry.open_requests() + registry.samples(status="cut")


def test_power_loss_mid_cycle_is_reconciled_after_edge_restart_and_nothing_is_cut_twice(
        tmp_path, plc_server, plc, clock):
    path = tmp_path / "samples.sqlite"
    with SampleRegistry(path) as registry, SamplerDriver("127.0.0.1", plc_server.port, timeout_s=0.5) as robot:
        a = registry.next_sample_id()
        registry.create(requested(a, clock()), "edge L1")
        outcome = robot.request_cut(a, "targeted")
        registry.note_command(a, outcome.command_seq, "edge L1", clock())
        registry.record(a, "cut", "edge L1", clock())
        b = registry.next_sample_id()
        registry.create(requested(b, clock()), "edge L1")  # the edge dies before sending b
        plc.tick(clock.advance(10.0))
        plc.power_loss()
        plc.tick(clock.advance(plc.power_up_s))

    with SampleRegistry(path) as registry, SamplerDriver("127.0.0.1", plc_server.port, timeout_s=0.5) as robot:
        status = robot.status()
        assert (status.state, status.fault, status.active_sample_id) == ("idle", "power loss", 0)
        decisions = {d.sample_id: d for d in reconcile(unfinished(registry), status)}
        assert (decisions[a].outcome, decisions[b].outcome) == (LOST_POWER_LOSS, PENDING)
        apply(registry, decisions.values(), clock())
        assert registry.current_status(a) == "failed"
        assert registry.history(a)[-1].note.startswith("power loss during the PLC cycle")

        assert robot.reset_fault().accepted  # after reconciling, never before
        outcome = robot.request_cut(b, "targeted")
        assert outcome.accepted and outcome.command_seq == 3  # seq 1 cut a, seq 2 was the reset
        registry.record(b, "cut", "edge L1", clock())
        plc.tick(clock.advance(31.0))
        decisions = reconcile(unfinished(registry), robot.status())
        assert [(d.sample_id, d.outcome) for d in decisions] == [(b, SEALED)]
        apply(registry, decisions, clock())

        assert unfinished(registry) == []
        assert [s.status for s in registry.samples(lane="L1")] == ["failed", "sealed"]
    assert plc.cuts_of(a) == plc.cuts_of(b) == 1
    assert [c.sample_id for c in plc.completed_cycles] == [b]
