"""What a run returns: per-step records, per-evaluation metrics and its summary row."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from lossbench.core.config import RunConfig, hparam_columns
from lossbench.core.schema import STEP_FIELDS
from lossbench.train.gradients import gradient_summary


class Diverged(Exception):
    """A non-finite loss or gradient: the run stops, and that is a result."""


class Interrupted(Exception):
    """``should_stop`` asked the run to stop: it saved a checkpoint (when it has a checkpoint
    folder) and resumes from there next time. Not a result."""

    def __init__(self, step: int):
        super().__init__(f"stopped after step {step}")
        self.step = step


@dataclass
class RunResult:
    config: RunConfig
    status: str = "running"  # "done" | "diverged"
    diverged_step: int | None = None
    steps: dict[str, list] = field(default_factory=lambda: {k: [] for k in STEP_FIELDS})
    evals: list[dict[str, Any]] = field(default_factory=list)
    train_time_s: float = 0.0  # optimizer steps only
    eval_time_s: float = 0.0  # evaluations and gradient probes
    flops_per_token: int = 0
    model: torch.nn.Module | None = field(default=None, repr=False)  # trained (not serialized)
    hparams: dict[str, Any] = field(default_factory=dict)  # effective: defaults + overrides
    notes: list[str] = field(default_factory=list)  # e.g. a checkpoint that was refused

    def summary(self) -> dict[str, Any]:
        tokens = self.steps["tokens"][-1] if self.steps["tokens"] else 0
        last_eval = {k: v for k, v in (self.evals[-1] if self.evals else {}).items()
                     if isinstance(v, (int, float))}
        n = len(self.steps["step"])
        return {
            "run_id": self.config.run_id(), "loss": self.config.loss, "seed": self.config.seed,
            "status": self.status, "diverged_step": self.diverged_step, "steps": n,
            "final_train_loss": self.steps["train_loss"][-1] if n else math.nan,
            "final_train_ce": self.steps["train_ce"][-1] if n else math.nan,
            "wall_s": self.train_time_s + self.eval_time_s, "train_s": self.train_time_s,
            "eval_s": self.eval_time_s, "tokens": tokens,
            "tokens_per_s": tokens / self.train_time_s if self.train_time_s else math.nan,
            "flops_per_token": self.flops_per_token,
            "clip_rate": sum(self.steps["clipped"]) / n if n else math.nan,
            "notes": "; ".join(self.notes),
            **hparam_columns(self.hparams),
            **{f"final_{k}": v for k, v in last_eval.items() if k != "step"},
            **gradient_summary(self.evals),  # avg_* over the probed evaluations
        }
