"""Per-run diagnostics in words, from the run's curves (computed, not drawn)."""

from __future__ import annotations

import math

import pandas as pd


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
        notes.append(f"diverged at step {int(diverged_step)} (non-finite loss or gradient)")
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
