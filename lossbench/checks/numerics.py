"""Numerics the properties share: the precision a loss really computes in and a Jacobian
check that says where it fails (CUDA's autocast policy is in :mod:`.autocast`).

A loss that casts to fp32 inside (``logits.float()``, common in real code) cannot
pass a float64 check at float64 tolerances: its roundoff is 1e9 times larger. The
properties therefore ask :func:`compute_eps` which precision the differentiable
path of the loss narrows to, and scale their tolerances and steps to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode


def _tensors(obj):
    """The tensors in a (nested) tuple, list or dict of call arguments or results."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _tensors(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors(x)


class _NarrowestDtype(TorchFunctionMode):
    """Records the float dtypes produced by ops on the differentiable path (an input
    requires grad), so a float32 constant elsewhere does not count as narrowing."""

    def __init__(self):
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if any(t.requires_grad for t in _tensors((args, kwargs))):
            self.dtypes.update(t.dtype for t in _tensors(out) if t.is_floating_point())
        return out


_EPS_CACHE: dict[int, tuple[object, float]] = {}


def compute_eps(fn, call) -> float:
    """Machine epsilon of the narrowest float dtype ``call(x)`` computes in on its way
    from the float64 logits ``x`` to its output (cached per ``fn``: narrowing is a
    property of the code, not of the input). float64 throughout gives 2.2e-16."""
    cached = _EPS_CACHE.get(id(fn))
    if cached is not None and cached[0] is fn:
        return cached[1]
    mode = _NarrowestDtype()
    with mode:
        out = call()
    dtypes = mode.dtypes | ({out.dtype} if isinstance(out, torch.Tensor) else set())
    eps = max((torch.finfo(d).eps for d in dtypes if d.is_floating_point),
              default=torch.finfo(torch.float64).eps)
    _EPS_CACHE[id(fn)] = (fn, eps)
    return eps


def narrowed(eps: float) -> bool:
    return eps > 10 * torch.finfo(torch.float64).eps


def widen(eps: float, rtol: float, atol: float, scale: float = 1.0) -> tuple[float, float]:
    """(rtol, atol) for a loss computing at ``eps``: the float64 tolerances given, or a
    few hundred ulps of the values involved (``scale``: their magnitude) when it narrows."""
    if not narrowed(eps):
        return rtol, atol
    return max(rtol, 256 * eps), max(atol, 256 * eps * max(1.0, scale))


# --------------------------------------------------------------------------- gradients


@dataclass(frozen=True)
class JacobianMismatch:
    analytic: float
    numeric: float
    out_index: tuple[int, ...]
    in_index: tuple[int, ...]
    count: int  # entries outside the tolerance


def jacobian_mismatch(f, x: torch.Tensor, *, step: float, atol: float,
                      rtol: float) -> JacobianMismatch | None:
    """Compare the autograd Jacobian of ``f`` at ``x`` with central differences; the
    worst entry outside ``atol + rtol * |numeric|``, or None. Unlike torch's gradcheck
    it names the entry and both values, so a 2x wrong gradient reads differently from
    roundoff."""
    out = f(x.detach())
    analytic = torch.zeros(out.numel(), x.numel(), dtype=torch.float64)
    for i in range(out.numel()):
        # one forward per row: a hand-written backward may consume what it saved (in place)
        xi = x.detach().clone().requires_grad_(True)
        flat = f(xi).reshape(-1)
        if flat.requires_grad:
            (g,) = torch.autograd.grad(flat[i], xi, allow_unused=True)
            if g is not None:
                analytic[i] = g.reshape(-1).double()
    numeric = torch.zeros_like(analytic)
    with torch.no_grad():
        base = x.detach().clone()
        for j in range(x.numel()):
            plus, minus = base.clone(), base.clone()
            plus.view(-1)[j] += step
            minus.view(-1)[j] -= step
            numeric[:, j] = (f(plus).reshape(-1).double() - f(minus).reshape(-1).double()) / (2 * step)
    excess = (analytic - numeric).abs() - (atol + rtol * numeric.abs())
    excess = torch.where(torch.isnan(analytic) | torch.isnan(numeric), math.inf, excess)
    bad = excess > 0
    if not bad.any():
        return None
    i, j = divmod(int(excess.reshape(-1).argmax()), x.numel())
    out_index = tuple(int(k) for k in torch.unravel_index(torch.tensor(i), tuple(out.shape))) \
        if out.dim() else ()
    in_index = tuple(int(k) for k in torch.unravel_index(torch.tensor(j), tuple(x.shape)))
    return JacobianMismatch(float(analytic[i, j]), float(numeric[i, j]), out_index, in_index,
                            int(bad.sum()))
