"""Modbus TCP driver of the sampler PLC: cut and reset commands, status, heartbeats.

One SamplerDriver owns one connection to one configured host:port and never
talks to any other address. Dropped links are retried in one place
(`_with_reconnect`, capped exponential backoff with jitter). A command keeps
its `command_seq` until the PLC has answered it, so retrying after a lost link
(whether the write or its acknowledgement was lost) repeats the same seq and
the PLC, which evaluates each seq once, never cuts twice.

The PLC has one command block, so the edge daemon should be its only writer
(operators reset faults at the PLC's panel). A new command continues after
the seq the PLC holds, so a command written by someone else in between is
not mistaken for this driver's; two writers at the same instant still race.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from pymodbus.client import ModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from orelane.contract import ContractError
from orelane.contract.registers import COMMAND_CUT, COMMAND_RESET, KIND_CODES, SAMPLER_COMMAND, SAMPLER_STATUS
from sampling_robot.status import PlcStatus, decode_status

log = logging.getLogger(__name__)

__all__ = ["SamplerDriver", "CommandOutcome", "CutOutcome", "PlcStatus", "RobotError", "RobotConnectionError",
           "RobotTimeoutError", "CommandNotAnsweredError", "ModbusExceptionError", "RobotProtocolError",
           "next_seq"]

FUNCTION_NAMES = {3: "read holding registers (FC3)", 4: "read input registers (FC4)",
                  6: "write single register (FC6)", 16: "write multiple registers (FC16)"}
REFUSALS = ("busy", "faulted", "bad command")

T = TypeVar("T")


class _TcpClient(ModbusTcpClient):
    """ModbusTcpClient that keeps why a connect failed (pymodbus only logs it), for the error message."""

    connect_error: OSError | None = None

    def connect(self) -> bool:
        if self.socket:
            return True
        try:
            self.socket = socket.create_connection((self.comm_params.host, self.comm_params.port),
                                                   timeout=self.comm_params.timeout_connect)
        except OSError as exc:
            self.connect_error = exc
            self.close()
        return self.socket is not None


class RobotError(Exception):
    """Anything that went wrong talking to the sampler PLC; the message names the PLC's host:port."""


class RobotConnectionError(RobotError):
    """The PLC cannot be reached: connection refused, reset, or closed mid-request."""


class RobotTimeoutError(RobotError):
    """The PLC did not answer a Modbus request within timeout_s."""


class CommandNotAnsweredError(RobotError):
    """The PLC answered Modbus but neither took nor refused a command within timeout_s (PLC in STOP?).

    The command stays pending: retrying the same request reuses its seq.
    """


class RobotProtocolError(RobotError):
    """The PLC's registers break the contract (unknown state or fault code, value out of range)."""


class ModbusExceptionError(RobotError):
    """The PLC answered with a Modbus exception response."""

    def __init__(self, endpoint: str, unit_id: int, function_code: int, address: int, count: int,
                 exception_code: int):
        self.function_code, self.address, self.count = function_code, address, count
        self.exception_code = exception_code
        try:
            exc_name = ExcCodes(exception_code).name.lower().replace("_", " ")
        except ValueError:
            exc_name = "unknown"
        self.function_name = FUNCTION_NAMES.get(function_code, f"function {function_code}")
        super().__init__(f"sampler PLC {endpoint} unit {unit_id}: {self.function_name} at address {address} "
                         f"({count} registers) answered exception {exception_code} ({exc_name})")


@dataclass(frozen=True)
class CommandOutcome:
    """The PLC's answer to one command: taken or not, why, and the seq it carried."""

    accepted: bool
    reason: str
    command_seq: int


CutOutcome = CommandOutcome


def next_seq(seq: int) -> int:
    """The command_seq after `seq`: 1..65535, wrapping to 1 (0 means "no command yet")."""
    return seq % 0xFFFF + 1


