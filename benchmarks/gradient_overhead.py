"""What the gradient probes cost: a suite's runs at [eval] grad_stats = off, cheap and full.

    python benchmarks/gradient_overhead.py [suites/quick.toml] [--losses cross_entropy kl]
        [--seeds 0] [--repeats 2] [--set KEY=VALUE ...]

Each run trains in this process; the three levels of one (loss, seed) run back to back in
an order that rotates with the repeat (off, cheap, full / cheap, full, off / ...), so a
change in the machine's load falls on every level alike. Reported per loss: the median
wall time of each level, and the ratio of cheap and full to off in the same repeat (the
median of the per-repeat ratios), and the probes' own time as a share of the rest of the
same run ("probe share": measured inside one run, so the machine's load drifting between
runs does not enter it). Goal: cheap <= 1.10x off.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from lossbench.suite.load import load_suite
from lossbench.train.gradients import GradientProbe
from lossbench.train.loop import train_run

LEVELS = ("off", "cheap", "full")


class _ProbeClock:
    """Adds up what GradientProbe.pop_seconds hands the step (the probes' own time)."""

    def __init__(self):
        self.seconds = 0.0
        self.original = GradientProbe.pop_seconds
        clock = self

        def pop_seconds(probe):
            seconds = clock.original(probe)
            clock.seconds += seconds
            return seconds

        GradientProbe.pop_seconds = pop_seconds


CLOCK = _ProbeClock()


def timed(config, level: str) -> tuple[float, float]:
    """(wall seconds, probe seconds) of one run at ``level``."""
    config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, grad_stats=level))
    CLOCK.seconds = 0.0
    t0 = time.perf_counter()
    train_run(config)
    return time.perf_counter() - t0, CLOCK.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", default="suites/quick.toml")
    parser.add_argument("--losses", nargs="*", default=None, help="default: every loss")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    suite = load_suite(args.suite, args.overrides)
    runs = [c for c in suite.runs if c.seed in args.seeds and
            (args.losses is None or c.loss in args.losses)]
    wall = {(c.run_id(), lv): [] for c in runs for lv in LEVELS}
    probe = {(c.run_id(), lv): [] for c in runs for lv in LEVELS}
    for rep in range(args.repeats):
        order = LEVELS[rep % 3:] + LEVELS[:rep % 3]
        for config in runs:
            for level in order:
                w, p = timed(config, level)
                wall[config.run_id(), level].append(w)
                probe[config.run_id(), level].append(p)
                print(f"# {config.display_name} seed {config.seed} {level}: {w:.1f} s, probes "
                      f"{p:.1f} s", flush=True)
    print("| loss | seed | off s | cheap s | full s | cheap / off | full / off | "
          "probe share cheap | probe share full |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    totals = {lv: 0.0 for lv in LEVELS}
    shares = {lv: [] for lv in ("cheap", "full")}
    for c in runs:
        key = c.run_id()
        med = {lv: statistics.median(wall[key, lv]) for lv in LEVELS}
        ratio = {lv: statistics.median(a / b for a, b in zip(wall[key, lv], wall[key, "off"]))
                 for lv in ("cheap", "full")}
        share = {lv: statistics.median(p / (w - p) for w, p in zip(wall[key, lv], probe[key, lv]))
                 for lv in ("cheap", "full")}
        for lv in LEVELS:
            totals[lv] += med[lv]
        for lv in shares:
            shares[lv].append(share[lv])
        print(f"| {c.display_name} | {c.seed} | {med['off']:.1f} | {med['cheap']:.1f} | "
              f"{med['full']:.1f} | {ratio['cheap']:.3f} | {ratio['full']:.3f} | "
              f"{share['cheap']:.1%} | {share['full']:.1%} |")
    print(f"| all (sum of medians) | | {totals['off']:.1f} | {totals['cheap']:.1f} | "
          f"{totals['full']:.1f} | {totals['cheap'] / totals['off']:.3f} | "
          f"{totals['full'] / totals['off']:.3f} | {statistics.median(shares['cheap']):.1%} | "
          f"{statistics.median(shares['full']):.1%} |")


if __name__ == "__main__":
    main()
