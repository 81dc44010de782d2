"""All hypothesis strategies for loss inputs, in one place.

A drawn input is a :class:`LossCase` whose ``repr`` is runnable Python, so a
failing property prints a counterexample you can paste into a session::

    case = LossCase(logits=torch.tensor([[[0.0, 10000.0]]], dtype=torch.float32),
                    targets=torch.tensor([[1]]), ignore_index=-100, hparams={'gamma': 0.5})
    case.call(my_loss)
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lossbench.losses.registry import LossSpec

# Small shapes: properties are about the math, and shrinking works best on few elements.
MAX_BATCH, MAX_TIME, MAX_VOCAB = 3, 6, 8
IGNORE_INDICES = (-100, -1, 0)  # 0: an in-vocabulary padding id must be honoured too
EXTREME = 1e4  # the stability bound the checks promise for fp32 logits (docs/check.md)


@dataclass(frozen=True)
class ShapePlan:
    """The long and wide shapes of a second search, after the small one passed, so that code
    that splits its input into chunks (of tokens or of classes) runs more than one chunk. Their
    values come from a drawn seed (:func:`seeded_tensors`), not element by element: drawing
    thousands of elements would be slow, and shrinking them would not make them readable.
    (Mixed into one search, they would win: a seed is a shorter example than its elements.)"""

    times: tuple[int, ...]  # sequence lengths of long cases (V small)
    vocabs: tuple[int, ...]  # vocabulary sizes of wide cases (T small)


# Just past the powers of two chunked code uses (chunks of 16/32/64 tokens, 128 classes);
# "thorough" goes to T >= 256 and V >= 4096, one at a time so that a case stays cheap.
PLANS = {"dev": ShapePlan((17, 33, 65), (129,)), "ci": ShapePlan((17, 33, 65), (129,)),
         "thorough": ShapePlan((257, 300), (4097, 4200))}
_PLAN: ContextVar[ShapePlan | None] = ContextVar("shape_plan", default=None)


def plan_for(profile: str, chunk: int | None = None) -> ShapePlan:
    """The profile's plan, or shapes around a stated chunk size (``--chunk N``)."""
    if chunk:
        return ShapePlan((chunk - 1, chunk + 1, 2 * chunk + 1), (chunk + 1,))
    return PLANS.get(profile, PLANS["dev"])


@contextmanager
def shape_plan(plan: ShapePlan | None):
    token = _PLAN.set(plan)
    try:
        yield
    finally:
        _PLAN.reset(token)


