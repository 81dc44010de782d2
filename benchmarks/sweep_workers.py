"""Sweep wall time: N worker processes x 1 thread against one run at a time, same suite.

    python benchmarks/sweep_workers.py [suites/quick.toml] [--workers 2] [--set KEY=VALUE ...]

Both sweeps run in this process one after the other into fresh temporary
directories; the script also checks that they produced identical results.
Goal: the parallel sweep in <= 0.75x the sequential time on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pandas as pd

from lossbench.store.tables import load
from lossbench.suite.load import load_suite
from lossbench.sweep.sweep import run_suite

TIMING = ["wall_s", "train_s", "eval_s", "tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", default="suites/quick.toml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    suite = load_suite(args.suite, args.overrides)
    times, outs = {}, {}
    for workers in (1, args.workers):
        outs[workers] = tempfile.mkdtemp(prefix=f"lossbench-w{workers}-")
        t0 = time.perf_counter()
        run_suite(suite, outs[workers], workers=workers, show_progress=False)
        times[workers] = time.perf_counter() - t0
        print(f"{suite.name}: {len(suite.runs)} runs, workers={workers}: {times[workers]:.1f} s")
    print(f"ratio {args.workers} workers / 1 worker: {times[args.workers] / times[1]:.2f}x "
          f"(goal <= 0.75x)")
    a, b = (load(outs[w])[0].drop(columns=TIMING).sort_values("run_id").reset_index(drop=True)
            for w in (1, args.workers))
    pd.testing.assert_frame_equal(a, b)
    print("results identical across worker counts: yes")


if __name__ == "__main__":
    main()
