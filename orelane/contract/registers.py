"""Modbus register maps of the belt scale, the gamma portal monitor and the sampler PLC.

Addresses are zero-based protocol addresses (what goes on the wire); the
"4xxxx/3xxxx" numbers in vendor manuals are these plus 30001/40001.
32-bit values span two registers, high word first (big-endian word order,
"ABCD"), as the Siemens Milltronics BW500 and most PLCs send them.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from orelane.contract import ContractError

INPUT = "input"  # function code 4 (read input registers)
HOLDING = "holding"  # function code 3 read, 16 write (write multiple registers)


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    kind: str  # "f32", "u32" (two registers) or "u16"
    unit: str
    description: str
    low: float | None = None  # plausible range; values outside are a contract error
    high: float | None = None

    @property
    def width(self) -> int:
        return 1 if self.kind == "u16" else 2


@dataclass(frozen=True)
class RegisterMap:
    device: str
    table: str
    registers: tuple[Register, ...]

    @property
    def start(self) -> int:
        return min(r.address for r in self.registers)

    @property
    def count(self) -> int:
        return max(r.address + r.width for r in self.registers) - self.start

    def __getitem__(self, name: str) -> Register:
        for reg in self.registers:
            if reg.name == name:
                return reg
        raise KeyError(f"{self.device} has no register {name!r}")

    def encode(self, values: dict[str, float]) -> list[int]:
        """Register words for the whole block; names not given are 0."""
        words = [0] * self.count
        for reg in self.registers:
            if reg.name in values:
                i = reg.address - self.start
                try:
                    words[i:i + reg.width] = encode_value(reg, values[reg.name])
                except ContractError as exc:
                    raise ContractError(f"{self.device} {exc}") from None
        return words

    def decode(self, words: list[int]) -> dict[str, float]:
        """Values of the whole block; raise ContractError naming the register that is out of range."""
        if len(words) != self.count:
            raise ContractError(f"{self.device}: expected {self.count} registers, got {len(words)}")
        out: dict[str, float] = {}
        for reg in self.registers:
            i = reg.address - self.start
            out[reg.name] = decode_value(reg, words[i:i + reg.width], self.device)
        return out


    def decode_in_range(self, words: list[int]) -> dict[str, float]:
        """The values of the block that decode within their ranges, the others left out: a reading `decode`
        refuses may still carry a value to act on (a gamma portal's own alarm beside a saturated dose)."""
        if len(words) != self.count:
            return {}
        out: dict[str, float] = {}
        for reg in self.registers:
            i = reg.address - self.start
            try:
                out[reg.name] = decode_value(reg, words[i:i + reg.width], self.device)
            except ContractError:
                continue
        return out


def encode_value(reg: Register, value: float) -> list[int]:
    if reg.kind == "f32":
        hi, lo = struct.unpack(">HH", struct.pack(">f", float(value)))
        return [hi, lo]
    iv = int(value)
    if reg.kind == "u32":
        if not 0 <= iv < 2**32:
            raise ContractError(f"{reg.name}: {iv} {reg.unit} does not fit u32")
        return [iv >> 16, iv & 0xFFFF]
    if not 0 <= iv < 2**16:
        raise ContractError(f"{reg.name}: {iv} {reg.unit} does not fit u16")
    return [iv]


def decode_value(reg: Register, words: list[int], device: str) -> float:
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise ContractError(f"{device} {reg.name} @ {reg.address}: register word out of 0..65535: {words}")
    if reg.kind == "f32":
        value = struct.unpack(">f", struct.pack(">HH", *words))[0]
        if not math.isfinite(value):
            raise ContractError(f"{device} {reg.name} @ {reg.address}: value is {value} ({reg.unit})")
    elif reg.kind == "u32":
        value = (words[0] << 16) | words[1]
    else:
        value = words[0]
    if (reg.low is not None and value < reg.low) or (reg.high is not None and value > reg.high):
        raise ContractError(f"{device} {reg.name} @ {reg.address}: {value} {reg.unit} outside "
                            f"{reg.low}..{reg.high} {reg.unit}")
    return value


# Belt scale integrator, modelled on the BW500's process-value block: input registers.
BELT_SCALE = RegisterMap("belt scale", INPUT, (
    Register("flow_t_h", 0, "f32", "t/h", "mass flow rate", 0.0, 20000.0),
    Register("belt_load_kg_m", 2, "f32", "kg/m", "load on the weigh bridge", 0.0, 2000.0),
    Register("speed_m_s", 4, "f32", "m/s", "belt speed from the speed sensor", 0.0, 10.0),
    Register("totalizer_t", 6, "f32", "t", "totalizer 1 since reset", 0.0, 1e9),
    Register("status", 8, "u16", "bits", "bit0 running, bit1 speed sensor fault, bit2 load cell fault, "
                                         "bit3 zero out of range"),
))
SCALE_RUNNING = 0x1
SCALE_SPEED_FAULT = 0x2
SCALE_LOADCELL_FAULT = 0x4

# Gamma radiation portal monitor over the belt: input registers.
RADIATION_PORTAL = RegisterMap("radiation portal", INPUT, (
    Register("dose_rate_usv_h", 0, "f32", "uSv/h", "gamma dose rate", 0.0, 1e5),
    Register("background_usv_h", 2, "f32", "uSv/h", "learned background", 0.0, 1e5),
    Register("alarm", 4, "u16", "enum", "0 none, 1 high, 2 fault", 0, 2),
))

# Sampler PLC, written by the edge: holding registers (FC16 writes the whole block at once).
SAMPLER_COMMAND = RegisterMap("sampler PLC command", HOLDING, (
    Register("edge_heartbeat", 0, "u16", "count", "incremented by the edge every poll; PLC watchdog"),
    Register("command", 1, "u16", "enum", "0 none, 1 cut, 2 reset fault"),
    Register("command_seq", 2, "u16", "count", "new value = new command; a repeated value is ignored"),
    Register("sample_id", 3, "u32", "id", "sample id to label the cup with"),
    Register("sample_kind", 5, "u16", "enum", "1 targeted, 2 routine"),
))

# Sampler PLC state, read by the edge: input registers.
SAMPLER_STATUS = RegisterMap("sampler PLC status", INPUT, (
    Register("plc_heartbeat", 0, "u16", "count", "incremented by the PLC every second"),
    Register("state", 1, "u16", "enum", "0 idle, 1 cutting, 2 crushing/dividing, 3 sealing, 4 placing, "
                                       "9 faulted, 10 power-up"),
    Register("fault_code", 2, "u16", "enum", "0 none, 1 jam, 2 door open, 3 carousel full, 4 power loss"),
    Register("accepted_seq", 3, "u16", "count", "command_seq of the last command taken"),
    Register("command_result", 4, "u16", "enum", "0 none, 1 accepted, 2 busy, 3 faulted, 4 bad command"),
    Register("active_sample_id", 5, "u32", "id", "sample in the current cycle, 0 when idle"),
    Register("last_sealed_sample_id", 7, "u32", "id", "last sample sealed and placed in the carousel"),
    Register("cycles_completed", 9, "u32", "count", "cycles completed since power-up"),
    Register("carousel_used", 11, "u16", "cups", "cups filled"),
    Register("carousel_capacity", 12, "u16", "cups", "cups in the carousel"),
))

COMMAND_NONE, COMMAND_CUT, COMMAND_RESET = 0, 1, 2
KIND_CODES = {"targeted": 1, "routine": 2}
STATE_NAMES = {0: "idle", 1: "cutting", 2: "dividing", 3: "sealing", 4: "placing", 9: "faulted", 10: "power-up"}
FAULT_NAMES = {0: "none", 1: "jam", 2: "door open", 3: "carousel full", 4: "power loss"}
RESULT_NAMES = {0: "none", 1: "accepted", 2: "busy", 3: "faulted", 4: "bad command"}
RESULT_ACCEPTED, RESULT_BUSY, RESULT_FAULTED, RESULT_BAD = 1, 2, 3, 4
