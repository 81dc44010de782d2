"""Gradient noise of a loss on one batch: per-example (or micro-batch) gradients, the gradient
noise scale and the gradient signal-to-noise ratio per parameter group.

Notation: the batch's n examples (sequences) in k micro-batches of b examples each (b = 1:
per-example gradients), g_j the gradient of micro-batch j's mean loss, g = mean_j g_j the
batch gradient; per coordinate s1 = sum_j g_j and s2 = sum_j g_j ** 2, S = mean_j |g_j|^2.

Noise scale (McCandlish et al., An Empirical Model of Large-Batch Training, 2018, app. A):
E|g_j|^2 = |G|^2 + tr(Sigma) / b and E|g|^2 = |G|^2 + tr(Sigma) / (k b), so

    tr(Sigma) = b k / (k - 1) (S - |g|^2)     unbiased; Sigma the per-example covariance
    |G|^2     = (k |g|^2 - S) / (k - 1)       unbiased
    B_simple  = tr(Sigma) / |G|^2             examples; x tokens per example = tokens

(their two-batch-size estimator with B_small = b, B_big = k b). Signal-to-noise ratio
(Liu et al. 2020; Cockpit's MeanGSNR, Schneider et al., NeurIPS 2021), per coordinate c:

    GSNR_c = g_c^2 / (b (s2_c / k - g_c^2))

averaged over a group's coordinates; with b = 1 this is Cockpit's formula with epsilon = 0.
Coordinates with no spread over the examples (a gradient of 0 on every example: embedding
rows of tokens absent from the batch) are left out of the average: 0/0 is not a ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import grad, vmap

# bounds the memory of the per-example gradients held at once: chunk x parameters floats
CHUNK_FLOATS = 2 ** 25
MAX_GROUPS = 16  # backward passes of the loop estimator: micro-batches of n // 16 examples

LossFn = Callable[[dict, torch.Tensor, torch.Tensor, dict], torch.Tensor]


@dataclass
class Moments:
    """Sums over the k micro-batch gradients of b examples each, per parameter name."""

    k: int
    b: int
    s1: dict[str, torch.Tensor]  # sum_j g_j (float64)
    s2: dict[str, torch.Tensor]  # sum_j g_j ** 2 (float64)
    tokens_per_example: float
    vmap: bool  # per-example gradients by torch.func.vmap (else a loop of backward passes)


def _slice(extras: dict, sl) -> dict:
    return {key: value[sl] for key, value in extras.items()}


class ExampleGradients:
    """The gradients of k = min(n, max_groups) micro-batches of b = n // k examples (the
    first k b of the batch; b = 1, per-example, up to max_groups examples): by
    ``vmap(grad(loss))`` per example, averaged in groups, when torch.func can trace the model
    and the loss; else by a loop of k ordinary backward passes (an autograd Function without
    a vmap rule, a data-dependent branch or ``.item()`` cannot be vmapped). Every built-in
    loss vmaps (its fused Functions fold the mapped dimension into the batch:
    ``losses/_folding.py``; tests/test_vmap_losses.py); a plugin's may not. Both paths give
    the same numbers up to rounding, so every loss of a comparison is measured alike. The
    first failure switches the run to the loop for good, and ``why_not`` says why."""

    def __init__(self, max_groups: int = MAX_GROUPS):
        self.use_vmap, self.why_not, self.max_groups = True, "", max_groups

    def moments(self, loss_fn: LossFn, params: dict[str, torch.Tensor], x: torch.Tensor,
                y: torch.Tensor, extras: dict, ignore_index: int = -100,
                reseed: Callable[[], None] = lambda: None) -> Moments:
        """``loss_fn(params, x, y, extras)``: the mean loss of examples x (b, T), y (b, T).
        ``reseed()`` runs before each attempt: a failed vmap may have drawn dropout masks,
        and the loop must draw the same ones whether or not vmap was tried first."""
        k = min(x.shape[0], self.max_groups)
        b = x.shape[0] // k  # the same k and b on both paths: one estimator for every loss
        x, y, extras = x[:k * b], y[:k * b], _slice(extras, slice(0, k * b))
        tokens = float((y != ignore_index).sum()) / y.shape[0]
        if self.use_vmap:
            reseed()
            try:
                s1, s2 = self._vmap(loss_fn, params, x, y, extras, b)
                return Moments(k, b, s1, s2, tokens, True)
            except Exception as exc:  # noqa: BLE001  whatever torch.func cannot trace
                self.use_vmap = False
                self.why_not = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        reseed()
        s1, s2 = self._loop(loss_fn, params, x, y, extras, b)
        return Moments(k, b, s1, s2, tokens, False)

    def _vmap(self, loss_fn, params, x, y, extras, b):
        def one(p, xi, yi, ei):  # one example: (T,) -> the loss of a batch of one
            return loss_fn(p, xi[None], yi[None], {k: v[None] for k, v in ei.items()})

        per_example = vmap(grad(one), in_dims=(None, 0, 0, 0), randomness="different")
        size = sum(p.numel() for p in params.values())
        chunk = b * max(1, min(x.shape[0], CHUNK_FLOATS // max(size, 1)) // b)  # whole groups
        s1 = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
        s2 = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
        for i in range(0, x.shape[0], chunk):
            sl = slice(i, i + chunk)
            g = per_example(params, x[sl], y[sl], _slice(extras, sl))  # name -> (c, *shape)
            for n in params:
                gi = g[n].double().unflatten(0, (-1, b)).mean(1)  # (c / b, *shape): groups
                s1[n] += gi.sum(0)
                s2[n] += (gi * gi).sum(0)
        return s1, s2

    @staticmethod
    def _loop(loss_fn, params, x, y, extras, b):
        names = list(params)
        s1 = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
        s2 = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
        for i in range(0, x.shape[0], b):
            sl = slice(i, i + b)
            leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
            loss = loss_fn(leaves, x[sl], y[sl], _slice(extras, sl))
            grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
            for n, g in zip(names, grads):
                if g is not None:
                    g = g.double()
                    s1[n] += g
                    s2[n] += g * g
        return s1, s2


def noise_stats(m: Moments, groups: dict[str, list[str]]) -> dict[str, float]:
    """grad_noise_scale (tokens), grad_noise_trace (tr Sigma), grad_signal_sq (|G|^2), the
    mean GSNR over all coordinates (grad_snr) and per group (grad_snr_<group>), and how they
    were measured (grad_vmap, grad_examples, grad_micro_batch, grad_example_tokens); ``groups`` maps a group
    name to its parameter names. Empty with fewer than two micro-batches."""
    k, b = m.k, m.b
    if k < 2:
        return {}
    mean_sq = sum(float(s.sum()) for s in m.s2.values()) / k  # S = mean_j |g_j|^2
    batch_sq = sum(float((s / k).pow(2).sum()) for s in m.s1.values())  # |g|^2
    trace = b * k / (k - 1) * (mean_sq - batch_sq)
    signal = (k * batch_sq - mean_sq) / (k - 1)
    scale = trace / signal * m.tokens_per_example if signal > 0 else math.nan
    stats = {"grad_noise_scale": scale, "grad_noise_trace": trace, "grad_signal_sq": signal,
             "grad_snr": _mean_gsnr(m, list(m.s1))}
    for group, names in groups.items():
        stats[f"grad_snr_{group}"] = _mean_gsnr(m, names)
    stats["grad_vmap"] = float(m.vmap)  # 1: per-example by vmap; 0: the loop
    stats["grad_examples"] = float(k * b)  # n, the examples measured
    stats["grad_micro_batch"] = float(b)  # examples per gradient (1: per-example)
    stats["grad_example_tokens"] = m.tokens_per_example
    return stats


def _mean_gsnr(m: Moments, names: list[str]) -> float:
    total, count = 0.0, 0
    for n in names:
        mean = m.s1[n] / m.k  # (shape,)
        var = m.b * (m.s2[n] / m.k - mean * mean)
        live = var > 0  # 0: no example moved the coordinate (or all moved it alike)
        gsnr = mean[live] ** 2 / var[live]
        total += float(gsnr.sum())
        count += int(live.sum())
    return total / count if count else math.nan
