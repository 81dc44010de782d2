"""Gradient behaviour of a loss: per-layer norms and alignment with the CE gradient."""

from __future__ import annotations

import math
import time

import torch

from lossbench.models.gpt import GPT


class GradientProbe:
    """Measures, at chosen steps, the loss gradient against the CE gradient of the same batch.

    ``add_reference(ce)`` takes the CE gradient with ``autograd.grad`` on the
    graph the loss will back-propagate through (no second forward, so no extra
    dropout draw); ``measure()`` runs after the loss's backward, before clipping.
    """

    def __init__(self, model: GPT):
        self.groups = model.param_groups_for_norms()  # name -> parameters
        self.params = [p for ps in self.groups.values() for p in ps]
        self._reference: list[torch.Tensor] | None = None
        self._stats: dict[str, float] = {}
        self._seconds = 0.0

    def add_reference(self, ce: torch.Tensor) -> None:
        t0 = time.perf_counter()
        grads = torch.autograd.grad(ce, self.params, retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)]
        if self._reference is None:
            self._reference = grads
        else:
            self._reference = [r + g for r, g in zip(self._reference, grads)]
        self._seconds += time.perf_counter() - t0

    @torch.no_grad()
    def measure(self) -> None:
        t0 = time.perf_counter()
        loss_grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
        stats = {}
        for name, params in self.groups.items():
            norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
            stats[f"grad_norm_{name}"] = torch.linalg.vector_norm(torch.stack(norms)).item() \
                if norms else 0.0
        if self._reference is not None:
            dot = sum((a.double() * b.double()).sum() for a, b in zip(loss_grads, self._reference))
            na = math.sqrt(sum((a.double() ** 2).sum().item() for a in loss_grads))
            nb = math.sqrt(sum((b.double() ** 2).sum().item() for b in self._reference))
            stats["grad_cos_ce"] = float(dot) / (na * nb) if na > 0 and nb > 0 else math.nan
        self._stats, self._reference = stats, None
        self._seconds += time.perf_counter() - t0

    def pop_stats(self) -> dict[str, float]:
        stats, self._stats = self._stats, {}
        return stats

    def pop_seconds(self) -> float:
        seconds, self._seconds = self._seconds, 0.0
        return seconds
