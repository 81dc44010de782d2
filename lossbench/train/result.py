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
    n_params: int = 0  # every parameter of the model that ran (the report's protocol line)
    model: torch.nn.Module | None = field(default=None, repr=False)  # trained (not serialized)
    hparams: dict[str, Any] = field(default_factory=dict)  # effective: defaults + overrides
    notes: list[str] = field(default_factory=list)  # e.g. a checkpoint that was refused
    teacher: dict[str, Any] = field(default_factory=dict)  # a model teacher's teacher_* columns

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
            "flops_per_token": self.flops_per_token, "params_total": self.n_params,
            "clip_rate": sum(self.steps["clipped"]) / n if n else math.nan,
            "notes": "; ".join(self.notes),
            **hparam_columns(self.hparams),
            **{f"final_{k}": v for k, v in last_eval.items() if k != "step"},
            **gradient_summary(self.evals),  # avg_* over the probed evaluations
            **self.teacher,  # teacher_desc, teacher_val_ce, ... (a model teacher only)
        }


# ---- a run's record, re-validated wherever it is read back --------------------------------
# A checkpoint or result.json may come from someone else's results directory (or a crashed
# writer): a step count its curves do not show, or evaluation records of another shape,
# must not end as a normal `done` run. One rule, for resuming (lossbench.train.state) and for
# reading a finished run back (the results store).

EVAL_LISTS = ("reliability", "samples")  # the evaluation record's only non-number values


def is_eval_step(config: RunConfig, done: int) -> bool:
    """Is the model evaluated after ``done`` updates? Before the first, every eval_every,
    at the end of training and at the end of the run (after a fine-tuning phase)."""
    return done % max(1, config.eval.eval_every) == 0 or done == config.train.steps or \
        done == config.total_steps


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _step_problems(steps: Any, done: int) -> list[str]:
    """``steps``: one list per STEP_FIELDS of ``done`` records, numbered 1..done."""
    if not isinstance(steps, dict) or set(steps) != set(STEP_FIELDS):
        return [f"steps: expected the fields {', '.join(STEP_FIELDS)}"]
    if not all(isinstance(v, list) for v in steps.values()):
        return ["steps: expected a list per field"]
    if {len(v) for v in steps.values()} != {done}:
        return [f"steps: {done} updates, but {sorted({len(v) for v in steps.values()})} "
                f"records"]
    if steps["step"] != list(range(1, done + 1)):
        return [f"steps: step numbers are not 1..{done}"]
    bad = [k for k, v in steps.items() if k != "clipped" and not all(map(_number, v))]
    bad += ["clipped"] * (not all(isinstance(c, (bool, int)) for c in steps["clipped"]))
    return [f"steps: {k}: expected numbers" for k in bad]


def _eval_record_problem(i: int, record: Any) -> str | None:
    """The shape evaluate() writes: numbers, plus the reliability table and the samples."""
    if not isinstance(record, dict) or not isinstance(record.get("step"), int) or \
            isinstance(record.get("step"), bool):
        return f"evals[{i}]: expected a record with an integer step"
    for key, value in record.items():
        if key == "reliability":
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(r, (list, tuple)) and len(r) == 5 and all(map(_number, r))
                for r in value)
        elif key == "samples":
            ok = isinstance(value, list) and all(
                isinstance(s, dict) and all(isinstance(t, str) for t in s.values())
                for s in value)
        else:
            ok = isinstance(key, str) and _number(value)
        if not ok:
            return f"evals[{i}] (step {record['step']}): {key!r} has an unexpected value"
    return None


def record_problems(config: RunConfig, steps: Any, evals: Any, done: int, *,
                    last_eval_may_be_missing: bool = False) -> list[str]:
    """What makes ``steps`` and ``evals`` not the record of ``config`` after ``done``
    updates, one line each (empty: consistent): a record per update numbered 1..done, and an
    evaluation at exactly the steps :func:`is_eval_step` names, each of evaluate()'s shape.
    ``last_eval_may_be_missing``: the run diverged at its evaluation after ``done``."""
    problems = _step_problems(steps, done)
    if not isinstance(evals, list):
        return problems + ["evals: expected a list of records"]
    problems += [p for i, r in enumerate(evals) if (p := _eval_record_problem(i, r))]
    if problems:
        return problems
    expected = [s for s in range(done + 1) if is_eval_step(config, s)]
    found = [r["step"] for r in evals]
    if found != expected and not (last_eval_may_be_missing and found == expected[:-1]
                                  and expected[-1] == done):
        problems.append(f"evals: at steps {_span(found)}, expected {_span(expected)} "
                        f"after {done} updates")
    return problems


def result_problems(config: RunConfig, status: str, diverged_step: Any, steps: Any,
                    evals: Any) -> list[str]:
    """:func:`record_problems` of a finished run: ``done`` has every update of the run, a
    ``diverged`` run those before ``diverged_step``. Other statuses have no record to check."""
    if status == "done":
        return record_problems(config, steps, evals, config.total_steps)
    if status != "diverged":
        return []
    if not isinstance(diverged_step, int) or isinstance(diverged_step, bool) or \
            not 0 <= diverged_step < config.total_steps:
        return [f"diverged_step: expected an update in [0, {config.total_steps}), "
                f"got {diverged_step!r}"]
    return record_problems(config, steps, evals, diverged_step, last_eval_may_be_missing=True)


def _span(steps: list[int]) -> str:
    return "[]" if not steps else str(steps) if len(steps) <= 6 else \
        f"[{steps[0]}, {steps[1]}, ..., {steps[-1]}] ({len(steps)})"


def stored_result_problems(record: dict) -> list[str]:
    """:func:`result_problems` of a result.json's content (its config, status, summary,
    steps and evals), for the results store to call before it treats a run as settled:
    a run with problems is not `done`, it is retrained."""
    try:
        config = RunConfig.from_dict(record["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [f"config: not a run config ({type(exc).__name__}: {str(exc)[:200]})"]
    summary = record.get("summary")
    summary = summary if isinstance(summary, dict) else {}
    problems = result_problems(config, record.get("status"), summary.get("diverged_step"),
                               record.get("steps"), record.get("evals"))
    steps = record.get("steps")
    n = len(steps["step"]) if not problems and isinstance(steps, dict) else None
    if n is not None and summary.get("steps", n) != n:
        problems.append(f"summary: steps {summary['steps']!r}, but {n} recorded")
    return problems


def teacher_record(teacher, eval_set) -> dict[str, Any]:
    """A model teacher's columns in the run's summary: what it is, its val CE on the run's
    own evaluation windows, its forward FLOPs/token (counted in the run's flops_per_token;
    its forward time is inside every step's wall time)."""
    return {"teacher_desc": teacher.description,
            "teacher_val_ce": teacher.val_ce(eval_set.x, eval_set.y),
            "teacher_flops_per_token": teacher.forward_flops_per_token(),
            "teacher_topk": teacher.topk}
