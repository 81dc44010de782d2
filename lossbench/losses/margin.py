"""Multi-class margin losses on the logits (no softmax, no probabilities)."""

from __future__ import annotations

import torch

from ._common import finish, gather_target, prepare
from .registry import HParam, register_loss

_MARGIN = HParam(1.0, 0.0, 100.0, "required gap between the target logit and the runner-up")
_PROPS = ("nonnegative", "shift_invariant", "minimal_at_perfect_prediction")


def _violation(logits, targets, ignore_index, margin):
    logits, safe, keep = prepare(logits, targets, ignore_index)
    z_y = gather_target(logits, safe)
    # runner-up: the largest logit among the other classes
    others = logits.scatter(-1, safe.unsqueeze(-1), float("-inf"))
    runner_up = others.max(dim=-1).values  # (B, T)
    return torch.relu(margin + runner_up - z_y), keep


def _hinge_reference(logits, targets, *, ignore_index=-100, margin=1.0, power=1):
    out = torch.zeros(targets.shape, dtype=logits.dtype)
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            y = int(targets[b, t])
            if y == ignore_index:
                continue
            worst = max(logits[b, t, c] for c in range(logits.shape[-1]) if c != y)
            out[b, t] = max(torch.zeros(()), margin + worst - logits[b, t, y]) ** power
    return out


@register_loss(
    "hinge",
    description="Crammer-Singer multi-class hinge: max(0, margin + max_{c!=y} z_c - z_y).",
    reference="Crammer & Singer, On the Algorithmic Implementation of Multiclass Kernel-based "
              "Vector Machines, JMLR 2001",
    hparams={"margin": _MARGIN},
    properties=_PROPS,
    reference_impl=_hinge_reference,
)
def hinge(logits, targets, *, ignore_index=-100, margin=1.0):
    """Crammer-Singer multi-class hinge on the logits.

    L = max(0, margin + max_{c != y} z_c - z_y)

    Zero once the target beats every other logit by the margin: it stops
    pushing, so its logits stay unnormalized and its val CE is only meaningful
    after temperature calibration. Not Fisher-consistent (Zhang 2004; Tewari &
    Bartlett, JMLR 2007): where no class has probability above 1/2, constant
    scores minimize its expectation, so on high-entropy next-token
    distributions it can learn nothing at all.

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        margin: required gap between the target logit and the runner-up, in [0, 100].

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Crammer & Singer, On the Algorithmic Implementation of Multiclass Kernel-based
        Vector Machines, JMLR 2001.

    Examples:
        z = (3, 1, 0): the target 0 beats the runner-up by 2 >= 1, so the loss is 0;
        for target 1 it is 1 + 3 - 1:

        >>> import torch
        >>> logits = torch.tensor([[[3.0, 1.0, 0.0]]])
        >>> hinge(logits, torch.tensor([[0]])).item(), hinge(logits, torch.tensor([[1]])).item()
        (0.0, 3.0)
    """
    violation, keep = _violation(logits, targets, ignore_index, margin)
    return finish(violation, keep)


@register_loss(
    "squared_hinge",
    description="Squared Crammer-Singer hinge: max(0, margin + max_{c!=y} z_c - z_y)^2.",
    reference="Crammer & Singer, JMLR 2001; squared (L2-SVM) form as in Tang, "
              "Deep Learning using Linear Support Vector Machines, 2013",
    hparams={"margin": _MARGIN},
    properties=_PROPS,
    reference_impl=lambda logits, targets, *, ignore_index=-100, margin=1.0:
        _hinge_reference(logits, targets, ignore_index=ignore_index, margin=margin, power=2),
)
def squared_hinge(logits, targets, *, ignore_index=-100, margin=1.0):
    """Squared Crammer-Singer hinge (the L2-SVM form): differentiable at the margin.

    L = max(0, margin + max_{c != y} z_c - z_y)^2

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        margin: required gap between the target logit and the runner-up, in [0, 100].

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Crammer & Singer, JMLR 2001; squared (L2-SVM) form as in Tang, Deep Learning
        using Linear Support Vector Machines, 2013.

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[[3.0, 1.0, 0.0]]])
        >>> met, missed = torch.tensor([[0]]), torch.tensor([[1]])
        >>> squared_hinge(logits, met).item(), squared_hinge(logits, missed).item()
        (0.0, 9.0)
    """
    violation, keep = _violation(logits, targets, ignore_index, margin)
    return finish(violation.square(), keep)
