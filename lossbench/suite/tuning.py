"""Per-loss hyperparameter tuning: the same grid and budget for every loss, then full runs.

Comparing losses at one shared learning rate crowns whichever loss that lr
happens to suit (MSE, hinge or focal shape the gradient statistics differently
from cross-entropy, and Adam removes only a constant scale). So, as DeepOBS and
AlgoPerf do for optimizers, a suite may tune every contender first:

    [tune]
    metric = "val_ce"                            # selection metric (never the training loss)
    steps = 400                                  # tuning budget per run (default: the suite's)
    seeds = [0]                                  # tuning seeds (default: the suite's first)
    [tune.grid]
    lr = { log_grid = [1e-4, 1e-2, 5] }          # or an explicit list: [3e-4, 1e-3, 3e-3]
    gamma = [1.0, 2.0, 3.0]                      # a loss's own: only losses that declare it

Protocol. Each contender (a `losses` entry) runs every grid point it applies to
on the tuning seeds and budget. A setting's score is its metric averaged over
the tuning seeds; a setting with any diverged or failed seed is not eligible.
The best score wins; ties go to the earlier grid point (grid order, i.e. the
smaller value for an ascending grid). Then the suite's full runs (all seeds,
full steps) use each contender's own winner. When `lr` is tuned without
`min_lr`, the cosine floor keeps the suite's min_lr / lr ratio.

This module holds the pure parts: parsing, expanding runs, selecting.
The runner executes; the report draws.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lossbench.core.config import RunConfig, TrainConfig, parse_seeds
from lossbench.core.metrics import tunable
from lossbench.losses import get_loss

# train keys that may be tuned (the rest change the budget or the numbers' meaning)
TRAIN_KEYS = ("lr", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip", "warmup_steps")
TUNE_KEYS = ("grid", "steps", "seeds", "metric")  # what a [tune] table may hold
# selection metrics (summary column final_<name>) -> lower is better?
METRICS = tunable()  # name -> lower is better (the catalogue: lossbench.core.metrics)


@dataclass(frozen=True)
class TuneSpec:
    grid: tuple[tuple[str, tuple[Any, ...]], ...]  # (param, values) in file order
    steps: int
    seeds: tuple[int, ...]
    metric: str = "val_ce"

    @property
    def column(self) -> str:
        return f"final_{self.metric}"

    @property
    def lower_is_better(self) -> bool:
        return METRICS[self.metric]

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self.grid)

    def to_dict(self) -> dict[str, Any]:
        return {"grid": {p: list(v) for p, v in self.grid}, "steps": self.steps,
                "seeds": list(self.seeds), "metric": self.metric}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TuneSpec":
        return cls(tuple((p, tuple(v)) for p, v in d["grid"].items()), d["steps"],
                   tuple(d["seeds"]), d.get("metric", "val_ce"))


def grid_value(v) -> str:
    """A grid value as written in notes and reports (floats to 4 significant digits)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def log_grid(low: float, high: float, points: int) -> tuple[float, ...]:
    """Geometric grid, rounded to 4 significant digits so run ids are stable."""
    return tuple(float(f"{v:.4g}") for v in np.geomspace(low, high, int(points)))


def parse_tune(table: Any, where: str, errors: list[str], *, suite_steps: int,
               suite_seeds: list[int], loss_names: list[str]) -> TuneSpec | None:
    """Validate a [tune] table, appending one line per problem to ``errors``."""
    if not isinstance(table, dict):
        errors.append(f"{where}: [tune] must be a table")
        return None
    n_before = len(errors)
    for key in table:
        if key not in TUNE_KEYS:
            errors.append(f"{where}: [tune] unknown key {key!r} "
                          f"(known: {', '.join(TUNE_KEYS)})")
    metric = table.get("metric", "val_ce")
    if isinstance(metric, str):
        metric = metric.removeprefix("final_")
    if metric in ("train_loss", "train_ce"):
        errors.append(f"{where}: [tune] metric: {metric} cannot select between losses: training "
                      f"loss units differ between losses; use val_ce")
    elif metric not in METRICS:
        errors.append(f"{where}: [tune] metric: unknown {metric!r} (known: {', '.join(METRICS)})")
    steps = table.get("steps", suite_steps)
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
        errors.append(f"{where}: [tune] steps: expected a positive integer, got {steps!r}")
    seeds = parse_seeds(table.get("seeds", suite_seeds[:1]))
    if seeds is None:
        errors.append(f"{where}: [tune] seeds: expected a non-empty list of non-negative integers")
    grid = _parse_grid(table.get("grid"), where, errors, loss_names)
    if len(errors) > n_before or not grid:
        return None
    return TuneSpec(tuple(grid), steps, tuple(seeds), metric)


