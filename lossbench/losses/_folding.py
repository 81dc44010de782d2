"""torch.func.vmap for the fused autograd Functions (``_fused.py``) by folding.

Every Function there works on (B, T, V) rows that never interact, so a vmapped dimension of
size n can be folded into the leading batch dimension: one call on (n B, T, V) computes what
n calls on (B, T, V) would, with the same kernels and none of their data-dependent steps
(``nonzero``, row blocks, ``out=``) in the way of vmap. Used per-example by
``train/noise.py``'s ``vmap(grad(loss))``; outside torch.func nothing here runs.

    @foldable()                             # MyFunction's vmap staticmethod
    class MyFunction(torch.autograd.Function): ...
    fold_apply(kernel, *tensors)            # kernel(*tensors), vmappable (a backward's body)

Tensors a vmapped dimension does not reach (in_dim None) are broadcast to it, except the
arguments named in ``keep``: those are already laid out along the folded batch (the sparse
corrections ``_Unlikelihood`` hands to its backward) and pass as they are.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch


def transforms_active() -> bool:
    """Whether a torch.func transform (vmap, grad, ...) is running: where a data-dependent
    branch must give way to a branch-free form."""
    return torch._C._are_functorch_transforms_active()


def _fold(value, in_dim, n: int):
    """(..., n at in_dim, ...) -> (n B, ...); an unbatched tensor is broadcast to n first."""
    if not isinstance(value, torch.Tensor) or (in_dim is None and value.dim() == 0):
        return value  # a number, or a scalar tensor: the same for every row
    if in_dim is None:
        return value.expand(n, *value.shape).reshape(n * value.shape[0], *value.shape[1:])
    return value.movedim(in_dim, 0).flatten(0, 1)


def _unfold(value, n: int):
    return value.unflatten(0, (n, -1)) if isinstance(value, torch.Tensor) else value


def fold_rule(function: type[torch.autograd.Function], keep: Iterable[int] = (),
              flat_outputs: Iterable[int] = ()) -> Callable:
    """A vmap staticmethod for ``function``: fold every batched argument (and broadcast the
    unbatched ones, but those at positions ``keep``), apply ``function`` once, and unfold its
    outputs (but those at positions ``flat_outputs``: returned unbatched, in folded layout)."""
    keep, flat_outputs = frozenset(keep), frozenset(flat_outputs)

    def vmap(info, in_dims, *args):
        n = info.batch_size
        folded = [a if i in keep else _fold(a, d, n)
                  for i, (a, d) in enumerate(zip(args, in_dims))]
        out = function.apply(*folded)
        if not isinstance(out, tuple):
            return _unfold(out, n), 0
        dims = tuple(None if i in flat_outputs or not isinstance(o, torch.Tensor) else 0
                     for i, o in enumerate(out))
        return tuple(o if d is None else _unfold(o, n) for o, d in zip(out, dims)), dims

    return vmap


def foldable(keep: Iterable[int] = (), flat_outputs: Iterable[int] = ()):
    """Class decorator: ``function.vmap = fold_rule(function, keep, flat_outputs)``."""
    def decorate(function):
        function.vmap = staticmethod(fold_rule(function, keep, flat_outputs))
        return function
    return decorate


class _Kernel(torch.autograd.Function):
    """``kernel(*args)``, not differentiated (a closed-form gradient's body), vmapped by
    folding. Positional flags: ``keep`` as in :func:`fold_rule`."""

    @staticmethod
    def forward(kernel, keep, *args):
        return kernel(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("the closed-form gradients of lossbench's fused losses are not "
                           "differentiable again")

    @staticmethod
    def vmap(info, in_dims, kernel, keep, *args):
        n = info.batch_size
        folded = [a if i in keep else _fold(a, d, n)
                  for i, (a, d) in enumerate(zip(args, in_dims[2:]))]
        out = _Kernel.apply(kernel, keep, *folded)
        if isinstance(out, tuple):
            return tuple(_unfold(o, n) for o in out), tuple(0 for _ in out)
        return _unfold(out, n), 0


def fold_apply(kernel: Callable, *args, keep: tuple[int, ...] = ()):
    """``kernel(*args)`` for a row-local kernel of (B, ...) tensors; under vmap, one call on
    the folded batch. ``keep``: positions of arguments already in folded layout."""
    if not transforms_active():
        return kernel(*args)  # the training path: a plain call
    return _Kernel.apply(kernel, frozenset(keep), *args)
