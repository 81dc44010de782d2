"""Weights & Biases: one W&B run per lossbench run, offline unless you say otherwise.

Where: ``<results dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb``. The run is offline
unless ``WANDB_MODE`` is set (``WANDB_MODE=online`` uploads as you train, with your login);
upload offline runs later with ``wandb sync <results dir>/wandb/offline-run-*``. Offline,
nothing goes over the network: system metrics, machine info, git and console capture are
off (the system monitor probes cloud metadata endpoints), and W&B's error reporting is off
unless ``WANDB_ERROR_REPORTING`` is set. Project: ``WANDB_PROJECT``, else the suite name;
group: the experiment tag, when there is one.

Logged: config = the flattened config (``train.lr``); tags = ``suite:<name>``,
``experiment:<name>``, ``run_id:<id>``; history under curves.csv's names, with curves.csv's
step as W&B's step; summary ``status`` = done | diverged. The report is not attached (it
is written after all runs, and a finished offline run cannot be reopened). The run is
finished when the lossbench run ends, raises or is interrupted (exit code 1), and W&B's service process is shut down with it, unless
another W&B run is active in the process.

Resume: the W&B run id is kept in ``tracker-wandb.json`` in the run folder and a resumed
run opens it again with ``resume="allow"``: online, the W&B run continues. Offline, W&B
cannot resume: the continuation is a second ``offline-run-*`` folder with the same id, from
the checkpoint's step on, and ``wandb sync`` keeps only one of the two (wandb/wandb#3841).
"""

from __future__ import annotations

import os
import secrets
import string

from lossbench.sweep.trackers import (Sink, TrackerBase, flatten, read_state, run_name,
    unavailable, write_state)

OFFLINE_SETTINGS = {  # skipped where this wandb version lacks one
    "x_disable_stats": True, "x_disable_meta": True, "x_disable_machine_info": True,
    "disable_git": True, "save_code": False, "x_save_requirements": False,
}


def _wandb():
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")  # read when the service starts
    import wandb

    return wandb


def require() -> None:
    """Raise TrackerUnavailable (one line, with the pip command) if wandb is missing."""
    try:
        _wandb()
    except ImportError as exc:
        raise unavailable("wandb", exc) from None


def _new_id() -> str:  # W&B's own alphabet; secrets draws from no seeded generator
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class _Run(Sink):
    def __init__(self, wandb, run):
        self.wandb, self.run = wandb, run

    def log(self, step, values):
        self.run.log(values, step=step)

    def close(self, status):
        try:
            if status is not None:
                self.run.summary["status"] = status
            self.run.finish(exit_code=0 if status else 1)
        finally:
            if self.wandb.run is None:  # no run of anyone else's in this process
                self.wandb.teardown()  # stops W&B's service process


class Tracker(TrackerBase):
    """Logs one lossbench run to one W&B run."""

    name = "wandb"

    def open(self, start_step: int) -> Sink:
        wandb = _wandb()
        offline = not os.environ.get("WANDB_MODE")
        settings = {"silent": True, "console": "off"}
        if offline:
            settings.update(OFFLINE_SETTINGS, mode="offline")
        fields = getattr(wandb.Settings, "model_fields", settings)
        state = read_state(self.folder, self.name) or {}
        run_id = state.get("id") if isinstance(state.get("id"), str) else None
        if run_id is None:
            run_id = _new_id()
            write_state(self.folder, self.name, {"id": run_id})
        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or self.tags.get("suite") or "lossbench",
            group=self.tags.get("experiment"), name=run_name(self.config), id=run_id,
            resume="allow", dir=str(self.results_dir), config=flatten(self.config),
            tags=[f"{k}:{v}"[:64] for k, v in self.tags.items()], reinit="create_new",
            settings=wandb.Settings(**{k: v for k, v in settings.items() if k in fields}))
        return _Run(wandb, run)

