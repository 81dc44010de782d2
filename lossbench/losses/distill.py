"""Distillation as LLM recipes write it: Hinton's tempered KD, and the CE + KD mix.

Both take the teacher as ``teacher_probs`` t (B, T, V) like ``kl`` (an n-gram, the oracle or
a trained model: ``[data] teacher``), with the same label-smoothed one-hot fallback without
it. A teacher given as probabilities is tempered exactly as its logits would be:
softmax(log t / tau) = softmax(z_t / tau) for t = softmax(z_t). Entries with t = 0 (a top-k
truncated teacher, lossbench.models.teacher) stay 0 at every temperature.

The other modern divergences (generalized JSD, skew KL, skew reverse KL, total variation)
are in :mod:`lossbench.losses.mixture`; ``reverse_kl`` (divergence.py) is MiniLLM's
token-level reverse KL (see docs/distillation.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import finish, gather_target, prepare
from .divergence import _SMOOTHING, _reference_target, _target_distribution
from .registry import HParam, register_loss

_TEMPERATURE = HParam(2.0, 0.5, 20.0, "softmax temperature tau of teacher and student; the "
                      "loss is scaled by tau**2 (Hinton et al. 2015 use 1 to 20)")
_HINTON = "Hinton et al., Distilling the Knowledge in a Neural Network, NIPS DL Workshop 2015"


def tempered_teacher(t: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(log t / tau): (B, T, V) -> (B, T, V); zero entries stay zero.

    Examples:
        >>> import torch
        >>> t = torch.tensor([[[0.8, 0.2, 0.0]]])
        >>> [round(v, 4) for v in tempered_teacher(t, 2.0)[0, 0].tolist()]
        [0.6667, 0.3333, 0.0]
    """
    log_t = torch.where(t > 0, t.clamp_min(torch.finfo(t.dtype).tiny).log(), float("-inf"))
    return torch.softmax(log_t / temperature, dim=-1)


def _tempered_kl(logits, t, temperature):
    """tau^2 KL(t_tau || p_tau): (B, T, V), (B, T, V) -> (B, T)."""
    t_tau = tempered_teacher(t, temperature)  # (B, T, V), no gradient
    log_p_tau = F.log_softmax(logits / temperature, dim=-1)  # (B, T, V)
    kl = (torch.xlogy(t_tau, t_tau) - t_tau * log_p_tau).sum(-1)  # (B, T)
    return temperature ** 2 * kl


def _kd_reference(logits, targets, *, ignore_index=-100, smoothing=0.1, temperature=2.0,
                  teacher_probs=None):
    """Hinton's eq.: q_i = exp(z_i / T) / sum_j exp(z_j / T) for both, T^2 KL(q_t || q_s)."""
    t = _reference_target(logits, targets, smoothing, teacher_probs)
    q_t = t ** (1.0 / temperature)
    q_t = q_t / q_t.sum(-1, keepdim=True)
    q_s = torch.exp(logits / temperature)
    q_s = q_s / q_s.sum(-1, keepdim=True)
    loss = temperature ** 2 * (q_t * (torch.log(q_t) - torch.log(q_s))).nan_to_num().sum(-1)
    return torch.where(targets != ignore_index, loss, torch.zeros_like(loss))