def _parse_grid(grid: Any, where: str, errors: list[str], loss_names: list[str]):
    if not isinstance(grid, dict) or not grid:
        errors.append(f"{where}: [tune] grid: expected a table such as "
                      f"grid = {{ lr = {{ log_grid = [1e-4, 1e-2, 5] }} }}")
        return []
    train_types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    specs = [get_loss(n) for n in loss_names]
    out = []
    for param, raw in grid.items():
        key = f"{where}: [tune.grid] {param}"
        if (bad := _non_finite(raw)) is not None:  # before anything compares or repeats it
            errors.append(f"{key}={bad!r} is not a finite number")
            continue
        if isinstance(raw, dict):
            lg = raw.get("log_grid")
            if set(raw) != {"log_grid"} or not (
                    isinstance(lg, list) and len(lg) == 3
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in lg)
                    and 0 < lg[0] < lg[1] and lg[2] >= 2 and float(lg[2]).is_integer()):
                errors.append(f"{key}: expected {{ log_grid = [low, high, points] }} with "
                              f"0 < low < high and points >= 2")
                continue
            values = log_grid(*lg)
        elif isinstance(raw, list) and raw and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw):
            values = tuple(raw)
        else:
            errors.append(f"{key}: expected a non-empty list of numbers or {{ log_grid = [...] }}")
            continue
        if len(set(values)) != len(values):
            errors.append(f"{key}: repeated values in the grid")
            continue
        if param in TRAIN_KEYS:
            if "int" in str(train_types[param]) and not all(isinstance(v, int) for v in values):
                errors.append(f"{key}: expected integers")
                continue
            if any(v < 0 for v in values) or (param == "lr" and any(v <= 0 for v in values)):
                errors.append(f"{key}: values must be positive")
                continue
        else:
            owners = [s for s in specs if param in s.hparams]
            if not owners:
                errors.append(f"{key}: neither a tunable train key ({', '.join(TRAIN_KEYS)}) nor a "
                              f"hyperparameter of any loss in the suite")
                continue
            bad = [m for s in owners for v in values for m in s.validate_hparams({param: v})]
            if bad:
                errors.extend(f"{key}: {m}" for m in bad)
                continue
        out.append((param, values))
    return out


def _non_finite(raw: Any) -> float | None:
    """The first inf or nan among a grid's values (or its log_grid's bounds)."""
    values = raw.get("log_grid") if isinstance(raw, dict) else raw
    values = values if isinstance(values, list) else []
    return next((v for v in values if isinstance(v, float) and not math.isfinite(v)), None)


def applicable(spec: TuneSpec, entry: RunConfig) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """The grid axes that apply to a contender: train keys always, loss hparams if declared."""
    hparams = get_loss(entry.loss).hparams
    return tuple((p, v) for p, v in spec.grid if p in TRAIN_KEYS or p in hparams)


def settings(spec: TuneSpec, entry: RunConfig) -> list[dict[str, Any]]:
    """Every grid point for a contender, in grid order (the last axis varies fastest)."""
    axes = applicable(spec, entry)
    return [dict(zip((p for p, _ in axes), combo))
            for combo in itertools.product(*(v for _, v in axes))]


def apply_setting(entry: RunConfig, setting: dict[str, Any], *, seed: int,
                  steps: int | None = None) -> RunConfig:
    """The run of ``entry`` with ``setting`` applied (lr keeps the suite's min_lr / lr ratio)."""
    train = {k: v for k, v in setting.items() if k in TRAIN_KEYS}
    if "lr" in train and "min_lr" not in train:
        train["min_lr"] = float(f"{entry.train.min_lr * train['lr'] / entry.train.lr:.6g}")
    if steps is not None:
        train["steps"] = steps
    hparams = {**entry.hparams, **{k: v for k, v in setting.items() if k not in TRAIN_KEYS}}
    return dataclasses.replace(entry, seed=seed, hparams=hparams,
                               train=dataclasses.replace(entry.train, **train))


