"""Reconciling unfinished samples with the sampler PLC's status: pure decisions, no servers."""

from __future__ import annotations

import dataclasses

import pytest

from sampling_robot.reconcile import (CUT, LOST_FAULT, LOST_POWER_LOSS, PENDING, SEALED, UNRESOLVED, OpenSample,
                                      reconcile)
from sampling_robot.status import PlcStatus

IDLE = PlcStatus(state="idle", fault="none", accepted_seq=10, command_result="accepted", active_sample_id=0,
                 last_sealed_sample_id=5, cycles_completed=3, carousel_used=3, carousel_capacity=24,
                 plc_heartbeat=100)


def plc(**changes) -> PlcStatus:
    return dataclasses.replace(IDLE, **changes)


@pytest.mark.parametrize("sample, status, sealed_ids, outcome, record", [
    pytest.param(OpenSample(5, "requested", 10), IDLE, (), SEALED, ("cut", "sealed"), id="sealed-last"),
    pytest.param(OpenSample(5, "cut", 10), IDLE, (), SEALED, ("sealed",), id="cut-then-sealed"),
    pytest.param(OpenSample(4, "cut", 9), IDLE, (4,), SEALED, ("sealed",), id="sealed-seen-earlier"),
    pytest.param(OpenSample(6, "requested", 11), plc(state="dividing", active_sample_id=6, accepted_seq=11), (),
                 CUT, ("cut",), id="in-cycle"),
    pytest.param(OpenSample(6, "cut", 11), plc(state="placing", active_sample_id=6, accepted_seq=11), (),
                 CUT, (), id="in-cycle-already-cut"),
    pytest.param(OpenSample(6, "cut", 11), plc(state="power-up", fault="power loss", accepted_seq=11), (),
                 LOST_POWER_LOSS, ("failed",), id="power-loss-cut"),
    pytest.param(OpenSample(6, "requested", 11), plc(fault="power loss", accepted_seq=11), (),
                 LOST_POWER_LOSS, ("failed",), id="power-loss-seq-taken"),
    pytest.param(OpenSample(6, "requested", 12), plc(fault="power loss", accepted_seq=11), (),
                 PENDING, (), id="power-loss-seq-not-taken"),
    pytest.param(OpenSample(6, "requested", None), plc(fault="power loss"), (),
                 PENDING, (), id="power-loss-no-seq-noted"),
    pytest.param(OpenSample(6, "cut", 11), plc(state="faulted", fault="jam", active_sample_id=6), (),
                 LOST_FAULT, ("failed",), id="jam"),
    pytest.param(OpenSample(6, "requested", 11), plc(state="faulted", fault="door open", active_sample_id=6), (),
                 LOST_FAULT, ("failed",), id="door-open"),
    pytest.param(OpenSample(6, "requested", 11), IDLE, (), PENDING, (), id="never-taken"),
    pytest.param(OpenSample(6, "requested", 10), plc(state="cutting", active_sample_id=7), (),
                 UNRESOLVED, (), id="taken-but-another-in-cycle"),
    pytest.param(OpenSample(6, "cut", None), IDLE, (), UNRESOLVED, (), id="cut-but-gone-without-fault"),
])
def test_decision_per_sample(sample, status, sealed_ids, outcome, record):
    (decision,) = reconcile([sample], status, sealed_ids)
    assert (decision.sample_id, decision.outcome, decision.record) == (sample.sample_id, outcome, record)
    assert decision.reason


def test_lost_to_power_loss_says_why():
    (decision,) = reconcile([OpenSample(6, "cut", 11)], plc(fault="power loss", accepted_seq=11))
    assert decision.reason.startswith("power loss during the PLC cycle")
    assert "neither in a cycle nor sealed" in decision.reason


def test_one_decision_per_sample_and_never_a_new_request():
    samples = [OpenSample(i, "requested" if i % 2 else "cut", i) for i in range(1, 30)]
    statuses = [IDLE, plc(fault="power loss", accepted_seq=7), plc(state="sealing", active_sample_id=3),
                plc(state="faulted", fault="jam", active_sample_id=8)]
    for status in statuses:
        decisions = reconcile(samples, status, sealed_ids=(2, 4))
        assert [d.sample_id for d in decisions] == [s.sample_id for s in samples]
        assert all("requested" not in d.record for d in decisions)


def test_a_sample_given_twice_is_refused():
    with pytest.raises(ValueError, match="sample 3 given twice"):
        reconcile([OpenSample(3, "requested"), OpenSample(3, "cut")], IDLE)


@pytest.mark.parametrize("status", ["sealed", "missed", "archived"])
def test_a_finished_sample_is_refused(status):
    with pytest.raises(ValueError, match=f"sample 3: status '{status}' is not open"):
        reconcile([OpenSample(3, status)], IDLE)
