"""Cross-entropy and its modern variants: label smoothing, focal, poly-1, z-loss,
confidence penalty. All take logits (B, T, V) and targets (B, T) and return the
per-token loss (B, T), 0 at ignored positions. ``z`` are the logits of one position,
``p = softmax(z)``, ``y`` the target, ``Z = sum_c exp(z_c)``.

The examples run as doctests (``python -m pytest`` collects them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import finish, gather_target, log1m_softmax_at, prepare
from ._fused import entropy_regularized_ce, z_loss_ce
from .registry import HParam, register_loss

_SOFTMAX_PROPS = ("shift_invariant",)


def _ce_reference(logits, targets, *, ignore_index=-100, **_):
    return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=ignore_index,
                           reduction="none")


def _token_ce(logits, safe):
    """-log p_y and log p (B, T, V) from prepared inputs."""
    logp = F.log_softmax(logits, dim=-1)
    return -gather_target(logp, safe), logp


@register_loss(
    "cross_entropy",
    description="Negative log-likelihood of the target token (the baseline).",
    reference="Shannon, A Mathematical Theory of Communication, Bell System Technical "
              "Journal 1948; the standard LM objective",
    properties=_SOFTMAX_PROPS + ("nonnegative", "minimal_at_perfect_prediction"),
    reference_impl=_ce_reference,
)
def cross_entropy(logits, targets, *, ignore_index=-100):
    """Cross-entropy: the negative log-likelihood of the target token (the baseline).

    L = -log p_y = log Z - z_y

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).

    Returns:
        (B, T) per-token loss, exactly 0 (value and gradient) at ignored positions.

    References:
        Shannon, A Mathematical Theory of Communication, Bell System Technical
        Journal 1948; the standard LM objective.

    Examples:
        Uniform logits cost log V; an ignored position costs 0:

        >>> import math, torch
        >>> loss = cross_entropy(torch.zeros(1, 2, 5), torch.tensor([[3, -100]]))
        >>> round(loss[0, 0].item(), 4), round(math.log(5), 4), loss[0, 1].item()
        (1.6094, 1.6094, 0.0)
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    nll, _ = _token_ce(logits, safe)
    return finish(nll, keep)


def _ls_reference(logits, targets, *, ignore_index=-100, smoothing=0.1):
    return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=ignore_index,
                           reduction="none", label_smoothing=smoothing)


@register_loss(
    "label_smoothing",
    description="Cross-entropy against (1-eps)*one-hot + eps/V.",
    reference="Szegedy et al., Rethinking the Inception Architecture, CVPR 2016",
    hparams={"smoothing": HParam(0.1, 0.0, 1.0, "eps: mass spread uniformly", neutral=0.0)},
    properties=_SOFTMAX_PROPS + ("nonnegative",),
    reference_impl=_ls_reference,
)
def label_smoothing(logits, targets, *, ignore_index=-100, smoothing=0.1):
    """Cross-entropy against the smoothed target (1 - ε) one_hot(y) + ε / V.

    L = (1 - ε) (-log p_y) + ε mean_c(-log p_c)

    torch's convention: the ε / V share also goes to the target class.

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        smoothing: ε in [0, 1], the probability mass spread uniformly; 0 gives
            cross-entropy.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Szegedy et al., Rethinking the Inception Architecture, CVPR 2016.

    Examples:
        ε = 0 is cross-entropy; ε = 1 is the mean of -log p_c over all classes:

        >>> import torch
        >>> logits, targets = torch.tensor([[[2.0, 0.5, -1.0]]]), torch.tensor([[0]])
        >>> torch.allclose(label_smoothing(logits, targets, smoothing=0.0),
        ...                cross_entropy(logits, targets))
        True
        >>> round(label_smoothing(logits, targets, smoothing=1.0).item(), 4)
        1.7413
        >>> round(-torch.log_softmax(logits, -1).mean().item(), 4)
        1.7413
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    nll, logp = _token_ce(logits, safe)
    return finish((1.0 - smoothing) * nll - smoothing * logp.mean(dim=-1), keep)


def _focal_reference(logits, targets, *, ignore_index=-100, gamma=2.0):
    p = logits.softmax(-1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    loss = -((1 - p) ** gamma) * torch.log(p)
    return torch.where(targets != ignore_index, loss, torch.zeros_like(loss))


@register_loss(
    "focal",
    description="Cross-entropy down-weighted on confident tokens by (1-p_y)^gamma.",
    reference="Lin et al., Focal Loss for Dense Object Detection, ICCV 2017",
    hparams={"gamma": HParam(2.0, 0.0, 5.0, "focusing exponent", neutral=0.0)},
    properties=_SOFTMAX_PROPS + ("nonnegative", "minimal_at_perfect_prediction"),
    reference_impl=_focal_reference,
)
def focal(logits, targets, *, ignore_index=-100, gamma=2.0):
    """Focal loss: cross-entropy down-weighted on tokens the model already gets right.

    L = -(1 - p_y)^γ log p_y

    (1 - p_y)^γ is formed as exp(γ log(1 - p_y)) with the stable log(1 - p):
    the naive power has an infinite derivative at p_y = 1 for γ < 1.

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        gamma: γ in [0, 5], the focusing exponent; 0 gives cross-entropy.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Lin et al., Focal Loss for Dense Object Detection, ICCV 2017.

    Examples:
        At p_y = 1/2 and γ = 2 the weight is (1/2)^2: L = log(2) / 4:

        >>> import math, torch
        >>> targets = torch.tensor([[0]])
        >>> round(focal(torch.zeros(1, 1, 2), targets, gamma=2.0).item(), 4)
        0.1733
        >>> round(math.log(2) / 4, 4)
        0.1733
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    nll, _ = _token_ce(logits, safe)
    weight = torch.exp(gamma * log1m_softmax_at(logits, safe, logp_at=-nll))
    return finish(weight * nll, keep)


