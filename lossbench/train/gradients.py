"""Gradient behaviour of a loss, measured at the updates that end at an evaluation step:
per-layer norms and the cosine with the CE gradient of the same batch; the gradient noise
scale and signal-to-noise ratio (lossbench.train.noise); the sharpness
(lossbench.train.sharpness); the update-to-weight ratio per layer.

``[eval] grad_stats`` chooses how much: "off" (false), "cheap" (true, the default) or
"full" (more Lanczos steps and the raw Hessian's top eigenvalue besides Adam's
preconditioned one). Nothing here changes training: gradients are taken with
``autograd.grad`` or ``torch.func`` (never into ``.grad``), perturbed weights are new
tensors, a forward writes buffers into copies, and random numbers come from a forked RNG
seeded from (seed, step), so a run's training records are the same with any level.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.func import functional_call

from lossbench.data.batches import step_seed
from lossbench.models.gpt import mixed_precision
from lossbench.train.noise import ExampleGradients, noise_stats
from lossbench.train.sharpness import (
    adam_preconditioner,
    hessian_operator,
    lanczos_top,
    stability_threshold,
)

LEVELS = ("off", "cheap", "full")
PROBE_STREAM, START_STREAM = 3, 4  # step_seed streams: the probe's dropout, Lanczos's start


@dataclass(frozen=True)
class Plan:
    """What one level measures at each probed update."""

    lanczos_steps: int  # Hessian-vector products of each sharpness estimate (0: none)
    raw_hessian: bool  # also lambda_max of the unpreconditioned Hessian


# cheap: within the 10% of a run's time the default may take (BENCHMARKS.md: 8 steps cost
# 10-13% of a quick-suite run); 5 steps read low by a few percent at most evaluations
PLANS = {"cheap": Plan(lanczos_steps=5, raw_hessian=False),
         "full": Plan(lanczos_steps=20, raw_hessian=True)}


def level_of(grad_stats: bool | str) -> str:
    """The level an ``[eval] grad_stats`` value names (true: "cheap", false: "off")."""
    return {True: "cheap", False: "off"}.get(grad_stats, grad_stats)


def _seed(seed: int, device: str) -> None:
    torch.default_generator.manual_seed(seed)
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.manual_seed(seed)
    elif kind == "mps":
        torch.mps.manual_seed(seed)


def _forked_rng(device: str):
    """The probe's random numbers (dropout) never move the run's generators."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return torch.random.fork_rng(devices=[])
    index = dev.index if dev.index is not None else 0
    return torch.random.fork_rng(devices=[index], device_type=dev.type)


