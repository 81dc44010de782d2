"""What the properties share: their registry, messages that say where, and calls that
know a spec's reduction and the precision it computes in."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from lossbench.losses.registry import LossSpec

from .numerics import compute_eps, narrowed
from .strategies import LossCase, loss_cases


@dataclass(frozen=True)
class Property:
    name: str
    doc: str
    strategy: Callable[[LossSpec], st.SearchStrategy]
    check: Callable[[LossSpec, LossCase], None]
    long_shapes: bool = True  # a second search on long and wide inputs (strategies.ShapePlan)


PROPERTIES: dict[str, Property] = {}


def register_property(name: str, doc: str, strategy, long_shapes: bool = True):
    def decorator(check):
        PROPERTIES[name] = Property(name, doc, strategy, check, long_shapes)
        return check
    return decorator


def cases(**kw):
    return lambda spec: loss_cases(spec, **kw)


def where(mask: torch.Tensor) -> str:
    if mask.dim() == 0:
        return "the total" if bool(mask) else "nowhere"
    idx = mask.nonzero()
    return f"position {tuple(idx[0].tolist())}" if len(idx) else "nowhere"


def finite_max(*values: torch.Tensor) -> float:
    """The largest finite |value| (0 when there is none): a NaN or inf elsewhere must not
    turn a tolerance into NaN."""
    found = [v.detach().abs()[torch.isfinite(v.detach())] for v in values if v.numel()]
    return max((float(v.max()) for v in found if v.numel()), default=0.0)


# The worst violation a check saw on the current example, relative to the loss's scale: the
# runner passes it to hypothesis.target() (the search steers towards larger violations) and
# prefers a counterexample whose violation is not lost in rounding.
_SCORE: list[float] = []


def aim(score: float) -> None:
    if not math.isnan(score):
        _SCORE.append(float(score))


def take_score() -> float | None:
    score = max(_SCORE, default=None)
    _SCORE.clear()
    return score


def assert_close(actual, expected, what: str, *, rtol: float, atol: float, mask=None):
    if mask is not None:
        actual, expected = actual[mask], expected[mask]
    dtype = torch.promote_types(actual.dtype, expected.dtype)
    actual, expected = torch.broadcast_tensors(actual.to(dtype), expected.to(dtype))
    # NaN only matches NaN: a NaN loss is finite_at_extremes' failure, not every property's
    bad = ~torch.isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    both = torch.isfinite(actual) & torch.isfinite(expected)
    if both.any():
        aim(float((actual - expected).abs()[both].max()) / max(finite_max(expected), 1e-12))
    if bad.any():
        i = tuple(bad.nonzero()[0].tolist())
        at = f" at position {i}" if mask is None and i else ""
        raise AssertionError(f"{what}{at}: got {actual[i].item()!r}, expected "
                             f"{expected[i].item()!r} (rtol={rtol:.2g}, atol={atol:.2g})")


def value_and_grad(fn, case: LossCase, logits: torch.Tensor | None = None, **override):
    """``fn`` on the case and the gradient of its sum; a zero gradient when the output has
    no graph (e.g. a loss that returns constant zeros when every position is ignored)."""
    x = (case.logits if logits is None else logits).detach().clone().requires_grad_(True)
    out = case.call(fn, logits=x, **override)
    if not out.requires_grad:
        return out.detach(), torch.zeros_like(x)
    (grad,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    return out.detach(), (torch.zeros_like(x) if grad is None else grad)


def jitter(logits: torch.Tensor) -> torch.Tensor:
    """Move logits off ties and margin kinks by distinct, deterministic offsets.

    Offsets are g(frac(i * golden ratio)) * 1e-3 with g(u) = u + u^2: neighbours differ
    by >= 9e-5 (g' >= 1), far above float64 finite-difference steps, so piecewise-linear
    losses (hinge) are checked where they are differentiable. g is not linear, so no
    offset is the mean of its row's (frac(i * phi) of consecutive i is an arithmetic
    progression): a constant row stays off the uniform distribution, where a teacher-kinked
    loss (tvd, |p - t| at a uniform teacher) has its kink.
    """
    phi = (5 ** 0.5 - 1) / 2
    u = torch.remainder(torch.arange(logits.numel(), dtype=torch.float64) * phi, 1.0)
    offsets = u + u * u
    return logits + 1e-3 * offsets.reshape(logits.shape).to(logits.dtype)


def reduced(spec) -> bool:
    return getattr(spec, "reduction", "none") != "none"


def totals(spec) -> bool:
    """A reduced loss checked on its total: per-token values cannot be recovered (its loss at
    a position depends on later positions), so ``spec.fn`` returns the scalar itself."""
    return getattr(spec, "per_token", "prefix") == "total"


def reference_of(spec) -> Callable:
    """--like NAME's reference, called without the function's own --range parameters."""
    ref, own = spec.reference_impl, set(getattr(spec, "own_hparams", ()))
    if not own:
        return ref
    return lambda logits, targets, **kw: ref(logits, targets,
                                             **{k: v for k, v in kw.items() if k not in own})


def like_returned(spec, case, per_token: torch.Tensor) -> torch.Tensor:
    """Per-token values (of a reference) in the form ``spec.fn`` returns: as they are, or
    reduced as the loss reduces them when it is checked on its total."""
    if not totals(spec):
        return per_token
    kept = torch.where(case.keep, per_token, torch.zeros_like(per_token)).sum()
    return kept / case.keep.sum().clamp(min=1) if spec.reduction == "mean" else kept


def returned(spec) -> Callable:
    """What the user's function itself returns, in lossbench's call: the scalar of a
    reduced loss, else the per-token values. Properties about the value the user
    trains on (finiteness, gradients, bf16) check this, not recovered values."""
    return spec.raw if reduced(spec) else spec.fn


def eps_of(spec, case: LossCase) -> float:
    """Machine epsilon of the precision ``spec`` computes in (float64 inputs)."""
    def call():
        x = case.logits.detach().double().clone().requires_grad_(True)  # not the case's own
        extras = {k: v.double() for k, v in case.extras.items()}
        return returned(spec)(x, case.targets, ignore_index=case.ignore_index, **case.hparams,
                              **extras)
    return compute_eps(spec.fn, call)


def slack(spec, case: LossCase, *values: torch.Tensor) -> float:
    """Absolute roundoff to allow when comparing per-token values of the size of
    ``values``: none for a float64 per-token loss, 64 ulps of its working
    precision otherwise. Recovered values of a reduced loss are differences of row sums,
    so their roundoff scales with the row length."""
    eps = eps_of(spec, case)
    if not narrowed(eps) and not reduced(spec):
        return 0.0
    return 64 * eps * (1.0 + finite_max(*values)) * (case.targets.shape[1] if reduced(spec) else 1)


# Properties that pass with a caveat (bf16: a small error) leave a note here; the runner
# keeps the worst one of a search.
_NOTES: list[tuple[float, str]] = []


def note(severity: float, message: str) -> None:
    _NOTES.append((severity, message))


def take_notes() -> str:
    worst = max(_NOTES, default=(0.0, ""))[1]
    _NOTES.clear()
    return worst
