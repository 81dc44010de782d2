"""Experiment trackers: TensorBoard, MLflow and Weights & Biases, as training observers.

One tracker run per lossbench run, named by label and seed and tagged with the suite,
the experiment and the run id; the resolved config is logged as hyperparameters. Each
tracker is an optional extra imported only when asked for; a missing one is a one-line
error naming the pip command. Nothing goes over the network by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lossbench.observers import Observer

KNOWN = ("tensorboard", "mlflow", "wandb")
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
    import importlib

    return importlib.import_module(f"lossbench.trackers.{name}")


def make_trackers(names, *, config: dict[str, Any], run_id: str, folder: Path,
                  tags: dict[str, str]) -> list[Observer]:
    """One observer per tracker name for the run ``run_id`` (its folder, resolved config
    dict and tags)."""
    return [_module(name).Tracker(config=config, run_id=run_id, folder=Path(folder), tags=tags)
            for name in names]