@dataclass(frozen=True)
class TuningRun:
    label: str  # the contender's display name
    setting: dict[str, Any]
    config: RunConfig


def tuning_runs(spec: TuneSpec, entries: tuple[RunConfig, ...]) -> list[TuningRun]:
    return [TuningRun(e.display_name, s, apply_setting(e, s, seed=seed, steps=spec.steps))
            for e in entries for s in settings(spec, e) for seed in spec.seeds]


def tuning_table(runs: list[dict[str, Any]], summary: pd.DataFrame, spec: TuneSpec) -> pd.DataFrame:
    """One row per (contender, setting): mean metric over tuning seeds and what became of them.

    ``runs``: [{"run_id", "label", "setting"}] as stored in suite.json; ``summary``:
    the results store's summary (missing run ids count as not finished).
    """
    by_id = summary.set_index("run_id") if len(summary) else pd.DataFrame()
    rows, order = {}, []
    for r in runs:
        key = (r["label"], tuple(sorted(r["setting"].items())))
        if key not in rows:
            order.append(key)
            rows[key] = {"label": r["label"], **r["setting"], "setting": dict(r["setting"]),
                         "values": [], "statuses": []}
        if r["run_id"] in by_id.index:
            rec = by_id.loc[r["run_id"]]
            rows[key]["statuses"].append(rec["status"])
            value = rec.get(spec.column, math.nan)
            rows[key]["values"].append(float(value) if rec["status"] == "done" else math.nan)
        else:
            rows[key]["statuses"].append("missing")
    out = []
    for key in order:
        row = rows[key]
        statuses, values = row.pop("statuses"), row.pop("values")
        bad = [s for s in statuses if s != "done"]
        row["seeds"] = len(statuses)
        row["status"] = bad[0] if bad else "done"
        ok = not bad and all(math.isfinite(v) for v in values)
        row["score"] = float(np.mean(values)) if ok else math.nan
        out.append(row)
    return pd.DataFrame(out)


@dataclass(frozen=True)
class Choice:
    label: str
    setting: dict[str, Any] | None  # None: no eligible setting
    score: float
    notes: tuple[str, ...]  # grid-edge warnings and the like


def select(table: pd.DataFrame, spec: TuneSpec) -> dict[str, Choice]:
    """Each contender's best eligible setting (see the module docstring for the rules)."""
    choices = {}
    for label, group in table.groupby("label", sort=False):
        params = [p for p in spec.params if p in group and group[p].notna().all()]
        eligible = group[group.score.notna()]
        if not len(eligible):
            choices[label] = Choice(label, None, math.nan,
                                    (f"{label}: no eligible setting (every setting diverged, "
                                     f"failed or is unfinished)",))
            continue
        scores = eligible.score if spec.lower_is_better else -eligible.score
        best = eligible.loc[scores.idxmin()]  # idxmin: the first of equal scores = grid order
        setting = dict(best["setting"])  # the values exactly as the grid gave them
        notes = []
        for p in params:
            values = sorted(group[p].unique())
            if len(values) < 2:
                continue
            if setting[p] == values[0]:
                notes.append(f"{p} may be too large for {label}: best at the grid edge "
                             f"(the smallest value, {grid_value(setting[p])}); extend the grid below")
            elif setting[p] == values[-1]:
                notes.append(f"{p} may be too small for {label}: best at the grid edge "
                             f"(the largest value, {grid_value(setting[p])}); extend the grid above")
        choices[label] = Choice(label, setting, float(best.score), tuple(notes))
    return choices


def final_runs(entries: tuple[RunConfig, ...], seeds: tuple[int, ...],
               choices: dict[str, Choice]) -> list[RunConfig]:
    """The suite's full runs, each contender at its own winning setting."""
    return [apply_setting(e, choices[e.display_name].setting, seed=seed)
            for e in entries if choices.get(e.display_name) and choices[e.display_name].setting
            is not None for seed in seeds]
