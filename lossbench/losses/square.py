"""Square losses: on probabilities (Brier) and on raw logits (Hui & Belkin)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import finish, gather_target, prepare, rowdot
from ._fused import brier
from .registry import HParam, register_loss


def _mse_reference(logits, targets, *, ignore_index=-100):
    one_hot = F.one_hot(targets.clamp_min(0), logits.shape[-1]).to(logits.dtype)
    loss = F.mse_loss(logits.softmax(-1), one_hot, reduction="none").sum(-1)
    return torch.where(targets != ignore_index, loss, torch.zeros_like(loss))


@register_loss(
    "mse",
    description="Brier score: squared error between softmax(logits) and the one-hot target.",
    reference="Brier, Verification of Forecasts Expressed in Terms of Probability, MWR 1950",
    properties=("nonnegative", "shift_invariant", "minimal_at_perfect_prediction"),
    reference_impl=_mse_reference,
)
def mse(logits, targets, *, ignore_index=-100):
    """Brier score: squared error between the predicted distribution and the one-hot target.

    L = sum_c (p_c - [c = y])^2 = sum_c p_c^2 - 2 p_y + 1,   p = softmax(z)

    Bounded in [0, 2]; proper, but its gradient vanishes as p_y -> 0.

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Brier, Verification of Forecasts Expressed in Terms of Probability, MWR 1950.

    Examples:
        Uniform over V = 4: 4 (1/4)^2 - 2/4 + 1 = 0.75; a confident correct
        prediction costs ~0:

        >>> import torch
        >>> targets = torch.tensor([[0]])
        >>> round(mse(torch.zeros(1, 1, 4), targets).item(), 4)
        0.75
        >>> abs(mse(torch.tensor([[[30.0, 0.0, 0.0]]]), targets).item()) < 1e-6
        True
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    # expanded form sum p^2 - 2 p_y + 1 with a closed-form backward: no one-hot, no
    # difference tensor, and two (B, T, V) tensors instead of autograd's four
    return finish(brier(logits, safe), keep)


def _mse_logits_reference(logits, targets, *, ignore_index=-100, k=1.0, m=1.0):
    rows = []
    V = logits.shape[-1]
    for z, y in zip(logits.reshape(-1, V), targets.reshape(-1)):
        if y == ignore_index:
            rows.append(z.sum() * 0)
            continue
        total = k * (z[y] - m) ** 2 + sum(z[c] ** 2 for c in range(V) if c != y)
        rows.append(total / V)
    return torch.stack(rows).reshape(targets.shape)


@register_loss(
    "mse_logits",
    description="Square loss on the logits against M*one-hot, true class weighted by k, "
                "averaged over classes.",
    reference="Hui & Belkin, Evaluation of Neural Architectures Trained with Square Loss vs "
              "Cross-Entropy in Classification Tasks, ICLR 2021",
    hparams={
        "k": HParam(1.0, 1.0, 100.0, "weight of the true-class term (rescaling for many classes)"),
        "m": HParam(1.0, 0.1, 100.0, "target value M of the true-class logit"),
    },
    properties=("nonnegative",),
    reference_impl=_mse_logits_reference,
)
def mse_logits(logits, targets, *, ignore_index=-100, k=1.0, m=1.0):
    """Square loss on the raw logits against M * one_hot(y), averaged over classes.

    L = (1/V) [k (z_y - M)^2 + sum_{c != y} z_c^2]

    Hui & Belkin's rescaled square loss for many classes (their sec. 4 uses
    k = 15, M = 30 for 1000 classes; k = M = 1 is the plain square loss). The logits are
    regressed directly, so the loss is not shift invariant and its minimizer
    z = M * one-hot is a softmax with p_y = e^M / (e^M + V - 1): evaluate such
    models with temperature calibration (the report does).

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        k: weight of the true-class term, in [1, 100].
        m: M, the target value of the true-class logit, in [0.1, 100].

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Hui & Belkin, Evaluation of Neural Architectures Trained with Square Loss vs
        Cross-Entropy in Classification Tasks, ICLR 2021.

    Examples:
        z = (2, 1, 0), y = 0, k = M = 1: ((2 - 1)^2 + 1^2 + 0^2) / 3:

        >>> import torch
        >>> round(mse_logits(torch.tensor([[[2.0, 1.0, 0.0]]]), torch.tensor([[0]])).item(), 4)
        0.6667
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    z_y = gather_target(logits, safe)
    # sum_{c != y} z_c^2 from a copy with z_y zeroed: subtracting z_y^2 from sum_c z_c^2
    # would cancel catastrophically when z_y dominates
    others = logits.scatter(-1, safe.unsqueeze(-1), 0.0)
    total = rowdot(others, others) + k * (z_y - m).square()
    return finish(total / logits.shape[-1], keep)
