"""The per-token contract at the point of use: a loss returns one value per target position.

A loss that returns a mean-reduced scalar instead broadcasts through the shared reduction
(:func:`lossbench.losses.mean_over_tokens`) and trains exactly like a mean: silently. So a
suite probes every loss it names on a tiny input before any run (:func:`probe_problem`), and
a run checks the shape of every value it reduces (:func:`output_problem`). ``lossbench check``
tests the whole contract (output_contract and the rest).
"""

from __future__ import annotations

from typing import Any

import torch

from .registry import LossSpec

# a batch of 2 rows of 3 positions over 5 classes, one position ignored; no random numbers
_LOGITS = torch.linspace(-2.0, 2.0, 30).reshape(2, 3, 5)  # (B, T, V)
_TARGETS = torch.tensor([[0, 1, -100], [4, 2, 3]])  # (B, T)


def output_problem(name: str, out: Any, targets: torch.Tensor) -> str | None:
    """Why ``out`` is not a loss's per-token values for ``targets`` (B, T); None when it is."""
    if isinstance(out, torch.Tensor) and out.shape == targets.shape:
        return None
    shape = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
    hint = (": it looks mean-reduced; return the per-token values, lossbench takes the mean"
            if isinstance(out, torch.Tensor) and out.numel() == 1 else "")
    return (f"loss {name!r} returned {shape} for targets of shape {tuple(targets.shape)} "
            f"(B, T), not one value per token{hint}")


def probe_problem(spec: LossSpec) -> str | None:
    """:func:`output_problem` of ``spec`` on a tiny fixed batch at its default
    hyperparameters, without extra inputs (they are optional). A loss that raises here is
    left to its run (and ``lossbench check``): it may need inputs the probe cannot make.
    The global random state is left as it was."""
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            out = spec.fn(_LOGITS.clone(), _TARGETS.clone(), ignore_index=-100,
                          **spec.defaults())
    except Exception:
        return None
    return output_problem(spec.name, out, _TARGETS)
