"""Fixtures: a settable clock, a sampler PLC simulator served on a free port, and a link that can be cut."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from sampling_robot.plc_sim import SamplerPlcSimulator


class FakeClock:
    """A clock a test sets; `sleep` advances it instead of waiting."""

    def __init__(self, start_s: float = 1000.0):
        self.now = start_s
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def plc_server(clock):
    """A sampler PLC (30 s cycle, 24 cups) served on a free port; its scan thread reads the fake clock."""
    sim = SamplerPlcSimulator(cycle_s=30.0, carousel_capacity=24, clock=clock)
    with sim.serve(scan_interval_s=0.01) as server:
        yield server


@pytest.fixture
def plc(plc_server) -> SamplerPlcSimulator:
    return plc_server.plc


class FlakyLink:
    """A TCP relay between the driver and the PLC that can break right around the next FC16 command write.

    mode "ack_lost": the PLC takes the write, the acknowledgement never reaches the driver.
    mode "after_ack": the acknowledgement arrives, the link dies before the read-back.
    While down, connections are accepted and closed at once, like a switch port flapping.
    """

    def __init__(self, upstream_port: int, host: str = "127.0.0.1"):
        self.upstream = (host, upstream_port)
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.05)
        self.host, self.port = host, self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._armed: tuple[str, float] | None = None
        self._down_until = 0.0
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        self.breaks = 0
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def break_at_next_command(self, mode: str, down_s: float) -> None:
        assert mode in ("ack_lost", "after_ack")
        with self._lock:
            self._armed = (mode, down_s)

    @property
    def up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, responses: bool) -> None:
        buffer = b""
        try:
            while True:
                data = source.recv(4096)
                if not data:
                    break
                if not responses:
                    sink.sendall(data)
                    continue
                buffer += data
                while len(buffer) >= 8:
                    size = 6 + int.from_bytes(buffer[4:6], "big")
                    if len(buffer) < size:
                        break
                    frame, buffer = buffer[:size], buffer[size:]
                    with self._lock:
                        armed = self._armed if frame[7] == 16 else None
                        if armed:
                            self._armed = None
                    if armed is None:
                        sink.sendall(frame)
                        continue
                    mode, down_s = armed
                    if mode == "after_ack":
                        sink.sendall(frame)
                    self._down_until = time.monotonic() + down_s
                    self.breaks += 1
                    self._cut(source, sink)
                    return
        except OSError:
            pass
        self._cut(source, sink)

    @staticmethod
    def _cut(*sockets: socket.socket) -> None:
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            self._cut(*self._sockets)


@pytest.fixture
def flaky_link(plc_server):
    link = FlakyLink(plc_server.port)
    yield link
    link.close()
