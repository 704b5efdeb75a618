"""Benchmark: spectrum-result batches through a real Mosquitto into a real VictoriaMetrics, by the ingest worker and
by a straightforward influxdb-client subscriber, with the same data, in the same run.

    python bench/ingest.py [--messages 300] [--rows 1000] [--naive-messages 100] [--batch-size 10000]

Both servers are started by the script (tests/servers.py, the test fixtures' helpers) on free ports with fresh
data directories. Each consumer runs in its own process; the publisher (this process) sends the batches at QoS 1
as fast as the broker takes them.

- Fast path: `python -m ingest run` (ingest.service: vectorised line protocol, batches of --batch-size points,
  acknowledged after the write). Timed from the first publish until its metrics report every point written.
- Baseline ("naive"): paho callback, one influxdb_client.Point per result (tags, six fields, ns time) handed to
  write_api with default batching (WriteOptions(): 1000 points, 1 s flush), auto-ack. Timed from the first
  publish until write_api.close() has flushed everything.

- Ceiling: the same points, encoded beforehand in the worker's batches, posted to VictoriaMetrics back to back
  with no broker and no decoding: what the database takes on its own on this machine. The worker cannot go
  faster than this; the CPU seconds of each server during the fast run show who spends the cores.

Every point is then counted in VictoriaMetrics by seq, per series: lost = published and not stored, duplicated =
stored more than once (VictoriaMetrics keeps a sample written twice twice unless told to deduplicate).
The last line is: points_per_s=<N> speedup_vs_naive=<R> lost=<K> duplicated=<D>
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LANE = "lane-1"


def make_batches(messages: int, rows: int, t0_ns: int):
    """The same results for both runs: seq 0..messages*rows-1, 1 ms apart, 5 % contaminant rows."""
    import numpy as np

    from orelane.contract import messages as m
    rng = np.random.default_rng(2024)
    out = []
    for i in range(messages):
        seq = np.arange(i * rows, (i + 1) * rows, dtype=np.uint64)
        decision = np.zeros(rows, dtype=np.uint8)
        class_index = np.full(rows, m.NO_CLASS, dtype=np.uint8)
        hot = rng.random(rows) < 0.05
        decision[hot], class_index[hot] = 1, rng.integers(0, 3, int(hot.sum()))
        out.append(m.SpectrumResults(LANE, "bench-v1", ("plastic", "wood", "rubber"), seq,
                                     t0_ns + seq.astype(np.int64) * 1_000_000, seq.astype(np.float64) * 0.0025,
                                     rng.random(rows).astype(np.float32) * 2, rng.random(rows).astype(np.float32) * 30,
                                     rng.random(rows).astype(np.float32), class_index, decision,
                                     rng.random((rows, 3)).astype(np.float32)).to_bytes())
    return out


def site_toml(path: Path, site: str, mqtt_port: int, vm_url: str, batch_size: int) -> Path:
    path.write_text(f"""[site]
id = "{site}"
data_dir = "data-{site}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[influx]
url = "{vm_url}"
timeout_s = 30.0

[ingest]
batch_size = {batch_size}
flush_interval_s = 0.2

