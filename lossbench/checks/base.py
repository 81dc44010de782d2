"""What the properties share: their registry, messages that say where, and calls that
know a spec's reduction and the precision it computes in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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


PROPERTIES: dict[str, Property] = {}


def register_property(name: str, doc: str, strategy):
    def decorator(check):
        PROPERTIES[name] = Property(name, doc, strategy, check)
        return check
    return decorator


def cases(**kw):
    return lambda spec: loss_cases(spec, **kw)


def where(mask: torch.Tensor) -> str:
    idx = mask.nonzero()
    return f"position {tuple(idx[0].tolist())}" if len(idx) else "nowhere"


def assert_close(actual, expected, what: str, *, rtol: float, atol: float, mask=None):
    if mask is not None:
        actual, expected = actual[mask], expected[mask]
    dtype = torch.promote_types(actual.dtype, expected.dtype)
    actual, expected = torch.broadcast_tensors(actual.to(dtype), expected.to(dtype))
    # NaN only matches NaN: a NaN loss is finite_at_extremes' failure, not every property's
    bad = ~torch.isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
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

    Offsets are frac(i * golden ratio) * 1e-3: neighbours differ by >= 9e-5, far
    above float64 finite-difference steps, so piecewise-linear losses (hinge) are
    checked where they are differentiable.
    """
    phi = (5 ** 0.5 - 1) / 2
    offsets = torch.remainder(torch.arange(logits.numel(), dtype=torch.float64) * phi, 1.0)
    return logits + 1e-3 * offsets.reshape(logits.shape).to(logits.dtype)


def reduced(spec) -> bool:
    return getattr(spec, "reduction", "none") != "none"


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
    scale = max((float(v.detach().abs().max()) for v in values if v.numel()), default=0.0)
    return 64 * eps * (1.0 + scale) * (case.targets.shape[1] if reduced(spec) else 1)


# Properties that pass with a caveat (bf16: a small error) leave a note here; the runner
# keeps the worst one of a search.
_NOTES: list[tuple[float, str]] = []


def note(severity: float, message: str) -> None:
    _NOTES.append((severity, message))


def take_notes() -> str:
    worst = max(_NOTES, default=(0.0, ""))[1]
    _NOTES.clear()
    return worst
