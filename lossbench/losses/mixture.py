"""Divergences to a mixture of teacher and student, and total variation: the losses
on-policy and "streamlined" LLM distillation moved to after forward KL.

Notation: t = ``teacher_probs`` (B, T, V) (or the label-smoothed one-hot without it, as
``kl``), p = softmax(logits), KL(a || b) = sum_c a_c (log a_c - log b_c), 0 log 0 = 0.
log t is clamped at the smallest normal float where a zero teacher entry would meet a
logarithm of its own (as ``reverse_kl`` does); a mixture with p in it is never 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._common import finish, prepare
from .divergence import _SMOOTHING, _reference_target, _target_distribution
from .registry import HParam, register_loss

_GKD = ("Agarwal et al., On-Policy Distillation of Language Models: Learning from "
        "Self-Generated Mistakes, ICLR 2024")
_DISTILLM = ("Ko et al., DistiLLM: Towards Streamlined Distillation for Large Language Models, "
             "ICML 2024")
_WEN = "Wen et al., f-Divergence Minimization for Sequence-Level Knowledge Distillation, ACL 2023"
_SKEW = HParam(0.1, 0.0, 0.9, "skew alpha: the share of the other distribution mixed in "
               "(DistiLLM's default 0.1; 0 is the plain divergence)")
_PROPS = ("nonnegative", "shift_invariant", "zero_at_teacher")


def _log_teacher(t: torch.Tensor) -> torch.Tensor:
    return t.clamp_min(torch.finfo(t.dtype).tiny).log()


def _log_mix(log_a, log_b, w_a: float):
    """log(w_a a + (1 - w_a) b) from log a and log b, stable: (B, T, V) -> (B, T, V)."""
    if w_a <= 0:
        return log_b
    if w_a >= 1:
        return log_a
    return torch.logaddexp(log_a + math.log(w_a), log_b + math.log1p(-w_a))


def _kl(a, log_a, log_b):
    """KL(a || b) from a, log a, log b: (B, T, V) -> (B, T); a's zero entries add 0."""
    return torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a)).sum(-1)


def _jsd(logits, t, beta):
    log_p, log_t = F.log_softmax(logits, dim=-1), _log_teacher(t)  # (B, T, V) each
    p = log_p.exp()
    if beta == 0:
        return _kl(t, log_t, log_p)  # TRL's endpoint: forward KL
    if beta == 1:
        return _kl(p, log_p, log_t)  # and reverse KL
    log_m = _log_mix(log_t, log_p, beta)  # M = beta t + (1 - beta) p
    return beta * _kl(t, log_t, log_m) + (1 - beta) * _kl(p, log_p, log_m)


def _jsd_reference(logits, targets, *, ignore_index=-100, smoothing=0.1, beta=0.5,
                   teacher_probs=None):
    """GKD eq. (1) written out: beta KL(P || M) + (1 - beta) KL(Q || M),
    M = beta P + (1 - beta) Q."""
    P = _reference_target(logits, targets, smoothing, teacher_probs)
    Q = torch.softmax(logits, -1)

    def kl(a, b):
        return (a * (a / b).log()).nan_to_num().sum(-1)

    if beta == 0:
        loss = kl(P, Q)
    elif beta == 1:
        loss = kl(Q, P.clamp_min(torch.finfo(P.dtype).tiny))
    else:
        M = beta * P + (1 - beta) * Q
        loss = beta * kl(P, M) + (1 - beta) * kl(Q, M)
    return torch.where(targets != ignore_index, loss, torch.zeros_like(loss))