@register_loss(
    "kd",
    description="Tempered forward KL tau^2 KL(t_tau || p_tau): Hinton's knowledge distillation.",
    reference=_HINTON,
    hparams={"smoothing": _SMOOTHING, "temperature": _TEMPERATURE},
    properties=("nonnegative", "shift_invariant", "zero_at_teacher"),
    extra_inputs=("teacher_probs",),
    reference_impl=_kd_reference,
)
def kd(logits, targets, *, ignore_index=-100, smoothing=0.1, temperature=2.0,
       teacher_probs=None):
    """Tempered forward KL tau^2 KL(t_tau || p_tau): Hinton's knowledge distillation.

    L = tau^2 sum_c t_tau,c (log t_tau,c - log p_tau,c),
    t_tau = softmax(log t / tau),  p_tau = softmax(z / tau)

    The tau^2 factor keeps the gradient's scale independent of tau (it shrinks as
    1 / tau^2 otherwise); at tau = 1 this is ``kl``.

    Args:
        logits: (B, T, V) unnormalized scores z; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        smoothing: in [0.001, 1], the mass of the fallback target
            (1 - smoothing) one_hot(y) + smoothing / V; unused with ``teacher_probs``.
        temperature: tau in [0.5, 20], applied to teacher and student alike.
        teacher_probs: optional (B, T, V) target distribution (rows sum to 1);
            gets no gradient.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Hinton et al., Distilling the Knowledge in a Neural Network, NIPS DL Workshop 2015.

    Examples:
        Teacher (0.8, 0.2) tempered at tau = 2 is (2/3, 1/3); against a uniform student,
        4 KL((2/3, 1/3) || (1/2, 1/2)):

        >>> import math, torch
        >>> t = torch.tensor([[[0.8, 0.2]]])
        >>> round(kd(torch.zeros(1, 1, 2), torch.tensor([[0]]), teacher_probs=t).item(), 4)
        0.2265
        >>> round(4 * (2/3 * math.log(4/3) + 1/3 * math.log(2/3)), 4)
        0.2265
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    t = _target_distribution(logits, safe, teacher_probs, smoothing)
    return finish(_tempered_kl(logits, t, temperature), keep)


def _ce_kd_reference(logits, targets, *, ignore_index=-100, smoothing=0.1, alpha=0.5,
                     temperature=2.0, teacher_probs=None):
    ce = F.cross_entropy(logits.transpose(1, 2), targets.clamp_min(0), reduction="none")
    mix = alpha * ce + (1 - alpha) * _kd_reference(
        logits, targets, smoothing=smoothing, temperature=temperature,
        teacher_probs=teacher_probs)
    return torch.where(targets != ignore_index, mix, torch.zeros_like(mix))


@register_loss(
    "ce_kd",
    description="alpha CE + (1 - alpha) tau^2 KL(t_tau || p_tau): the usual distillation mix.",
    reference=_HINTON,
    hparams={"smoothing": _SMOOTHING,
             "alpha": HParam(0.5, 0.0, 1.0, "weight of the hard-label cross-entropy; 1 is "
                             "cross-entropy, 0 is kd", neutral=1.0),
             "temperature": _TEMPERATURE},
    properties=("nonnegative", "shift_invariant"),
    extra_inputs=("teacher_probs",),
    reference_impl=_ce_kd_reference,
)
def ce_kd(logits, targets, *, ignore_index=-100, smoothing=0.1, alpha=0.5, temperature=2.0,
          teacher_probs=None):
    """alpha CE + (1 - alpha) tau^2 KL(t_tau || p_tau): the usual distillation mix.

    L = alpha (-log p_y) + (1 - alpha) tau^2 KL(t_tau || p_tau)

    Hinton et al.'s "weighted average of two different objective functions": the hard
    labels' cross-entropy at tau = 1 and ``kd`` at tau (tau^2 keeps their balance).

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        smoothing: in [0.001, 1], the mass of the fallback target
            (1 - smoothing) one_hot(y) + smoothing / V; unused with ``teacher_probs``.
        alpha: in [0, 1], the cross-entropy's weight (1: cross-entropy, 0: ``kd``).
        temperature: tau in [0.5, 20], of the KD term only.
        teacher_probs: optional (B, T, V) target distribution (rows sum to 1);
            gets no gradient.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Hinton et al., Distilling the Knowledge in a Neural Network, NIPS DL Workshop 2015.

    Examples:
        Half cross-entropy (log 2 for a uniform student over 2 classes), half ``kd``:

        >>> import math, torch
        >>> z, y, t = torch.zeros(1, 1, 2), torch.tensor([[0]]), torch.tensor([[[0.8, 0.2]]])
        >>> mix = ce_kd(z, y, teacher_probs=t).item()
        >>> round(mix, 4), round(0.5 * math.log(2) + 0.5 * kd(z, y, teacher_probs=t).item(), 4)
        (0.4598, 0.4598)
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    t = _target_distribution(logits, safe, teacher_probs, smoothing)
    ce = torch.logsumexp(logits, dim=-1) - gather_target(logits, safe)  # (B, T)
    return finish(alpha * ce + (1 - alpha) * _tempered_kl(logits, t, temperature), keep)
