"""Properties a loss claims: in its registry spec, through ``--like NAME`` (NAME's
claims and its reference), or ``reduction`` for a ``--reduction mean|sum`` function.

They compare per-token values (recovered ones for a reduced loss); tolerances widen
from float64's to the precision the loss computes in (:func:`~.base.slack`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from lossbench.losses._common import smoothed_one_hot

from .base import (aim, assert_close, cases, eps_of, finite_max, jitter, like_returned,
    reference_of, register_property, slack, value_and_grad, where)
from .numerics import widen
from .strategies import logit_arrays, loss_cases


@register_property("nonnegative", "loss >= 0 at every kept position", cases())
def _nonnegative(spec, case):
    out = case.call(spec.fn)
    tol = max(1e-9, slack(spec, case, out))
    aim(-float(out.min()) / max(finite_max(out), 1e-12) if out.numel() else 0.0)
    if (out < -tol).any():
        raise AssertionError(f"loss {out.min().item()!r} < 0 at {where(out < -tol)}")


@st.composite
def _case_and_shift(draw, spec):
    case = draw(loss_cases(spec))
    B, T, _ = case.logits.shape
    if case.recipe:  # a long case: the shifts from a seed, as its logits
        g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
        shift = (200 * torch.rand(B, T, 1, generator=g, dtype=torch.float64) - 100).numpy()
    else:
        shift = draw(logit_arrays((B, T, 1), magnitude=100.0), label="shift")
    return replace(case, aux={"shift": torch.from_numpy(shift).to(case.logits.dtype)})


@register_property("shift_invariant", "adding a constant to each row of logits leaves the loss "
                   "unchanged", _case_and_shift)
def _shift_invariant(spec, case):
    shifted = case.logits + case.aux["shift"]
    out = case.call(spec.fn)
    atol = max(1e-8, slack(spec, case, out, shifted))
    assert_close(case.call(spec.fn, logits=shifted), out, "loss after shift", rtol=1e-8, atol=atol)


@register_property("minimal_at_perfect_prediction",
                   "logits with the target 1000 above every other class are a global minimum",
                   cases())
def _minimal_at_perfect(spec, case):
    safe = torch.where(case.keep, case.targets, 0)
    perfect = 1e3 * F.one_hot(safe, case.logits.shape[-1]).to(case.logits.dtype)
    best, out = case.call(spec.fn, logits=perfect), case.call(spec.fn)
    worse = best > out + max(1e-9, slack(spec, case, best, out))
    if worse.any():
        i = worse.nonzero()[0]
        raise AssertionError(f"perfect prediction costs {best[tuple(i)].item()!r} but the drawn "
                             f"logits cost {out[tuple(i)].item()!r} at position {tuple(i.tolist())}")


@register_property("zero_at_teacher", "loss is 0 when softmax(logits) equals the target "
                   "distribution (teacher_probs, or the label-smoothed one-hot without it)",
                   cases())
def _zero_at_teacher(spec, case):
    safe = torch.where(case.keep, case.targets, 0)
    target = case.extras.get("teacher_probs")
    if target is None:
        target = smoothed_one_hot(safe, case.logits.shape[-1], case.hparams["smoothing"],
                                  case.logits.dtype)
    out = case.call(spec.fn, logits=target.log())
    atol = max(1e-9, slack(spec, case, target.log()))
    assert_close(out, torch.zeros_like(out), "loss at the teacher", rtol=0, atol=atol)


def _rows(x: torch.Tensor, i: tuple) -> str:
    """The row of ``x`` holding position ``i``, rounded, for messages."""
    row = x[i[:-1]] if x.dim() > 1 else x.reshape(-1)
    return "[" + ", ".join(f"{v:.8g}" for v in row.tolist()) + "]"


def _reference(spec, case):
    """NAME's reference in the form ``spec.fn`` returns (per token, or the total)."""
    ref = reference_of(spec)
    return lambda *args, **kwargs: like_returned(spec, case, ref(*args, **kwargs))


@register_property("matches_reference", "value and gradient agree with the plain reference "
                   "implementation (where the reference is finite)", cases())