class GradientProbe:
    """Measures, at chosen updates, the loss gradient against the CE gradient of the same
    batch, the gradient noise and sharpness on that batch, and the update's size.

    The training step calls, in order: ``measure_batch`` (weights as before the update),
    ``add_reference(ce)`` on the graph the loss back-propagates through (no second forward),
    ``measure()`` after the loss's backward and before clipping, then ``before_update()`` and
    ``after_update()`` around the optimizer's step. ``pop_stats`` hands the numbers to the
    evaluation that follows; ``pop_seconds`` the time they took (instrumentation).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 *, seed: int = 0, level: str = "cheap", device: str = "cpu",
                 beta1: float = 0.9, hidden: bool = False):
        self.model, self.optimizer, self.seed, self.device, self.beta1 = \
            model, optimizer, seed, device, beta1
        self.hidden = hidden  # the loss needs the last hidden states (needs_hidden)
        self.plan = PLANS.get(level)
        self.groups = model.param_groups_for_norms()  # name -> parameters
        self.params = [p for ps in self.groups.values() for p in ps]
        names = {id(p): n for n, p in model.named_parameters()}  # tied parameters once
        self.named = {names[id(p)]: p for p in self.params}
        self.group_names = {g: [names[id(p)] for p in ps] for g, ps in self.groups.items()}
        self.examples = ExampleGradients()
        self._reference: list[torch.Tensor] | None = None
        self._before: list[torch.Tensor] | None = None
        self._stats: dict[str, float] = {}
        self._seconds = 0.0
        self.notes: list[str] = []  # measurements that failed, once each (the run's notes)

    @contextlib.contextmanager
    def _timed(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._seconds += time.perf_counter() - t0

    # ---- the batch: noise and sharpness, at the weights before the update ----------------

    def measure_batch(self, step: int, lr: float, x: torch.Tensor, y: torch.Tensor,
                      extras: dict, loss_of: Callable) -> None:
        """``loss_of(logits, y, extras)``: the run's mean training loss of a batch."""
        if self.plan is None:
            return
        with self._timed(), _forked_rng(self.device):
            seed = step_seed(self.seed, step, stream=PROBE_STREAM)
            params = {n: p.detach() for n, p in self.named.items()}
            with self._failure("gradient noise"):
                moments = self.examples.moments(self._functional(loss_of), params, x, y, extras,
                                                reseed=lambda: _seed(seed, self.device))
                self._stats.update(noise_stats(moments, self.group_names))
            with self._failure("sharpness"):
                # float32 throughout: bf16 round-off would swamp a finite difference
                loss_fn = self._functional(loss_of, autocast=False)
                self._stats.update(self._sharpness(step, lr, seed, loss_fn, params, x, y, extras))

    @contextlib.contextmanager
    def _failure(self, what: str):
        """A measurement that fails leaves its numbers out and says why in the run's notes:
        instrumentation never fails a run."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001  any model, any loss
            note = f"{what} not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            if note not in self.notes:
                self.notes.append(note)

    def _functional(self, loss_of: Callable, autocast: bool = True) -> Callable:
        """The run's loss as a function of (parameters, x, y, extras), in the training step's
        precision (bf16 autocast on CUDA) or, ``autocast=False``, in float32."""
        model, device = self.model, self.device
        # a forward may update buffers (BatchNorm statistics in a factory's model): copies
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}

        if self.hidden:  # the same forward, through forward_with_hidden
            view = _WithHidden(model)
            prefixed = ({f"model.{n}": b for n, b in buffers.items()})

            def loss_fn(params: dict, x, y, extras):
                with mixed_precision(device) if autocast else contextlib.nullcontext():
                    logits, hidden = functional_call(  # (b, T, V), (b, T, C)
                        view, ({f"model.{n}": p for n, p in params.items()}, prefixed), (x,))
                return loss_of(logits, y, {**extras, "hidden_states": hidden})
            return loss_fn

        def loss_fn(params: dict, x, y, extras):
            with mixed_precision(device) if autocast else contextlib.nullcontext():
                logits = functional_call(model, (params, buffers), (x,))  # (b, T, V)
            return loss_of(logits, y, extras)

        return loss_fn

    def _sharpness(self, step, lr, seed, loss_fn, params, x, y, extras) -> dict[str, float]:
        steps = self.plan.lanczos_steps
        if not steps:
            return {}
        names = list(params)
        tensors = [params[n] for n in names]

        def grad_at(values: list[torch.Tensor]) -> list[torch.Tensor]:
            leaves = [v.detach().requires_grad_(True) for v in values]
            _seed(seed, self.device)  # the same dropout masks at every point
            loss = loss_fn(dict(zip(names, leaves)), x, y, extras)
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
            return [torch.zeros_like(v) if g is None else g for v, g in zip(leaves, grads)]

        size = sum(t.numel() for t in tensors)
        gen = torch.Generator().manual_seed(step_seed(self.seed, step, stream=START_STREAM))
        start = torch.randn(size, generator=gen, dtype=tensors[0].dtype).to(self.device)
        out = {}
        scale = adam_preconditioner(self.optimizer, [self.named[n] for n in names]) \
            if self.optimizer is not None else None
        if scale is not None:
            top = lanczos_top(hessian_operator(grad_at, tensors, scale), start, steps)
            out["sharpness"] = top
            out["sharpness_eos"] = top / stability_threshold(lr, self.beta1)
        if self.plan.raw_hessian:
            out["hessian_max_eig"] = lanczos_top(hessian_operator(grad_at, tensors), start, steps)
        return out

    # ---- the step's own gradient: norms and the cosine with CE ---------------------------

    def add_reference(self, ce: torch.Tensor) -> None:
        with self._timed():
            grads = torch.autograd.grad(ce, self.params, retain_graph=True, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)]
            if self._reference is None:
                self._reference = grads
            else:
                self._reference = [r + g for r, g in zip(self._reference, grads)]

    @torch.no_grad()
    def measure(self) -> None:
        with self._timed():
            loss_grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
            stats = {}
            for name, params in self.groups.items():
                norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
                stats[f"grad_norm_{name}"] = torch.linalg.vector_norm(torch.stack(norms)).item() \
                    if norms else 0.0
            if self._reference is not None:
                dot = sum((a.double() * b.double()).sum()
                          for a, b in zip(loss_grads, self._reference))
                na = math.sqrt(sum((a.double() ** 2).sum().item() for a in loss_grads))
                nb = math.sqrt(sum((b.double() ** 2).sum().item() for b in self._reference))
                stats["grad_cos_ce"] = float(dot) / (na * nb) if na > 0 and nb > 0 else math.nan
            self._stats.update(stats)
            self._reference = None

    # ---- the update: ||delta theta|| / ||theta|| per layer -------------------------------

    @torch.no_grad()
    def before_update(self) -> None:
        with self._timed():
            self._before = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def after_update(self) -> None:
        if self._before is None:
            return
        with self._timed():
            moved, size, i = {}, {}, 0
            for name, params in self.groups.items():
                old = self._before[i:i + len(params)]
                i += len(params)
                moved[name] = sum(float((p.detach() - o).double().pow(2).sum())
                                  for p, o in zip(params, old))
                size[name] = sum(float(o.double().pow(2).sum()) for o in old)
            for name in self.groups:
                self._stats[f"update_ratio_{name}"] = _ratio(moved[name], size[name])
            self._stats["update_ratio"] = _ratio(sum(moved.values()), sum(size.values()))
            self._before = None

    def pop_stats(self) -> dict[str, float]:
        stats, self._stats = self._stats, {}
        return stats

    def pop_seconds(self) -> float:
        seconds, self._seconds = self._seconds, 0.0
        return seconds


class _WithHidden(torch.nn.Module):
    """``model`` whose forward is its ``forward_with_hidden``, for ``functional_call``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_with_hidden(x)


