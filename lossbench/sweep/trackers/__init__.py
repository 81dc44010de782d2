"""Experiment trackers: TensorBoard, MLflow and Weights & Biases, as training observers.

One tracker run per lossbench run, named ``<label>-seed<seed>`` (label: the config's label,
else its loss) and tagged with the suite, the experiment and the run id; the resolved config
is logged as hyperparameters, flattened (``train.lr``). Every step logs the step record's
metrics (train_loss, train_ce, grad_norm, lr, clipped, tokens, wall_s) and every evaluation
its numeric metrics, under the same names and steps as ``curves.csv``. The report is
written after all runs; `lossbench run` then attaches its folder to every final run's
tracker run where the tracker keeps files (:func:`attach_report`: MLflow's artifacts).

Each tracker is an optional extra (``pip install 'lossbench[tensorboard]'``, ``[mlflow]``,
``[wandb]``), imported only when asked for; a missing one is a one-line error naming the pip
command (:func:`check_trackers`, called before any run starts). Nothing goes over the
network by default: see each module for where it writes.

A resumed run continues its tracker run: the tracker's own run id is kept in the run
folder, ``tracker-<name>.json``. A tracker run is closed when the run ends (``on_end``), and
also when it raised or was interrupted (``on_close``, or at the latest when the tracker is
garbage-collected or the process exits).
"""

from __future__ import annotations

import importlib
import json
import weakref
from pathlib import Path
from typing import Any

from lossbench.core.atomic import atomic_write_json
from lossbench.core.config import TRACKERS, display_name
from lossbench.core.schema import STEP_METRICS
from lossbench.store.records import load_json
from lossbench.train.observers import Observer

KNOWN = TRACKERS
INSTALL = {name: f"pip install 'lossbench[{name}]'" for name in KNOWN}


class TrackerUnavailable(Exception):
    """A tracker was asked for whose package is not installed (or that does not exist)."""


def check_trackers(names) -> None:
    """Raise TrackerUnavailable, one line, for an unknown tracker or a missing extra;
    called before any run starts."""
    for name in names:
        if name not in KNOWN:
            raise TrackerUnavailable(f"unknown tracker {name!r}; known: {', '.join(KNOWN)}")
        _module(name).require()


def _module(name: str):
    return importlib.import_module(f"lossbench.sweep.trackers.{name}")


def make_trackers(names, *, config: dict[str, Any], run_id: str, folder: Path,
                  tags: dict[str, str]) -> list[Observer]:
    """One observer per tracker name for the run ``run_id`` (its folder, resolved config
    dict and tags)."""
    return [_module(name).Tracker(config=config, run_id=run_id, folder=Path(folder), tags=tags)
            for name in names]


def attach_report(names, results_dir: str | Path, run_ids, report_dir: str | Path) -> list[str]:
    """Attach the report folder to the tracker run of each of ``run_ids``, for the trackers
    that keep files (a module-level ``attach_report(state, report_dir)``: MLflow; TensorBoard
    has no files beside its events, and a finished offline W&B run cannot be reopened).
    Returns one line per tracker run it could not reach: the report exists either way."""
    problems = []
    for name in names:
        attach = getattr(_module(name), "attach_report", None)
        for run_id in run_ids if attach else ():
            state = read_state(Path(results_dir) / "runs" / run_id, name)
            if state is None:
                continue
            try:
                attach(state, Path(report_dir))
            except Exception as exc:  # noqa: BLE001  a tracker's own error, reported, not fatal
                problems.append(f"{name}: run {run_id}: report not attached: "
                                f"{type(exc).__name__}: {exc}")
    return problems


def unavailable(name: str, exc: ImportError) -> TrackerUnavailable:
    """The one-line error for a tracker package that cannot be imported."""
    missing = getattr(exc, "name", None)
    if missing is None or missing.split(".")[0] == name:
        return TrackerUnavailable(f"{name} is not installed: {INSTALL[name]}")
    return TrackerUnavailable(f"{name} cannot be imported ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else missing}): "
                              f"{INSTALL[name]}")


# --- what every tracker logs -------------------------------------------------------------

def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config as ``{"train.lr": 0.001, ...}``: scalars and None kept, lists as JSON."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def run_name(config: dict[str, Any]) -> str:
    """``<label>-seed<seed>``: the label, else the loss name (as reports name a run)."""
    return f"{display_name(config.get('label', ''), config['loss'])}-seed{config.get('seed')}"


def step_values(record: dict[str, Any]) -> dict[str, float]:
    """A step record's metrics as curves.csv has them (``clipped`` as 0/1)."""
    return {k: float(record[k]) for k in STEP_METRICS
            if isinstance(record.get(k), (int, float))}


def eval_values(metrics: dict[str, Any]) -> dict[str, float]:
    """An evaluation's numeric metrics as curves.csv has them: no step, no bools, no lists
    (the reliability table, samples)."""
    return {k: float(v) for k, v in metrics.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def read_state(folder: Path, name: str) -> dict[str, Any] | None:
    """What a tracker kept in the run folder to continue its run on resume (or None)."""
    try:
        state = load_json(Path(folder) / f"tracker-{name}.json")  # a regular file only
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(folder: Path, name: str, state: dict[str, Any]) -> None:
    atomic_write_json(Path(folder) / f"tracker-{name}.json", state, root=folder)


class Sink:
    """One open tracker run; holds no reference to its observer, so the observer's
    finalizer can close it."""

    def log(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def close(self, status: str | None) -> None:
        """``status``: the run's (done, diverged), or None when it raised or was stopped."""
        raise NotImplementedError


class TrackerBase(Observer):
    """Opens a :class:`Sink` at the run's start (``open``) and logs steps and evaluations to
    it. Closed once: at on_end with the run's status; otherwise (the run raised or was
    interrupted) at on_close, or when this observer is collected, or at exit."""

    name = ""

    def __init__(self, *, config: dict[str, Any], run_id: str, folder: Path,
                 tags: dict[str, str]):
        self.config, self.run_id, self.folder = config, run_id, Path(folder)
        self.tags = {str(k): str(v) for k, v in dict(tags).items()}
        self.sink: Sink | None = None
        self._status: list[str | None] = [None]  # shared with the finalizer
        self._close = None

    @property
    def results_dir(self) -> Path:
        return self.folder.parent.parent  # <results>/runs/<run_id>

    def open(self, start_step: int) -> Sink:
        raise NotImplementedError

    def on_start(self, start):
        self.close()  # a reused observer: end the previous tracker run first
        self.sink = self.open(start.start_step)
        self._status = [None]
        self._close = weakref.finalize(self, _close_sink, self.sink, self._status)

    def on_step(self, record):
        self.sink.log(record["step"], step_values(record))

    def on_eval(self, step, metrics):
        self.sink.log(step, eval_values(metrics))

    def on_end(self, result):
        self._status[0] = result.status
        self.close()

    def on_close(self):
        self.close()

    def close(self) -> None:
        if self._close is not None:
            self._close()  # a finalizer runs once


def _close_sink(sink: Sink, status: list) -> None:
    sink.close(status[0])
