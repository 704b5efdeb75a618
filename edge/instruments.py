"""Modbus readers of the lane's instruments (belt scale, gamma portal), with link state and backoff."""

from __future__ import annotations

import logging
import random
import time
from typing import Callable

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from orelane.config import ModbusEndpoint
from orelane.contract import ContractError
from orelane.contract.registers import RegisterMap

log = logging.getLogger(__name__)


class InstrumentReader:
    """Reads one register map from one device; a failed read returns None and backs off (capped, jittered)."""

    def __init__(self, endpoint: ModbusEndpoint, regmap: RegisterMap, clock: Callable[[], float] = time.monotonic,
                 max_backoff_s: float = 10.0):
        self.endpoint, self.regmap, self.clock = endpoint, regmap, clock
        self.max_backoff_s = max_backoff_s
        self.client = ModbusTcpClient(endpoint.host, port=endpoint.port, timeout=endpoint.timeout_s, retries=0)
        self.link_up = False
        self.failures = 0
        self.values_refused = 0  # reads whose values were out of the contract's range
        self.last_error = ""
        self.values_in_range: dict[str, float] = {}  # of the last read, refused or not ({} when it failed)
        self._retry_at = 0.0

    def read(self) -> dict[str, float] | None:
        now = self.clock()
        if now < self._retry_at:
            return None
        where = f"{self.regmap.device} at {self.endpoint.host}:{self.endpoint.port}"
        try:
            if not self.client.connected and not self.client.connect():
                raise ConnectionError(f"{where}: connection refused or timed out")
            rr = self.client.read_input_registers(self.regmap.start, count=self.regmap.count,
                                                  device_id=self.endpoint.unit_id)
            if rr.isError():
                raise ModbusException(f"{where}: read of input registers {self.regmap.start}+{self.regmap.count} "
                                      f"answered {rr}")
        except (ConnectionError, ModbusException, OSError) as exc:
            self.values_in_range = {}
            self._fail(str(exc) if where in str(exc) else f"{where}: {exc}", now)
            return None
        if not self.link_up:
            log.info("%s: link up", where)
        self.link_up, self.failures = True, 0
        try:
            values = self.regmap.decode(rr.registers)
        except ContractError as exc:  # the link works; the device reports nonsense
            self.values_in_range = self.regmap.decode_in_range(rr.registers)
            self.values_refused += 1
            if self.last_error != f"{where}: {exc}":
                log.warning("%s: %s", where, exc)
            self.last_error = f"{where}: {exc}"
            return None
        self.last_error = ""
        self.values_in_range = values
        return values

    def _fail(self, message: str, now: float) -> None:
        self.failures += 1
        if self.link_up or self.failures == 1:
            log.warning("%s", message)
        self.link_up, self.last_error = False, message
        self.client.close()
        backoff = min(self.max_backoff_s, 0.2 * 2 ** min(self.failures, 10))
        self._retry_at = now + backoff * random.uniform(0.5, 1.0)

    def close(self) -> None:
        self.client.close()