class SamplerDriver:
    """Commands and status of one sampler PLC over Modbus TCP; use as a context manager.

    `clock` (s) times heartbeat staleness, read-back and retry deadlines; `sleep`
    waits between polls and retries (inject both to drive time in a test).
    """

    def __init__(self, host: str, port: int, unit_id: int = 1, timeout_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, *,
                 plc_stale_s: float = 3.0, retry_for_s: float = 1.0,
                 backoff_initial_s: float = 0.05, backoff_max_s: float = 1.0, poll_interval_s: float = 0.02,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None):
        if not 0 < port < 65536:
            raise ValueError(f"sampler PLC port must be 1..65535, got {port}")
        if not 0 <= unit_id <= 247:
            raise ValueError(f"Modbus unit id must be 0..247, got {unit_id}")
        if not timeout_s > 0 or not plc_stale_s > 0 or retry_for_s < 0:
            raise ValueError(f"timeout_s and plc_stale_s must be > 0 and retry_for_s >= 0, got "
                             f"{timeout_s}, {plc_stale_s}, {retry_for_s}")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError(f"need 0 < backoff_initial_s <= backoff_max_s, got {backoff_initial_s}, {backoff_max_s}")
        self.host, self.port, self.unit_id, self.timeout_s = host, port, unit_id, timeout_s
        self.plc_stale_s, self.retry_for_s = plc_stale_s, retry_for_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.poll_interval_s = poll_interval_s
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self._lock = threading.RLock()
        self._client: ModbusTcpClient | None = None
        self._last_seq: int | None = None  # None until synchronised with the PLC's command block
        self._edge_heartbeat = 0
        self._pending: tuple[int, int, int, int] | None = None  # (command, sample_id, kind code, seq)
        self._plc_heartbeat: int | None = None
        self._plc_heartbeat_changed_s: float | None = None
        self.last_status: PlcStatus | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """A TCP connection to the PLC is open (it may still turn out dead on the next request)."""
        return self._client is not None and self._client.connected

    # ------------------------------------------------------------ connection

    def connect(self) -> "SamplerDriver":
        """Connect (retrying within retry_for_s) and learn the last seq and heartbeat the PLC holds."""
        with self._lock:
            self._with_reconnect("connect", lambda: None)
        return self

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    def __enter__(self) -> "SamplerDriver":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    def _ensure_connected(self) -> ModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client  # only ever set after the seq was synchronised
        self._drop_connection()
        client = _TcpClient(self.host, port=self.port, timeout=self.timeout_s, retries=0, reconnect_delay=0)
        if not client.connect():
            reason = client.connect_error
            client.close()
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise RobotTimeoutError(f"sampler PLC {self.endpoint} unit {self.unit_id}: cannot connect: no answer "
                                        f"within {self.timeout_s} s")
            raise RobotConnectionError(f"sampler PLC {self.endpoint} unit {self.unit_id}: cannot connect: "
                                       f"{reason.strerror if reason and reason.strerror else reason}")
        try:
            if self._last_seq is None:
                self._synchronise(client)
        except BaseException:
            client.close()
            raise
        self._client = client
        log.info("sampler PLC %s: connected", self.endpoint)
        return client

    def _synchronise(self, client: ModbusTcpClient) -> None:
        """Continue after the seq and heartbeat the PLC holds, so a restarted edge never repeats an old seq."""
        held = self._command_block(client)
        status = self._read_status(client)
        self._last_seq = int(held["command_seq"]) or status.accepted_seq
        self._edge_heartbeat = int(held["edge_heartbeat"])
        log.info("sampler PLC %s: last command_seq %d, accepted_seq %d", self.endpoint, self._last_seq,
                 status.accepted_seq)

    def _command_block(self, client: ModbusTcpClient) -> dict:
        return SAMPLER_COMMAND.decode(self._read(client, 3, SAMPLER_COMMAND.start, SAMPLER_COMMAND.count))

    def _held_seq(self) -> int:
        return int(self._command_block(self._ensure_connected())["command_seq"])

    def _drop_connection(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _with_reconnect(self, what: str, operation: Callable[[], T], retry_for_s: float | None = None) -> T:
        """Run `operation` on a live connection; on a link failure reconnect with capped, jittered backoff."""
        started = self._clock()
        deadline = started + (self.retry_for_s if retry_for_s is None else retry_for_s)
        delay = self.backoff_initial_s
        attempt = 1
        while True:
            try:
                self._ensure_connected()
                return operation()
            except (RobotConnectionError, RobotTimeoutError) as exc:
                self._drop_connection()
                pause = delay * (0.5 + 0.5 * self._rng.random())
                if self._clock() + pause > deadline:
                    raise type(exc)(f"{exc}; gave up on {what} after {attempt} attempts in "
                                    f"{self._clock() - started:.2f} s") from exc
                log.warning("sampler PLC %s: %s failed (attempt %d): %s; retrying in %.2f s", self.endpoint,
                            what, attempt, exc, pause)
                self._sleep(pause)
                delay = min(delay * 2, self.backoff_max_s)
                attempt += 1

    # ------------------------------------------------------------ Modbus requests

    def _call(self, function_code: int, address: int, count: int, request: Callable[[], object]):
        """One Modbus request; pymodbus failures become RobotErrors that name the endpoint and request."""
        what = f"{FUNCTION_NAMES[function_code]} at {address} x{count}"
        try:
            response = request()
        except ConnectionException as exc:
            raise RobotConnectionError(f"sampler PLC {self.endpoint} unit {self.unit_id}: connection lost "
                                       f"during {what}: {exc}") from None
        except ModbusIOException as exc:
            raise RobotTimeoutError(f"sampler PLC {self.endpoint} unit {self.unit_id}: no answer to {what} "
                                    f"within {self.timeout_s} s ({exc})") from None
        except ModbusException as exc:
            raise RobotConnectionError(f"sampler PLC {self.endpoint} unit {self.unit_id}: {what} failed: "
                                       f"{exc}") from None
        except OSError as exc:
            raise RobotConnectionError(f"sampler PLC {self.endpoint} unit {self.unit_id}: {what} failed: "
                                       f"{exc}") from None
        if response.isError():
            raise ModbusExceptionError(self.endpoint, self.unit_id, function_code, address, count,
                                       getattr(response, "exception_code", 0))
        return response

    def _read(self, client: ModbusTcpClient, function_code: int, address: int, count: int) -> list[int]:
        read = client.read_holding_registers if function_code == 3 else client.read_input_registers
        response = self._call(function_code, address, count,
                              lambda: read(address, count=count, device_id=self.unit_id))
        words = list(response.registers)
        if len(words) != count:
            raise RobotProtocolError(f"sampler PLC {self.endpoint}: {FUNCTION_NAMES[function_code]} at {address} "
                                     f"returned {len(words)} registers, asked for {count}")
        return words

    def _read_status(self, client: ModbusTcpClient) -> PlcStatus:
        words = self._read(client, 4, SAMPLER_STATUS.start, SAMPLER_STATUS.count)
        try:
            status = decode_status(words)
        except ContractError as exc:
            raise RobotProtocolError(f"sampler PLC {self.endpoint}: {exc}") from None
        now = self._clock()
        if status.plc_heartbeat != self._plc_heartbeat:
            self._plc_heartbeat, self._plc_heartbeat_changed_s = status.plc_heartbeat, now
        self.last_status = status
        return status

    # ------------------------------------------------------------ public operations

    def status(self) -> PlcStatus:
        """Read the PLC's status block (FC4); also feeds `plc_alive`."""
        with self._lock:
            return self._with_reconnect("read status", lambda: self._read_status(self._ensure_connected()))

    @property
    def plc_alive(self) -> bool:
        """The PLC heartbeat changed within plc_stale_s of the clock, judged from the status reads so far."""
        changed = self._plc_heartbeat_changed_s
        return changed is not None and self._clock() - changed <= self.plc_stale_s

    def heartbeat(self) -> int:
        """Increment the edge heartbeat register (FC6) that the PLC's watchdog watches; returns the value written."""
        with self._lock:
            self._with_reconnect("connect", lambda: None)
            value = (self._edge_heartbeat + 1) % 2**16
            address = SAMPLER_COMMAND["edge_heartbeat"].address

            def write() -> None:
                client = self._ensure_connected()
                self._call(6, address, 1, lambda: client.write_register(address, value, device_id=self.unit_id))

            self._with_reconnect("write edge heartbeat", write)
            self._edge_heartbeat = value
            return value

    def request_cut(self, sample_id: int, kind: str, *, retry_for_s: float | None = None) -> CommandOutcome:
        """Ask the PLC to cut one sample; accepted only when the PLC's accepted_seq carries this command's seq.

        Raises a RobotError when the answer is unknown (link down, PLC not answering); calling again with the
        same sample and kind then repeats the same seq, which the PLC will not cut twice. A targeted cut is
        only useful while its belt segment passes the cutter: `retry_for_s` bounds how late a retried command
        may still go out (default: the driver's retry_for_s).
        """
        if kind not in KIND_CODES:
            raise ValueError(f"sample {sample_id}: kind {kind!r} not in {tuple(KIND_CODES)}")
        if isinstance(sample_id, bool) or not isinstance(sample_id, int) or not 0 < sample_id < 2**32:
            raise ValueError(f"sample_id {sample_id!r} must be an integer 1..2^32-1 (PLC register pair)")
        return self._command(COMMAND_CUT, sample_id, KIND_CODES[kind], f"cut sample {sample_id} ({kind})",
                             retry_for_s)

    def reset_fault(self) -> CommandOutcome:
        """Send RESET: clears jam, door-open and power-loss faults (carousel full needs an emptied carousel)."""
        return self._command(COMMAND_RESET, 0, 0, "reset fault", None)

    @property
    def pending_command_seq(self) -> int | None:
        """Seq of a command sent whose answer is not known yet, else None."""
        return self._pending[3] if self._pending else None

    def _command(self, command: int, sample_id: int, kind_code: int, what: str,
                 retry_for_s: float | None) -> CommandOutcome:
        with self._lock:
            self._with_reconnect("connect", lambda: None, retry_for_s)
            pending = self._pending
            if pending is not None and pending[:3] == (command, sample_id, kind_code):
                seq = pending[3]
                log.info("sampler PLC %s: %s again with the same seq %d", self.endpoint, what, seq)
            else:
                if pending is not None:
                    log.warning("sampler PLC %s: seq %d (sample %d) was never answered; sending a new command",
                                self.endpoint, pending[3], pending[1])
                # Another writer (an operator's RESET from a second driver) may have used the next seq since
                # this driver last wrote: the PLC would skip our command as already evaluated and its
                # accepted_seq would seem to confirm it. Continue after the seq the PLC holds now.
                held = self._with_reconnect("read the command block", self._held_seq, retry_for_s)
                if held != (self._last_seq or 0):
                    log.info("sampler PLC %s: the command block holds seq %d (this driver last wrote %s): another "
                             "writer sent a command; continuing after it", self.endpoint, held, self._last_seq)
                seq = next_seq(held)
                self._last_seq = seq
                self._pending = (command, sample_id, kind_code, seq)
            outcome = self._with_reconnect(f"{what} (seq {seq})",
                                           lambda: self._send_and_confirm(command, sample_id, kind_code, seq, what),
                                           retry_for_s)
            self._pending = None
            return outcome

    def _send_and_confirm(self, command: int, sample_id: int, kind_code: int, seq: int, what: str) -> CommandOutcome:
        client = self._ensure_connected()
        heartbeat = (self._edge_heartbeat + 1) % 2**16
        words = SAMPLER_COMMAND.encode({"edge_heartbeat": heartbeat, "command": command, "command_seq": seq,
                                        "sample_id": sample_id, "sample_kind": kind_code})
        start = SAMPLER_COMMAND.start
        self._call(16, start, len(words), lambda: client.write_registers(start, words, device_id=self.unit_id))
        self._edge_heartbeat = heartbeat
        deadline = self._clock() + self.timeout_s
        while True:
            status = self._read_status(client)
            if status.accepted_seq == seq:
                return CommandOutcome(True, self._accepted_reason(command, sample_id, status), seq)
            if status.command_result in REFUSALS:
                reason = self._refusal_reason(status)
                log.info("sampler PLC %s: %s seq %d refused: %s", self.endpoint, what, seq, reason)
                return CommandOutcome(False, reason, seq)
            if self._clock() >= deadline:
                raise CommandNotAnsweredError(
                    f"sampler PLC {self.endpoint}: {what} seq {seq} neither taken nor refused within "
                    f"{self.timeout_s} s (accepted_seq {status.accepted_seq}, result {status.command_result}, "
                    f"state {status.state}); the same request will repeat seq {seq}")
            self._sleep(self.poll_interval_s)

    @staticmethod
    def _accepted_reason(command: int, sample_id: int, status: PlcStatus) -> str:
        if command != COMMAND_CUT:
            return "accepted"
        if (status.active_sample_id == sample_id and status.in_cycle) or status.last_sealed_sample_id == sample_id:
            return "accepted"
        # The seq was taken before, but the cycle is gone (power loss, jam): say so, reconciliation decides.
        return (f"accepted earlier, but sample {sample_id} is neither in a cycle nor sealed (PLC {status.state}, "
                f"fault {status.fault}): reconcile")

    @staticmethod
    def _refusal_reason(status: PlcStatus) -> str:
        if status.command_result == "busy":
            return f"busy: PLC {status.state} with sample {status.active_sample_id}"
        if status.command_result == "faulted":
            return f"faulted: {status.fault} (PLC {status.state})"
        return "bad command: the PLC refused the command block"
