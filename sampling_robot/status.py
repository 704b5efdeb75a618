"""The sampler PLC's status block as a typed value, decoded from its register words.

Shared by the driver (which reads it over Modbus), the simulator (which
publishes it) and reconciliation (which decides from it), so the code
tables of the contract are turned into names in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from orelane.contract import ContractError
from orelane.contract.registers import FAULT_NAMES, RESULT_NAMES, SAMPLER_STATUS, STATE_NAMES

CYCLE_STATES = ("cutting", "dividing", "sealing", "placing")


@dataclass(frozen=True)
class PlcStatus:
    """One read of SAMPLER_STATUS, with the enum registers as names ("idle", "jam", "busy")."""

    state: str
    fault: str
    accepted_seq: int
    command_result: str
    active_sample_id: int  # 0 when no sample is in a cycle
    last_sealed_sample_id: int  # 0 when none since the PLC's memory was cleared
    cycles_completed: int  # since power-up
    carousel_used: int
    carousel_capacity: int
    plc_heartbeat: int

    @property
    def in_cycle(self) -> bool:
        """A sample is being cut, divided, sealed or placed."""
        return self.state in CYCLE_STATES

    @property
    def faulted(self) -> bool:
        return self.fault != "none"

    @property
    def ready(self) -> bool:
        """Idle with no fault and a free cup: a cut command would be accepted."""
        return self.state == "idle" and not self.faulted and self.carousel_used < self.carousel_capacity


def _name(table: dict[int, str], register: str, code: float) -> str:
    try:
        return table[int(code)]
    except KeyError:
        raise ContractError(f"{SAMPLER_STATUS.device} {register} @ {SAMPLER_STATUS[register].address}: "
                            f"unknown code {int(code)}; known codes {table}") from None


def decode_status(words: list[int]) -> PlcStatus:
    """PlcStatus of the whole SAMPLER_STATUS block; ContractError names a register with an unknown code."""
    v = SAMPLER_STATUS.decode(words)
    return PlcStatus(
        state=_name(STATE_NAMES, "state", v["state"]),
        fault=_name(FAULT_NAMES, "fault_code", v["fault_code"]),
        accepted_seq=int(v["accepted_seq"]),
        command_result=_name(RESULT_NAMES, "command_result", v["command_result"]),
        active_sample_id=int(v["active_sample_id"]),
        last_sealed_sample_id=int(v["last_sealed_sample_id"]),
        cycles_completed=int(v["cycles_completed"]),
        carousel_used=int(v["carousel_used"]),
        carousel_capacity=int(v["carousel_capacity"]),
        plc_heartbeat=int(v["plc_heartbeat"]),
    )
