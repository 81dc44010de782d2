"""The sweep's progress: a tqdm bar on a terminal, plain lines in a log.

``show=True``: a bar counting the training steps of all pending runs, the runs in flight in
its postfix. ``show="lines"`` (stderr is a file, a pipe, nohup, CI: a bar's carriage
returns would make one endless line there, or nothing at all): a line when the sweep starts,
one per finished run, and every PROGRESS_EVERY_S seconds one with steps done/total, runs
finished and the ETA, so a batch job's log says whether the sweep is alive and when it ends.
``show=False``: nothing.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from lossbench.core.config import RunConfig
from lossbench.core.schema import TRACEBACK
from lossbench.core.text import duration


def _seconds_from_env(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


# between two progress lines; LOSSBENCH_PROGRESS_EVERY_S overrides it (tests shorten it)
PROGRESS_EVERY_S = _seconds_from_env("LOSSBENCH_PROGRESS_EVERY_S", 30.0)


class SweepBar:
    """Counts training steps; ``step`` is cheap, redraws and lines are throttled."""

    def __init__(self, pending: list[RunConfig], label: str, show: bool | str,
                 out: str | None = None):
        from tqdm import tqdm

        self.totals = {r.run_id(): r.total_steps for r in pending}
        self.names = {r.run_id(): (r.display_name, r.seed) for r in pending}
        self.running: dict[str, tuple[int, int]] = {}  # run_id -> (done, total)
        self.finished: set[str] = set()
        self.label, self.out = label, out
        self.lines = show == "lines"
        self.started = self._line_at = time.monotonic()
        self._drawn = 0.0
        # per run: the step it was at when first heard of, and the latest: the steps this
        # sweep trained (the pace of the ETA), resumed steps not counted
        self._base: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._paced_from: float | None = None  # the first progress: workers have started
        self.bar = tqdm(total=sum(self.totals.values()), unit="step", desc=label,
                        disable=show is not True, leave=True, dynamic_ncols=True)
        if self.lines:
            self._say(f"{label}: {len(self.totals)} runs to train, "
                      f"{sum(self.totals.values()):,} steps")

    def step(self, run_id: str, done: int, total: int) -> None:
        if run_id not in self.finished:
            self.running[run_id] = (done, total)
            self._base.setdefault(run_id, max(0, done - 1))
            self._paced_from = self._paced_from or time.monotonic()
            self._last[run_id] = done
            self.refresh()

    def finish(self, run_id: str, status: str = "done") -> None:
        self.running.pop(run_id, None)
        if status == "interrupted":  # stopped with a checkpoint: the CLI says it once
            return
        self.finished.add(run_id)
        if status == "done" and run_id not in self._base:  # no step progress (Dask): whole
            self._base[run_id], self._last[run_id] = 0, self.totals.get(run_id, 0)
            self._paced_from = self._paced_from or self.started
        if self.lines:
            self._say(self._finished_line(run_id, status))
        self.refresh(force=True)

    def sink(self) -> "_Sink":
        """What execute_run's ``progress`` argument wants: ``sink[run_id] = (done, total)``."""
        return _Sink(self)

    def done_steps(self) -> int:
        return (sum(self.totals.get(r, 0) for r in self.finished)
                + sum(done for done, _ in self.running.values()))

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.lines:
            if now - self._line_at >= PROGRESS_EVERY_S:
                self._line_at = now
                self._say(self.progress_line(now))
            return
        if self.bar.disable or (not force and now - self._drawn < 0.5):
            return
        self._drawn = now
        self.bar.n = self.done_steps()
        active = [f"{r} {d}/{t}" for r, (d, t) in self.running.items()]
        self.bar.set_postfix_str(f"runs {len(self.finished)}/{len(self.totals)}"
                                 + (" | " + ", ".join(active) if active else ""), refresh=False)
        self.bar.refresh()

    def progress_line(self, now: float) -> str:
        """'runs: 3,200/12,800 steps (25%), 4/16 runs finished, 2 running, 1 min elapsed,
        ETA 3 min': the ETA from this sweep's own pace (resumed steps not counted)."""
        done, total = self.done_steps(), sum(self.totals.values())
        elapsed = now - self.started
        trained = sum(last - self._base[r] for r, last in self._last.items())
        paced = now - (self._paced_from or now)
        rate = trained / paced if paced > 0 else 0.0
        eta = duration((total - done) / rate, "?") if rate > 0 else "?"
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        return (f"{self.label}: {done:,}/{total:,} steps{pct}, {len(self.finished)}/"
                f"{len(self.totals)} runs finished, {len(self.running)} running, "
                f"{duration(elapsed)} elapsed, ETA {eta}")

    def _finished_line(self, run_id: str, status: str) -> str:
        """'run focal seed 1 done (val CE 1.234) [5/16]'."""
        name, seed = self.names.get(run_id, (run_id, "?"))
        detail = ""
        if status in ("done", "diverged"):
            detail = f" (val CE {self._val_ce(run_id)})"
        elif status == "failed" and self.out is not None and self._traceback(run_id).is_file():
            detail = f" (see runs/{run_id}/traceback.txt)"
        return f"run {name} seed {seed} {status}{detail} [{len(self.finished)}/{len(self.totals)}]"

    def _traceback(self, run_id: str) -> Path:
        from lossbench.store.runs import run_dir

        return run_dir(self.out, run_id) / TRACEBACK

    def _val_ce(self, run_id: str) -> str:
        from lossbench.store.runs import MalformedResult, read_result, run_dir

        if self.out is None:
            return "?"
        try:
            value = read_result(run_dir(self.out, run_id))["summary"].get("final_val_ce")
            return f"{float(value):.4f}"
        except (OSError, MalformedResult, TypeError, ValueError):
            return "?"

    def _say(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.refresh(force=True)
        self.bar.close()


class _Sink:
    def __init__(self, bar: SweepBar):
        self._bar = bar

    def __setitem__(self, run_id: str, value: tuple[int, int]) -> None:
        self._bar.step(run_id, *value)
