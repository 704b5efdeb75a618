"""Reconcile the registry's unfinished samples with what the sampler PLC reports, after a restart or a fault.

Pure: samples and a PlcStatus in, one decision per sample out. It never asks
for a new sample; a replacement for a lost one is a new request with a new id
(and the PLC a new seq), made by whoever owns the sampling plan.

Rules, in order, for a sample the registry holds as 'requested' or 'cut':

1. Sealed: the PLC reports it as last_sealed_sample_id, or the caller saw it
   there before (`sealed_ids`) -> record cut (if needed) and sealed.
2. Active: it is the PLC's active_sample_id in a cycle -> record cut (if
   needed). Shown as active while the PLC is faulted (jam, door open) -> the
   cycle was aborted -> failed, naming the fault.
3. Taken by the PLC (the registry holds it as 'cut', or its noted command_seq
   equals the PLC's retentive accepted_seq) but neither active nor sealed:
   while the fault is 'power loss' the cycle died with the power -> failed.
   Otherwise the evidence is contradictory -> unresolved, nothing recorded
   (someone checks the carousel).
4. Not taken -> pending: the PLC never started it. The caller may send it
   again under the same sample id if its belt segment is still ahead of the
   cutter, else record it missed.

Reconcile before sending RESET: the reset clears the 'power loss' fault that
rule 3 relies on, and moves accepted_seq to the reset command's seq.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

from sampling_robot.status import PlcStatus

SEALED, CUT, PENDING, LOST_POWER_LOSS, LOST_FAULT, UNRESOLVED = (
    "sealed", "cut", "pending", "lost_power_loss", "lost_fault", "unresolved")
OUTCOMES = (SEALED, CUT, PENDING, LOST_POWER_LOSS, LOST_FAULT, UNRESOLVED)
RECONCILABLE_STATUSES = ("requested", "cut")


class OpenSampleLike(Protocol):
    """What reconciliation needs of a sample (a registry SampleRow has it)."""

    @property
    def sample_id(self) -> int: ...

    @property
    def status(self) -> str: ...

    @property
    def command_seq(self) -> int | None: ...


@dataclass(frozen=True)
class OpenSample:
    sample_id: int
    status: str  # "requested" or "cut"
    command_seq: int | None = None  # the PLC command_seq last sent for it, if the edge noted it


@dataclass(frozen=True)
class Decision:
    """What to do with one sample: the statuses to append to its history, in order, and why."""

    sample_id: int
    outcome: str
    record: tuple[str, ...]
    reason: str


def reconcile(samples: Iterable[OpenSampleLike], plc: PlcStatus, sealed_ids: Iterable[int] = ()) -> list[Decision]:
    """One Decision per sample, in the order given; ValueError for a sample that is not open or appears twice."""
    sealed = {int(i) for i in sealed_ids} | {plc.last_sealed_sample_id}
    sealed.discard(0)
    seen: set[int] = set()
    decisions = []
    for s in samples:
        if s.status not in RECONCILABLE_STATUSES:
            raise ValueError(f"sample {s.sample_id}: status {s.status!r} is not open; reconcile takes "
                             f"{RECONCILABLE_STATUSES}")
        if s.sample_id in seen:
            raise ValueError(f"sample {s.sample_id} given twice; reconcile decides once per sample")
        seen.add(s.sample_id)
        decisions.append(_decide(s, plc, sealed))
    return decisions


def _decide(s: OpenSampleLike, plc: PlcStatus, sealed: set[int]) -> Decision:
    sid, was_cut = s.sample_id, s.status == "cut"
    cut_first: tuple[str, ...] = () if was_cut else ("cut",)
    if sid in sealed:
        return Decision(sid, SEALED, cut_first + ("sealed",), "the PLC reports the sample sealed")
    if sid == plc.active_sample_id:
        if plc.in_cycle:
            return Decision(sid, CUT, cut_first, f"the PLC is {plc.state} this sample")
        if plc.state == "faulted":
            return Decision(sid, LOST_FAULT, ("failed",),
                            f"cycle aborted by PLC fault {plc.fault!r} before the cup was sealed")
        return Decision(sid, UNRESOLVED, (), f"the PLC shows the sample as active while {plc.state}: check the PLC")
    taken_by_seq = s.command_seq is not None and s.command_seq == plc.accepted_seq
    if was_cut or taken_by_seq:
        evidence = (f"the PLC took command_seq {s.command_seq}" if taken_by_seq
                    else "the registry holds it as cut")
        if plc.fault == "power loss":
            return Decision(sid, LOST_POWER_LOSS, ("failed",),
                            f"power loss during the PLC cycle: {evidence}, but the sample is neither in a cycle nor "
                            f"sealed (last sealed {plc.last_sealed_sample_id}); no cup for it")
        return Decision(sid, UNRESOLVED, (),
                        f"{evidence}, but the PLC ({plc.state}, fault {plc.fault}) reports it neither in a cycle "
                        f"nor sealed: check the carousel")
    if plc.fault == "power loss" and s.command_seq is None:
        return Decision(sid, PENDING, (),
                        f"the PLC lost power and reports no trace of the sample (accepted_seq {plc.accepted_seq}, "
                        f"no command_seq noted); send again only if its belt segment is still ahead of the cutter")
    return Decision(sid, PENDING, (),
                    f"the PLC has not taken it (accepted_seq {plc.accepted_seq}); send again only if its belt "
                    f"segment is still ahead of the cutter, else record it missed")
