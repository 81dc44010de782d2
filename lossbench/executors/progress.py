"""The sweep's progress bar: steps of all pending runs, runs in flight in the postfix."""

from __future__ import annotations

import time

from lossbench.config import RunConfig


class SweepBar:
    """A tqdm bar counting training steps; ``step`` is cheap, the redraw is throttled."""

    def __init__(self, pending: list[RunConfig], label: str, show: bool):
        from tqdm import tqdm

        self.totals = {r.run_id(): r.train.steps + r.finetune.steps for r in pending}
        self.running: dict[str, tuple[int, int]] = {}  # run_id -> (done, total)
        self.finished: set[str] = set()
        self._drawn = 0.0
        self.bar = tqdm(total=sum(self.totals.values()), unit="step", desc=label,
                        disable=not show, leave=True, dynamic_ncols=True)

    def step(self, run_id: str, done: int, total: int) -> None:
        if run_id not in self.finished:
            self.running[run_id] = (done, total)
            self.refresh()

    def finish(self, run_id: str) -> None:
        self.running.pop(run_id, None)
        self.finished.add(run_id)
        self.refresh(force=True)

    def sink(self) -> "_Sink":
        """What execute_run's ``progress`` argument wants: ``sink[run_id] = (done, total)``."""
        return _Sink(self)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.bar.disable or (not force and now - self._drawn < 0.5):
            return
        self._drawn = now
        self.bar.n = (sum(self.totals.get(r, 0) for r in self.finished)
                      + sum(done for done, _ in self.running.values()))
        active = [f"{r} {d}/{t}" for r, (d, t) in self.running.items()]
        self.bar.set_postfix_str(f"runs {len(self.finished)}/{len(self.totals)}"
                                 + (" | " + ", ".join(active) if active else ""), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.refresh(force=True)
        self.bar.close()


class _Sink:
    def __init__(self, bar: SweepBar):
        self._bar = bar

    def __setitem__(self, run_id: str, value: tuple[int, int]) -> None:
        self._bar.step(run_id, *value)