@register_loss(
    "generalized_jsd",
    description="Generalized JSD(beta) of teacher and student: GKD's divergence.",
    reference=_GKD,
    hparams={"smoothing": _SMOOTHING,
             "beta": HParam(0.5, 0.0, 1.0, "weight of the teacher in the mixture M (TRL's "
                            "convention); the ends are forward KL (0) and reverse KL (1)")},
    properties=_PROPS,
    extra_inputs=("teacher_probs",),
    reference_impl=_jsd_reference,
)
def generalized_jsd(logits, targets, *, ignore_index=-100, smoothing=0.1, beta=0.5,
                    teacher_probs=None):
    """Generalized JSD(beta) of teacher and student: GKD's divergence.

    L = beta KL(t || M) + (1 - beta) KL(p || M),   M = beta t + (1 - beta) p,  0 < beta < 1
    L = KL(t || p) at beta = 0,   KL(p || t) at beta = 1

    The convention is GKD's eq. (1) with P = teacher, Q = student, as TRL's
    ``GKDTrainer.generalized_jsd_loss``, ends included. JSD(beta) itself vanishes at both
    ends; its scaled limits are the KLs: JSD(beta) / beta -> KL(t || p) as beta -> 0 and
    JSD(beta) / (1 - beta) -> KL(p || t) as beta -> 1 (tests/test_distill_losses.py).
    beta = 0.5 is the symmetric JSD, bounded by log 2.

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        smoothing: in [0.001, 1], the mass of the fallback target
            (1 - smoothing) one_hot(y) + smoothing / V; unused with ``teacher_probs``.
        beta: in [0, 1], the teacher's weight in the mixture.
        teacher_probs: optional (B, T, V) target distribution (rows sum to 1);
            gets no gradient.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Agarwal et al., On-Policy Distillation of Language Models: Learning from
        Self-Generated Mistakes, ICLR 2024.

    Examples:
        Disjoint teacher and student: the symmetric JSD is log 2, its maximum:

        >>> import math, torch
        >>> z, t = torch.tensor([[[30.0, -30.0]]]), torch.tensor([[[0.0, 1.0]]])
        >>> round(generalized_jsd(z, torch.tensor([[0]]), teacher_probs=t).item(), 4)
        0.6931
        >>> round(math.log(2), 4)
        0.6931
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    t = _target_distribution(logits, safe, teacher_probs, smoothing)
    return finish(_jsd(logits, t, beta), keep)


def _skew_reference(logits, targets, *, ignore_index=-100, smoothing=0.1, alpha=0.1,
                    teacher_probs=None, reverse=False):
    """DistiLLM eq. (3)-(4): SKL = KL(p || a p + (1 - a) q), SRKL = KL(q || (1 - a) p + a q)."""
    p = _reference_target(logits, targets, smoothing, teacher_probs)  # the paper's teacher p
    q = torch.softmax(logits, -1)
    if reverse:
        mix = ((1 - alpha) * p + alpha * q).clamp_min(torch.finfo(p.dtype).tiny)
        loss = (q * (q.log() - mix.log())).sum(-1)
    else:
        mix = alpha * p + (1 - alpha) * q
        loss = (p * (p.log() - mix.log())).nan_to_num().sum(-1)
    return torch.where(targets != ignore_index, loss, torch.zeros_like(loss))


def _skew_reverse_reference(logits, targets, **kwargs):
    return _skew_reference(logits, targets, **kwargs, reverse=True)


@register_loss(
    "skew_kl",
    description="Skew KL(t || alpha t + (1 - alpha) p): DistiLLM's SKL.",
    reference=_DISTILLM,
    hparams={"smoothing": _SMOOTHING, "alpha": _SKEW},
    properties=_PROPS,
    extra_inputs=("teacher_probs",),
    reference_impl=_skew_reference,
)
def skew_kl(logits, targets, *, ignore_index=-100, smoothing=0.1, alpha=0.1,
            teacher_probs=None):
    """Skew KL(t || alpha t + (1 - alpha) p): DistiLLM's SKL.

    L = sum_c t_c (log t_c - log(alpha t_c + (1 - alpha) p_c))

    Mixing alpha t into the student side bounds the ratio t / mix by 1 / alpha, so the
    loss and its gradient stay bounded where the student gives a teacher token ~0
    (DistiLLM, Theorem 1); alpha = 0 is ``kl``.

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        smoothing: in [0.001, 1], the mass of the fallback target
            (1 - smoothing) one_hot(y) + smoothing / V; unused with ``teacher_probs``.
        alpha: in [0, 0.9], the teacher's share of the mixture.
        teacher_probs: optional (B, T, V) target distribution (rows sum to 1);
            gets no gradient.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Ko et al., DistiLLM: Towards Streamlined Distillation for Large Language Models,
        ICML 2024.

    Examples:
        A student that misses the teacher's token entirely costs at most log(1 / alpha):

        >>> import math, torch
        >>> z, t = torch.tensor([[[-50.0, 50.0]]]), torch.tensor([[[1.0, 0.0]]])
        >>> round(skew_kl(z, torch.tensor([[0]]), teacher_probs=t).item(), 4)
        2.3026
        >>> round(math.log(1 / 0.1), 4)
        2.3026
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    t = _target_distribution(logits, safe, teacher_probs, smoothing)
    log_t = _log_teacher(t)
    log_mix = _log_mix(log_t, F.log_softmax(logits, dim=-1), alpha)
    return finish(_kl(t, log_t, log_mix), keep)


