"""How close `lossbench run --dry-run`'s wall-time estimate comes to the sweep it describes.

    python benchmarks/dry_run_estimate.py [suites/quick.toml] [--workers 2] [--set KEY=VALUE ...]

Into a fresh temporary directory: the dry run (a subprocess, as a user runs it: its probe and
its measured process start), then the sweep itself (`lossbench run ... --no-report`, timed
from start to exit), then the dry run again over the finished directory of a sweep with one
more seed (the estimate from finished runs of the same shape, compared with that seed's
sweep). Goal: each estimate within ±30% of the measured wall time. Prints the load average,
since this project's machines are shared.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ESTIMATE = re.compile(r"≈ (?:(\d+) s|.*?\((\d+) s\)|(\d+) min)(?: on \d+ workers?)? \((.*)\)")


def lossbench(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lossbench", *args], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        sys.exit(f"lossbench {' '.join(args)} failed:\n{proc.stderr}")
    return proc, time.perf_counter() - t0


def estimated(stdout: str) -> tuple[float, str]:
    line = next(x for x in stdout.splitlines() if x.startswith("≈"))
    m = ESTIMATE.search(line)
    if not m:
        sys.exit(f"cannot read the estimate in {line!r}")
    seconds = float(m.group(1) or m.group(2) or 60 * float(m.group(3)))
    return seconds, line


def compare(what: str, guess: float, line: str, run: subprocess.CompletedProcess, wall: float,
            took: float) -> None:
    """Against the sweep (the "in X s" `lossbench run` prints: its runs, from the first
    worker's start to the last table) and against the whole command (its own start too)."""
    sweep = float(re.search(r" in ([\d.]+) s:", run.stdout).group(1))
    print(f"{what}: {line!r} (the dry run took {took:.1f} s)")
    for name, actual in (("sweep", sweep), ("whole command", wall)):
        ratio = guess / actual
        print(f"  {name}: {actual:.1f} s, estimate/actual {ratio:.2f} "
              f"({'within' if 0.7 <= ratio <= 1.3 else 'OUTSIDE'} ±30%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", default="suites/quick.toml")
    parser.add_argument("--workers", default="2")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    sets = [x for o in args.overrides for x in ("--set", o)]
    out = tempfile.mkdtemp(prefix="lossbench-estimate-")
    common = [args.suite, "--out", out, "--workers", args.workers, *sets]
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}")

    dry, took = lossbench("run", *common, "--dry-run")
    guess, line = estimated(dry.stdout)
    run, wall = lossbench("run", *common, "--no-report")
    compare("probe, fresh directory", guess, line, run, wall, took)

    seeds = re.search(r"^seeds = \[(.*)\]", open(args.suite).read(), re.M)
    n = len(seeds.group(1).split(",")) if seeds else 1
    more = [*common, "--seeds", ",".join(str(s) for s in range(n, n + n))]  # n new seeds
    dry, took = lossbench("run", *more, "--dry-run")
    guess, line = estimated(dry.stdout)
    run, wall = lossbench("run", *more, "--no-report")
    compare(f"finished runs, {n} new seeds", guess, line, run, wall, took)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
