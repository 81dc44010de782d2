"""Named properties a loss can be checked against.

Each property is a hypothesis strategy for its inputs plus a ``check`` that
raises ``AssertionError`` with a message saying what broke and where. The
generic ones (here) hold for any loss with the lossbench signature; the others
(:mod:`.claimed`) are claimed per loss in its registry spec or by ``--like``.

A spec from :mod:`.adapters` may be reduced (``--reduction``): properties about the
value the user trains on check its scalar (:func:`~.base.returned`), the others the
per-token values recovered from it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from hypothesis import strategies as st

from lossbench.losses.registry import KNOWN_PROPERTIES

from .base import (PROPERTIES, Property, aim, assert_close, cases, eps_of, finite_max, jitter,
    reduced, register_property, returned, slack, totals, value_and_grad, where)
from .numerics import jacobian_mismatch, narrowed, widen
from .strategies import EXTREME, batch_permutations, logit_arrays, loss_cases

__all__ = ["PROPERTIES", "Property"]


@register_property("output_contract", "returns a (B, T) float tensor that is exactly 0 at "
                   "ignored positions (with --reduction: a scalar that ignored positions do "
                   "not change)", cases())
def _output_contract(spec, case):
    if reduced(spec):
        whole = case.call(spec.raw)
        if not isinstance(whole, torch.Tensor) or not whole.is_floating_point() or whole.dim():
            raise AssertionError(f"--reduction {spec.reduction}: expected a float scalar, got "
                                 f"{type(whole).__name__} {tuple(getattr(whole, 'shape', ()))}")
        if totals(spec):
            return  # no per-token values: ignored_tokens_inert checks the total
    out = case.call(spec.fn)
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise AssertionError(f"expected a float tensor, got {type(out).__name__} "
                             f"{getattr(out, 'dtype', '')}")
    if out.shape != case.targets.shape:
        hint = (": looks mean-reduced: return per-token values, or pass --reduction mean"
                if out.numel() == 1 else "")
        raise AssertionError(f"expected shape {tuple(case.targets.shape)} (B, T), got "
                             f"{tuple(out.shape)}{hint}")
    # exactly 0 per token; a recovered value is a difference of row totals: roundoff of those
    moved = (out.abs() > (slack(spec, case, out) if reduced(spec) else 0.0)) & ~case.keep
    if case.keep.any() and (~case.keep).any():
        aim(finite_max(out[~case.keep]) / max(finite_max(out[case.keep]), 1e-12))
    if moved.any():
        i = tuple(moved.nonzero()[0].tolist())
        if reduced(spec):
            raise AssertionError(
                f"ignored position {i} changes the {spec.reduction}-reduced loss: adding it to "
                f"its row moves the row's total by {out[i].item()!r} (is the {spec.reduction} "
                f"taken over all positions, padding included?)")
        raise AssertionError(f"non-zero loss {out[i].item()!r} at ignored position {i}")


@register_property("finite_at_extremes", f"finite value and gradient for fp32 logits up to "
                   f"|{EXTREME:g}|", cases(magnitude=EXTREME, dtype=np.float32))
def _finite_at_extremes(spec, case):
    out, grad = value_and_grad(returned(spec), case)
    if not torch.isfinite(out).all():
        raise AssertionError(f"loss is {out[~torch.isfinite(out)][0].item()} at "
                             f"{where(~torch.isfinite(out)) if out.dim() else 'the scalar'}")
    if not torch.isfinite(grad).all():
        raise AssertionError(f"gradient is non-finite at {where(~torch.isfinite(grad))}")


@st.composite
def _case_and_noise(draw, spec):
    case = draw(loss_cases(spec))
    if case.recipe:  # a long case: noise from a seed, as its logits
        return replace(case, aux={"noise_seed": torch.tensor(draw(st.integers(0, 2 ** 16)))})
    noise = draw(logit_arrays(tuple(case.logits.shape), magnitude=1e3), label="noise")
    return replace(case, aux={"noise": torch.from_numpy(noise)})


def _noise(case):
    if "noise" in case.aux:
        return case.aux["noise"]
    g = torch.Generator().manual_seed(int(case.aux["noise_seed"]))
    return (1e3 * torch.rand(case.logits.shape, generator=g, dtype=torch.float64) * 2 - 1e3) \
        .to(case.logits.dtype)


@register_property("ignored_tokens_inert",
                   "changing logits at ignored positions changes neither the value nor the "
                   "gradient; ignored positions get zero gradient", _case_and_noise)
def _ignored_tokens_inert(spec, case):
    keep, fn = case.keep, returned(spec)
    other = torch.where(keep.unsqueeze(-1), case.logits, _noise(case))
    out1, g1 = value_and_grad(fn, case)
    out2, g2 = value_and_grad(fn, case, logits=other)
    rtol, atol = widen(eps_of(spec, case), 1e-12, 1e-12, scale=float(out1.abs().max()))
    assert_close(out2, out1, "loss moved when only ignored logits changed", rtol=rtol, atol=atol,
                 mask=None if reduced(spec) else keep)
    gtol = widen(eps_of(spec, case), 1e-12, 1e-12)
    assert_close(g2, g1, "gradient at a kept position moved", rtol=gtol[0], atol=gtol[1],
                 mask=keep)
    kept_scale = max(finite_max(g1[keep]), finite_max(g2[keep])) if keep.any() else 0.0
    for g in (g1, g2):
        bad = (g != 0).any(-1) & ~keep
        if not bad.any():
            continue
        size = finite_max(g[bad])
        aim(size / (kept_scale if kept_scale else 1.0))
        at = tuple(int(k) for k in bad.nonzero()[0])
        if not torch.isfinite(g[at]).all():
            relative = "it is not finite"
        elif kept_scale:
            relative = (f"its largest entry {finite_max(g[at]):.3g} is "
                        f"{finite_max(g[at]) / kept_scale:.3g} of the largest gradient at a kept "
                        f"position ({kept_scale:.3g}), not rounding")
        elif keep.any():
            relative = "while the gradient at every kept position is 0"
        else:
            relative = "(no position is kept in this example)"
        raise AssertionError(f"gradient {g[at].tolist()} at ignored position {at}, expected 0: "
                             f"{relative}")


@st.composite
def _case_and_permutation(draw, spec):
    case = draw(loss_cases(spec))
    return replace(case, aux={"perm": draw(batch_permutations(case.logits.shape[0]), label="perm")})


@register_property("batch_permutation_equivariant", "reordering batch rows reorders the "
                   "per-token loss (leaves a reduced loss unchanged)", _case_and_permutation)
def _batch_permutation(spec, case):
    perm, fn = case.aux["perm"], returned(spec)
    out = case.call(fn)
    rtol, atol = widen(eps_of(spec, case), 1e-10, 1e-12, scale=float(out.abs().max()))
    assert_close(case.permuted(perm).call(fn), out if reduced(spec) else out[perm],
                 "permuted loss", rtol=rtol, atol=atol)


@register_property("row_independent", "the loss of a sequence does not depend on another "
                   "sequence's logits or targets: each row's loss is the same in the batch and "
                   "alone (a reduced loss: the batch's value combines its rows' values)",
                   cases(min_batch=2))
def _row_independent(spec, case):
    B = case.targets.shape[0]
    if not reduced(spec):
        out = case.call(spec.fn)
        for b in range(B):
            alone = case.row(b).call(spec.fn)[0]
            rtol, atol = widen(eps_of(spec, case), 1e-10, 1e-12, scale=float(out.abs().max()))
            bad = ~torch.isclose(out[b], alone.to(out.dtype), rtol=rtol, atol=atol, equal_nan=True)
            aim(finite_max(out[b] - alone.to(out.dtype)) / max(finite_max(out), 1e-12))
            if bad.any():
                t = int(bad.nonzero()[0])
                raise AssertionError(
                    f"row {b}'s loss at position {(b, t)} is {out[b, t].item()!r} in the batch "
                    f"but {alone[t].item()!r} alone: it depends on the other rows' logits or "
                    f"targets (a flattened batch whose rows see each other?)")
        return
    whole = case.call(spec.raw)
    kept = case.keep.sum(1)
    parts = [case.row(b).call(spec.raw) * (kept[b] if spec.reduction == "mean" else 1)
             for b in range(B) if spec.reduction == "sum" or kept[b] > 0]
    combined = torch.stack(parts).sum() / (kept.sum() if spec.reduction == "mean" else 1)
    rtol, atol = widen(eps_of(spec, case), 1e-10, 1e-12, scale=float(whole.abs()))
    aim(finite_max(whole - combined.to(whole.dtype)) / max(finite_max(whole), 1e-12))
    if not torch.isclose(whole, combined.to(whole.dtype), rtol=rtol, atol=atol, equal_nan=True):
        how = ("the sum of its rows' losses" if spec.reduction == "sum" else
               "the kept-token-weighted mean of its rows' losses")
        raise AssertionError(
            f"the batch's loss is {whole.item()!r} but {how}, each row called alone, is "
            f"{combined.item()!r}: a row's loss depends on the other rows (a flattened batch "
            f"whose rows see each other, or a normalizer shared across rows)")


@register_property("token_local", "a position's loss depends on its own logits only (earlier "
                   "targets may matter; other positions' logits may not); a loss checked on its "
                   "total: the gradient at a position moves only with that position's logits",
                   cases(max_batch=2, max_time=4), long_shapes=False)
def _token_local(spec, case):
    if totals(spec):
        return _token_local_total(spec, case)
    for b, t in case.keep.nonzero().tolist():
        # a fresh forward per position: a hand-written backward may consume what it saved
        x = case.logits.detach().clone().requires_grad_(True)
        out = case.call(spec.fn, logits=x)
        if not out.requires_grad:
            return
        (g,) = torch.autograd.grad(out[b, t], x, allow_unused=True)
        if g is None:
            continue
        own = float(g[b, t].abs().max())
        g = g.clone()
        g[b, t] = 0
        # float64 per-token: exact zeros; recovered or float32 values: roundoff of `own`
        tol = max(1e-12 * (1 + own), slack(spec, case, torch.tensor(own)))
        aim(float(g.abs().max()) / max(own, 1e-12))
        if g.abs().max() > tol:
            i = tuple(int(k) for k in torch.unravel_index(g.abs().argmax(), g.shape))
            raise AssertionError(
                f"the loss at position {(b, t)} moves with the logits at position {i[:2]} "
                f"(d loss / d logits{list(i)} = {g[i].item():.6g}): a position's loss must "
                f"depend on its own logits only (are (B, T, V) logits read as (N, V)? --flat)")


def _token_local_total(spec, case):
    """The gradient of the total at each position, before and after moving another position's
    logits by 0.5 along a fixed direction: a sum of per-position terms keeps it exactly."""
    fn, V = returned(spec), case.logits.shape[-1]

    def grad_at(logits):
        x = logits.detach().clone().requires_grad_(True)
        out = case.call(fn, logits=x)
        return torch.autograd.grad(out, x)[0] if out.requires_grad else torch.zeros_like(x)

    base = grad_at(case.logits)
    direction = torch.cos(torch.arange(V, dtype=torch.float64) * 2.4).to(case.logits.dtype)
    tol = max(1e-12, 1e3 * eps_of(spec, case) * (1 + finite_max(base)))
    for b, s in case.keep.nonzero().tolist():
        moved = case.logits.clone()
        moved[b, s] += 0.5 * direction
        change = (grad_at(moved) - base).abs()
        change[b, s] = 0
        aim(finite_max(change) / max(finite_max(base), 1e-12))
        if change.max() > tol:
            i = tuple(int(k) for k in torch.unravel_index(change.argmax(), change.shape))
            raise AssertionError(
                f"the gradient at position {i[:2]} moves by {change[i].item():.6g} when the "
                f"logits at position {(b, s)} move: a position's loss must depend on its own "
                f"logits only (are (B, T, V) logits read as (N, V)? --flat)")


@register_property("gradient_matches_finite_differences",
                   "autograd gradient equals central finite differences (float64; at float32 "
                   "step and tolerance for a loss that computes in float32)",
                   cases(magnitude=5.0, max_batch=2, max_time=4, max_vocab=6), long_shapes=False)
def _gradcheck(spec, case):
    fn, x = returned(spec), jitter(case.logits)
    scale = float(case.call(fn, logits=x).detach().abs().max())
    eps = eps_of(spec, case)
    if narrowed(eps):  # roundoff eps*|f|/step dominates: a larger step, an ulp-scaled atol
        step, rtol = 3e-3, 1e-2
        atol = 1e-3 + 16 * eps * scale / step
    else:  # central differences carry roundoff ~ |f| * 2e-16 / step
        step, rtol, atol = 1e-6, 1e-3, 1e-5 + 1e-8 * scale
    bad = jacobian_mismatch(lambda z: case.call(fn, logits=z), x, step=step, atol=atol, rtol=rtol)
    if bad is not None:
        ratio = f", {bad.analytic / bad.numeric:.3g}x" if bad.numeric else ""
        precision = ("; the loss computes in float32, so the check runs at a float32 step "
                     "and tolerance" if narrowed(eps) else "")
        raise AssertionError(
            f"d loss{list(bad.out_index)} / d logits{list(bad.in_index)}: autograd "
            f"{bad.analytic:.6g}, central differences {bad.numeric:.6g}{ratio} (the worst of "
            f"{bad.count} entries outside atol={atol:.2g} + rtol={rtol:g}*|differences|, step "
            f"{step:g}{precision})")


from . import bf16, claimed, inputs  # noqa: F401  the other properties register on import

assert set(KNOWN_PROPERTIES) <= set(PROPERTIES), "every named property needs an implementation"