def seeded_tensors(B: int, T: int, V: int, *, seed: int, scale: float, dtype: str = "float64",
                   ignore_index: int | None = None, ignore_rate: float = 0.0,
                   keep_first: bool = False, teacher: bool = False, hidden: int = 0) -> dict:
    """logits (B, T, V) ~ N(0, scale^2) clipped to +-3 scale, targets in [0, V) with a share
    ``ignore_rate`` set to ``ignore_index``, a teacher distribution and hidden states (B, T,
    ``hidden``) ~ N(0, 1) when asked: a long or wide case that its printed reproduction
    rebuilds from these arguments."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale)
    logits = logits.clamp(-3 * scale, 3 * scale).to(getattr(torch, dtype))
    targets = torch.randint(0, V, (B, T), generator=g)
    if ignore_index is not None and ignore_rate:
        drop = torch.rand(B, T, generator=g, dtype=torch.float64) < ignore_rate
        if keep_first:
            drop[0, 0] = False
        targets = torch.where(drop, ignore_index, targets)
    extras = {}
    if teacher:
        extras["teacher_probs"] = torch.randn(B, T, V, generator=g, dtype=torch.float64) \
            .softmax(-1).to(logits.dtype)
    if hidden:  # after every other draw: the cases of other losses stay the same
        extras["hidden_states"] = torch.randn(B, T, hidden, generator=g,
                                              dtype=torch.float64).to(logits.dtype)
    return {"logits": logits, "targets": targets, "extras": extras}


def hidden_for(spec, B: int, T: int, seed: int, dtype=torch.float64) -> dict:
    """``{"hidden_states": (B, T, 3) ~ N(0, 1)}`` for a loss that declares ``needs_hidden``
    (the model's last hidden states), else ``{}``."""
    if not getattr(spec, "needs_hidden", False):
        return {}
    g = torch.Generator().manual_seed(seed)
    return {"hidden_states": torch.randn(B, T, 3, generator=g, dtype=torch.float64).to(dtype)}


def _tensor_repr(t: torch.Tensor) -> str:
    dtype = "" if t.dtype == torch.int64 else f", dtype=torch.{str(t.dtype).split('.')[-1]}"
    return f"torch.tensor({t.tolist()!r}{dtype})"


@dataclass(frozen=True)
class LossCase:
    """One input to a loss: logits (B, T, V), targets (B, T) and keyword arguments."""

    logits: torch.Tensor
    targets: torch.Tensor
    ignore_index: int = -100
    hparams: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. teacher_probs (B, T, V)
    aux: dict[str, torch.Tensor] = field(default_factory=dict)  # a property's own draws (noise, perm)
    recipe: str = ""  # seeded_tensors(...) that rebuilds logits, targets, extras (long cases)

    def call(self, fn: Callable, logits: torch.Tensor | None = None, **override) -> torch.Tensor:
        """Per-token loss (B, T) of ``fn`` on this case (optionally on other logits)."""
        kwargs = {"ignore_index": self.ignore_index, **self.hparams, **self.extras, **override}
        return fn(self.logits if logits is None else logits, self.targets, **kwargs)

    @property
    def keep(self) -> torch.Tensor:
        return self.targets != self.ignore_index

    def row(self, b: int) -> LossCase:
        """Row ``b`` of this case as a batch of one."""
        return replace(self, logits=self.logits[b:b + 1], targets=self.targets[b:b + 1],
                       extras={k: v[b:b + 1] for k, v in self.extras.items()}, aux={}, recipe="")

    def to(self, device) -> LossCase:
        return replace(self, logits=self.logits.to(device), targets=self.targets.to(device),
                       extras={k: v.to(device) for k, v in self.extras.items()})

    def permuted(self, perm: torch.Tensor) -> LossCase:
        """The same case with batch rows reordered."""
        return replace(self, logits=self.logits[perm], targets=self.targets[perm],
                       extras={k: v[perm] for k, v in self.extras.items()}, aux={}, recipe="")

    def __repr__(self) -> str:
        if self.recipe:
            parts = [f"**{self.recipe}", f"ignore_index={self.ignore_index}"]
        else:
            parts = [f"logits={_tensor_repr(self.logits)}", f"targets={_tensor_repr(self.targets)}",
                     f"ignore_index={self.ignore_index}"]
        if self.hparams:
            parts.append(f"hparams={self.hparams!r}")
        for name in (("aux",) if self.recipe else ("extras", "aux")):
            if getattr(self, name):
                inner = ", ".join(f"{k!r}: {_tensor_repr(v)}" for k, v in getattr(self, name).items())
                parts.append(f"{name}={{{inner}}}")
        return "LossCase(\n    " + ",\n    ".join(parts) + ",\n)"

    def _repr_pretty_(self, printer, cycle):  # hypothesis' falsifying-example printer
        printer.text(repr(self))


@st.composite
def shapes(draw, *, max_batch=MAX_BATCH, max_time=MAX_TIME, max_vocab=MAX_VOCAB, min_batch=1):
    """(B, T, V) with V >= 2 (a softmax over one class is degenerate)."""
    return (draw(st.integers(min_batch, max(min_batch, max_batch)), label="B"),
            draw(st.integers(1, max_time), label="T"),
            draw(st.integers(2, max_vocab), label="V"))


def logit_arrays(shape, *, magnitude: float, dtype=np.float64):
    """Float arrays with every element in [-magnitude, magnitude] (hypothesis favours the ends)."""
    width = 32 if dtype == np.float32 else 64
    elements = st.floats(-magnitude, magnitude, allow_nan=False, allow_infinity=False, width=width)
    return arrays(dtype, shape, elements=elements)


def targets_for(shape_bt, vocab: int, ignore_index: int | None):
    """Target ids in [0, V), or ``ignore_index`` (None: every position kept)."""
    ids = st.integers(0, vocab - 1)
    return arrays(np.int64, shape_bt,
                  elements=ids if ignore_index is None else st.one_of(ids, st.just(ignore_index)))


def distributions(shape):
    """Strictly positive rows summing to 1 along the last axis (a teacher), float64."""
    weights = arrays(np.float64, shape, elements=st.floats(1e-3, 1.0))
    return weights.map(lambda w: w / w.sum(axis=-1, keepdims=True))


def hparam_values(spec: LossSpec, *, use_defaults: bool = False):
    """A dict of hyperparameters drawn from each one's valid range (ends included)."""
    if use_defaults or not spec.hparams:
        return st.just(spec.defaults())
    strategies = {}
    for name, hp in spec.hparams.items():
        if hp.integer:
            strategies[name] = st.integers(int(hp.low), int(hp.high))
        else:
            strategies[name] = st.one_of(st.sampled_from([hp.low, hp.default, hp.high]),
                                         st.floats(hp.low, hp.high))
    return st.fixed_dictionaries(strategies)


@st.composite
def loss_cases(draw, spec: LossSpec, *, magnitude: float = 20.0, dtype=np.float64,
               max_batch=MAX_BATCH, max_time=MAX_TIME, max_vocab=MAX_VOCAB, min_batch=1,
               draw_hparams: bool = True, ignore_indices=None) -> LossCase:
    """A full input for ``spec``: shape, logits, targets (some ignored), hparams, extras.

    A spec from :mod:`.adapters` narrows the draw to what its function can take:
    ``ignore_indices`` (empty: it cannot ignore, every position is kept), a teacher
    on every case (``needs_teacher``) and, for a mean-reduced function, at least one
    kept position (a mean over no token is 0/0, undefined rather than wrong).
    """
    if ignore_indices is None:
        ignore_indices = getattr(spec, "ignore_indices", IGNORE_INDICES)
    plan = _PLAN.get()
    if plan is not None and (max_time, max_vocab) == (MAX_TIME, MAX_VOCAB):
        kind = draw(st.sampled_from(["long", "wide"]), label="shape kind")
        return draw(_seeded_cases(spec, kind, plan, magnitude, dtype, max_batch, min_batch,
                                  draw_hparams, ignore_indices))
    B, T, V = draw(shapes(max_batch=max_batch, max_time=max_time, max_vocab=max_vocab,
                          min_batch=min_batch))
    logits = draw(logit_arrays((B, T, V), magnitude=magnitude, dtype=dtype), label="logits")
    ignore_index = (draw(st.sampled_from(ignore_indices), label="ignore_index")
                    if ignore_indices else None)
    targets = draw(targets_for((B, T), V, ignore_index), label="targets")
    if getattr(spec, "reduction", "none") == "mean" and (targets == ignore_index).all():
        targets[0, 0] = draw(st.integers(0, V - 1).filter(lambda c: c != ignore_index), label="kept")
    hparams = draw(hparam_values(spec, use_defaults=not draw_hparams), label="hparams")
    extras = {}
    if "teacher_probs" in spec.extra_inputs and (getattr(spec, "needs_teacher", False)
                                                 or draw(st.booleans(), label="with teacher")):
        teacher = draw(distributions((B, T, V)), label="teacher_probs")
        extras["teacher_probs"] = torch.from_numpy(teacher).to(torch.from_numpy(logits).dtype)
    if getattr(spec, "needs_hidden", False):
        extras.update(hidden_for(spec, B, T, draw(st.integers(0, 2 ** 16), label="hidden seed"),
                                 torch.from_numpy(logits).dtype))
    return LossCase(torch.from_numpy(logits), torch.from_numpy(targets),
                    -100 if ignore_index is None else ignore_index, hparams, extras)


@st.composite
def _seeded_cases(draw, spec, kind, plan, magnitude, dtype, max_batch, min_batch, draw_hparams,
                  ignore_indices):
    """A long (T from the plan, V <= 8) or wide (V from the plan, T <= 3) case, from a seed."""
    B = draw(st.integers(min_batch, max(min_batch, min(max_batch, 2))), label="B")
    if kind == "long":
        T, V = draw(st.sampled_from(plan.times), label="T"), draw(st.integers(2, MAX_VOCAB))
    else:
        T, V = draw(st.integers(1, 3), label="T"), draw(st.sampled_from(plan.vocabs), label="V")
    ignore_index = draw(st.sampled_from(ignore_indices)) if ignore_indices else None
    teacher = "teacher_probs" in spec.extra_inputs and (getattr(spec, "needs_teacher", False)
                                                        or draw(st.booleans()))
    args = dict(B=B, T=T, V=V, seed=draw(st.integers(0, 2 ** 16), label="seed"),
                scale=draw(st.sampled_from([1.0, magnitude / 3])),
                dtype="float32" if dtype == np.float32 else "float64", ignore_index=ignore_index,
                ignore_rate=draw(st.sampled_from([0.0, 0.25])) if ignore_index is not None else 0.0,
                keep_first=getattr(spec, "reduction", "none") == "mean", teacher=teacher)
    if getattr(spec, "needs_hidden", False):  # only then in the recipe: others print as before
        args["hidden"] = 3
    recipe = "seeded_tensors(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"
    hparams = draw(hparam_values(spec, use_defaults=not draw_hparams), label="hparams")
    return LossCase(**seeded_tensors(**args), ignore_index=-100 if ignore_index is None
                    else ignore_index, hparams=hparams, recipe=recipe)


def batch_permutations(batch: int):
    return st.permutations(list(range(batch))).map(torch.tensor)
