"""Whole-distribution terms with their closed-form gradients.

Autograd records every elementwise step of these (log_softmax, exp, products, sums)
and allocates a fresh (B, T, V) tensor for most of them, forward and backward; on
CPU each fresh tensor of that size costs about as much as the arithmetic (its memory
is page-faulted in). The functions below allocate two or three (B, T, V) tensors in
all (torch's own cross-entropy: two; ``unlikelihood_ce`` three besides its candidate
mask), update them in place, and compute terms that only feed a sum, or only shift a
buffer, in row blocks. That keeps ``kl``, ``reverse_kl`` and ``confidence_penalty`` near
cross-entropy's cost at BPE-sized vocabularies, and ``unlikelihood`` under 3x of it even
at V = 65 on 1 thread (``benchmarks/loss_speed.py``, BENCHMARKS.md). Targets are data:
they get no gradient. The registry's reference implementations, plain autograd, check the
values and gradients of every loss built on these. In torch.func's style (forward without
ctx, its extra outputs the saved intermediates; setup_context) with a vmap rule that folds
the mapped dimension into B (``_folding.py``), ``vmap(grad(loss))`` traces them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._common import _NEAR_ONE, _exact_log1m
from ._folding import fold_apply, foldable

_BLOCK_ELEMENTS = 1 << 18  # ~1 MB of fp32 per row block: stays in cache, reused by the allocator
# A row can hold a probability above _NEAR_ONE only if its max, 1 / sum exp(z - max), is
# above it; the margin keeps rounding from skipping a row (the exact test follows).
_NEAR_ROW = (1.0 / _NEAR_ONE) * (1.0 + 1e-6)


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
    """sum_c t_c log t_c (0 log 0 = 0): (B, T, V) -> (B, T), in row blocks. No gradient formula
    of its own (plain autograd).

    Examples:
        >>> import math, torch
        >>> round(neg_entropy_of(torch.full((1, 1, 4), 0.25)).item(), 4), round(-math.log(4), 4)
        (-1.3863, -1.3863)
    """
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


def _saving(ctx, *tensors) -> None:
    """The functorch-style setup_context's common part: the forward's extra outputs are
    saved intermediates (no gradient, none materialized for them)."""
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*tensors)


@foldable()
class _ReverseKL(torch.autograd.Function):
    """KL(p || t) = E_p[log p - log t], p = softmax(z): dKL/dz_j = p_j (a_j - KL),
    a = log p - log t. log t is clamped at the smallest normal float."""

    @staticmethod
    def forward(logits, target):
        a = F.log_softmax(logits, dim=-1)  # (B, T, V), becomes a = log p - log t
        p = a.exp()
        _subtract_log_in_blocks(a, target)
        value = _rowdot(p, a)  # (B, T)
        return value, p, a

    @staticmethod
    def setup_context(ctx, inputs, output):
        value, p, a = output
        ctx.mark_non_differentiable(p, a)
        _saving(ctx, p, a, value)

    @staticmethod
    def backward(ctx, grad, *_):
        return fold_apply(_reverse_kl_grad, grad, *ctx.saved_tensors), None


def _reverse_kl_grad(grad, p, a, value):
    return (a - value.unsqueeze(-1)).mul_(p).mul_(grad.unsqueeze(-1))


def reverse_kl_divergence(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(p || t) = sum_c p_c (log p_c - log t_c), p = softmax(logits): (B, T, V), (B, T, V)
    -> (B, T). ``target`` gets no gradient; log t is clamped at the smallest normal float.

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[[1.0, -2.0, 0.5]]])
        >>> abs(reverse_kl_divergence(logits, logits.softmax(-1)).item()) < 1e-6
        True
    """
    return _ReverseKL.apply(logits, target.detach())[0]


@foldable()
class _SoftCrossEntropy(torch.autograd.Function):
    """H(t, p) = -sum_c t_c log p_c, p = softmax(z): dH/dz = p * sum(t) - t."""

    @staticmethod
    def forward(logits, target):
        logp = F.log_softmax(logits, dim=-1)  # (B, T, V)
        mass = target.sum(dim=-1)  # (B, T): 1 for a distribution
        return -_rowdot(target, logp), logp, mass

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, logp, mass = output
        ctx.mark_non_differentiable(logp, mass)
        _saving(ctx, logp, inputs[1], mass)

    @staticmethod
    def backward(ctx, grad, *_):
        return fold_apply(_soft_cross_entropy_grad, grad, *ctx.saved_tensors), None


