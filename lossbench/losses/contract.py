"""The per-token contract at the point of use: a loss returns one value per target position.

A loss that returns a mean-reduced scalar instead broadcasts through the shared reduction
(:func:`lossbench.losses.mean_over_tokens`) and trains exactly like a mean: silently. So a
run checks the shape of every value it reduces (:func:`output_problem`) and stops at its
first update. (Not when the suite loads: that would run the loss's code in the process
that drives the sweep, where a loss that crashes or kills its process takes the whole
sweep down instead of failing its own runs.) ``lossbench check`` tests the whole contract.
"""

from __future__ import annotations

from typing import Any

import torch


def output_problem(name: str, out: Any, targets: torch.Tensor) -> str | None:
    """Why ``out`` is not a loss's per-token values for ``targets`` (B, T); None when it is."""
    if isinstance(out, torch.Tensor) and out.shape == targets.shape:
        return None
    shape = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
    hint = (": it looks mean-reduced; return the per-token values, lossbench takes the mean"
            if isinstance(out, torch.Tensor) and out.numel() == 1 else "")
    return (f"loss {name!r} returned {shape} for targets of shape {tuple(targets.shape)} "
            f"(B, T), not one value per token{hint}")
