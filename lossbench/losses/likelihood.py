"""Cross-entropy and its modern variants: label smoothing, focal, poly-1, z-loss,
confidence penalty. All take logits (B, T, V) and targets (B, T) and return the
per-token loss (B, T), 0 at ignored positions. ``p`` is ``softmax(logits)``,
``y`` the target, ``Z = sum_c exp(z_c)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import finish, gather_target, log1m_softmax_at, prepare
from ._fused import entropy_regularized_ce
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
    reference="Shannon 1948; the standard LM objective",
    properties=_SOFTMAX_PROPS + ("nonnegative", "minimal_at_perfect_prediction"),
    reference_impl=_ce_reference,
)
def cross_entropy(logits, targets, *, ignore_index=-100):
    """L = -log p_y."""
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
    """L = (1 - eps) * (-log p_y) + eps * mean_c(-log p_c)   (torch's convention: eps/V on every class)."""
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
    """L = -(1 - p_y)^gamma * log p_y.

    (1 - p_y)^gamma is formed as exp(gamma * log(1 - p_y)) with the stable
    log(1 - p): the naive power has an infinite derivative at p_y = 1 for gamma < 1.
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
    """L = -log p_y + eps * (1 - p_y).   Non-negative for eps >= -1 since -log p >= 1 - p."""
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
    """L = -log p_y + c * (log Z)^2.   Not shift invariant: that is the point."""
    logits, safe, keep = prepare(logits, targets, ignore_index)
    log_z = torch.logsumexp(logits, dim=-1)
    nll = log_z - gather_target(logits, safe)
    return finish(nll + coefficient * log_z.square(), keep)


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
    """L = -log p_y - beta * H(p),  H(p) = -sum_c p_c log p_c."""
    logits, safe, keep = prepare(logits, targets, ignore_index)
    return finish(entropy_regularized_ce(logits, safe, beta), keep)
