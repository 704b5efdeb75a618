"""Benchmark: the edge's numpy scoring of an exported lane model against the scikit-learn Pipeline it was
exported from, on the same simulated 224-band spectra, in the same run.

    python bench/spectral.py [--spectra 1000000] [--batch 8192] [--baseline-spectra 50000] [--threads 1] [--repeat 3]

Baseline ("sklearn-pipeline"): spectral.estimators.default_pipeline (Reflectance, Absorbance, Center,
tapered DCT low-pass, LaneClassifier) .predict, float64, step by step. Fast path: LaneModel.score after a save
and load of the artifact (numpy only). Decisions are compared on every baseline spectrum. Each path runs
--repeat times and its best run counts, so a busy machine hurts neither side more than the other.
The last line is: spectra_per_s=<N> speedup_vs_sklearn=<R> max_decision_mismatch=<M>
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spectra", type=int, default=1_000_000, help="spectra scored by the fast path")
    p.add_argument("--batch", type=int, default=8192, help="spectra per batch")
    p.add_argument("--baseline-spectra", type=int, default=50_000, help="spectra scored by the sklearn baseline")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (1 = one core)")
    p.add_argument("--repeat", type=int, default=3, help="runs per path; the best one counts")
    args = p.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    # This file is bench/spectral.py: put the project first, or `import spectral` would import this file.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import tracemalloc

    import numpy as np

    from spectral import estimators, synth
    from spectral.model import DECISION_CLEAN, DECISION_CONTAMINANT, DECISION_UNKNOWN, LaneModel

    rng = np.random.default_rng(2024)
    inst = synth.Instrument(synth.wavelength_grid(224))
    dark, white = inst.dark_reference(), inst.white_reference()
    train = synth.simulate_lots(inst, rng, n_lots=40, spectra_per_lot=150)
    pipe = estimators.default_pipeline(dark=dark, white=white).fit(train.counts, train.labels,
                                                                    lane__brands=train.brands)
    exported = estimators.export_lane_model(pipe, inst.wavelengths_nm, "bench")
    with tempfile.TemporaryDirectory() as tmp:
        model = LaneModel.load(exported.save(Path(tmp) / "bench.npz", key=None), key=None)
    print(f"model {model.version}: {len(model.class_names)} classes, steps {[s.label for s in model.steps]}")

    # A pool of lane spectra: 80 % clean ore, the rest contaminants at 2-60 % area fraction.
    pool_n = max(args.baseline_spectra, 100_000)
    pool = synth.simulate_lots(inst, rng, n_lots=pool_n // 1000, spectra_per_lot=1000, contaminant_share=0.2,
                               fraction_range=(0.02, 0.6), lot_prefix="bench").counts
    print(f"pool: {pool.shape[0]} spectra x {pool.shape[1]} bands, uint16; BLAS threads {args.threads}")

    # Baseline: the scikit-learn pipeline.
    base = pool[:args.baseline_spectra]
    base_s = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        predicted = pipe.predict(base)
        base_s = min(base_s, time.perf_counter() - t0)
    base_rate = base.shape[0] / base_s
    base_decision = np.where(predicted == estimators.CLEAN_LABEL, DECISION_CLEAN,
                             np.where(predicted == estimators.UNKNOWN_LABEL, DECISION_UNKNOWN, DECISION_CONTAMINANT))
    fast_base = np.concatenate([model.score(base[i:i + args.batch], dark, white).decision
                                for i in range(0, base.shape[0], args.batch)])
    mismatch = int(np.sum(fast_base != base_decision))
    print(f"sklearn-pipeline: {base.shape[0]} spectra in {base_s:.2f} s = {base_rate:,.0f} spectra/s "
          f"(best of {args.repeat})")

    # Fast path: batches cycled from the pool until args.spectra are scored.
    model.score(pool[:args.batch], dark, white)  # compile for these references
    starts = [(i * args.batch) % (pool.shape[0] - args.batch) for i in range(-(-args.spectra // args.batch))]
    fast_s = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        done = 0
        flagged = 0
        for s in starts:
            n = min(args.batch, args.spectra - done)
            out = model.score(pool[s:s + n], dark, white)
            flagged += int(np.count_nonzero(out.decision))
            done += n
        fast_s = min(fast_s, time.perf_counter() - t0)
    rate = done / fast_s
    tracemalloc.start()
    model.score(pool[:args.batch], dark, white)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"numpy-fast: {done} spectra in {fast_s:.2f} s = {rate:,.0f} spectra/s (best of {args.repeat}) "
          f"({100 * flagged / done:.1f} % flagged); ratio vs sklearn-pipeline {rate / base_rate:.1f}x")
    print(f"peak memory: {peak / 2**20:.1f} MiB per batch of {args.batch}; "
          f"{peak / args.batch * 1e6 / 2**20:.0f} MiB per million spectra scored at once")
    print(f"decision mismatches on {base.shape[0]} spectra: {mismatch}")
    print(f"spectra_per_s={rate:.0f} speedup_vs_sklearn={rate / base_rate:.1f} max_decision_mismatch={mismatch}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
