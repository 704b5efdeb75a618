"""A simulated sampler PLC: the contract's register map over a realistic cut-divide-seal-place cycle.

The PLC works like a real one: every scan (`tick(now)`) it reads its holding
registers, advances the cycle by the time that passed, evaluates a new
command and publishes its status block. Time is an argument, so a test drives
a day of sampling in a second; `serve()` runs the scan on a thread with the
simulator's clock and serves the registers over Modbus TCP (a PlcServer).

Rules the edge relies on (and the reasons):

* A command is *new* when its `command_seq` differs from the last seq the PLC
  evaluated. Each seq is evaluated once: a command answered "busy" is not
  taken later when the PLC becomes idle (the edge has already been told no),
  and a repeated seq never cuts twice.
* When a new seq is written, the communication handler sets `command_result`
  to 0 (none) before the write is acknowledged, so a read-back after the write
  never sees the previous command's result; the next scan sets the result.
* Retentive memory (kept through a power loss): the evaluated and accepted
  seq, `last_sealed_sample_id`, `carousel_used` and the command block. Lost:
  the cycle in progress (its sample is not sealed), `active_sample_id`,
  `cycles_completed` ("since power-up"), the heartbeat, `command_result`.

Reconciliation after a power loss: because `accepted_seq` survives, a command
the edge retries with the same seq after power comes back is ignored and reads
back as accepted, yet the sample is not cut. A sample counts as sealed only
when the PLC reports it as `last_sealed_sample_id` (or the edge saw it there);
a sample the PLC accepted that is neither active nor sealed while the fault is
"power loss" was lost with the cycle and is recorded failed. The edge must
reconcile before it sends RESET, and asks for a replacement under a new sample
id and a new seq (see sampling_robot.reconcile).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from orelane.contract.registers import (COMMAND_CUT, COMMAND_NONE, COMMAND_RESET, FAULT_NAMES, KIND_CODES,
                                        RESULT_NAMES, SAMPLER_COMMAND, SAMPLER_STATUS, STATE_NAMES)
from orelane.modbus_server import ModbusDeviceServer, RegisterBank, free_port
from sampling_robot.status import PlcStatus, decode_status

log = logging.getLogger(__name__)

STATE_CODES = {name: code for code, name in STATE_NAMES.items()}
FAULT_CODES = {name: code for code, name in FAULT_NAMES.items()}
RESULT_CODES = {name: code for code, name in RESULT_NAMES.items()}
KIND_NAMES = {code: name for name, code in KIND_CODES.items()}

# Share of the cycle each phase takes: the cutter crosses the stream quickly,
# crushing and rotary division take longest.
PHASES: tuple[tuple[str, float], ...] = (("cutting", 0.15), ("dividing", 0.45), ("sealing", 0.2), ("placing", 0.2))
INJECTABLE_FAULTS = ("jam", "door open")


@dataclass(frozen=True)
class CycleRecord:
    """One cycle the PLC started; `sealed_s` is set when the cup was sealed and placed, `aborted` names why not."""

    sample_id: int
    kind: str
    command_seq: int
    started_s: float
    sealed_s: float | None = None
    aborted: str = ""


@dataclass
class _Cycle:
    sample_id: int
    kind: str
    command_seq: int
    started_s: float


class SamplerPlcSimulator:
    """The sampler PLC behind SAMPLER_COMMAND (holding) and SAMPLER_STATUS (input registers)."""

    def __init__(self, cycle_s: float = 30.0, carousel_capacity: int = 24,
                 clock: Callable[[], float] = time.monotonic, *, watchdog_s: float = 10.0,
                 power_up_s: float = 2.0):
        if not cycle_s > 0:
            raise ValueError(f"cycle_s must be > 0 s, got {cycle_s}")
        if not 0 < carousel_capacity < 2**16:
            raise ValueError(f"carousel_capacity must be 1..65535 cups, got {carousel_capacity}")
        if not watchdog_s > 0 or power_up_s < 0:
            raise ValueError(f"watchdog_s must be > 0 and power_up_s >= 0, got {watchdog_s}, {power_up_s}")
        self.cycle_s, self.carousel_capacity, self.clock = cycle_s, carousel_capacity, clock
        self.watchdog_s, self.power_up_s = watchdog_s, power_up_s
        self.bank = RegisterBank(SAMPLER_STATUS.count, SAMPLER_COMMAND.count, on_write=self._on_write)
        self.holding_writes: list[tuple[int, tuple[int, ...]]] = []  # (address, words) of every Modbus write
        self.scanning = True  # False: the PLC is in STOP; registers are served but nothing happens
        self._cycles: list[CycleRecord] = []
        self._now: float | None = None
        # retentive
        self._evaluated_seq = 0
        self._accepted_seq = 0
        self._last_sealed = 0
        self._carousel_used = 0
        # volatile
        self._state, self._fault, self._result = "idle", "none", "none"
        self._cycle: _Cycle | None = None
        self._interrupted_sample_id = 0  # shown as active while a fault holds an aborted cycle
        self._cycles_completed = 0
        self._plc_heartbeat = 0
        self._next_heartbeat_s = 0.0
        self._power_up_until = 0.0
        self._edge_heartbeat_seen = 0
        self._edge_heartbeat_changed_s = 0.0
        self._watchdog_expired = False
        self._watchdog_trips = 0
        self._publish()

    # ------------------------------------------------------------ the scan

    def tick(self, now: float) -> None:
        """One PLC scan at time `now` (s): heartbeat, watchdog, cycle progress, command, status registers."""
        with self.bank.lock:
            if self._now is None:
                self._start(now)
            now = max(now, self._now)  # a clock never runs backwards inside the PLC
            self._now = now
            self._beat(now)
            self._watch_edge(now)
            if self._state == "power-up" and now >= self._power_up_until:
                self._state = "idle"
                log.info("sampler PLC: powered up; fault %s until reset", self._fault)
            self._advance_cycle(now)
            if self._state != "power-up":  # the program is still starting; a new command waits
                self._evaluate_command(now)
            self._publish()

    def _start(self, now: float) -> None:
        self._now = now
        self._next_heartbeat_s = now + 1.0
        self._edge_heartbeat_changed_s = now
        self._edge_heartbeat_seen = self._holding("edge_heartbeat")

    def _beat(self, now: float) -> None:
        if now >= self._next_heartbeat_s:
            beats = int(now - self._next_heartbeat_s) + 1
            self._plc_heartbeat = (self._plc_heartbeat + beats) % 2**16
            self._next_heartbeat_s += beats

    def _watch_edge(self, now: float) -> None:
        seen = self._holding("edge_heartbeat")
        if seen != self._edge_heartbeat_seen:
            self._edge_heartbeat_seen, self._edge_heartbeat_changed_s = seen, now
            if self._watchdog_expired:
                log.info("sampler PLC: edge heartbeat back (%d)", seen)
            self._watchdog_expired = False
        elif not self._watchdog_expired and now - self._edge_heartbeat_changed_s >= self.watchdog_s:
            self._watchdog_expired = True
            self._watchdog_trips += 1
            log.warning("sampler PLC: edge heartbeat stuck at %d for %.1f s (watchdog %.1f s)",
                        seen, now - self._edge_heartbeat_changed_s, self.watchdog_s)

    def _advance_cycle(self, now: float) -> None:
        cycle = self._cycle
        if cycle is None:
            return
        elapsed = now - cycle.started_s
        if elapsed >= self.cycle_s:
            self._complete(cycle, cycle.started_s + self.cycle_s)
            return
        edge = 0.0
        for phase, share in PHASES:
            edge += share * self.cycle_s
            if elapsed < edge:
                self._state = phase
                return
        self._state = PHASES[-1][0]

    def _complete(self, cycle: _Cycle, sealed_s: float) -> None:
        self._cycle = None
        self._state = "idle"
        self._last_sealed = cycle.sample_id
        self._cycles_completed += 1
        self._carousel_used += 1
        self._replace_record(cycle, sealed_s=sealed_s)
        log.info("sampler PLC: sample %d sealed in cup %d/%d", cycle.sample_id, self._carousel_used,
                 self.carousel_capacity)
        if self._carousel_used >= self.carousel_capacity:
            self._set_fault("carousel full")

    def _evaluate_command(self, now: float) -> None:
        seq = self._holding("command_seq")
        if seq == self._evaluated_seq or seq == 0:
            return
        self._evaluated_seq = seq
        command = self._holding("command")
        sample_id = self._holding("sample_id")
        kind_code = self._holding("sample_kind")
        if command == COMMAND_CUT:
            if sample_id == 0 or kind_code not in KIND_NAMES:
                self._answer(seq, "bad command", f"cut needs a sample id and kind 1 or 2, got {sample_id}, "
                                                 f"{kind_code}")
            elif self._fault != "none":
                self._answer(seq, "faulted", self._fault)
            elif self._state != "idle":
                self._answer(seq, "busy", f"{self._state} sample {self._active_sample_id()}")
            else:
                self._accepted_seq = seq
                self._cycle = _Cycle(sample_id, KIND_NAMES[kind_code], seq, now)
                self._cycles.append(CycleRecord(sample_id, KIND_NAMES[kind_code], seq, now))
                self._state = PHASES[0][0]
                self._answer(seq, "accepted", f"cut sample {sample_id}")
        elif command == COMMAND_RESET:
            if self._fault == "carousel full":
                self._answer(seq, "faulted", "carousel full: empty the carousel")
            else:
                self._clear_fault()
                self._accepted_seq = seq
                self._answer(seq, "accepted", "reset")
        elif command == COMMAND_NONE:
            self._result = "none"
        else:
            self._answer(seq, "bad command", f"command code {command} not in 0 none, 1 cut, 2 reset")

    def _answer(self, seq: int, result: str, detail: str) -> None:
        self._result = result
        log.info("sampler PLC: command seq %d %s (%s)", seq, result, detail)

    # ------------------------------------------------------------ faults and operator actions

    def inject_fault(self, fault: str, now: float | None = None) -> None:
        """Raise a machine fault ("jam" or "door open"); a cycle in progress is aborted and its sample not sealed."""
        if fault not in INJECTABLE_FAULTS:
            raise ValueError(f"fault {fault!r} cannot be injected; choose one of {INJECTABLE_FAULTS} "
                             f"(carousel full follows from use, power loss from power_loss())")
        with self.bank.lock:
            self.tick(self.clock() if now is None else now)
            self._abort_cycle(fault, keep_shown=True)
            self._set_fault(fault)
            self._publish()

    def power_loss(self, now: float | None = None) -> None:
        """Lose power now: the cycle in progress is lost, volatile memory cleared, power-up follows."""
        with self.bank.lock:
            now = self.clock() if now is None else now
            self.tick(now)
            self._abort_cycle("power loss", keep_shown=False)
            self._interrupted_sample_id = 0
            self._fault = "power loss"
            self._state = "power-up"
            self._power_up_until = self._now + self.power_up_s
            self._result = "none"
            self._cycles_completed = 0
            self._plc_heartbeat = 0
            self._next_heartbeat_s = self._now + 1.0
            self._edge_heartbeat_changed_s = self._now
            self._watchdog_expired = False
            log.warning("sampler PLC: power loss; accepted_seq %d retained", self._accepted_seq)
            self._publish()

    def _clear_fault(self) -> None:
        if self._fault == "none":
            return
        log.info("sampler PLC: fault %s reset", self._fault)
        self._fault = "none"
        self._interrupted_sample_id = 0
        if self._state == "faulted":
            self._state = "idle"
        if self._carousel_used >= self.carousel_capacity:
            self._set_fault("carousel full")

    def reset_at_panel(self, now: float | None = None) -> None:
        """An operator presses RESET on the PLC's own panel: like the RESET command, but leaves the command
        block and accepted_seq alone (the edge stays the only writer of commands)."""
        with self.bank.lock:
            self.tick(self.clock() if now is None else now)
            if self._fault != "carousel full":
                self._clear_fault()
            self._publish()

    def empty_carousel(self, now: float | None = None) -> None:
        """An operator swaps the carousel: all cups free; clears a carousel-full fault (other faults stay)."""
        with self.bank.lock:
            self.tick(self.clock() if now is None else now)
            self._carousel_used = 0
            if self._fault == "carousel full":
                self._fault, self._state = "none", "idle"
            self._publish()

    def _abort_cycle(self, reason: str, keep_shown: bool) -> None:
        cycle = self._cycle
        if cycle is None:
            return
        self._cycle = None
        self._interrupted_sample_id = cycle.sample_id if keep_shown else 0
        self._replace_record(cycle, aborted=reason)
        log.warning("sampler PLC: cycle of sample %d aborted by %s", cycle.sample_id, reason)

    def _set_fault(self, fault: str) -> None:
        self._fault = fault
        self._state = "faulted"
        log.warning("sampler PLC: fault %s", fault)

    def _replace_record(self, cycle: _Cycle, **changes) -> None:
        for i in range(len(self._cycles) - 1, -1, -1):
            r = self._cycles[i]
            if (r.command_seq, r.sample_id) == (cycle.command_seq, cycle.sample_id) and r.sealed_s is None \
                    and not r.aborted:
                self._cycles[i] = CycleRecord(r.sample_id, r.kind, r.command_seq, r.started_s,
                                              changes.get("sealed_s"), changes.get("aborted", ""))
                return

    # ------------------------------------------------------------ registers

    def _active_sample_id(self) -> int:
        return self._cycle.sample_id if self._cycle else self._interrupted_sample_id

    def _holding(self, name: str) -> int:
        reg = SAMPLER_COMMAND[name]
        words = self.bank.holding.values[reg.address:reg.address + reg.width]
        return words[0] if reg.width == 1 else (words[0] << 16) | words[1]

    def _publish(self) -> None:
        self.bank.set_input(SAMPLER_STATUS, {
            "plc_heartbeat": self._plc_heartbeat,
            "state": STATE_CODES[self._state],
            "fault_code": FAULT_CODES[self._fault],
            "accepted_seq": self._accepted_seq,
            "command_result": RESULT_CODES[self._result],
            "active_sample_id": self._active_sample_id(),
            "last_sealed_sample_id": self._last_sealed,
            "cycles_completed": self._cycles_completed,
            "carousel_used": self._carousel_used,
            "carousel_capacity": self.carousel_capacity,
        })

    def _on_write(self, address: int, words: list[int]) -> None:
        """Modbus write handler (server thread, bank lock held): log it; a new seq clears the last result."""
        self.holding_writes.append((address, tuple(words)))
        seq_address = SAMPLER_COMMAND["command_seq"].address
        if address <= seq_address < address + len(words):
            seq = words[seq_address - address]
            if seq != self._evaluated_seq:
                self._result = "none"
                self.bank.set_input(SAMPLER_STATUS, {"command_result": RESULT_CODES["none"]})

    def receive_write(self, address: int, words: list[int]) -> None:
        """What a Modbus write of `words` at protocol `address` does, for tests without a server."""
        error = self.bank.holding.setValues(address + 1, list(words))  # the block takes 1-based addresses
        if error is not None:
            raise ValueError(f"write of {len(words)} registers at {address}: {error!r}")

    # ------------------------------------------------------------ for tests and accounting

    def status(self) -> PlcStatus:
        return decode_status(self.bank.read(SAMPLER_STATUS))

    @property
    def cycles(self) -> list[CycleRecord]:
        """Every cycle started, in order, with how it ended."""
        with self.bank.lock:
            return list(self._cycles)

    @property
    def completed_cycles(self) -> list[CycleRecord]:
        return [c for c in self.cycles if c.sealed_s is not None]

    def cuts_of(self, sample_id: int) -> int:
        """How many cycles the PLC started for one sample (a correct edge never makes this exceed 1)."""
        return sum(1 for c in self.cycles if c.sample_id == sample_id)

    @property
    def watchdog_expired(self) -> bool:
        """The edge heartbeat has not changed for watchdog_s; clears when it changes again."""
        return self._watchdog_expired

    @property
    def watchdog_trips(self) -> int:
        """How often the watchdog expired since power-up."""
        return self._watchdog_trips

    # ------------------------------------------------------------ serving

    def serve(self, host: str = "127.0.0.1", port: int = 0, unit_id: int = 1,
              scan_interval_s: float = 0.05) -> "PlcServer":
        """Serve the registers over Modbus TCP and scan every scan_interval_s with `clock`; started at once.

        The returned PlcServer is a context manager; its start() is a no-op while running.
        """
        return PlcServer(self, host, port, unit_id, scan_interval_s).start()


class PlcServer:
    """A SamplerPlcSimulator on the network: a Modbus TCP server and the scan thread."""

    def __init__(self, plc: SamplerPlcSimulator, host: str = "127.0.0.1", port: int = 0, unit_id: int = 1,
                 scan_interval_s: float = 0.05):
        if not scan_interval_s > 0:
            raise ValueError(f"scan_interval_s must be > 0 s, got {scan_interval_s}")
        self.plc, self.host, self.unit_id, self.scan_interval_s = plc, host, unit_id, scan_interval_s
        self.port = port or free_port(host)
        self._server: ModbusDeviceServer | None = None
        self._scanner: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> "PlcServer":
        if self._scanner is not None:
            return self
        plc = self.plc
        if plc.scanning:
            plc.tick(plc.clock())  # the first scan runs before anyone can connect
        self.link_up()
        self._stop.clear()
        self._scanner = threading.Thread(target=self._scan_loop, name=f"sampler-plc-{self.port}", daemon=True)
        self._scanner.start()
        log.info("sampler PLC simulator on %s:%d unit %d", self.host, self.port, self.unit_id)
        return self

    def _scan_loop(self) -> None:
        while not self._stop.wait(self.scan_interval_s):
            if not self.plc.scanning:
                continue
            try:
                self.plc.tick(self.plc.clock())
            except Exception:
                log.exception("sampler PLC simulator on port %d: scan failed", self.port)

    def link_down(self) -> None:
        """Stop answering on the network (cable pulled); the PLC keeps scanning."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def link_up(self) -> None:
        """Answer again on the same host and port."""
        if self._server is None:
            self._server = ModbusDeviceServer(self.plc.bank, self.host, self.port, self.unit_id).start()

    def stop(self) -> None:
        self._stop.set()
        if self._scanner is not None:
            self._scanner.join(5)
            self._scanner = None
        self.link_down()

    def __enter__(self) -> "PlcServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