def _soft_cross_entropy_grad(grad, logp, target, mass):
    out = logp.exp().mul_(mass.unsqueeze(-1)).sub_(target)
    return out.mul_(grad.unsqueeze(-1))


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """H(t, p) = -sum_c t_c log softmax(z)_c: (B, T, V), (B, T, V) -> (B, T); ``target``
    gets no gradient.

    Examples:
        A one-hot target gives cross-entropy: log 4 for uniform logits over V = 4.

        >>> import torch
        >>> target = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])
        >>> round(soft_cross_entropy(torch.zeros(1, 1, 4), target).item(), 4)
        1.3863
    """
    return _SoftCrossEntropy.apply(logits, target.detach())[0]


@foldable()
class _EntropyRegularizedCE(torch.autograd.Function):
    """-log p_y + beta * E_p[log p] (CE minus beta * entropy) in one pass.

    d/dz_j = p_j (1 + beta (log p_j - E_p[log p])) - [j = y].
    """

    @staticmethod
    def forward(logits, safe_targets, beta):
        logp = F.log_softmax(logits, dim=-1)  # (B, T, V)
        p = logp.exp()
        neg_entropy = _rowdot(p, logp)  # (B, T)
        nll = -logp.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
        return nll + beta * neg_entropy, p, logp, neg_entropy

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, p, logp, neg_entropy = output
        ctx.mark_non_differentiable(p, logp, neg_entropy)
        _saving(ctx, p, logp, neg_entropy, inputs[1])
        ctx.beta = inputs[2]

    @staticmethod
    def backward(ctx, grad, *_):
        out = fold_apply(_entropy_regularized_grad, grad, ctx.beta, *ctx.saved_tensors)
        return out, None, None


def _entropy_regularized_grad(grad, beta, p, logp, neg_entropy, safe):
    out = (logp - neg_entropy.unsqueeze(-1)).mul_(beta).add_(1.0).mul_(p)
    out.scatter_add_(-1, safe.unsqueeze(-1), torch.full_like(p[..., :1], -1.0))
    return out.mul_(grad.unsqueeze(-1))


def entropy_regularized_ce(logits: torch.Tensor, safe_targets: torch.Tensor, beta: float):
    """-log p_y - beta * H(p): (B, T, V), (B, T) -> (B, T); targets must be valid indices.

    Examples:
        Uniform over V = 4 with beta = 1: log 4 - log 4 = 0.

        >>> import torch
        >>> loss = entropy_regularized_ce(torch.zeros(1, 1, 4), torch.tensor([[1]]), 1.0)
        >>> abs(loss.item()) < 1e-6
        True
    """
    return _EntropyRegularizedCE.apply(logits, safe_targets, float(beta))[0]