def _matches_reference(spec, case):
    x = jitter(case.logits)  # off ties, where sub-gradients may legitimately differ
    out, grad = value_and_grad(spec.fn, case, logits=x)
    ref, ref_grad = value_and_grad(_reference(spec, case), case, logits=x)
    eps = eps_of(spec, case)
    atol = max(1e-9, slack(spec, case, ref, x))
    rtol = widen(eps, 1e-7, 0.0)[0]
    # a plain reference may overflow where the loss is careful (naive focal's (1 - p)^gamma
    # has a NaN gradient at p = 1): where it is not finite it cannot judge
    bad = ~torch.isclose(out.to(ref.dtype), ref, rtol=rtol, atol=atol) & torch.isfinite(ref)
    finite = torch.isfinite(ref) & torch.isfinite(out.to(ref.dtype))
    if finite.any():
        aim(finite_max((out.to(ref.dtype) - ref)[finite]) / max(finite_max(ref), 1e-12))
    if bad.any():
        i = tuple(bad.nonzero()[0].tolist()) if bad.dim() else ()
        raise AssertionError(
            f"loss vs reference ({spec.description}) at position {i}: got {out[i].item()!r}, "
            f"expected {ref[i].item()!r} (rtol={rtol:.2g}, atol={atol:.2g})"
            + (f"\n  row {i[0]}, this loss: {_rows(out, i)}\n  row {i[0]}, reference: "
               f"{_rows(ref, i)}" if i else " (the totals: its loss at a position depends on "
                                            "later positions)"))
    grtol, gatol = widen(eps, 1e-6, 1e-9)
    assert_close(grad, ref_grad, "gradient vs reference", rtol=grtol, atol=gatol,
                 mask=torch.isfinite(ref_grad))


@register_property("neutral_hparams_give_cross_entropy",
                   "with every hyperparameter at its neutral value the loss equals torch's "
                   "cross-entropy", cases(draw_hparams=False))
def _neutral(spec, case):
    neutral = {k: (h.neutral if h.neutral is not None else h.default) for k, h in spec.hparams.items()}
    ce = like_returned(spec, case, F.cross_entropy(
        case.logits.transpose(1, 2), case.targets, reduction="none", ignore_index=case.ignore_index))
    atol = max(1e-9, slack(spec, case, ce, case.logits))
    assert_close(case.call(spec.fn, **neutral), ce, "loss at neutral hyperparameters",
                 rtol=widen(eps_of(spec, case), 1e-9, 0.0)[0], atol=atol)


def _reduction_hint(ratio: float, case) -> str:
    """'; divided by all 6 positions, not the 4 kept ones?' for a reduction off by a ratio a
    common mistake explains, the commonest first (or every one that fits, when several do)."""
    B, T, V = case.logits.shape
    n = int(case.keep.sum())
    if n == 0 or not ratio or math.isnan(ratio):
        return ""
    fits = [what for what, r in (
        (f"by all {B * T} positions, not the {n} kept ones", B * T / n),
        (f"by the batch size {B}", B), (f"by the sequence length {T}", T),
        (f"by the number of classes V = {V}", V),
        (f"by all {B * T * V} logits", B * T * V / n)) if r != 1 and abs(ratio / r - 1) < 1e-3]
    if not fits:
        return ""
    return f"; divided {fits[0]}?" + (f" (or {'? or '.join(fits[1:])}?)" if fits[1:] else "")


@register_property("reduction", "the returned scalar is the mean (--reduction mean) or the sum "
                   "over kept positions of the per-token values: --like NAME's reference, else "
                   "the function's own, recovered from row prefixes", cases())
def _reduction(spec, case):
    whole = case.call(spec.raw)
    if spec.reference_impl is not None:
        per, source = case.call(reference_of(spec)), f"the reference's ({spec.description})"
    else:
        per, source = case.call(spec.fn), "its own, each row called alone"
    keep = case.keep
    n = int(keep.sum())
    total = torch.where(keep, per, 0.0).sum()
    expected = total / n if spec.reduction == "mean" else total
    atol = max(1e-12, slack(spec, case, per))
    rtol = widen(eps_of(spec, case), 1e-9, 0.0)[0]
    aim(abs(whole.item() - expected.item()) / max(abs(expected.item()), 1e-12))
    if not torch.isclose(whole.to(expected.dtype), expected, rtol=rtol, atol=atol):
        ratio = expected.item() / whole.item() if whole.item() else float("inf")
        raise AssertionError(
            f"returned {whole.item()!r}, but the {spec.reduction} over the {n} kept positions of "
            f"the per-token values ({source}) is {expected.item()!r}, {ratio:.6g}x"
            f"{_reduction_hint(ratio, case)}{_per_token_differs(spec, case, per, keep)}")


def _per_token_differs(spec, case, ref, keep) -> str:
    """With --like: whether the recovered per-token values already differ from the reference
    (then the reduction is not what is wrong, or not the only thing)."""
    if spec.reference_impl is None or getattr(spec, "per_token", "prefix") != "prefix":
        return ""
    own = case.call(spec.fn)
    if torch.allclose(own[keep].to(ref.dtype), ref[keep], rtol=1e-5, atol=1e-7):
        return ""
    return ("; its per-token values differ from the reference's too (see matches_reference): "
            "the values are wrong, not only how they are reduced")
