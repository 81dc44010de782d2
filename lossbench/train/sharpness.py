"""Sharpness of the training loss on one batch: the largest eigenvalue of its Hessian H, raw
or preconditioned by Adam's second moments, from Hessian-vector products.

Why preconditioned: lossbench trains with AdamW, whose stability is governed by the
preconditioned sharpness lambda_max(P^-1 H), P = (1 - beta1^t) (sqrt(v_t / (1 - beta2^t)) + eps)
(Cohen et al., Adaptive Gradient Methods at the Edge of Stability, 2022): it rises to and
hovers at (2 + 2 beta1) / ((1 - beta1) lr) (38 / lr for beta1 = 0.9), as lambda_max(H) does at
2 / lr under gradient descent (Cohen et al., ICLR 2021). It is also invariant to scaling the
loss by a constant (P scales with it), so losses of different scales (MSE, CE) compare on it;
lambda_max(H) does not.

How: Hessian-vector products by a forward difference of gradients, H u = (grad L(theta + h u) -
grad L(theta)) / h, so any loss with a correct first derivative works (custom autograd
Functions need no second derivative, attention kernels no double backward), and the
parameters are never written: the perturbed point is a new set of tensors. The eigenvalue is
the top Ritz value of m steps of Lanczos with full reorthogonalization: the same products as
m steps of power iteration, but it converges faster and finds the largest *algebraic*
eigenvalue, where power iteration finds the largest |lambda| (early in training a negative
one). P^-1 H is similar to the symmetric P^-1/2 H P^-1/2, which is the operator used.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal

# the perturbation h u has this norm relative to the parameters' (a forward difference's
# error grows with h, float32 round-off with 1 / h): 0.2% from the exact product, measured
# against double backward on the quick suite's model and tests/test_gradients.py's
RELATIVE_STEP = 1e-4


def adam_preconditioner(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]
                        ) -> list[torch.Tensor] | None:
    """P^-1/2 per parameter (Adam/AdamW, the state of the last update), or None before the
    first update (no second moments yet) or for another optimizer."""
    if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        return None
    config = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = []
    for p in params:
        state, group = optimizer.state.get(p, {}), config[id(p)]
        if "exp_avg_sq" not in state:
            return None
        beta1, beta2 = group["betas"]
        t = float(state["step"])
        denom = (state["exp_avg_sq"] / (1 - beta2 ** t)).sqrt() + group["eps"]
        out.append(((1 - beta1 ** t) * denom).rsqrt())
    return out


def stability_threshold(lr: float, beta1: float) -> float:
    """The preconditioned sharpness at which Adam's update becomes unstable on a quadratic:
    (2 + 2 beta1) / ((1 - beta1) lr) (Cohen et al. 2022)."""
    return (2 + 2 * beta1) / ((1 - beta1) * lr)


def lanczos_top(op: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor,
                steps: int) -> float:
    """Largest eigenvalue estimate (the top Ritz value) of the symmetric operator ``op`` on
    flat vectors after ``steps`` products, from ``start`` (any non-zero vector); it never
    exceeds the true largest eigenvalue and improves with every step."""
    q = start / torch.linalg.vector_norm(start)
    basis, alpha, beta = [q], [], []
    for j in range(steps):
        w = op(q)
        alpha.append(float(w @ q))
        # full reorthogonalization (twice: Kahan's rule) keeps the basis orthogonal in fp32
        for _ in range(2):
            Q = torch.stack(basis)  # (j + 1, P)
            w = w - Q.T @ (Q @ w)
        norm = float(torch.linalg.vector_norm(w))
        if j == steps - 1 or norm <= 1e-10 * max(abs(a) for a in alpha):
            break  # the Krylov space is exhausted: the Ritz values are exact
        beta.append(norm)
        q = w / norm
        basis.append(q)
    if not all(map(math.isfinite, alpha + beta)):
        return math.nan
    values = eigh_tridiagonal(np.array(alpha), np.array(beta[:len(alpha) - 1]),
                              eigvals_only=True)
    return float(values[-1])


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(vector: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    return [v.view_as(t) for v, t in zip(vector.split([t.numel() for t in like]), like)]


def hessian_operator(grad_at: Callable[[list[torch.Tensor]], list[torch.Tensor]],
                     params: list[torch.Tensor], scale: list[torch.Tensor] | None = None,
                     relative_step: float = RELATIVE_STEP) -> Callable:
    """v -> D H D v on flat vectors, D = diag(``scale``) (identity when None), H the Hessian
    of the function whose gradient ``grad_at(tensors)`` returns, at ``params``."""
    theta = flat(params)
    base = flat(grad_at(params)).to(theta.dtype)
    d = None if scale is None else flat(scale).to(theta.dtype)
    size = relative_step * float(torch.linalg.vector_norm(theta)) or relative_step

    def op(v: torch.Tensor) -> torch.Tensor:
        u = v if d is None else d * v
        h = size / max(float(torch.linalg.vector_norm(u)), 1e-300)
        moved = flat(grad_at(unflat(theta + h * u, params))).to(theta.dtype)
        hu = (moved - base) / h
        return hu if d is None else d * hu

    return op
