"""Benchmark: one lane daemon (edge.daemon.LaneDaemon) over a real Mosquitto, fed binary spectrum batches of
224 bands as fast as it takes them; throughput, publish-to-result latency and loss, against a named baseline
measured in the same run.

    python bench/edge.py [--seconds 20] [--batch-size 1000] [--window 4] [--rate 0]
                         [--baseline-seconds 5] [--daemon-cpu N] [--profile]

What runs, each in its own process so no Python interpreter lock is shared with the daemon:
  * a private Mosquitto (orelane.demo.Broker) on a free loopback port;
  * the lane's instruments: the belt-scale simulator (edge.simulated_lane.BeltScaleSimulator, belt at 3 m/s)
    and the sampler PLC simulator (sampling_robot.plc_sim), both over Modbus TCP;
  * the daemon, configured by orelane.demo.site_config and scoring with spectral.model.train_synthetic's
    model, pinned to one CPU (--daemon-cpu; the bench and Mosquitto get the other CPUs);
  * this process: the spectrometer side (publisher) and the ingest side (subscriber to results/spectra and
    deadletter).

Load: pre-generated simulated lane spectra (uint16 counts, 2 % carrying a contaminant), cycled, sent as
spectra/batch of --batch-size with consecutive sequence numbers and real acquisition timestamps. By default
the publisher is closed-loop: it keeps --window batches in flight (published, no verdict yet), which is "as
fast as the daemon can take them" with bounded queueing. --rate R publishes open-loop at R spectra/s instead,
to read the latency at a given load.

Measured after --warmup-s: spectra/s = verdict rows received / time; latency of a spectrum = when its
results/spectra message reached the subscriber minus when its batch was handed to the publisher (so it includes
two broker hops and both client libraries); p99 over spectra. lost = published sequence numbers with neither a
result row nor a dead letter when the run has drained (up to --drain-s).

Baseline ("spectra/json"): the same daemon, broker and clients with one JSON spectrum per message (the
contract's other input), closed-loop with 32 messages in flight, for --baseline-seconds.

The last line is:  spectra_per_s=<N> p99_latency_ms=<L> lost=<K>
the line before:   baseline=spectra/json baseline_spectra_per_s=<B> speedup=<N/B>
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
# This file is bench/edge.py: take bench/ off the path so `import edge` finds the edge package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core means one BLAS thread too

import collections  # noqa: E402
import multiprocessing as mp  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402

N_BANDS = 224
BELT_SPEED_M_S = 3.0
JSON_WINDOW = 32  # spectra/json messages in flight in the baseline


# ------------------------------------------------------------------ child processes


def _pin(cpus: set[int] | None) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def _serve_instruments(cpus: set[int] | None, ports: "mp.Queue", stop: "mp.synchronize.Event") -> None:
    """The belt scale and the sampler PLC, as a real lane's devices: on the network, outside the daemon."""
    _pin(cpus)
    from edge.simulated_lane import BeltScaleSimulator, LaneWorld
    from orelane.modbus_server import free_port
    from sampling_robot.plc_sim import SamplerPlcSimulator

    world = LaneWorld(speed_m_s=BELT_SPEED_M_S)
    scale = BeltScaleSimulator(world)
    scale.refresh(time.time())
    scale.server.start()
    plc = SamplerPlcSimulator(cycle_s=4.0, carousel_capacity=500, clock=time.time)
    plc_server = plc.serve("127.0.0.1", free_port())
    ports.put((scale.server.port, plc_server.port))
    try:
        while not stop.wait(0.02):  # the integrator's register refresh
            scale.refresh(time.time())
    finally:
        plc_server.stop()
        scale.server.stop()


