"""Live metrics of a run in progress: ``runs/<id>/metrics.jsonl``, one JSON object per line.

    {"kind": "eval", "step": 250, "time": ..., "val_ce": 2.31, ...}   every evaluation
    {"kind": "step", "step": 120, "total": 800, "time": ..., "train_loss": ...}
                                                     at most every STEP_EVERY_S seconds

Each line is written with one ``write`` on a file opened for appending, so a reader never
sees half a line from a live writer (a killed writer may leave a torn last line: readers
skip lines that are not JSON). A run resumed from a checkpoint first drops the lines of the
steps after it, so when the run ends the file's evaluations equal result.json's."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from lossbench.core.atomic import append_bytes, atomic_write_text
from lossbench.core.schema import METRICS
from lossbench.store.records import json_lines, metrics_line
from lossbench.train.observers import Observer

STEP_EVERY_S = 5.0


def _numbers(d: dict[str, Any]) -> dict[str, Any]:
    """The numeric entries, JSON-safe (NaN and inf as null: JSON has neither)."""
    return {k: (v if math.isfinite(v) else None) for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def read_metrics(folder: str | Path) -> list[dict[str, Any]]:
    """The lines of a run's metrics file (missing file: none; torn or foreign lines skipped)."""
    return json_lines(Path(folder) / METRICS, metrics_line)


class MetricsFile(Observer):
    """Appends a run's evaluations (and a progress line now and then) to its folder."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / METRICS
        self.last_step_line = 0.0

    def _append(self, item: dict[str, Any]) -> None:
        data = (json.dumps(item, allow_nan=False) + "\n").encode()
        append_bytes(self.path, data, root=self.path.parent)  # one write: whole lines

    def on_start(self, start):
        self.total = start.total_steps
        keep = [line for line in read_metrics(self.path.parent) if line["step"] <= start.start_step]
        if start.start_step == 0:
            keep = []
        atomic_write_text(self.path, "".join(json.dumps(x, allow_nan=False) + "\n" for x in keep),
                          root=self.path.parent)

    def on_step(self, record):
        now = time.time()
        if now - self.last_step_line >= STEP_EVERY_S or record["step"] == self.total:
            self.last_step_line = now
            self._append({"kind": "step", "total": self.total, "time": now,
                          **_numbers(record)})

    def on_eval(self, step, metrics):
        self._append({"kind": "eval", "time": time.time(), **_numbers(metrics), "step": step})
