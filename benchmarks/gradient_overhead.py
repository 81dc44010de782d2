"""What the gradient probes cost: a suite's runs at [eval] grad_stats = off, cheap and full.

    python benchmarks/gradient_overhead.py [suites/quick.toml] [--losses cross_entropy kl]
        [--seeds 0] [--repeats 2] [--levels off cheap] [--set KEY=VALUE ...]

Each run trains in this process; the three levels of one (loss, seed) run back to back in
an order that rotates with the repeat (off, cheap, full / cheap, full, off / ...), so a
change in the machine's load falls on every level alike. Reported per loss: the median
wall time of each level, and the ratio of cheap and full to off in the same repeat (the
median of the per-repeat ratios), and the probes' own time as a share of the rest of the
same run ("probe share": measured inside one run, so the machine's load drifting between
runs does not enter it). A first, untimed run (the first loss at off) takes the process's
one-time costs (imports, allocator, thread pools) off the first timed one. Goal: cheap <=
1.10x off. ``--levels``: a subset of the levels
(off must be among them: the ratios are to it).
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
    parser.add_argument("--levels", nargs="*", choices=LEVELS, default=list(LEVELS))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    if "off" not in args.levels:
        parser.error("--levels must include off (the ratios are to it)")
    levels = tuple(lv for lv in LEVELS if lv in args.levels)
    probed = tuple(lv for lv in levels if lv != "off")
    suite = load_suite(args.suite, args.overrides)
    runs = [c for c in suite.runs if c.seed in args.seeds and
            (args.losses is None or c.loss in args.losses)]
    wall = {(c.run_id(), lv): [] for c in runs for lv in levels}
    probe = {(c.run_id(), lv): [] for c in runs for lv in levels}
    if runs:
        timed(runs[0], "off")  # warm-up, not recorded
    for rep in range(args.repeats):
        order = levels[rep % len(levels):] + levels[:rep % len(levels)]
        for config in runs:
            for level in order:
                w, p = timed(config, level)
                wall[config.run_id(), level].append(w)
                probe[config.run_id(), level].append(p)
                print(f"# {config.display_name} seed {config.seed} {level}: {w:.1f} s, probes "
                      f"{p:.1f} s", flush=True)
    print("| loss | seed | " + " | ".join(f"{lv} s" for lv in levels) + " | " +
          " | ".join(f"{lv} / off" for lv in probed) + " | " +
          " | ".join(f"probe share {lv}" for lv in probed) + " |")
    print("|---|---|" + "---:|" * (len(levels) + 2 * len(probed)))
    totals = {lv: 0.0 for lv in levels}
    shares = {lv: [] for lv in probed}
    for c in runs:
        key = c.run_id()
        med = {lv: statistics.median(wall[key, lv]) for lv in levels}
        ratio = {lv: statistics.median(a / b for a, b in zip(wall[key, lv], wall[key, "off"]))
                 for lv in probed}
        share = {lv: statistics.median(p / (w - p) for w, p in zip(wall[key, lv], probe[key, lv]))
                 for lv in probed}
        for lv in levels:
            totals[lv] += med[lv]
        for lv in shares:
            shares[lv].append(share[lv])
        print(f"| {c.display_name} | {c.seed} | " + " | ".join(f"{med[lv]:.1f}" for lv in levels)
              + " | " + " | ".join(f"{ratio[lv]:.3f}" for lv in probed) + " | "
              + " | ".join(f"{share[lv]:.1%}" for lv in probed) + " |")
    print("| all (sum of medians) | | " + " | ".join(f"{totals[lv]:.1f}" for lv in levels) + " | "
          + " | ".join(f"{totals[lv] / totals['off']:.3f}" for lv in probed) + " | "
          + " | ".join(f"{statistics.median(shares[lv]):.1%}" for lv in probed) + " |")


if __name__ == "__main__":
    main()
