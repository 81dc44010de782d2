"""Distillation losses against a full target distribution ``teacher_probs`` (B, T, V).

In training the pipeline supplies ``teacher_probs`` from the suite's teacher:
``ngram`` (an add-k n-gram fitted on the training split: distillation from
corpus statistics), ``oracle`` (the markov corpus's exact next-token
distribution) or ``smoothed``. Without ``teacher_probs`` (``smoothed``, or
``lossbench check``) the target is the label-smoothed one-hot with mass
``smoothing``; forward KL then trains exactly like ``label_smoothing`` up to a
constant, and neither loss ever silently equals cross-entropy (smoothing > 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import finish, prepare, smoothed_one_hot
from ._fused import neg_entropy_of, reverse_kl_divergence, soft_cross_entropy
from .registry import HParam, register_loss

_SMOOTHING = HParam(0.1, 1e-3, 1.0, "mass of the label-smoothed fallback target "
                    "(used only without teacher_probs)")


def _target_distribution(logits, safe, teacher_probs, smoothing):
    if teacher_probs is None:
        return smoothed_one_hot(safe, logits.shape[-1], smoothing, logits.dtype)
    if teacher_probs.shape != logits.shape:
        raise ValueError(f"teacher_probs must have the logits' shape {tuple(logits.shape)}, "
                         f"got {tuple(teacher_probs.shape)}")
    return teacher_probs.to(logits.dtype)


def _reference_target(logits, targets, smoothing, teacher_probs):
    """The plain, independent spelling of the target distribution for the references."""
    if teacher_probs is not None:
        return teacher_probs.to(logits.dtype)
    V = logits.shape[-1]
    return F.one_hot(targets.clamp_min(0), V).to(logits.dtype) * (1 - smoothing) + smoothing / V


def _kl_reference(logits, targets, *, ignore_index=-100, smoothing=0.1, teacher_probs=None):
    t = _reference_target(logits, targets, smoothing, teacher_probs)
    loss = F.kl_div(F.log_softmax(logits, -1), t, reduction="none").sum(-1)
    return torch.where(targets != ignore_index, loss, torch.zeros_like(loss))


@register_loss(
    "kl",
    description="Forward KL(teacher || model): distillation from a target distribution.",
    reference="Hinton et al., Distilling the Knowledge in a Neural Network, 2015",
    hparams={"smoothing": _SMOOTHING},
    properties=("nonnegative", "shift_invariant", "zero_at_teacher"),
    extra_inputs=("teacher_probs",),
    reference_impl=_kl_reference,
)
def kl(logits, targets, *, ignore_index=-100, smoothing=0.1, teacher_probs=None):
    """Forward KL(teacher || model): distillation from a target distribution.

    L = sum_c t_c (log t_c - log p_c),   0 log 0 = 0

    with t = ``teacher_probs``, or the label-smoothed one-hot without it.
    Mass-covering: it pays -t_c log p_c wherever the teacher puts mass.

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        smoothing: in [0.001, 1], the mass of the fallback target
            (1 - smoothing) one_hot(y) + smoothing / V; unused with ``teacher_probs``.
        teacher_probs: optional (B, T, V) target distribution (rows sum to 1);
            gets no gradient.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Hinton et al., Distilling the Knowledge in a Neural Network, 2015.

    Examples:
        A teacher (1/2, 1/2, 0) against a uniform model over 3 classes:
        2 * 1/2 * log((1/2) / (1/3)) = log 1.5:

        >>> import math, torch
        >>> teacher = torch.tensor([[[0.5, 0.5, 0.0]]])
        >>> round(kl(torch.zeros(1, 1, 3), torch.tensor([[0]]), teacher_probs=teacher).item(), 4)
        0.4055
        >>> round(math.log(1.5), 4)
        0.4055
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    t = _target_distribution(logits, safe, teacher_probs, smoothing)
    return finish(neg_entropy_of(t) + soft_cross_entropy(logits, t), keep)


def _reverse_kl_reference(logits, targets, *, ignore_index=-100, smoothing=0.1,
                          teacher_probs=None):
    t = _reference_target(logits, targets, smoothing, teacher_probs)
    p = logits.softmax(-1)
    loss = (p * (p.log() - t.log())).sum(-1)
    return torch.where(targets != ignore_index, loss, torch.zeros_like(loss))


@register_loss(
    "reverse_kl",
    description="Reverse KL(model || teacher): mode-seeking distillation.",
    reference="Gu et al., MiniLLM: Knowledge Distillation of Large Language Models, ICLR 2024",
    hparams={"smoothing": _SMOOTHING},
    properties=("nonnegative", "shift_invariant", "zero_at_teacher"),
    extra_inputs=("teacher_probs",),
    reference_impl=_reverse_kl_reference,
)
def reverse_kl(logits, targets, *, ignore_index=-100, smoothing=0.1, teacher_probs=None):
    """Reverse KL(model || teacher): mode-seeking distillation.

    L = sum_c p_c (log p_c - log t_c)

    with t = ``teacher_probs``, or the label-smoothed one-hot without it.
    Mode-seeking: it pays only where the model puts mass. log t is clamped at
    the smallest normal float so a zero-probability teacher entry costs a large
    finite amount instead of inf (teachers here have full support anyway).

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        smoothing: in [0.001, 1], the mass of the fallback target
            (1 - smoothing) one_hot(y) + smoothing / V; unused with ``teacher_probs``.
        teacher_probs: optional (B, T, V) target distribution (rows sum to 1);
            gets no gradient.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Gu et al., MiniLLM: Knowledge Distillation of Large Language Models, ICLR 2024.

    Examples:
        A uniform model over 3 classes against the teacher (1/2, 1/4, 1/4):
        (1/3) [log((1/3) / (1/2)) + 2 log((1/3) / (1/4))]; 0 at the teacher itself:

        >>> import torch
        >>> logits, targets = torch.zeros(1, 1, 3), torch.tensor([[0]])
        >>> teacher = torch.tensor([[[0.5, 0.25, 0.25]]])
        >>> round(reverse_kl(logits, targets, teacher_probs=teacher).item(), 4)
        0.0566
        >>> abs(reverse_kl(logits, targets, teacher_probs=logits.softmax(-1)).item()) < 1e-6
        True
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    t = _target_distribution(logits, safe, teacher_probs, smoothing)
    return finish(reverse_kl_divergence(logits, t), keep)
