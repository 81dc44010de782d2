"""Named properties a loss can be checked against.

Each property is a hypothesis strategy for its inputs plus a ``check`` that
raises ``AssertionError`` with a message saying what broke and where. The
generic ones hold for any loss with the lossbench signature; the others are
claimed per loss in its registry spec.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch.autograd.gradcheck import GradcheckError

from lossbench.losses._common import smoothed_one_hot
from lossbench.losses.registry import KNOWN_PROPERTIES, LossSpec

from .strategies import EXTREME, LossCase, batch_permutations, logit_arrays, loss_cases


@dataclass(frozen=True)
class Property:
    name: str
    doc: str
    strategy: Callable[[LossSpec], st.SearchStrategy]
    check: Callable[[LossSpec, LossCase], None]


PROPERTIES: dict[str, Property] = {}


def _property(name: str, doc: str, strategy):
    def decorator(check):
        PROPERTIES[name] = Property(name, doc, strategy, check)
        return check
    return decorator


def _where(mask: torch.Tensor) -> str:
    idx = mask.nonzero()
    return f"position {tuple(idx[0].tolist())}" if len(idx) else "nowhere"


def _assert_close(actual, expected, what: str, *, rtol: float, atol: float, mask=None):
    if mask is not None:
        actual, expected = actual[mask], expected[mask]
    bad = ~torch.isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=False)
    if bad.any():
        i = bad.nonzero()[0]
        raise AssertionError(f"{what}: got {actual[tuple(i)].item()!r}, expected "
                             f"{expected[tuple(i)].item()!r} (rtol={rtol}, atol={atol})")


def _value_and_grad(fn, case: LossCase, logits: torch.Tensor | None = None, **override):
    x = (case.logits if logits is None else logits).detach().clone().requires_grad_(True)
    out = case.call(fn, logits=x, **override)
    if not out.requires_grad:  # e.g. every position ignored: no graph, zero gradient
        return out.detach(), torch.zeros_like(x)
    (grad,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    return out.detach(), (torch.zeros_like(x) if grad is None else grad)


def _jitter(logits: torch.Tensor) -> torch.Tensor:
    """Move logits off ties and margin kinks by distinct, deterministic offsets.

    Offsets are frac(i * golden ratio) * 1e-3: neighbours differ by >= 9e-5, far
    above finite-difference steps, so piecewise-linear losses (hinge) are
    checked where they are differentiable.
    """
    phi = (5 ** 0.5 - 1) / 2
    offsets = torch.remainder(torch.arange(logits.numel(), dtype=torch.float64) * phi, 1.0)
    return logits + 1e-3 * offsets.reshape(logits.shape).to(logits.dtype)


def _cases(**kw):
    return lambda spec: loss_cases(spec, **kw)


# --------------------------------------------------------------------------- generic


@_property("output_contract", "returns a (B, T) float tensor that is exactly 0 at ignored positions",
           _cases())
def _output_contract(spec, case):
    out = case.call(spec.fn)
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise AssertionError(f"expected a float tensor, got {type(out).__name__} "
                             f"{getattr(out, 'dtype', '')}")
    if out.shape != case.targets.shape:
        raise AssertionError(f"expected shape {tuple(case.targets.shape)} (B, T), got {tuple(out.shape)}")
    if (out[~case.keep] != 0).any():
        raise AssertionError(f"non-zero loss at ignored {_where((out != 0) & ~case.keep)}")


@_property("finite_at_extremes", f"finite value and gradient for fp32 logits up to |{EXTREME:g}|",
           _cases(magnitude=EXTREME, dtype=np.float32))
def _finite_at_extremes(spec, case):
    out, grad = _value_and_grad(spec.fn, case)
    if not torch.isfinite(out).all():
        raise AssertionError(f"loss is {out[~torch.isfinite(out)][0].item()} at "
                             f"{_where(~torch.isfinite(out))}")
    if not torch.isfinite(grad).all():
        raise AssertionError(f"gradient is non-finite at {_where(~torch.isfinite(grad))}")


@st.composite
def _case_and_noise(draw, spec):
    case = draw(loss_cases(spec))
    noise = draw(logit_arrays(tuple(case.logits.shape), magnitude=1e3), label="noise")
    return replace(case, aux={"noise": torch.from_numpy(noise)})


@_property("ignored_tokens_inert",
           "changing logits at ignored positions changes neither the value nor the gradient; "
           "ignored positions get zero gradient", _case_and_noise)
def _ignored_tokens_inert(spec, case):
    keep = case.keep
    other = torch.where(keep.unsqueeze(-1), case.logits, case.aux["noise"])
    out1, g1 = _value_and_grad(spec.fn, case)
    out2, g2 = _value_and_grad(spec.fn, case, logits=other)
    _assert_close(out2, out1, "loss at a kept position moved", rtol=1e-12, atol=1e-12, mask=keep)
    _assert_close(g2, g1, "gradient at a kept position moved", rtol=1e-12, atol=1e-12, mask=keep)
    for g in (g1, g2):
        bad = (g != 0).any(-1) & ~keep
        if bad.any():
            value = g[tuple(bad.nonzero()[0])]
            raise AssertionError(f"gradient {value.tolist()} at ignored {_where(bad)}, expected 0")


@st.composite
def _case_and_permutation(draw, spec):
    case = draw(loss_cases(spec))
    return replace(case, aux={"perm": draw(batch_permutations(case.logits.shape[0]), label="perm")})


@_property("batch_permutation_equivariant", "reordering batch rows reorders the per-token loss",
           _case_and_permutation)
def _batch_permutation(spec, case):
    perm = case.aux["perm"]
    out = case.call(spec.fn)
    _assert_close(case.permuted(perm).call(spec.fn), out[perm], "permuted loss",
                  rtol=1e-10, atol=1e-12)


@_property("gradient_matches_finite_differences",
           "autograd gradient equals central finite differences in float64 (torch gradcheck)",
           _cases(magnitude=5.0, max_batch=2, max_time=4, max_vocab=6))
def _gradcheck(spec, case):
    x = _jitter(case.logits).requires_grad_(True)
    # Central differences carry roundoff ~ |f| * 2e-16 / eps: scale atol with the loss.
    scale = case.call(spec.fn, logits=x.detach()).abs().max().item()
    try:
        torch.autograd.gradcheck(lambda z: case.call(spec.fn, logits=z), (x,), eps=1e-6,
                                 atol=1e-5 + 1e-8 * scale, rtol=1e-3)
    except GradcheckError as exc:
        raise AssertionError(str(exc).strip().splitlines()[0]) from None


@_property("bf16_autocast", "bf16 logits under CPU autocast give an fp32 loss equal to the fp32 "
           "computation on the same values, with a finite gradient",
           _cases(magnitude=50.0, dtype=np.float32))
def _bf16(spec, case):
    low = case.logits.bfloat16()
    x = low.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = case.call(spec.fn, logits=x)
    if out.dtype != torch.float32:
        raise AssertionError(f"loss dtype under bf16 autocast is {out.dtype}, expected float32")
    _assert_close(out.detach(), case.call(spec.fn, logits=low.float()), "bf16 loss",
                  rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(out.sum(), x)
    if not torch.isfinite(grad.float()).all():
        raise AssertionError(f"non-finite bf16 gradient at {_where(~torch.isfinite(grad.float()))}")


# --------------------------------------------------------------------------- claimed per loss


@_property("nonnegative", "loss >= 0 at every kept position", _cases())
def _nonnegative(spec, case):
    out = case.call(spec.fn)
    if (out < -1e-9).any():
        raise AssertionError(f"loss {out.min().item()!r} < 0 at {_where(out < -1e-9)}")


@st.composite
def _case_and_shift(draw, spec):
    case = draw(loss_cases(spec))
    B, T, _ = case.logits.shape
    shift = draw(logit_arrays((B, T, 1), magnitude=100.0), label="shift")
    return replace(case, aux={"shift": torch.from_numpy(shift)})


@_property("shift_invariant", "adding a constant to each row of logits leaves the loss unchanged",
           _case_and_shift)
def _shift_invariant(spec, case):
    _assert_close(case.call(spec.fn, logits=case.logits + case.aux["shift"]), case.call(spec.fn),
                  "loss after shift", rtol=1e-8, atol=1e-8)


@_property("minimal_at_perfect_prediction",
           "logits with the target 1000 above every other class are a global minimum", _cases())
def _minimal_at_perfect(spec, case):
    safe = torch.where(case.keep, case.targets, 0)
    perfect = 1e3 * F.one_hot(safe, case.logits.shape[-1]).to(case.logits.dtype)
    best, out = case.call(spec.fn, logits=perfect), case.call(spec.fn)
    if (best > out + 1e-9).any():
        i = (best > out + 1e-9).nonzero()[0]
        raise AssertionError(f"perfect prediction costs {best[tuple(i)].item()!r} but the drawn "
                             f"logits cost {out[tuple(i)].item()!r} at position {tuple(i.tolist())}")


@_property("zero_at_teacher", "loss is 0 when softmax(logits) equals the target distribution "
           "(teacher_probs, or the label-smoothed one-hot without it)", _cases())
def _zero_at_teacher(spec, case):
    safe = torch.where(case.keep, case.targets, 0)
    target = case.extras.get("teacher_probs")
    if target is None:
        target = smoothed_one_hot(safe, case.logits.shape[-1], case.hparams["smoothing"],
                                  case.logits.dtype)
    out = case.call(spec.fn, logits=target.log())
    _assert_close(out, torch.zeros_like(out), "loss at the teacher", rtol=0, atol=1e-9)


@_property("matches_reference", "value and gradient agree with the plain reference implementation",
           _cases())
def _matches_reference(spec, case):
    x = _jitter(case.logits)  # off ties, where sub-gradients may legitimately differ
    out, grad = _value_and_grad(spec.fn, case, logits=x)
    ref, ref_grad = _value_and_grad(spec.reference_impl, case, logits=x)
    _assert_close(out, ref, "loss vs reference", rtol=1e-7, atol=1e-9)
    _assert_close(grad, ref_grad, "gradient vs reference", rtol=1e-6, atol=1e-9)


@_property("neutral_hparams_give_cross_entropy",
           "with every hyperparameter at its neutral value the loss equals torch's cross-entropy",
           _cases(draw_hparams=False))
def _neutral(spec, case):
    neutral = {k: (h.neutral if h.neutral is not None else h.default) for k, h in spec.hparams.items()}
    ce = F.cross_entropy(case.logits.transpose(1, 2), case.targets, reduction="none",
                         ignore_index=case.ignore_index)
    _assert_close(case.call(spec.fn, **neutral), ce, "loss at neutral hyperparameters",
                  rtol=1e-9, atol=1e-9)


assert set(PROPERTIES) == set(KNOWN_PROPERTIES), "every named property needs an implementation"
