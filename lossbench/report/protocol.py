"""The hyperparameter protocol of a suite in words (shared, or tuned per loss and how),
for reports; the tuning itself (lossbench.suite.tuning) computes and words nothing."""

from __future__ import annotations

from lossbench.core.metrics import metric
from lossbench.suite.tuning import TuneSpec, grid_value

NOT_TUNED = "shared hyperparameters, not tuned"


def metric_name(name: str) -> str:
    """A tuning metric's name as the report's tables head it: val_ce -> 'val CE'."""
    return metric(f"final_{name}").header


def describe_tuning(spec: TuneSpec) -> str:
    """One line: what was tuned, on what budget, selected how."""
    parts = [f"{p} over {len(values)} values [{grid_value(min(values))} … {grid_value(max(values))}]"
             for p, values in spec.grid]
    seeds = "seed" if len(spec.seeds) == 1 else "seeds"
    return (f"tuned per loss: {'; '.join(parts)}; budget {spec.steps} steps × "
            f"{len(spec.seeds)} {seeds} per setting; selected on final {metric_name(spec.metric)}")


def protocol_of(meta: dict) -> str:
    """The hyperparameter protocol of a suite, from its suite.json, in one line."""
    return describe_tuning(TuneSpec.from_dict(meta["tune"])) if "tune" in meta else NOT_TUNED
