"""Whole-distribution terms with their closed-form gradients.

Autograd records every elementwise step of these (log_softmax, exp, products, sums)
and allocates a fresh (B, T, V) tensor for most of them, forward and backward; on
CPU each fresh tensor of that size costs about as much as the arithmetic (its memory
is page-faulted in). The functions below allocate two or three (B, T, V) tensors in
all (torch's own cross-entropy: two), update them in place, and compute terms that only
feed a sum, or only shift a buffer, in row blocks.
That keeps ``kl``, ``reverse_kl`` and ``confidence_penalty`` near cross-entropy's
cost at BPE-sized vocabularies (``benchmarks/loss_speed.py``). Targets are data: they
get no gradient. The registry's reference implementations, plain autograd, check the
values and gradients of every loss built on these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_BLOCK_ELEMENTS = 1 << 18  # ~1 MB of fp32 per row block: stays in cache, reused by the allocator


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b, -1) for forward passes (no autograd): einsum runs it as a batched matmul,
    about twice as fast as ``linalg.vecdot`` on CPU at V = 8192 (whose backward is cheaper,
    so ``_common.rowdot`` keeps it); autocast off, so fp32 stays fp32."""
    with torch.autocast(a.device.type, enabled=False):
        return torch.einsum("...v,...v->...", a, b)


def _row_blocks(rows: int, vocab: int):
    step = max(1, _BLOCK_ELEMENTS // max(1, vocab))
    return (slice(i, i + step) for i in range(0, rows, step))


def neg_entropy_of(t: torch.Tensor) -> torch.Tensor:
    """sum_c t_c log t_c (0 log 0 = 0): (B, T, V) -> (B, T), in row blocks."""
    flat = t.reshape(-1, t.shape[-1])  # (N, V)
    if flat.numel() <= _BLOCK_ELEMENTS:
        return torch.xlogy(t, t).sum(dim=-1)
    out = torch.empty(flat.shape[0], dtype=t.dtype, device=t.device)
    for rows in _row_blocks(*flat.shape):
        block = flat[rows]
        out[rows] = torch.xlogy(block, block).sum(dim=-1)
    return out.view(t.shape[:-1])


def _subtract_log_in_blocks(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x -= log(max(t, tiny)) in place, in row blocks (no (B, T, V) temporary)."""
    tiny = torch.finfo(t.dtype).tiny
    if x.numel() <= _BLOCK_ELEMENTS:
        return x.sub_(t.clamp_min(tiny).log_())
    fx, ft = x.view(-1, x.shape[-1]), t.reshape(-1, t.shape[-1])
    for rows in _row_blocks(*fx.shape):
        fx[rows].sub_(ft[rows].clamp_min(tiny).log_())
    return x


class _ReverseKL(torch.autograd.Function):
    """KL(p || t) = E_p[log p - log t], p = softmax(z): dKL/dz_j = p_j (a_j - KL),
    a = log p - log t. log t is clamped at the smallest normal float."""

    @staticmethod
    def forward(ctx, logits, target):
        a = F.log_softmax(logits, dim=-1)  # (B, T, V), becomes a = log p - log t
        p = a.exp()
        _subtract_log_in_blocks(a, target)
        value = _rowdot(p, a)  # (B, T)
        ctx.save_for_backward(p, a, value)
        return value

    @staticmethod
    def backward(ctx, grad):
        p, a, value = ctx.saved_tensors
        return (a - value.unsqueeze(-1)).mul_(p).mul_(grad.unsqueeze(-1)), None


def reverse_kl_divergence(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sum_c p_c (log p_c - log t_c): (B, T, V), (B, T, V) -> (B, T)."""
    return _ReverseKL.apply(logits, target.detach())


class _SoftCrossEntropy(torch.autograd.Function):
    """H(t, p) = -sum_c t_c log p_c, p = softmax(z): dH/dz = p * sum(t) - t."""

    @staticmethod
    def forward(ctx, logits, target):
        logp = F.log_softmax(logits, dim=-1)  # (B, T, V)
        mass = target.sum(dim=-1)  # (B, T): 1 for a distribution
        ctx.save_for_backward(logp, target, mass)
        return -_rowdot(target, logp)

    @staticmethod
    def backward(ctx, grad):
        logp, target, mass = ctx.saved_tensors
        out = logp.exp().mul_(mass.unsqueeze(-1)).sub_(target)
        return out.mul_(grad.unsqueeze(-1)), None


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-sum_c t_c log softmax(z)_c: (B, T, V), (B, T, V) -> (B, T)."""
    return _SoftCrossEntropy.apply(logits, target.detach())


class _EntropyRegularizedCE(torch.autograd.Function):
    """-log p_y + beta * E_p[log p] (CE minus beta * entropy) in one pass.

    d/dz_j = p_j (1 + beta (log p_j - E_p[log p])) - [j = y].
    """

    @staticmethod
    def forward(ctx, logits, safe_targets, beta):
        logp = F.log_softmax(logits, dim=-1)  # (B, T, V)
        p = logp.exp()
        neg_entropy = _rowdot(p, logp)  # (B, T)
        nll = -logp.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(p, logp, neg_entropy, safe_targets)
        ctx.beta = beta
        return nll + beta * neg_entropy

    @staticmethod
    def backward(ctx, grad):
        p, logp, neg_entropy, safe = ctx.saved_tensors
        out = (logp - neg_entropy.unsqueeze(-1)).mul_(ctx.beta).add_(1.0).mul_(p)
        out.scatter_add_(-1, safe.unsqueeze(-1), torch.full_like(p[..., :1], -1.0))
        return out.mul_(grad.unsqueeze(-1)), None, None


def entropy_regularized_ce(logits: torch.Tensor, safe_targets: torch.Tensor, beta: float):
    """-log p_y - beta * H(p): (B, T, V), (B, T) -> (B, T); targets must be valid indices."""
    return _EntropyRegularizedCE.apply(logits, safe_targets, float(beta))
