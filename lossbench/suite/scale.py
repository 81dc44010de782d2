"""Scale ladders: the same comparison at several model sizes (a suite's ``[scale]`` section).

    [scale]
    params = [5e4, 2e5, 8e5, 3.2e6]     # or sizes = [{ n_layer = 2, n_embd = 64 }, ...]
    head_size = 8                       # n_embd = head_size x n_head (fixed head size)
    aspect = 32                         # n_embd / n_layer the shape rule aims at
    tokens_per_param = 20               # or steps = 500; neither: [train] steps at every size

Parameters are counted as the model counts them, ``GPT.num_params(non_embedding=True)``:
the N of its FLOPs formula (blocks, final LayerNorm and the V x C head; no position table).

**The shape rule** (``params``): depth and width grow together at a fixed head size. Among
every shape with n_embd a multiple of ``head_size`` (up to 128 heads) and 1..96 layers whose
parameter count is within 10% of the request, the one whose n_embd / n_layer is closest to
``aspect`` (on a log scale) wins; ties go to the count closer to the request. No shape
within 10%: the suite is refused. Kaplan et al. (2020) find the loss nearly flat in the
aspect ratio over a wide band, so fixing it removes a choice without favouring a loss.

**The data budget**: ``steps`` (every size trains that many steps), ``tokens_per_param``
(steps = ceil(r x N / tokens per step), Chinchilla's r = 20; Hoffmann et al. 2022), or
neither ([train] steps everywhere).

Everything here is pure (parameters are counted on weightless meta-device models). What the
report says about a ladder (fits, rank agreement, crossovers) is
:mod:`lossbench.analysis.fits`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossbench.core.config import ModelConfig, RunConfig, TrainConfig

WITHIN = 0.10  # a requested parameter count is met within 10%
MAX_HEADS, MAX_LAYERS = 128, 96
MAX_WIDTH = 16384  # an explicit size past these is a typo (and would take minutes to count)
SCALE_KEYS = {"params", "sizes", "head_size", "aspect", "steps", "tokens_per_param"}
MIN_SIZES_FOR_FIT = 4  # E, A and alpha from fewer sizes leave nothing to check the fit with


@dataclass(frozen=True)
class Size:
    label: str  # "51k", "1.6M": its name in reports
    n_layer: int
    n_head: int
    n_embd: int
    n_params: int  # GPT.num_params(non_embedding=True) at the corpus's vocabulary
    steps: int
    requested: float | None = None  # the parameter count asked for (None: explicit shape)


@dataclass(frozen=True)
class ScaleSpec:
    sizes: tuple[Size, ...]  # smallest first
    budget: str  # the data budget rule, in words

    def expand(self, configs) -> list[RunConfig]:
        """Every config at every size (size-major: all of the smallest size first)."""
        return [at_size(c, s) for s in self.sizes for c in configs]

    def record(self, configs) -> dict[str, Any]:
        """What an experiment keeps: the ladder and the size of each of its runs."""
        by_shape = {(s.n_layer, s.n_head, s.n_embd, s.steps): s.label for s in self.sizes}
        runs = {c.run_id(): by_shape[(c.model.n_layer, c.model.n_head, c.model.n_embd,
                                      c.train.steps)] for c in configs}
        return {"sizes": [dataclasses.asdict(s) for s in self.sizes], "budget": self.budget,
                "runs": runs}


def at_size(config: RunConfig, size: Size) -> RunConfig:
    model = dataclasses.replace(config.model, n_layer=size.n_layer, n_head=size.n_head,
                                n_embd=size.n_embd)
    return dataclasses.replace(config, model=model,
                               train=dataclasses.replace(config.train, steps=size.steps))


def count_params(model: ModelConfig, vocab: int) -> int:
    """The model's own count (a weightless model on the meta device: no memory used)."""
    import torch

    from lossbench.models.gpt import GPT, GPTConfig

    with torch.device("meta"):
        return GPT(GPTConfig.of(model, vocab)).num_params(non_embedding=True)


def _count_polynomial(model: ModelConfig, vocab: int):
    """N(L, C) = L b(C) + f(C) with b, f quadratic in C (the head count does not change a
    count): read off six weightless models, so the search costs no model builds."""
    cs = np.array([16.0, 32.0, 48.0])
    counts = {L: [count_params(dataclasses.replace(model, n_layer=L, n_head=1, n_embd=int(c)),
                               vocab) for c in cs] for L in (1, 2)}
    per_block = np.polyfit(cs, np.subtract(counts[2], counts[1]), 2)
    rest = np.polyfit(cs, np.subtract(counts[1], np.subtract(counts[2], counts[1])), 2)
    return lambda L, C: L * np.polyval(per_block, C) + np.polyval(rest, C)