def _run_daemon(cpus: set[int] | None, mqtt_port: int, belt_port: int, plc_port: int, data_dir: str,
                routine_increment_t: float, cprofile_path: str | None,
                subscribed: "mp.synchronize.Event", ready: "mp.synchronize.Event", stop: "mp.synchronize.Event",
                report: "mp.Queue") -> None:
    """One LaneDaemon as `orelane edge` would run it. Sets `subscribed` once it is connected and knows the
    belt, `ready` once it holds both references; reports its counters when `stop` is set."""
    _pin(cpus)
    import dataclasses
    import logging

    logging.basicConfig(level=logging.WARNING, format="daemon %(levelname)s %(name)s: %(message)s")

    from edge.daemon import LaneDaemon
    from orelane.config import MqttConfig
    from orelane.demo import site_config
    from sampling_robot.registry import SampleRegistry
    from spectral import synth
    from spectral.model import train_synthetic

    site = site_config(MqttConfig(host="127.0.0.1", port=mqtt_port, protocol=5), Path(data_dir), belt_port,
                       plc_port, cutter_distance_m=30.0, robot_cycle_s=4.0, routine_increment_t=routine_increment_t)
    model = train_synthetic(synth.Instrument(synth.wavelength_grid(N_BANDS)), np.random.default_rng(7))
    registry = SampleRegistry(Path(data_dir) / "samples.sqlite")
    daemon = LaneDaemon(site, site.lanes[0], model, registry, client_id="orelane-bench-edge")
    edge_stop = threading.Event()
    profiler = None
    if cprofile_path:
        import cProfile
        profiler = cProfile.Profile()

    def work() -> None:
        if profiler is not None:
            profiler.runcall(daemon.run, edge_stop)
        else:
            daemon.run(edge_stop)

    thread = threading.Thread(target=work, name="edge", daemon=True)
    thread.start()
    core = daemon.core
    if _wait(lambda: daemon.mqtt.connected.is_set() and core.tracker.latest is not None, 30):
        subscribed.set()
        if _wait(lambda: core.dark is not None and core.white is not None, 30):
            ready.set()
    stop.wait()
    edge_stop.set()
    thread.join(15)
    if profiler is not None:
        profiler.dump_stats(cprofile_path)
    registry.close()
    report.put(dataclasses.asdict(daemon.counters))


def _wait(condition, timeout_s: float) -> bool:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.02)
    return True


# ------------------------------------------------------------------ measurement


@dataclass
class Phase:
    """Bookkeeping of one load phase: message k carries sequence numbers seq0 + k*per_message ... + per_message-1."""

    name: str
    seq0: int
    per_message: int
    lock: threading.Condition = field(default_factory=threading.Condition)
    published_t: list = field(default_factory=list)  # perf_counter when message k was handed to paho
    state: np.ndarray = field(default_factory=lambda: np.zeros(1 << 20, dtype=np.uint8))  # 0 open, 1 result, 2 dead
    accounted: int = 0  # spectra with a result or a dead letter
    arrivals: list = field(default_factory=list)  # (arrival perf_counter, new rows, latency s)
    dead_letters: int = 0
    foreign_dead_letters: int = 0  # dead letters without a seq of this phase

    @property
    def published(self) -> int:
        return len(self.published_t) * self.per_message

    def will_publish(self, t: float) -> int:
        """Register message k as published at t; returns k."""
        with self.lock:
            k = len(self.published_t)
            need = (k + 1) * self.per_message
            if need > self.state.size:
                self.state = np.concatenate([self.state, np.zeros(max(need, self.state.size), np.uint8)])
            self.published_t.append(t)
            return k

    def on_result(self, seqs: np.ndarray, arrived: float) -> None:
        rel = seqs.astype(np.int64) - self.seq0
        rel = rel[(rel >= 0) & (rel < self.published)]
        if rel.size == 0:
            return
        with self.lock:
            fresh = rel[self.state[rel] == 0]
            self.state[fresh] = 1
            self.accounted += fresh.size
            # one result message per batch: its rows share the batch's publish time
            k = int(rel[0]) // self.per_message
            self.arrivals.append((arrived, int(fresh.size), arrived - self.published_t[k]))
            self.lock.notify_all()

    def on_dead_letter(self, seq: int | None) -> None:
        with self.lock:
            self.dead_letters += 1
            rel = -1 if seq is None else seq - self.seq0
            if not 0 <= rel < self.published:
                self.foreign_dead_letters += 1
                return
            if self.state[rel] == 0:
                self.state[rel] = 2
                self.accounted += 1
                self.lock.notify_all()

    def wait_for_room(self, window_spectra: int, until: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: self.published - self.accounted + self.per_message <= window_spectra
                                      or time.perf_counter() >= until, timeout=max(0.0, until - time.perf_counter()))

    def drain(self, timeout_s: float) -> None:
        with self.lock:
            self.lock.wait_for(lambda: self.accounted >= self.published, timeout=timeout_s)

    def summary(self, t_from: float, t_to: float) -> dict:
        with self.lock:
            rows = [(n, lat) for t, n, lat in self.arrivals if t_from <= t <= t_to and n]
            lost = int(np.count_nonzero(self.state[:self.published] == 0))
        n = np.array([r[0] for r in rows], dtype=np.int64)
        lat = np.array([r[1] for r in rows], dtype=np.float64)
        out = {"spectra": int(n.sum()), "seconds": t_to - t_from, "lost": lost,
               "dead_letters": self.dead_letters, "published": self.published}
        out["spectra_per_s"] = out["spectra"] / out["seconds"] if out["seconds"] > 0 else 0.0
        if n.size:
            order = np.argsort(lat)
            cum = np.cumsum(n[order]) / n.sum()
            pct = {p: float(lat[order][min(np.searchsorted(cum, p / 100.0), len(lat) - 1)]) * 1e3
                   for p in (50, 90, 99)}
            out.update(p50_ms=pct[50], p90_ms=pct[90], p99_ms=pct[99], max_ms=float(lat.max()) * 1e3)
        else:
            out.update(p50_ms=float("nan"), p90_ms=float("nan"), p99_ms=float("nan"), max_ms=float("nan"))
        return out