# the near-one corrections (corr, b, t) index the batch as folded: passed as they are
@foldable(keep=(5, 6, 7), flat_outputs=(3, 4, 5))
class _Unlikelihood(torch.autograd.Function):
    """CE + alpha * sum_{c in C} -log(1 - p_c) over candidate classes C, in one pass.

    Candidates are a 0/1 ``mask`` over the vocabulary (B, T, V) with ``ids=None``, or
    ``ids`` (B, T, K) gathered from it with a 0/1 ``mask`` (B, T, K) saying which are
    real (``repetition.py`` builds both). With w_c = p_c / (1 - p_c), S = sum_{c in C} w_c:

        dL/dz_j = p_j (1 - alpha S) - [j = y] + alpha [j in C] w_j

    -log(1 - p) is computed as log1p(w) where p <= 0.9 (a few ulps, like
    ``_common.log1m_softmax_at``) and exactly above, where w overflows and the terms
    above cancel: such a near-one candidate n (at most one per position, as p_n > 1/2)
    is left out of S and its gradient, alpha (p_n [j = n] - [j != n] p_n q_j) with
    q = softmax of the other classes, is formed from logs instead.
    """

    @staticmethod
    def forward(logits, safe_targets, mask, ids, alpha):
        peak = logits.amax(dim=-1, keepdim=True)
        p = (logits - peak).exp_()
        total = p.sum(dim=-1, keepdim=True)
        p.div_(total)  # softmax (B, T, V); the row's largest p is 1 / total
        lse = (peak + total.log()).squeeze(-1)
        nll = lse - logits.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
        # p_c on the candidates, 0 elsewhere; the dense mask is consumed (one buffer fewer)
        q = mask.mul_(p) if ids is None else p.gather(-1, ids).mul_(mask)
        penalty = torch.zeros_like(nll)
        corr, b, t = p[:0, 0], safe_targets[:0, 0], safe_targets[:0, 0]  # none: (0, V), (0,)
        rows = (total.squeeze(-1) < _NEAR_ROW).nonzero(as_tuple=True)  # max p > ~0.9
        k = (q[rows] > _NEAR_ONE).nonzero(as_tuple=True)  # at most one per row
        if k[0].numel():
            b, t = rows[0][k[0]], rows[1][k[0]]
            n = k[1] if ids is None else ids[b, t, k[1]]
            q[b, t, k[1]] = 0.0  # out of the log1p and of S: handled here
            log1m = _exact_log1m(logits[b, t], n)  # (N,)
            penalty.index_put_((b, t), -log1m)
            p_n = p[b, t, n].unsqueeze(-1)
            logp = logits[b, t] - lse[b, t].unsqueeze(-1)  # (N, V)
            # q_j = exp(log p_j - log(1 - p_n)) <= 1 off n; set to -inf at n before exp
            q_j = (logp - log1m.unsqueeze(-1)).scatter_(-1, n.unsqueeze(-1), -math.inf).exp_()
            corr = q_j.mul_(-alpha * p_n).scatter_(-1, n.unsqueeze(-1), alpha * p_n)
        one_minus_q = 1.0 - q
        w = q.div_(one_minus_q)  # p / (1 - p) on the candidates, <= 9
        penalty += torch.log1p(w, out=one_minus_q).sum(dim=-1)  # -log(1 - p) = log(1 + w)
        # w may be the mask itself: an input is returned (and saved) as a view of it
        return nll + alpha * penalty, p, w.mul_(alpha).view_as(w), corr, b, t

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, p, alpha_w, corr, b, t = output
        ctx.mark_non_differentiable(*output[1:])
        _saving(ctx, p, alpha_w, inputs[1], inputs[3], corr, b, t)

    @staticmethod
    def backward(ctx, grad, *_):
        out = fold_apply(_unlikelihood_grad, grad, *ctx.saved_tensors, keep=(5, 6, 7))
        return out, None, None, None, None


def _unlikelihood_grad(grad, p, alpha_w, safe, ids, corr, b, t):
    """The gradient; ``corr`` (N, V) is added at the rows ``(b, t)`` (N,) (when N > 0)."""
    scale = 1.0 - alpha_w.sum(dim=-1, keepdim=True)  # 1 - alpha S
    if ids is None:
        out = torch.addcmul(alpha_w, p, scale)
    else:
        out = (p * scale).scatter_add_(-1, ids, alpha_w)
    out.scatter_add_(-1, safe.unsqueeze(-1), torch.full_like(out[..., :1], -1.0))
    if corr.shape[0]:
        out.index_put_((b, t), corr, accumulate=True)
    return out.mul_(grad.unsqueeze(-1))


