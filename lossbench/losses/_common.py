"""Numerics shared by the losses: dtype policy, masking, stable log(1 - p)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prepare(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int):
    """Upcast low-precision logits and make targets safe to gather with.

    Under bf16/fp16 autocast a model emits half-precision logits; every loss
    computes in fp32 (fp64 stays fp64, for gradient checks).

    Returns ``(logits, safe_targets, keep)`` with shapes (B, T, V), (B, T),
    (B, T): ignored positions get target 0 so gathers stay in range, and
    ``keep`` marks the positions that count.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (B, T, V) and targets (B, T), got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    return logits, safe, keep


def finish(per_token: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero the ignored positions (value and, through where, gradient)."""
    return torch.where(keep, per_token, torch.zeros_like(per_token))


def gather_target(x: torch.Tensor, safe_targets: torch.Tensor) -> torch.Tensor:
    """x[b, t, targets[b, t]]: (B, T, V) -> (B, T)."""
    return x.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)


def log1m_softmax_at(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log(1 - softmax(logits)[index]) without cancellation: (B, T, V), (B, T) -> (B, T).

    1 - p_i = sum_{j != i} p_j, so log(1 - p_i) = logsumexp_{j != i} z_j - logsumexp_j z_j,
    which stays accurate (and finite) when p_i rounds to 1, e.g. z_i = 1e4.
    """
    masked = logits.scatter(-1, index.unsqueeze(-1), float("-inf"))
    return torch.logsumexp(masked, dim=-1) - torch.logsumexp(logits, dim=-1)


def log1m_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log(1 - softmax(logits)) for every class: (B, T, V) -> (B, T, V).

    Every class except the arg-max has p <= 1/2, where log1p(-p) is accurate; the
    arg-max gets the exact form of :func:`log1m_softmax_at`. The arg-max entry is
    replaced *before* log1p so no -inf (and no NaN gradient) is ever formed.
    """
    logp = F.log_softmax(logits, dim=-1)
    top = logits.argmax(dim=-1)  # (B, T)
    is_top = F.one_hot(top, logits.shape[-1]).bool()
    others = torch.log1p(-logp.masked_fill(is_top, -1.0).exp())
    return torch.where(is_top, log1m_softmax_at(logits, top).unsqueeze(-1), others)


def smoothed_one_hot(safe_targets: torch.Tensor, num_classes: int, smoothing: float,
                     dtype: torch.dtype) -> torch.Tensor:
    """(1 - eps) * one_hot + eps / V, the label-smoothing target: (B, T) -> (B, T, V)."""
    one_hot = F.one_hot(safe_targets, num_classes).to(dtype)
    return one_hot * (1.0 - smoothing) + smoothing / num_classes
