"""Numerics shared by the losses: dtype policy, masking, stable log(1 - p)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._folding import transforms_active


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


# Above this probability log(1 - p) is recomputed exactly; below it, log(-expm1(log p))
# loses at most p / (1 - p) <= 9 ulps of log p, and the exact path stays a small subset.
_NEAR_ONE = 0.9


def _exact_log1m(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log(1 - softmax(rows)[index]) = logsumexp_{j != i} z_j - logsumexp_j z_j: (N, V), (N,) -> (N,)."""
    masked = rows.scatter(-1, index.unsqueeze(-1), float("-inf"))
    return torch.logsumexp(masked, dim=-1) - torch.logsumexp(rows, dim=-1)


def log1m_softmax_at(logits: torch.Tensor, index: torch.Tensor,
                     logp_at: torch.Tensor | None = None) -> torch.Tensor:
    """log(1 - softmax(logits)[..., index]) without cancellation.

    ``index`` is (B, T) or (B, T, K) (K classes per position); the result has its
    shape. ``logp_at`` (log p at ``index``) saves a log_softmax when the caller
    has it. The cheap form log(-expm1(log p)) is used where p <= 0.9; the few
    entries above get the exact form, finite even when p rounds to 1 (z_i = 1e4).

    Examples:
        p_0 rounds to 1 in fp32, yet log(1 - p_0) = log(2 e^-10000) = log 2 - 10000
        stays finite and exact:

        >>> import torch
        >>> out = log1m_softmax_at(torch.tensor([[[1e4, 0.0, 0.0]]]), torch.tensor([[0]]))
        >>> round(out.item(), 1)
        -9999.3
    """
    squeeze = index.dim() == 2
    if squeeze:
        index = index.unsqueeze(-1)
        logp_at = None if logp_at is None else logp_at.unsqueeze(-1)
    if logp_at is None:
        logp_at = F.log_softmax(logits, dim=-1).gather(-1, index)
    near = logp_at > math.log(_NEAR_ONE)
    # replace before expm1 so no log(0) (and no NaN gradient) is ever formed
    out = torch.log(-torch.expm1(torch.where(near, -1.0, logp_at)))
    if transforms_active():  # torch.func (vmap): no data-dependent branch; every entry's
        rows = logits.unsqueeze(2).expand(*index.shape, logits.shape[-1])  # (B, T, K, V)
        exact = _exact_log1m(rows.reshape(-1, rows.shape[-1]), index.reshape(-1))  # exact form,
        out = torch.where(near, exact.view(index.shape), out)  # kept where near: same values
    elif near.any():
        b, t, k = near.nonzero(as_tuple=True)  # row-major: the order masked_scatter fills
        out = out.masked_scatter(near, _exact_log1m(logits[b, t], index[b, t, k]))
    return out.squeeze(-1) if squeeze else out


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b, -1) without the product temporary, kept in fp32 under autocast
    (torch autocasts vecdot, like a matmul, to bf16)."""
    with torch.autocast(a.device.type, enabled=False):
        return torch.linalg.vecdot(a, b)


def smoothed_one_hot(safe_targets: torch.Tensor, num_classes: int, smoothing: float,
                     dtype: torch.dtype) -> torch.Tensor:
    """(1 - eps) * one_hot + eps / V, the label-smoothing target: (B, T) -> (B, T, V).

    Examples:
        >>> import torch
        >>> target = smoothed_one_hot(torch.tensor([[1]]), 4, 0.2, torch.float64)
        >>> [round(x, 4) for x in target[0, 0].tolist()]
        [0.05, 0.85, 0.05, 0.05]
    """
    one_hot = F.one_hot(safe_targets, num_classes).to(dtype)
    return one_hot * (1.0 - smoothing) + smoothing / num_classes