def unlikelihood_ce(logits: torch.Tensor, safe_targets: torch.Tensor, mask: torch.Tensor,
                    ids: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """-log p_y + alpha * sum_c mask_c * -log(1 - p_c): (B, T, V) -> (B, T).

    ``ids=None``: ``mask`` (B, T, V) marks the candidate classes, and is overwritten.
    Otherwise the candidates are ``ids`` (B, T, K) where ``mask`` (B, T, K) is 1. ``mask``
    is 0/1 in the logits' dtype; a class may be a real candidate at most once per
    position. Targets must be valid indices.

    Examples:
        Uniform p = 1/4 with class 2 a candidate: log 4 + alpha * -log(3/4).

        >>> import math, torch
        >>> mask = torch.tensor([[[0.0, 0.0, 1.0, 0.0]]])
        >>> loss = unlikelihood_ce(torch.zeros(1, 1, 4), torch.tensor([[0]]), mask, None, 2.0)
        >>> round(loss.item(), 4), round(math.log(4) - 2.0 * math.log(0.75), 4)
        (1.9617, 1.9617)
    """
    return _Unlikelihood.apply(logits, safe_targets, mask.detach(), ids, float(alpha))[0]


@foldable()
class _Brier(torch.autograd.Function):
    """sum_c p_c^2 - 2 p_y + 1, p = softmax(z): dL/dz_j = 2 p_j (p_j - s + p_y) - 2 p_y [j = y],
    s = sum_c p_c^2. Holds p; the gradient is one more (B, T, V), filled in row blocks."""

    @staticmethod
    def forward(logits, safe):
        p = logits.softmax(dim=-1)  # (B, T, V)
        s = _rowdot(p, p)  # (B, T)
        p_y = p.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (B, T)
        return s - 2.0 * p_y + 1.0, p, s, p_y

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, p, s, p_y = output
        ctx.mark_non_differentiable(p, s, p_y)
        _saving(ctx, p, s, p_y, inputs[1])

    @staticmethod
    def backward(ctx, grad, *_):
        return fold_apply(_brier_grad, grad, *ctx.saved_tensors), None


def _brier_grad(grad, p, s, p_y, safe):
    g2 = 2.0 * grad  # (B, T)
    shift = (p_y - s).unsqueeze(-1)  # (B, T, 1)
    out = torch.empty_like(p)
    fo, fp, fs = out.view(-1, p.shape[-1]), p.view(-1, p.shape[-1]), shift.view(-1, 1)
    for rows in _row_blocks(*fo.shape):  # out = p * (p + shift), no full-size temporary
        torch.add(fp[rows], fs[rows], out=fo[rows]).mul_(fp[rows])
    out.mul_(g2.unsqueeze(-1))
    out.scatter_add_(-1, safe.unsqueeze(-1), (-g2 * p_y).unsqueeze(-1))
    return out


def brier(logits: torch.Tensor, safe_targets: torch.Tensor) -> torch.Tensor:
    """The Brier score sum_c (p_c - [c = y])^2 of softmax(logits): (B, T, V) -> (B, T), with
    two (B, T, V) tensors in all (autograd through softmax holds four). Targets must be
    valid indices.

    Examples:
        >>> import torch
        >>> round(brier(torch.zeros(1, 1, 4), torch.tensor([[0]])).item(), 4)
        0.75
    """
    return _Brier.apply(logits, safe_targets)[0]


@foldable()
class _ZLossCE(torch.autograd.Function):
    """log Z - z_y + c (log Z)^2: dL/dz = softmax(z) (1 + 2 c log Z) - onehot(y). Keeps no
    (B, T, V) tensor of its own: log Z is computed, and the gradient filled, in row blocks."""

    @staticmethod
    def forward(logits, safe, coefficient):
        flat = logits.reshape(-1, logits.shape[-1])  # (N, V)
        log_z = torch.empty(flat.shape[0], dtype=logits.dtype, device=logits.device)
        for rows in _row_blocks(*flat.shape):
            log_z[rows] = torch.logsumexp(flat[rows], dim=-1)
        log_z = log_z.view(logits.shape[:-1])  # (B, T)
        z_y = logits.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        return log_z - z_y + coefficient * log_z.square(), log_z

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        _saving(ctx, inputs[0], output[1], inputs[1])
        ctx.coefficient = inputs[2]

    @staticmethod
    def backward(ctx, grad, *_):
        return fold_apply(_z_loss_grad, grad, ctx.coefficient, *ctx.saved_tensors), None, None


def _z_loss_grad(grad, coefficient, logits, log_z, safe):
    scale = (grad * (1.0 + 2.0 * coefficient * log_z)).reshape(-1, 1)  # (N, 1)
    out = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)  # contiguous
    fo, fz = out.view(-1, logits.shape[-1]), logits.reshape(-1, logits.shape[-1])
    fl = log_z.reshape(-1, 1)
    for rows in _row_blocks(*fo.shape):
        torch.sub(fz[rows], fl[rows], out=fo[rows]).exp_().mul_(scale[rows])
    out.scatter_add_(-1, safe.unsqueeze(-1), -grad.unsqueeze(-1))
    return out


def z_loss_ce(logits: torch.Tensor, safe_targets: torch.Tensor, coefficient: float) -> torch.Tensor:
    """Cross-entropy plus c (log Z)^2 (PaLM's z-loss): (B, T, V) -> (B, T), with the gradient
    its only (B, T, V) tensor. Targets must be valid indices.

    Examples:
        >>> import math, torch
        >>> round(z_loss_ce(torch.zeros(1, 1, 4), torch.tensor([[0]]), 0.5).item(), 4)
        2.3472
    """
    return _ZLossCE.apply(logits, safe_targets, float(coefficient))[0]
