"""``inputs_unchanged``: a loss must leave the tensors it is given as they were.

A loss that clamps its labels in place (``labels.clamp_min_(0)``) or reuses its logits as
scratch space (``logits -= logits.max(-1)``, a backward that stores the gradient into the
tensor saved in forward) changes the caller's tensors: the next use of the batch or the model
output reads garbage. Every call lossbench makes hands the loss copies (see
:class:`~.adapters.Adapter`), so such a loss fails this property once, with the argument it
modified, and the other properties judge its values on intact inputs.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from .adapters import Adapter
from .base import register_property, returned
from .strategies import loss_cases


def _changed(passed: torch.Tensor, original: torch.Tensor):
    """(position, before, after) of the first difference, or None."""
    if passed.shape != original.shape or passed.dtype != original.dtype:
        return (), f"shape {tuple(original.shape)} {original.dtype}", \
            f"shape {tuple(passed.shape)} {passed.dtype}"
    a, b = passed.detach(), original.detach()
    same = (a == b) | (a.isnan() & b.isnan()) if a.is_floating_point() else a == b
    if bool(same.all()):
        return None
    i = tuple(int(k) for k in (~same).nonzero()[0])
    return i, b[i].item(), a[i].item()


def _first_change(seen):
    for name, passed, original in seen:
        found = _changed(passed, original)
        if found is not None:
            return (name, *found)
    return None


def _backward(out, x):
    if isinstance(out, torch.Tensor) and out.requires_grad:
        torch.autograd.grad(out.float().sum(), x, allow_unused=True)


@st.composite
def _cases_in_either_precision(draw, spec):
    # float32 too: ``logits.float()`` copies a float64 tensor but returns a float32 one itself
    dtype = draw(st.sampled_from([np.float64, np.float32]), label="dtype")
    return draw(loss_cases(spec, dtype=dtype))


@register_property("inputs_unchanged", "the tensors the loss is given (logits, targets, "
                   "teacher) are unchanged after the call and after its backward pass",
                   _cases_in_either_precision)
def _inputs_unchanged(spec, case):
    fn = returned(spec)
    x = case.logits.detach().clone().requires_grad_(True)
    if isinstance(spec.fn, Adapter):
        with spec.fn.watching() as seen:
            out = case.call(fn, logits=x)
            during = _first_change(seen)
            _backward(out, x)
            after = _first_change(seen)
    else:  # a registered loss: hand it copies and compare them with the case's own tensors
        given = {"logits": x.clone(), "targets": case.targets.clone(),
                 **{k: v.clone() for k, v in case.extras.items()}}
        out = fn(given["logits"], given["targets"], ignore_index=case.ignore_index,
                 **case.hparams, **{k: given[k] for k in case.extras})
        seen = [(k, given[k], case.logits if k == "logits" else case.targets if k == "targets"
                 else case.extras[k]) for k in given]
        during = _first_change(seen)
        _backward(out, x)
        after = _first_change(seen)
    found, when = (during, "the call") if during else (after, "its backward pass")
    if found is None:
        return
    name, i, before, now = found
    at = f" at position {i}" if i else ""
    raise AssertionError(
        f"modifies its argument {name!r} in place during {when}: {before!r}{at} became {now!r} "
        f"(the caller's tensor changes; work on a copy, e.g. x = x.clamp_min(0) instead of "
        f"x.clamp_min_(0)). The other properties are given copies, so their verdicts stand")
