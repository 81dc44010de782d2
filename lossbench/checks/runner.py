"""Run named properties against a loss and collect readable results."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from hypothesis import HealthCheck, given, settings

from lossbench.losses import GENERIC_PROPERTIES, LossSpec, PluginError, get_loss, list_losses
from lossbench.losses.registry import import_target

from .properties import PROPERTIES
from .strategies import LossCase

# "dev": quick local feedback; "ci": more examples, derandomized so CI is reproducible.
_COMMON = dict(deadline=None, print_blob=False, report_multiple_bugs=False,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=40, **_COMMON)
settings.register_profile("ci", max_examples=150, derandomize=True, **_COMMON)


class CheckTargetError(ValueError):
    """TARGET of `lossbench check` cannot be resolved to a loss."""


@dataclass(frozen=True)
class PropertyResult:
    loss: str
    prop: str
    passed: bool
    message: str = ""  # what broke
    counterexample: str = ""  # the shrunk failing input as runnable Python (LossCase repr)
    case: LossCase | None = None


def run_property(spec: LossSpec, prop_name: str, *, profile: str = "dev",
                 max_examples: int | None = None, seed: int | None = None) -> PropertyResult:
    """Search for a counterexample to one property; never raises for a failing loss."""
    prop = PROPERTIES[prop_name]
    overrides = {"database": None}
    if max_examples is not None:
        overrides["max_examples"] = max_examples
    if seed is not None:
        overrides["derandomize"] = False

    last: list[LossCase] = []

    @settings(settings.get_profile(profile), **overrides)
    @given(case=prop.strategy(spec))
    def search(case):
        last[:] = [case]  # hypothesis replays the shrunk failing example last
        prop.check(spec, case)

    if seed is not None:
        from hypothesis import seed as hypothesis_seed
        search = hypothesis_seed(seed)(search)
    # Inputs are tiny: intra-op threads only add overhead (fp64 log_softmax on such
    # tensors is orders of magnitude slower with 2 threads than with 1).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        search()
    except Exception as exc:  # the loss under test may raise anything
        message = str(exc) if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {exc}"
        case = last[0] if last else None
        return PropertyResult(spec.name, prop_name, False, message.strip(),
                              repr(case) if case is not None else "", case)
    finally:
        torch.set_num_threads(threads)
    return PropertyResult(spec.name, prop_name, True)


def check_loss(spec: LossSpec, **kwargs) -> list[PropertyResult]:
    """Every property the spec claims, generic ones first."""
    ordered = [p for p in GENERIC_PROPERTIES if p in spec.properties]
    ordered += sorted(spec.properties - set(GENERIC_PROPERTIES))
    return [run_property(spec, p, **kwargs) for p in ordered]


def _load_function(target: str) -> Callable:
    where, _, attr = target.rpartition(":")
    try:
        module = import_target(where)
    except PluginError as exc:
        raise CheckTargetError(str(exc)) from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise CheckTargetError(f"{where} has no function {attr!r}")
    if not callable(fn):
        raise CheckTargetError(f"{where}:{attr} is not callable")
    return fn


def _spec_for_function(fn: Callable, label: str) -> LossSpec:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        raise CheckTargetError(f"{label}: cannot read its signature") from None
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    if len(positional) < 2 or ("ignore_index" not in params and not has_var_kw):
        raise CheckTargetError(f"{label}: expected signature fn(logits, targets, *, ignore_index=-100, ...)")
    required = [p.name for p in positional[2:] if p.default is p.empty]
    required += [p.name for p in params.values() if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    if required:
        raise CheckTargetError(f"{label}: arguments {required} have no default")
    return LossSpec(name=label, fn=fn, description="user function", reference="",
                    origin=getattr(fn, "__module__", "?"))


def resolve_targets(target: str) -> list[LossSpec]:
    """'all', a registered name, 'path/file.py:function' or 'module:function'."""
    if target == "all":
        return list_losses()
    if ":" in target:
        return [_spec_for_function(_load_function(target), target)]
    try:
        return [get_loss(target)]
    except KeyError as exc:
        raise CheckTargetError(str(exc)) from None