@register_loss(
    "skew_reverse_kl",
    description="Skew reverse KL(p || (1 - alpha) t + alpha p): DistiLLM's SRKL.",
    reference=_DISTILLM,
    hparams={"smoothing": _SMOOTHING, "alpha": _SKEW},
    properties=_PROPS,
    extra_inputs=("teacher_probs",),
    reference_impl=_skew_reverse_reference,
)
def skew_reverse_kl(logits, targets, *, ignore_index=-100, smoothing=0.1, alpha=0.1,
                    teacher_probs=None):
    """Skew reverse KL(p || (1 - alpha) t + alpha p): DistiLLM's SRKL.

    L = sum_c p_c (log p_c - log((1 - alpha) t_c + alpha p_c))

    Mode-seeking like ``reverse_kl`` (alpha = 0), with the student mixed into the teacher
    side so that a token the teacher rules out costs at most log(1 / alpha).

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        smoothing: in [0.001, 1], the mass of the fallback target
            (1 - smoothing) one_hot(y) + smoothing / V; unused with ``teacher_probs``.
        alpha: in [0, 0.9], the student's share of the mixture.
        teacher_probs: optional (B, T, V) target distribution (rows sum to 1);
            gets no gradient.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Ko et al., DistiLLM: Towards Streamlined Distillation for Large Language Models,
        ICML 2024.

    Examples:
        >>> import math, torch
        >>> z, t = torch.tensor([[[50.0, -50.0]]]), torch.tensor([[[0.0, 1.0]]])
        >>> round(skew_reverse_kl(z, torch.tensor([[0]]), teacher_probs=t).item(), 4)
        2.3026
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    t = _target_distribution(logits, safe, teacher_probs, smoothing)
    log_p = F.log_softmax(logits, dim=-1)
    log_mix = _log_mix(log_p, _log_teacher(t), alpha)
    return finish(_kl(log_p.exp(), log_p, log_mix), keep)


def _tvd_reference(logits, targets, *, ignore_index=-100, smoothing=0.1, teacher_probs=None):
    t = _reference_target(logits, targets, smoothing, teacher_probs)
    loss = 0.5 * (t - torch.softmax(logits, -1)).abs().sum(-1)
    return torch.where(targets != ignore_index, loss, torch.zeros_like(loss))


@register_loss(
    "tvd",
    description="Total variation distance (1/2) sum |t - p|: a bounded, symmetric f-divergence.",
    reference=_WEN,
    hparams={"smoothing": _SMOOTHING},
    properties=_PROPS,
    extra_inputs=("teacher_probs",),
    reference_impl=_tvd_reference,
)
def tvd(logits, targets, *, ignore_index=-100, smoothing=0.1, teacher_probs=None):
    """Total variation distance (1/2) sum |t - p|: a bounded, symmetric f-divergence.

    L = 1/2 sum_c |t_c - p_c|  in [0, 1]

    Wen et al.'s token-level TVD (f(u) = |u - 1| / 2). Its gradient does not vanish as p
    approaches t (a sub-gradient, 0 where t_c = p_c exactly).

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
        Wen et al., f-Divergence Minimization for Sequence-Level Knowledge Distillation,
        ACL 2023.

    Examples:
        >>> import torch
        >>> t = torch.tensor([[[0.5, 0.5, 0.0]]])
        >>> round(tvd(torch.zeros(1, 1, 3), torch.tensor([[0]]), teacher_probs=t).item(), 4)
        0.3333
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    t = _target_distribution(logits, safe, teacher_probs, smoothing)
    return finish(0.5 * (t - torch.softmax(logits, dim=-1)).abs().sum(-1), keep)