def _poly1_reference(logits, targets, *, ignore_index=-100, epsilon=1.0):
    p = logits.softmax(-1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return _ce_reference(logits, targets, ignore_index=ignore_index) + torch.where(
        targets != ignore_index, epsilon * (1 - p), torch.zeros_like(p))


@register_loss(
    "poly1",
    description="Cross-entropy plus eps*(1-p_y), the first polynomial term re-weighted.",
    reference="Leng et al., PolyLoss: A Polynomial Expansion Perspective, ICLR 2022",
    hparams={"epsilon": HParam(1.0, -1.0, 10.0, "weight of (1 - p_y)", neutral=0.0)},
    properties=_SOFTMAX_PROPS + ("nonnegative", "minimal_at_perfect_prediction"),
    reference_impl=_poly1_reference,
)
def poly1(logits, targets, *, ignore_index=-100, epsilon=1.0):
    """Poly-1: cross-entropy with its first Taylor term (1 - p_y) re-weighted.

    L = -log p_y + ε (1 - p_y)

    Non-negative for ε >= -1, since -log p >= 1 - p.

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        epsilon: ε in [-1, 10], the extra weight of (1 - p_y); 0 gives cross-entropy.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Leng et al., PolyLoss: A Polynomial Expansion Perspective, ICLR 2022.

    Examples:
        At p_y = 1/2 and ε = 1: L = log 2 + 1/2:

        >>> import torch
        >>> round(poly1(torch.zeros(1, 1, 2), torch.tensor([[0]]), epsilon=1.0).item(), 4)
        1.1931
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    nll, _ = _token_ce(logits, safe)
    return finish(nll + epsilon * torch.exp(log1m_softmax_at(logits, safe, logp_at=-nll)), keep)


def _z_loss_reference(logits, targets, *, ignore_index=-100, coefficient=1e-4):
    z = torch.logsumexp(logits, dim=-1)
    return _ce_reference(logits, targets, ignore_index=ignore_index) + torch.where(
        targets != ignore_index, coefficient * z**2, torch.zeros_like(z))


@register_loss(
    "z_loss",
    description="Cross-entropy plus c*log(Z)^2, keeping the softmax normalizer near 1.",
    reference="Chowdhery et al., PaLM: Scaling Language Modeling with Pathways, JMLR 2023 (sec. 5)",
    hparams={"coefficient": HParam(1e-4, 0.0, 1.0, "c: weight of log^2 Z", neutral=0.0)},
    properties=("nonnegative",),
    reference_impl=_z_loss_reference,
)
def z_loss(logits, targets, *, ignore_index=-100, coefficient=1e-4):
    """Cross-entropy plus a penalty keeping the softmax normalizer Z near 1.

    L = -log p_y + c (log Z)^2,   Z = sum_c exp(z_c)

    Not shift invariant: that is the point.

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        coefficient: c in [0, 1], the weight of (log Z)^2 (PaLM: 1e-4); 0 gives
            cross-entropy.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Chowdhery et al., PaLM: Scaling Language Modeling with Pathways, JMLR 2023 (sec. 5).

    Examples:
        Zero logits over V = 4: log Z = log 4, so L = log 4 + c (log 4)^2:

        >>> import math, torch
        >>> round(z_loss(torch.zeros(1, 1, 4), torch.tensor([[0]]), coefficient=0.5).item(), 4)
        2.3472
        >>> round(math.log(4) + 0.5 * math.log(4) ** 2, 4)
        2.3472
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    # closed-form backward: the gradient is its only (B, T, V) tensor (large vocabularies)
    return finish(z_loss_ce(logits, safe, coefficient), keep)


def _confidence_reference(logits, targets, *, ignore_index=-100, beta=0.1):
    entropy = torch.distributions.Categorical(logits=logits).entropy()
    return _ce_reference(logits, targets, ignore_index=ignore_index) - torch.where(
        targets != ignore_index, beta * entropy, torch.zeros_like(entropy))


@register_loss(
    "confidence_penalty",
    description="Cross-entropy minus beta*entropy of the prediction (penalizes over-confidence).",
    reference="Pereyra et al., Regularizing Neural Networks by Penalizing Confident Output "
              "Distributions, ICLR Workshop 2017",
    hparams={"beta": HParam(0.1, 0.0, 10.0, "weight of the entropy bonus", neutral=0.0)},
    properties=_SOFTMAX_PROPS,  # can be negative: -log p_y < beta * H(p) is possible
    reference_impl=_confidence_reference,
)
def confidence_penalty(logits, targets, *, ignore_index=-100, beta=0.1):
    """Cross-entropy minus an entropy bonus: penalizes over-confident predictions.

    L = -log p_y - β H(p),   H(p) = -sum_c p_c log p_c

    Can be negative (when -log p_y < β H(p)). Computed with a closed-form gradient
    (``_fused.entropy_regularized_ce``).

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        beta: β in [0, 10], the weight of the entropy bonus; 0 gives cross-entropy.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Pereyra et al., Regularizing Neural Networks by Penalizing Confident Output
        Distributions, ICLR Workshop 2017.

    Examples:
        Uniform over V = 4, -log p_y = H(p) = log 4, so L = (1 - β) log 4:

        >>> import torch
        >>> round(confidence_penalty(torch.zeros(1, 1, 4), torch.tensor([[2]]), beta=0.5).item(), 4)
        0.6931
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    return finish(entropy_regularized_ce(logits, safe, beta), keep)