def shape_for(params: float, model: ModelConfig, vocab: int, *, head_size: int,
              aspect: float) -> tuple[int, int, int] | str:
    """(n_layer, n_head, n_embd) by the shape rule (module docstring), or why none fits."""
    count = _count_polynomial(model, vocab)
    heads = np.arange(1, MAX_HEADS + 1)
    layers = np.arange(1, MAX_LAYERS + 1)
    H, L = np.meshgrid(heads, layers)  # (layers, heads)
    C = H * head_size
    n = count(L, C)
    err = np.abs(n / params - 1.0)
    ok = err <= WITHIN
    if not ok.any():  # the closest on a log scale: |n / params - 1| is 1.0 for every n << params
        i = np.unravel_index(np.argmin(np.abs(np.log(np.maximum(n, 1.0) / params))), err.shape)
        return (f"no shape with n_embd a multiple of head_size={head_size} has {params:.3g} "
                f"parameters within {WITHIN:.0%} (closest: {int(L[i])} layers x {int(C[i])} "
                f"wide, {int(round(n[i])):,})")
    key = np.where(ok, np.abs(np.log(C / L / aspect)), np.inf)
    best = np.flatnonzero(key == key.min())
    i = np.unravel_index(best[np.argmin(err.flat[best])], err.shape)
    return int(L[i]), int(H[i]), int(C[i])


def budget_steps(n_params: int, train: TrainConfig, block_size: int, *,
                 steps: int | None = None, tokens_per_param: float | None = None) -> int:
    """Steps of one size under the data budget rule (module docstring)."""
    if tokens_per_param is not None:
        per_step = train.batch_size * train.grad_accum * block_size
        return max(1, math.ceil(tokens_per_param * n_params / per_step))
    return steps if steps is not None else train.steps


def size_label(n: float) -> str:
    """'1.55M', '53.5k', '856', '2.5G': a parameter count as reports name a size."""
    if n >= 1e9:
        return f"{n / 1e9:.3g}G"
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    return f"{n / 1e3:.3g}k" if n >= 1e3 else f"{n:.3g}"


def _positive(value, integer=False) -> bool:
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    return ok and math.isfinite(value) and value > 0


def parse_scale(table: Any, where: str, errors: list[str], *, model: ModelConfig,
                train: TrainConfig, vocab: int) -> ScaleSpec | None:
    """The [scale] section as a ladder, checked; problems go to ``errors`` (one line each)."""
    w = f"{where}: [scale]"
    if not isinstance(table, dict):
        errors.append(f"{w} must be a table")
        return None
    n0 = len(errors)
    errors += _option_problems(table, model, w)
    if len(errors) > n0:
        return None
    head_size, aspect = table.get("head_size", 8), table.get("aspect", 32)
    shapes = (_requested_shapes(table["params"], model, vocab, head_size, aspect, w, errors)
              if "params" in table else _explicit_shapes(table["sizes"], head_size, w, errors))
    if shapes is None or len(errors) > n0:
        return None
    steps, ratio = table.get("steps"), table.get("tokens_per_param")
    sizes = _sizes(shapes, model, train, vocab, steps, ratio, w, errors)
    if sizes is None or len(errors) > n0:
        return None
    budget = (f"{ratio:g} training tokens per parameter" if ratio is not None
              else f"{steps if steps is not None else train.steps} steps at every size")
    return ScaleSpec(tuple(sizes), budget)


def _option_problems(table: dict, model: ModelConfig, w: str) -> list[str]:
    """The section's keys and scalar options, and whether its model can be laddered."""
    errors = [f"{w} unknown key {key!r} (known: {', '.join(sorted(SCALE_KEYS))})"
              for key in set(table) - SCALE_KEYS]
    if getattr(model, "arch", "gpt") != "gpt" or getattr(model, "init_from", None):
        errors.append(f"{w} needs the built-in GPT trained from scratch ([model] arch = "
                      f"\"gpt\", no init_from): the shape rule sets its layers and width")
    head_size, aspect = table.get("head_size", 8), table.get("aspect", 32)
    if not _positive(head_size, integer=True):
        errors.append(f"{w} head_size: expected a positive integer, got {head_size!r}")
    if not _positive(aspect):
        errors.append(f"{w} aspect: expected a positive number, got {aspect!r}")
    steps, ratio = table.get("steps"), table.get("tokens_per_param")
    if steps is not None and ratio is not None:
        errors.append(f"{w} steps and tokens_per_param: give one data budget, not both")
    if steps is not None and not _positive(steps, integer=True):
        errors.append(f"{w} steps: expected a positive integer, got {steps!r}")
    if ratio is not None and not _positive(ratio):
        errors.append(f"{w} tokens_per_param: expected a positive number, got {ratio!r}")
    if ("params" in table) == ("sizes" in table):
        errors.append(f"{w} give either params = [...] or sizes = [{{ n_layer = .., n_embd = .. "
                      f"}}, ...]")
    return errors