class CpuMeter:
    """CPU seconds used by processes (by pid, from /proc), for 'was the daemon the one that was busy?'."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                out[name] = (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime
            except (OSError, IndexError, ValueError):
                out[name] = float("nan")
        return out


# ------------------------------------------------------------------ load


class Spectrometer:
    """Publishes spectra/batch or spectra/json for a Phase, closed-loop (window) or open-loop (rate)."""

    def __init__(self, client, site: str, lane: str, wavelengths_nm: np.ndarray, pool: np.ndarray):
        from orelane.contract import messages as msg, topics
        self.msg, self.topics = msg, topics
        self.client, self.lane = client, lane
        self.batch_topic = topics.topic(site, lane, "spectra/batch")
        self.json_topic = topics.topic(site, lane, "spectra/json")
        self.wavelengths_nm = wavelengths_nm.astype(np.float32)
        self.pool = pool
        self._json_templates: list[tuple[bytes, bytes, bytes]] | None = None

    def json_templates(self, n: int) -> list[tuple[bytes, bytes, bytes]]:
        """Spectrum JSON payloads split around seq and timestamp_s, so the publisher is not the bottleneck."""
        if self._json_templates is None:
            seq_mark, time_mark = 987654321987, 1234567890.5
            w = tuple(float(x) for x in self.wavelengths_nm)
            out = []
            for row in self.pool[:n]:
                body = self.msg.Spectrum(self.lane, seq_mark, time_mark, 5.0, w, tuple(float(c) for c in row)).to_json()
                head, rest = body.split(str(seq_mark).encode(), 1)
                mid, tail = rest.split(repr(time_mark).encode(), 1)
                out.append((head, mid, tail))
            self._json_templates = out
        return self._json_templates

    def run(self, phase: Phase, seconds: float, window_messages: int, rate_spectra_s: float,
            as_json: bool, stop_at: float | None = None) -> tuple[float, float]:
        """Publish for `seconds`; returns (start, end) perf_counter of the publishing."""
        b = phase.per_message
        qos = self.topics.qos("spectra/batch")
        templates = self.json_templates(2000) if as_json else None
        pool_n = self.pool.shape[0]
        start = time.perf_counter()
        end = start + seconds
        wall0 = time.time_ns() - int(start * 1e9)
        k = 0
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if rate_spectra_s > 0:
                due = start + k * b / rate_spectra_s
                if due > now:
                    time.sleep(min(due - now, end - now))
                    continue
            elif not phase.wait_for_room(window_messages * b, end):
                continue
            seq = phase.seq0 + k * b
            t = time.perf_counter()
            t_ns = wall0 + int(t * 1e9)
            if as_json:
                head, mid, tail = templates[k % len(templates)]
                payload = b"".join((head, str(seq).encode(), mid, repr(t_ns / 1e9).encode(), tail))
                topic = self.json_topic
            else:
                first = (k * b) % (pool_n - b)
                # a spectrometer stamps each spectrum when taken: here 100 kHz (the goal rate), the newest now
                stamps = t_ns - (np.arange(b, dtype=np.int64)[::-1] * 10_000)
                payload = self.msg.SpectrumBatch(self.lane, self.wavelengths_nm,
                                                 np.arange(seq, seq + b, dtype=np.uint64), stamps,
                                                 np.full(b, 5000, dtype=np.uint32),
                                                 self.pool[first:first + b]).to_bytes()
                topic = self.batch_topic
            phase.will_publish(t)
            self.client.publish(topic, payload, qos=qos)
            k += 1
        return start, time.perf_counter()


# ------------------------------------------------------------------ profile summaries


def summarise_pyspy(raw_path: Path, top: int = 18) -> list[str]:
    """Self and inclusive shares of functions from py-spy's collapsed stacks ('a;b;c count' lines)."""
    self_n: collections.Counter = collections.Counter()
    incl_n: collections.Counter = collections.Counter()
    thread_n: collections.Counter = collections.Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread (") else "?"
        thread_n["paho network loop" if thread.startswith("paho-mqtt") else thread] += n
        names = [_frame_name(f) for f in frames[1:]]
        if names:
            self_n[names[-1]] += n
        for name in set(names):
            incl_n[name] += n
    if not total:
        return ["py-spy recorded no samples"]
    lines = [f"py-spy: {total} samples of the daemon's threads while on CPU; by thread: "
             + ", ".join(f"{name} {100 * n / total:.1f} %" for name, n in thread_n.most_common())]
    lines.append("  self time (leaf function):")
    lines += [f"    {100 * n / total:5.1f} %  {name}" for name, n in self_n.most_common(top)]
    lines.append("  inclusive time:")
    lines += [f"    {100 * n / total:5.1f} %  {name}" for name, n in incl_n.most_common(top + 8)]
    return lines


def _frame_name(frame: str) -> str:
    """'func (path/file.py:123)' -> 'func (file.py)'."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else name


def summarise_cprofile(path: Path, top: int = 25) -> list[str]:
    import io
    import pstats
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue().splitlines()


# ------------------------------------------------------------------ main


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="publishing time of the spectra/batch phase (s)")
    p.add_argument("--batch-size", type=int, default=1000, help="spectra per spectra/batch message")
    p.add_argument("--window", type=int, default=4, help="batches in flight in closed-loop mode")
    p.add_argument("--rate", type=float, default=0.0, help="open-loop rate in spectra/s (0: closed loop)")
    p.add_argument("--warmup-s", type=float, default=2.0, help="start of each phase left out of the figures (s)")
    p.add_argument("--baseline-seconds", type=float, default=5.0, help="publishing time of the spectra/json phase")
    p.add_argument("--drain-s", type=float, default=15.0, help="wait this long for the last verdicts (s)")
    p.add_argument("--daemon-cpu", type=int, default=None,
                   help="CPU the daemon is pinned to (default: the last allowed CPU; -1: no pinning)")
    p.add_argument("--routine-increment-t", type=float, default=40.0,
                   help="routine sample every N tonnes (the belt carries 1.38 t/s), as in the demo")
    p.add_argument("--profile", action="store_true",
                   help="profile the daemon: py-spy (sampling, both threads, per phase) if found, else cProfile "
                        "(its work thread only, whole run)")
    p.add_argument("--py-spy", default=None, help="path of the py-spy binary (default: on PATH)")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.window < 1 or args.seconds <= args.warmup_s:
        p.error("need --batch-size >= 1, --window >= 1 and --seconds > --warmup-s")

    import paho.mqtt.client as mqtt

    from orelane.contract import ContractError, messages as msg, topics
    from orelane.demo import DEMO_LANE, DEMO_SITE, Broker
    from spectral import synth

    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    daemon_cpus = bench_cpus = None
    if args.daemon_cpu != -1 and len(allowed) >= 2:
        cpu = allowed[-1] if args.daemon_cpu is None else args.daemon_cpu
        daemon_cpus, bench_cpus = {cpu}, set(allowed) - {cpu}
        _pin(bench_cpus)  # Mosquitto and the instruments inherit the bench's CPUs
    print(f"code: {_code_version()}; CPUs allowed {allowed}: daemon on "
          f"{sorted(daemon_cpus) if daemon_cpus else 'any'}, bench, Mosquitto and instruments on "
          f"{sorted(bench_cpus) if bench_cpus else 'any'}")

    broker = Broker().start()
    if broker.kind != "mosquitto":
        broker.stop()
        print("mosquitto is not on PATH; this benchmark needs a real Mosquitto", file=sys.stderr)
        return 2
    ctx = mp.get_context("spawn")
    tmp = tempfile.TemporaryDirectory(prefix="orelane-bench-edge-")
    instruments_stop, daemon_stop = ctx.Event(), ctx.Event()
    daemon_subscribed, daemon_ready = ctx.Event(), ctx.Event()
    ports_q, report_q = ctx.Queue(), ctx.Queue()
    processes: list = []
    clients: list = []
    pyspy_proc = None
    try:
        instruments = ctx.Process(target=_serve_instruments, args=(bench_cpus, ports_q, instruments_stop),
                                  name="lane-instruments", daemon=True)
        instruments.start()
        processes.append(instruments)
        belt_port, plc_port = ports_q.get(timeout=30)

        inst = synth.Instrument(synth.wavelength_grid(N_BANDS))
        rng = np.random.default_rng(2025)
        pool = synth.simulate_lots(inst, rng, n_lots=20, spectra_per_lot=1000, contaminant_share=0.02,
                                   fraction_range=(0.05, 0.6), lot_prefix="bench").counts
        pool = np.ascontiguousarray(pool[rng.permutation(pool.shape[0])])

        def new_client(name: str):
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
            c.max_inflight_messages_set(max(64, JSON_WINDOW * 2, args.window * 4))
            c.max_queued_messages_set(0)
            return c

        pub_connected = threading.Event()
        pub = new_client("orelane-bench-spectrometer")
        pub.on_connect = lambda c, u, f, rc, pr: pub_connected.set()
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        clients.append(pub)
        if not pub_connected.wait(10):
            raise RuntimeError("bench publisher could not connect to Mosquitto")
        cprofile_path = str(Path(tmp.name) / "daemon.prof") if args.profile and not _find_pyspy(args) else None
        daemon = ctx.Process(target=_run_daemon, name="lane-daemon",
                             args=(daemon_cpus, broker.port, belt_port, plc_port, tmp.name, args.routine_increment_t,
                                   cprofile_path, daemon_subscribed, daemon_ready, daemon_stop,
                                   report_q), daemon=True)
        daemon.start()
        processes.append(daemon)
        if not daemon_subscribed.wait(60):
            raise RuntimeError("the daemon did not connect to Mosquitto and read the belt scale within 60 s")
        # Published once the daemon is connected, as the lane's spectrometer does, and again each second
        # until the daemon reports it has both (each reference has its own retained topic).
        w = inst.wavelengths_nm
        for _ in range(30):
            for name, counts in (("dark", inst.dark_reference()), ("white", inst.white_reference())):
                ref = msg.Reference(DEMO_LANE, name, time.time(), 5.0, tuple(map(float, w)),
                                    tuple(map(float, counts)))
                leaf = topics.reference_leaf(name)
                pub.publish(topics.topic(DEMO_SITE, DEMO_LANE, leaf), ref.to_json(),
                            topics.qos(leaf), retain=True).wait_for_publish(5)
            if daemon_ready.wait(1.0):
                break
        else:
            raise RuntimeError("the daemon did not take the dark and white references within 30 s")

        # The ingest side: verdicts and dead letters, stamped on arrival.
        current: dict[str, Phase | None] = {"phase": None}
        results_topic = topics.topic(DEMO_SITE, DEMO_LANE, "results/spectra")
        dead_topic = topics.topic(DEMO_SITE, DEMO_LANE, "deadletter")
        subscribed = threading.Event()
        decode_errors = [0]

        def on_message(client, userdata, message) -> None:
            arrived = time.perf_counter()
            phase = current["phase"]
            if phase is None:
                return
            try:
                if message.topic == results_topic:
                    phase.on_result(msg.SpectrumResults.from_bytes(message.payload).seq, arrived)
                elif message.topic == dead_topic:
                    phase.on_dead_letter(msg.DeadLetter.from_json(message.payload).seq)
            except ContractError:
                decode_errors[0] += 1

        def on_sub_connect(client, userdata, flags, rc, props) -> None:
            client.subscribe([(results_topic, 1), (dead_topic, 1)])

        sub = new_client("orelane-bench-ingest")
        sub.on_connect = on_sub_connect
        sub.on_subscribe = lambda c, u, mid, rcs, pr: subscribed.set()
        sub.on_message = on_message
        sub.connect("127.0.0.1", broker.port)
        sub.loop_start()
        clients.append(sub)
        if not subscribed.wait(10):
            raise RuntimeError("bench subscriber could not subscribe")

        meter = CpuMeter({"daemon": daemon.pid, "mosquitto": broker._proc.pid, "bench": os.getpid(),
                          "instruments": instruments.pid})
        spectrometer = Spectrometer(pub, DEMO_SITE, DEMO_LANE, inst.wavelengths_nm, pool)
        spectrometer.json_templates(2000)
        next_seq = 0
        summaries = {}
        for name, seconds, per_message, as_json in (("spectra/json", args.baseline_seconds, 1, True),
                                                    ("spectra/batch", args.seconds, args.batch_size, False)):
            if seconds <= 0:
                continue
            phase = Phase(name, next_seq, per_message)
            current["phase"] = phase
            raw = Path(tmp.name) / f"pyspy-{len(summaries)}.txt"
            if args.profile and _find_pyspy(args):
                pyspy_proc = subprocess.Popen([_find_pyspy(args), "record", "--pid", str(daemon.pid), "--format",
                                               "raw", "--threads", "--rate", "250", "--output", str(raw),
                                               "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(1.0)
            cpu0 = meter.read()
            window = JSON_WINDOW if as_json else args.window
            rate = 0.0 if as_json else args.rate
            start, end = spectrometer.run(phase, seconds, window, rate, as_json)
            cpu1 = meter.read()
            if pyspy_proc is not None:
                pyspy_proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                _, err = pyspy_proc.communicate(timeout=30)
                if pyspy_proc.returncode not in (0, -signal.SIGINT) and not raw.exists():
                    print(f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}")
                pyspy_proc = None
            phase.drain(args.drain_s)
            summary = phase.summary(start + min(args.warmup_s, seconds / 2), end)
            summary["cpu_s_per_s"] = {k: (cpu1[k] - cpu0[k]) / (end - start) for k in cpu0}
            summaries[name] = summary
            next_seq = phase.seq0 + phase.published
            mode = (f"window {window} messages" if rate <= 0 else f"open loop at {rate:,.0f} spectra/s")
            print(f"{name}: {per_message} spectra/message, {mode}: {summary['spectra']} verdicts in "
                  f"{summary['seconds']:.1f} s = {summary['spectra_per_s']:,.0f} spectra/s; latency p50 "
                  f"{summary['p50_ms']:.1f} p90 {summary['p90_ms']:.1f} p99 {summary['p99_ms']:.1f} max "
                  f"{summary['max_ms']:.1f} ms; published {summary['published']}, dead letters "
                  f"{summary['dead_letters']}, lost {summary['lost']}")
            print("  CPU use (cores): " + ", ".join(f"{k} {v:.2f}" for k, v in summary["cpu_s_per_s"].items()))
            if raw.exists():
                print("\n".join(summarise_pyspy(raw)))
        current["phase"] = None
        daemon_stop.set()
        counters = report_q.get(timeout=30)
        print("daemon counters: " + ", ".join(f"{k}={v}" for k, v in counters.items() if v))
        if decode_errors[0]:
            print(f"bench could not decode {decode_errors[0]} messages")
        if cprofile_path and Path(cprofile_path).exists():
            print("cProfile of the daemon's work thread (whole run, both phases):")
            print("\n".join(summarise_cprofile(Path(cprofile_path))))
    finally:
        if pyspy_proc is not None:
            pyspy_proc.kill()
        for c in clients:
            c.disconnect()
            c.loop_stop()
        daemon_stop.set()
        instruments_stop.set()
        for proc in processes:
            proc.join(20)
            if proc.is_alive():
                proc.terminate()
        broker.stop()
        tmp.cleanup()

    main_run = summaries["spectra/batch"]
    if "spectra/json" in summaries:
        base = summaries["spectra/json"]["spectra_per_s"]
        print(f"baseline=spectra/json baseline_spectra_per_s={base:.0f} "
              f"speedup={main_run['spectra_per_s'] / base if base else float('nan'):.1f}")
    print(f"spectra_per_s={main_run['spectra_per_s']:.0f} p99_latency_ms={main_run['p99_ms']:.1f} "
          f"lost={main_run['lost']}")
    return 0


def _code_version() -> str:
    """The commit measured, and whether the parts the daemon runs differ from it (others edit them too)."""
    root = str(_BENCH_DIR.parent)
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "edge", "spectral", "orelane",
                                "sampling_robot"], capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"commit {head or '?'}" + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")


def _find_pyspy(args) -> str | None:
    return args.py_spy or shutil.which("py-spy")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
