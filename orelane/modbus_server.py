"""A Modbus TCP server for a device's register maps, run on its own thread.

The belt scale, gamma portal and sampler PLC simulators and the test fixtures
all serve their registers through this; the simulated device logic updates the
bank and reacts to holding-register writes through `on_write`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Callable

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusDeviceContext, ModbusServerContext
from pymodbus.datastore.store import BaseModbusDataBlock
from pymodbus.server import ModbusTcpServer

from orelane.contract.registers import RegisterMap, encode_value

log = logging.getLogger(__name__)


class _Block(BaseModbusDataBlock[list]):
    """Registers 0..size-1 on the wire. ModbusDeviceContext adds 1 to request addresses, so we take it off."""

    def __init__(self, size: int, lock: threading.RLock, on_write: Callable[[int, list[int]], None] | None):
        self.address, self.default_value, self.values = 0, 0, [0] * size
        self._lock, self._on_write = lock, on_write

    def getValues(self, address, count=1):
        start = address - 1
        if start < 0 or count < 1 or start + count > len(self.values):
            return ExcCodes.ILLEGAL_ADDRESS
        with self._lock:
            return self.values[start:start + count]

    def setValues(self, address, values):
        start = address - 1
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if start < 0 or start + len(values) > len(self.values):
            return ExcCodes.ILLEGAL_ADDRESS
        with self._lock:
            if self._on_write is None:
                return ExcCodes.ILLEGAL_FUNCTION
            self.values[start:start + len(values)] = values
            self._on_write(start, values)
        return None

    def reset(self):
        with self._lock:
            self.values = [0] * len(self.values)


class RegisterBank:
    """Input and holding registers of one device, guarded by one lock shared with the device logic."""

    def __init__(self, input_size: int, holding_size: int = 0,
                 on_write: Callable[[int, list[int]], None] | None = None):
        self.lock = threading.RLock()
        self.input = _Block(input_size, self.lock, None)
        self.holding = _Block(max(holding_size, 1), self.lock, on_write if holding_size else None)

    def set_input(self, regmap: RegisterMap, values: dict[str, float]) -> None:
        """Write named values of an input-register map (names not given keep their words)."""
        with self.lock:
            for reg in regmap.registers:
                if reg.name in values:
                    self.input.values[reg.address:reg.address + reg.width] = encode_value(reg, values[reg.name])

    def read(self, regmap: RegisterMap) -> list[int]:
        block = self.input if regmap.table == "input" else self.holding
        with self.lock:
            return list(block.values[regmap.start:regmap.start + regmap.count])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ModbusDeviceServer:
    """Serve a RegisterBank over Modbus TCP on a background thread; use as a context manager."""

    def __init__(self, bank: RegisterBank, host: str = "127.0.0.1", port: int = 0, unit_id: int = 1):
        self.bank, self.host, self.port, self.unit_id = bank, host, port or free_port(host), unit_id
        device = ModbusDeviceContext(di=None, co=None, ir=bank.input, hr=bank.holding)
        self._context = ModbusServerContext(devices={unit_id: device}, single=False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> "ModbusDeviceServer":
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._listen())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name=f"modbus-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise RuntimeError(f"Modbus server on {self.host}:{self.port} did not start: {failure[0]}")
        return self

    async def _listen(self) -> None:
        self._server = ModbusTcpServer(self._context, address=(self.host, self.port))
        await self._server.serve_forever(background=True)

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
        try:
            fut.result(5)
        except Exception as exc:  # stopping anyway
            log.warning("Modbus server %s:%s shutdown: %s", self.host, self.port, exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)
        self._loop = self._server = None

    def __enter__(self) -> "ModbusDeviceServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