Shape = tuple[int, int, int, "float | None"]  # n_layer, n_head, n_embd, parameters asked for


def _requested_shapes(wanted: Any, model: ModelConfig, vocab: int, head_size: int,
                      aspect: float, w: str, errors: list[str]) -> list[Shape] | None:
    """``params = [...]``: each count's shape by the shape rule."""
    if not isinstance(wanted, list) or not wanted or not all(map(_positive, wanted)):
        errors.append(f"{w} params: expected a non-empty list of positive numbers")
        return None
    shapes = []
    for p in wanted:
        shape = shape_for(float(p), model, vocab, head_size=head_size, aspect=aspect)
        if isinstance(shape, str):
            errors.append(f"{w} params: {shape}")
        else:
            shapes.append((*shape, float(p)))
    return shapes


def _explicit_shapes(sizes: Any, head_size: int, w: str,
                     errors: list[str]) -> list[Shape] | None:
    """``sizes = [{ n_layer = .., n_embd = .. }, ...]``, each checked."""
    if not isinstance(sizes, list) or not sizes:
        errors.append(f"{w} sizes: expected a non-empty list of tables")
        return None
    shapes = []
    for i, s in enumerate(sizes):
        problem = _explicit_problem(s, head_size)
        if problem:
            errors.append(f"{w} sizes[{i}]: {problem}")
        else:
            shapes.append((s["n_layer"], s.get("n_head", max(1, s["n_embd"] // head_size)),
                           s["n_embd"], None))
    return shapes


def _explicit_problem(s: Any, head_size: int) -> str | None:
    extra = set(s) - {"n_layer", "n_embd", "n_head"} if isinstance(s, dict) else {"?"}
    if extra or not all(_positive(s.get(k), integer=True) for k in ("n_layer", "n_embd")):
        return "expected { n_layer = .., n_embd = .. } (n_head optional) as positive integers"
    if s["n_layer"] > MAX_LAYERS or s["n_embd"] > MAX_WIDTH:
        return (f"at most {MAX_LAYERS} layers and {MAX_WIDTH} wide "
                f"(got {s['n_layer']} x {s['n_embd']})")
    n_head = s.get("n_head", max(1, s["n_embd"] // head_size))
    if "n_head" not in s and s["n_embd"] % n_head:  # the default did not divide it
        return (f"n_embd ({s['n_embd']}) is not a multiple of head_size ({head_size}): "
                f"give n_head")
    if not _positive(n_head, integer=True) or s["n_embd"] % n_head:
        return f"n_embd ({s['n_embd']}) must be divisible by n_head ({n_head})"
    return None


def _sizes(shapes: list[Shape], model: ModelConfig, train: TrainConfig, vocab: int,
           steps: int | None, ratio: float | None, w: str,
           errors: list[str]) -> list[Size] | None:
    """The ladder's sizes, smallest first, counted, budgeted and named."""
    out = []
    for n_layer, n_head, n_embd, wanted in shapes:
        m = dataclasses.replace(model, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
        n = count_params(m, vocab)
        if wanted is not None and abs(n / wanted - 1.0) > WITHIN:  # the search's count was off
            errors.append(f"{w} params: {n_layer} layers x {n_embd} wide has {n:,} parameters, "
                          f"not {wanted:.3g} within {WITHIN:.0%}")
            continue
        out.append(Size("", n_layer, n_head, n_embd, n,
                        budget_steps(n, train, model.block_size, steps=steps,
                                     tokens_per_param=ratio), wanted))
    out.sort(key=lambda s: s.n_params)
    labels = [size_label(s.n_params) for s in out]
    out = [dataclasses.replace(s, label=lab if labels.count(lab) == 1
                               else f"{lab}:{s.n_layer}x{s.n_embd}") for s, lab in zip(out, labels)]
    if len({s.label for s in out}) < len(out):
        errors.append(f"{w} the same shape is listed twice")
        return None
    for s in out:
        if train.warmup_steps > s.steps:
            errors.append(f"{w} size {s.label} trains {s.steps} steps, fewer than "
                          f"[train] warmup_steps = {train.warmup_steps}")
    return out