def _ratio(moved_sq: float, size_sq: float) -> float:
    return math.sqrt(moved_sq / size_sq) if size_sq > 0 else math.nan


# averaged over a run's probed evaluations into summary.csv's avg_* columns
AVERAGED = ("grad_snr", "grad_cos_ce", "sharpness", "sharpness_eos", "hessian_max_eig",
            "update_ratio")


def gradient_summary(evals: list[dict[str, Any]]) -> dict[str, float]:
    """avg_<metric> over the evaluations that measured it; the noise scale as a ratio of the
    averages of tr(Sigma) and |G|^2 (McCandlish et al.: each is unbiased, their ratio is not,
    and |G|^2 of one batch can be near 0)."""
    out = {}
    for key in AVERAGED:
        values = [e[key] for e in evals if _finite(e.get(key))]
        if values:
            out[f"avg_{key}"] = sum(values) / len(values)
    rows = [e for e in evals if _finite(e.get("grad_noise_trace")) and
            _finite(e.get("grad_signal_sq")) and _finite(e.get("grad_example_tokens"))]
    if rows:
        trace = sum(e["grad_noise_trace"] for e in rows) / len(rows)
        signal = sum(e["grad_signal_sq"] for e in rows) / len(rows)
        tokens = sum(e["grad_example_tokens"] for e in rows) / len(rows)
        out["avg_grad_noise_scale"] = trace / signal * tokens if signal > 0 else math.nan
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