[[lane]]
id = "{LANE}"
belt_scale = {{ host = "127.0.0.1", port = 1 }}
robot = {{ host = "127.0.0.1", port = 2 }}
""")
    return path


def publish_all(port: int, site: str, payloads: list[bytes]) -> float:
    """Publish every payload at QoS 1; returns the time of the first publish (monotonic)."""
    import paho.mqtt.client as mqtt

    from orelane.contract import topics
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-publisher-{site}",
                         protocol=mqtt.MQTTv5)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    topic = topics.topic(site, LANE, "results/spectra")
    started = time.monotonic()
    infos = [client.publish(topic, payload, qos=1) for payload in payloads]
    for info in infos:
        info.wait_for_publish(120)
    client.loop_stop()
    client.disconnect()
    print(f"  published {len(payloads)} messages in {time.monotonic() - started:.2f} s", flush=True)
    return started


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run_fast(workdir: Path, mqtt_port: int, vm_url: str, payloads: list[bytes], points: int, batch_size: int,
             servers: dict[str, int]):
    from tests.servers import free_port
    site = "bench-fast"
    config = site_toml(workdir / "fast.toml", site, mqtt_port, vm_url, batch_size)
    metrics_port = free_port()
    log = open(workdir / "fast-worker.log", "wb")
    worker = subprocess.Popen([sys.executable, "-m", "ingest", "run", "--config", str(config), "--client-id",
                               "bench-fast", "--metrics-port", str(metrics_port)], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)

    def written() -> int:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith("orelane_ingest_points_written_total "):
                return int(float(line.split()[1]))
        return 0

    deadline = time.monotonic() + 30
    while True:
        try:
            written()
            break
        except OSError:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the ingest worker did not start; see {workdir / 'fast-worker.log'}")
            time.sleep(0.1)
    time.sleep(0.5)  # subscribed
    cpu_before = cpu_seconds(worker.pid)
    servers_before = {name: cpu_seconds(pid) for name, pid in servers.items()}
    publisher_before = time.process_time()
    started = publish_all(mqtt_port, site, payloads)
    while written() < points:
        if time.monotonic() - started > 600:
            raise SystemExit("the ingest worker did not write every point within 600 s")
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(worker.pid) - cpu_before
    others = {name: cpu_seconds(pid) - servers_before[name] for name, pid in servers.items()}
    others["publisher"] = time.process_time() - publisher_before
    print("  CPU seconds meanwhile: " + ", ".join(f"{name} {s:.2f}" for name, s in others.items()), flush=True)
    worker.terminate()
    worker.wait(30)
    return site, elapsed, cpu


def naive_worker(argv: list[str]) -> int:
    """The baseline consumer (run in its own process by run_naive)."""
    import queue

    import paho.mqtt.client as mqtt
    from influxdb_client import InfluxDBClient, Point, WriteOptions, WritePrecision

    from orelane.contract import messages as m
    from orelane.contract.measurements import spectrum_result_columns
    mqtt_port, vm_url, site, expected = int(argv[0]), argv[1], argv[2], int(argv[3])
    inbox: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-naive", protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, msg: inbox.put(msg)
    client.connect("127.0.0.1", mqtt_port)
    client.subscribe(f"orelane/v1/{site}/+/results/spectra", 1)
    client.loop_start()
    influx = InfluxDBClient(url=vm_url, token="none", org="orelane", timeout=30_000)
    write_api = influx.write_api(write_options=WriteOptions())  # the library's default batching
    print("ready", flush=True)
    points = 0
    started = None
    while points < expected:
        msg = inbox.get()
        started = started or time.monotonic()
        res = m.SpectrumResults.from_bytes(msg.payload)
        derived = spectrum_result_columns(res)
        for i in range(len(res)):
            point = (Point("spectrum_result").tag("site", site).tag("lane", LANE)
                     .tag("model_version", res.model_version).tag("decision", str(derived["decision"][i]))
                     .tag("class", str(derived["class"][i])).field("seq", int(res.seq[i]))
                     .field("belt_position_m", float(res.belt_position_m[i]))
                     .field("anomaly_score", float(res.anomaly_score[i])).field("t2", float(res.t2[i]))
                     .field("q", float(res.q[i])).field("class_score", float(derived["class_score"][i]))
                     .time(int(res.timestamp_ns[i]), WritePrecision.NS))
            write_api.write(bucket="orelane", org="orelane", record=point)
            points += 1
    write_api.close()  # flushes what is batched
    elapsed = time.monotonic() - started
    print(json.dumps({"elapsed_s": elapsed, "cpu_s": time.process_time()}), flush=True)
    client.loop_stop()
    influx.close()
    return 0


def run_naive(mqtt_port: int, vm_url: str, payloads: list[bytes], points: int):
    site = "bench-naive"
    worker = subprocess.Popen([sys.executable, __file__, "--naive-worker", str(mqtt_port), vm_url, site,
                               str(points)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert worker.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    started = publish_all(mqtt_port, site, payloads)
    report = json.loads(worker.stdout.readline())  # written after write_api.close() has flushed everything
    elapsed = time.monotonic() - started  # from the first publish, as for the ingest worker
    worker.wait(60)
    return site, elapsed, report["cpu_s"]


def count_in_vm(vm, site: str, points: int) -> tuple[int, int]:
    series = vm.export(f'{{__name__="spectrum_result_seq",site="{site}"}}',
                       until=lambda s: sum(len(x["values"]) for x in s) >= points, timeout_s=30)
    seen = [int(v) for s in series for v in s["values"]]
    return points - len(set(seen) & set(range(points))), len(seen) - len(set(seen))


def database_ceiling(vm, payloads: list[bytes], batch_size: int) -> tuple[float, float]:
    """Points per second the database takes on its own, and its CPU seconds: the same points, encoded
    beforehand in the worker's batches, posted back to back by one writer (no broker, no decoding)."""
    from ingest.influx import InfluxWriter
    from ingest.lineprotocol import concat_results, encode_spectrum_results
    from orelane.config import InfluxConfig
    from orelane.contract import messages as m
    results = [m.SpectrumResults.from_bytes(p) for p in payloads]
    per_batch = max(1, batch_size // max(len(results[0]), 1))
    bodies = [encode_spectrum_results("bench-ceiling", LANE, concat_results(results[i:i + per_batch])).body
              for i in range(0, len(results), per_batch)]
    writer = InfluxWriter(InfluxConfig(url=vm.url, org="orelane", bucket="orelane", token=None, timeout_s=30))
    cpu_before, started = cpu_seconds(vm.pid), time.monotonic()
    for body in bodies:
        result = writer.post(body)
        if result.status != 204:
            raise SystemExit(f"the database refused a pre-encoded batch: {result.status_label} {result.reason}")
    elapsed = time.monotonic() - started
    writer.close()
    return sum(map(len, results)) / elapsed, cpu_seconds(vm.pid) - cpu_before


def encode_rate(payloads: list[bytes]) -> tuple[float, float]:
    """Points per second of the vectorised encoder and of the scalar path (points_for + encode), in this process."""
    from ingest.lineprotocol import encode, encode_spectrum_results
    from orelane.contract import messages as m
    from orelane.contract.measurements import points_for
    sample = payloads[:20]
    n = sum(len(m.SpectrumResults.from_bytes(p)) for p in sample)
    t = time.perf_counter()
    for p in sample:
        encode_spectrum_results("bench", LANE, m.SpectrumResults.from_bytes(p))
    fast = n / (time.perf_counter() - t)
    sample = payloads[:3]
    n = sum(len(m.SpectrumResults.from_bytes(p)) for p in sample)
    t = time.perf_counter()
    for p in sample:
        encode(points_for("bench", LANE, "results/spectra", p))
    return fast, n / (time.perf_counter() - t)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--naive-worker"]:
        sys.path.insert(0, str(ROOT))
        return naive_worker(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=300, help="result batches for the ingest worker")
    p.add_argument("--rows", type=int, default=1000, help="results per batch")
    p.add_argument("--naive-messages", type=int, default=100, help="result batches for the baseline (the first "
                                                                    "of the same data)")
    p.add_argument("--batch-size", type=int, default=10_000, help="points per write of the ingest worker")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.servers import Mosquitto, VictoriaMetrics, find_binary

    points = args.messages * args.rows
    naive_points = args.naive_messages * args.rows
    t0_ns = (int(time.time()) - 3 * 3600) * 10**9
    payloads = make_batches(args.messages, args.rows, t0_ns)
    print(f"data: {args.messages} spectrum_results batches x {args.rows} rows = {points} points "
          f"({sum(map(len, payloads)) / 1e6:.1f} MB of MQTT payload); cores: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    fast_encode, scalar_encode = encode_rate(payloads)
    print(f"encoder alone: vectorised {fast_encode:,.0f} points/s, scalar points_for+encode {scalar_encode:,.0f} "
          f"points/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="orelane-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "mosquitto").mkdir()
        (workdir / "vm").mkdir()
        broker = Mosquitto(find_binary("mosquitto", "mosquitto"), workdir / "mosquitto")
        vm = VictoriaMetrics(find_binary("victoria-metrics", "victoria-metrics"), workdir / "vm")
        broker.start()
        vm.start()
        try:
            site, fast_s, fast_cpu = run_fast(workdir, broker.port, vm.url, payloads, points, args.batch_size,
                                                 {"mosquitto": broker.pid, "victoria-metrics": vm.pid})
            fast_rate = points / fast_s
            lost, duplicated = count_in_vm(vm, site, points)
            print(f"ingest worker: {points} points in {fast_s:.2f} s = {fast_rate:,.0f} points/s; worker CPU "
                  f"{fast_cpu:.2f} s = {points / max(fast_cpu, 1e-9):,.0f} points per CPU-second; "
                  f"lost {lost}, duplicated {duplicated}", flush=True)
            ceiling, ceiling_cpu = database_ceiling(vm, payloads, args.batch_size)
            print(f"victoria-metrics alone (the same points pre-encoded, posted back to back): {ceiling:,.0f} "
                  f"points/s, its CPU {ceiling_cpu:.2f} s for {points} points", flush=True)
            naive_site, naive_s, naive_cpu = run_naive(broker.port, vm.url, payloads[:args.naive_messages],
                                                       naive_points)
            naive_rate = naive_points / naive_s
            naive_lost, naive_dup = count_in_vm(vm, naive_site, naive_points)
            print(f"naive influxdb-client: {naive_points} points in {naive_s:.2f} s = {naive_rate:,.0f} points/s; "
                  f"CPU {naive_cpu:.2f} s = {naive_points / max(naive_cpu, 1e-9):,.0f} points per CPU-second; "
                  f"lost {naive_lost}, duplicated {naive_dup}", flush=True)
        finally:
            broker.close()
            vm.close()
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other processes share these cores with the servers)")
    print(f"points_per_s={fast_rate:.0f} speedup_vs_naive={fast_rate / naive_rate:.1f} lost={lost} "
          f"duplicated={duplicated}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
