"""Per-run diagnostics in words, from the run's curves (computed, not drawn)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# A run still improving by more than this fraction of its val CE over the last 20% of
# its steps is flagged "not converged": more steps may change the ranking.
NOT_CONVERGED_DROP = 0.01
LATE_FRACTION = 0.2
# A run whose temperature-calibrated CE is within 1% of the unigram entropy predicts
# little beyond token frequencies: "degenerate", whatever its other numbers say.
DEGENERATE_MARGIN = 0.01


def late_drop(steps, values, fraction: float = LATE_FRACTION) -> float:
    """Relative fall of a val CE curve over the last ``fraction`` of its steps:
    (v(s0) - v(S)) / v(s0) with S the last evaluated step, s0 = S - fraction (S - first),
    and v interpolated linearly between evaluations. NaN with fewer than 2 evaluations
    or a non-finite value (a diverged run has no trend to judge)."""
    s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if len(s) < 2 or not np.all(np.isfinite(v)) or s[-1] <= s[0]:
        return math.nan
    start = s[-1] - fraction * (s[-1] - s[0])
    at_start = float(np.interp(start, s, v))
    return (at_start - float(v[-1])) / at_start if at_start > 0 else math.nan


def not_converged(drop: float, threshold: float = NOT_CONVERGED_DROP) -> bool:
    return math.isfinite(drop) and drop > threshold


def degenerate(calibrated_ce: float, unigram_entropy: float,
               margin: float = DEGENERATE_MARGIN) -> bool:
    """True when a temperature-calibrated CE is no more than ``margin`` (relative) below
    the unigram entropy of the same tokens: the predictions carry little more than token
    frequencies (a constant prediction scores the unigram entropy at best)."""
    return (math.isfinite(calibrated_ce) and math.isfinite(unigram_entropy)
            and unigram_entropy > 0 and calibrated_ce >= (1 - margin) * unigram_entropy)


def diagnose(status: str, diverged_step, val: pd.DataFrame, train_ce: pd.DataFrame) -> list[str]:
    """Plain-language findings for one run.

    ``val``: (step, value) of val CE at evaluations; ``train_ce``: (step, value) per step.
    Rules: divergence (status); overfitting onset (val CE ends > 1% above its minimum
    while the training CE kept falling after that minimum); plateau (val CE improved
    < 1% over the last third of the evaluations); underfitting (final training CE
    within 5% of its first value).
    """
    notes = []
    if status == "diverged":
        notes.append(f"diverged at step {int(diverged_step)} (non-finite loss or gradient, or non-finite logits at an evaluation)")
    if status == "failed":
        return ["failed: see traceback.txt in the run folder"]
    val = val.sort_values("step")
    if len(val) >= 3:
        best_i = int(val.value.to_numpy().argmin())
        best_step, best = val.step.iloc[best_i], val.value.iloc[best_i]
        final = val.value.iloc[-1]
        after = train_ce[train_ce.step > best_step].value
        if final > best * 1.01 and len(after) > 1 and after.iloc[-1] < after.iloc[0]:
            notes.append(f"overfitting from step {int(best_step)}: val CE rose from {best:.4f} "
                         f"to {final:.4f} while the training CE kept falling")
        third = val.iloc[-max(2, len(val) // 3):]
        start, end = third.value.iloc[0], third.value.iloc[-1]
        if math.isfinite(start) and start > 0 and abs(start - end) / start < 0.01:
            notes.append(f"plateau: val CE changed by {100 * abs(start - end) / start:.2f}% over "
                         f"the last {len(third)} evaluations")
    if len(train_ce) >= 10:
        first, last = train_ce.value.iloc[:5].mean(), train_ce.value.iloc[-5:].mean()
        if first > 0 and last > 0.95 * first:
            notes.append(f"underfitting: training CE {last:.3f} is within 5% of its start {first:.3f}")
    return notes or ["no issue detected"]
