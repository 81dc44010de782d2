"""Run named properties against a loss and collect readable results.

A failing loss never raises here: a property failure, an exception inside the loss
(kept with the loss's own stack frames) and the warnings it emitted all come back in
a :class:`PropertyResult`, with Python that reproduces the failure.
"""

from __future__ import annotations

import inspect
import math
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from hypothesis import Phase, given, settings, target

from lossbench.losses import GENERIC_PROPERTIES, LossSpec

from . import hypothesis_settings  # noqa: F401  the "dev" and "ci" settings profiles
from .adapters import Adapter, CheckTargetError
from .base import returned, take_notes, take_score
from .properties import PROPERTIES
from .recovery import causality_violation
from .strategies import LossCase, hidden_for, plan_for, shape_plan
from .targets import load_target, resolve_targets

__all__ = ["CheckTargetError", "Diagnosis", "PropertyResult", "check_loss", "diagnose",
           "load_target", "resolve_targets", "run_property"]

_CHECKS_DIR = str(Path(__file__).resolve().parent)
_HYPOTHESIS_DIR = str(Path(inspect.getfile(settings)).resolve().parent)


@dataclass(frozen=True)
class PropertyResult:
    loss: str
    prop: str
    passed: bool
    message: str = ""  # what broke
    counterexample: str = ""  # the shrunk failing input as runnable Python (LossCase repr)
    case: LossCase | None = None
    warning: str = ""  # passed with a caveat (bf16: a small error)
    error: str = ""  # the loss raised: the exception with the loss's own stack frames
    reproduction: str = ""  # runnable Python that re-raises this failure
    warnings: tuple[tuple[str, int], ...] = ()  # (warning, count) the loss emitted

    @property
    def status(self) -> str:
        return "FAIL" if not self.passed else "warn" if self.warning else "pass"


def _user_files(spec) -> set[str]:
    files = set(getattr(spec, "user_files", ()))
    try:
        files.add(str(Path(inspect.getsourcefile(spec.fn)).resolve()))
    except TypeError:
        pass
    return files


def _ours(filename: str) -> bool:
    path = str(Path(filename).resolve())
    return path.startswith(_CHECKS_DIR) or path.startswith(_HYPOTHESIS_DIR)


def _user_frames(exc: BaseException, files: set[str]):
    """The loss's own frames (the last few outside lossbench's checks and hypothesis when
    none is in the loss's file)."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if str(Path(f.filename).resolve()) in files]
    return mine or [f for f in frames if not _ours(f.filename)][-3:]


def user_traceback(exc: BaseException, files: set[str]) -> str:
    # not format_exception_only: it appends the notes hypothesis attaches (its own report)
    text = str(exc).strip()
    return ("".join(traceback.format_list(_user_frames(exc, files)))
            + f"{type(exc).__name__}{': ' + text if text else ''}").rstrip()


def raised_line(exc: BaseException, files: set[str]) -> str:
    """'raised ValueError: message (file.py:12)', one line."""
    frames = _user_frames(exc, files)
    at = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = str(exc).strip().splitlines()
    return f"raised {type(exc).__name__}{': ' + text[0] if text else ''}{at}"


def _raised_by_check(exc: BaseException) -> bool:
    """An AssertionError from a property's own check, not an assert in the loss."""
    frames = traceback.extract_tb(exc.__traceback__)
    return isinstance(exc, AssertionError) and bool(frames) and _ours(frames[-1].filename)


def _collapse(caught) -> tuple[tuple[str, int], ...]:
    """One line per distinct warning the loss emitted, with how often."""
    lines = Counter()
    for w in caught:
        if _ours(w.filename):
            continue
        first = str(w.message).strip().splitlines()[0] if str(w.message).strip() else ""
        lines[f"{w.category.__name__}: {first} ({Path(w.filename).name}:{w.lineno})"] += 1
    return tuple(lines.most_common())


def reproduction(spec, prop: str, case: LossCase, source: str | None = None) -> str:
    source = source or getattr(spec, "source", "") or f"load_target({spec.name!r})"
    names = "PROPERTIES, LossCase, load_target" + (", seeded_tensors" if case.recipe else "")
    return "\n".join(["import torch", f"from lossbench.checks import {names}",
                      f"spec = {source}", f"case = {case!r}",
                      f"PROPERTIES[{prop!r}].check(spec, case)  # raises the failure above"])


def _steer(score: float | None, label: str) -> None:
    """Point the search at larger violations (hypothesis.target)."""
    if score is not None and math.isfinite(score):
        target(score, label=label)


def _size(case: LossCase) -> tuple:
    return (case.logits.numel(), float(case.logits.detach().abs().sum()))


def _telling(failing: list[tuple[float, LossCase]], shrunk: LossCase | None) -> LossCase | None:
    """The counterexample to print: hypothesis' shrunk one, unless shrinking lost the size of
    the violation (a gradient of 1e-10 at all-zero logits reads as rounding): then the
    smallest failing example whose violation, relative to the loss's scale, is at least half
    the largest seen."""
    if shrunk is None or not failing:
        return shrunk
    best = max(score for score, _ in failing)
    mine = next((score for score, case in reversed(failing) if case is shrunk), None)
    if mine is None or mine >= 0.1 * best:
        return shrunk
    return min((case for score, case in failing if score >= 0.5 * best), key=_size)


def _search(spec, prop, profile: str, overrides: dict, seed: int | None, plan):
    """One hypothesis search: (the exception it ended with or None, the last example, the
    failing examples with their violation scores)."""
    last: list[LossCase] = []
    failing: list[tuple[float, LossCase]] = []

    @settings(settings.get_profile(profile), **overrides)
    @given(case=prop.strategy(spec))
    def search(case):
        last[:] = [case]  # hypothesis replays the shrunk failing example last
        take_score()
        try:
            prop.check(spec, case)
        except AssertionError:
            score = take_score()
            if score is not None:
                failing.append((score, case))
            _steer(score, prop.name)
            raise
        _steer(take_score(), prop.name)

    if seed is not None:
        from hypothesis import seed as hypothesis_seed
        search = hypothesis_seed(seed)(search)
    with shape_plan(plan):
        try:
            search()
        except Exception as exc:  # noqa: BLE001  the loss under test may raise anything
            return exc, (last[0] if last else None), failing
    return None, None, failing


def run_property(spec: LossSpec, prop_name: str, *, profile: str = "dev",
                 max_examples: int | None = None, seed: int | None = None,
                 source: str | None = None, shrink: bool = True) -> PropertyResult:
    """Search for a counterexample to one property; never raises for a failing loss.
    Small inputs first; when they pass, a shorter search on long and wide inputs
    (:class:`~.strategies.ShapePlan`). ``source``: Python that rebuilds ``spec``, for the
    reproduction. ``shrink=False`` reports the first failing example as found (faster, for
    verdict-only callers)."""
    prop = PROPERTIES[prop_name]
    overrides = {"database": None}
    if not shrink:
        overrides["phases"] = [Phase.explicit, Phase.reuse, Phase.generate]
    if max_examples is not None:
        overrides["max_examples"] = max_examples
    if seed is not None:
        overrides["derandomize"] = False
    n = overrides.get("max_examples", settings.get_profile(profile).max_examples)
    searches = [(overrides, None)]
    if prop.long_shapes:
        searches.append(({**overrides, "max_examples": max(4, n // 4)},
                         plan_for(profile, getattr(spec, "chunk", None))))
    # Inputs are tiny: intra-op threads only add overhead (fp64 log_softmax on such
    # tensors is orders of magnitude slower with 2 threads than with 1).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    take_notes()
    result = PropertyResult(spec.name, prop_name, True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for settings_, plan in searches:
                exc, case, failing = _search(spec, prop, profile, settings_, seed, plan)
                if exc is not None:
                    result = _failure(spec, prop, exc, case, failing, source)
                    break
        finally:
            torch.set_num_threads(threads)
    return replace(result, warning=take_notes() if result.passed else "",
                   warnings=_collapse(caught))


def _failure(spec, prop, exc, case, failing, source) -> PropertyResult:
    if _raised_by_check(exc):
        message, error = str(exc), ""
        chosen = _telling(failing, case)
        if chosen is not case:
            try:
                prop.check(spec, chosen)
            except AssertionError as again:
                case, message = chosen, str(again)
    else:
        message = raised_line(exc, _user_files(spec))
        error = user_traceback(exc, _user_files(spec))
    return PropertyResult(spec.name, prop.name, False, message.strip(),
                          repr(case) if case is not None else "", case, error=error,
                          reproduction=reproduction(spec, prop.name, case, source) if case else "")


ORDER = ("inputs_unchanged", *GENERIC_PROPERTIES, "matches_reference", "reduction")


def ordered_properties(spec: LossSpec) -> list[str]:
    """inputs_unchanged (every loss), the generic ones in their documented order, a
    reference mismatch before a reduction one (a wrong value also breaks the reduction),
    then the rest by name."""
    claimed = set(spec.properties) | {"inputs_unchanged"}
    first = [p for p in ORDER if p in claimed]
    return first + sorted(claimed - set(first))


def check_loss(spec: LossSpec, **kwargs) -> list[PropertyResult]:
    """Every property the spec claims, generic ones first."""
    return [run_property(spec, p, **kwargs) for p in ordered_properties(spec)]


# --------------------------------------------------------------------------- diagnosis


@dataclass(frozen=True)
class Diagnosis:
    """Why no property can run on a loss: one line, and the loss's frames if it raised."""

    message: str
    detail: str = ""


def _plain_case(spec, ignore: int | None) -> LossCase:
    """2x3 positions, 5 classes, float64; the last position of row 0 ignored with ``ignore``."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    targets = torch.tensor([[1, 4, 2 if ignore is None else ignore], [0, 2, 3]])
    extras = {}
    if getattr(spec, "needs_teacher", False):
        extras["teacher_probs"] = torch.randn(2, 3, 5, generator=g, dtype=torch.float64).softmax(-1)
    extras.update(hidden_for(spec, 2, 3, seed=1))
    return LossCase(logits, targets, -100 if ignore is None else ignore, spec.defaults(), extras)


def _shape_problem(spec, out, case) -> str | None:
    B, T = case.targets.shape
    if not isinstance(out, torch.Tensor):
        return f"returns {type(out).__name__}, expected a tensor"
    if getattr(spec, "reduction", "none") != "none":
        if out.dim():
            return (f"--reduction {spec.reduction}: expected a scalar, got shape "
                    f"{tuple(out.shape)}: it looks per-token; drop --reduction")
    elif out.shape != (B, T):
        if out.numel() == 1:
            return "looks mean-reduced: return per-token values, or pass --reduction mean"
        if out.shape == (B * T,):
            return (f"returns shape {tuple(out.shape)} for targets ({B}, {T}): looks flattened: "
                    f"return (B, T), or pass --flat if it takes (N, V) logits")
        return f"returns shape {tuple(out.shape)}, expected per-token values ({B}, {T})"
    if not out.is_floating_point():
        return f"returns {out.dtype}, expected a float tensor"
    return None


def _flat_hint(spec, case) -> str:
    """When a loss raises on (B, T, V) input, whether it works with --flat toggled."""
    adapter = spec.fn
    if not isinstance(adapter, Adapter):
        return ""
    other = adapter.variant(flat=not adapter.opts.flat)
    try:
        (other.raw if adapter.opts.reduction != "none" else other)(
            case.logits, case.targets, ignore_index=case.ignore_index, **case.hparams,
            **case.extras)
    except Exception:
        return ""
    return ("; it runs on (N, V) logits and (N,) targets: pass --flat" if other.opts.flat
            else "; it runs on (B, T, V) logits: drop --flat")


def _some_ids(spec, errors: dict, ran: list, files) -> Diagnosis:
    """The loss raises for some of the ignore ids drawn, not for others."""
    bad = list(errors)
    exc = errors[bad[0]]
    also = f" (and {', '.join(map(str, bad[1:]))})" if bad[1:] else ""
    good = ", ".join(str(i) for i, _, _ in ran)
    fix = (f"; it honours only some padding ids: check it with the one your data uses, "
           f"--ignore-index K (K = {ran[0][0]} runs)" if isinstance(spec.fn, Adapter) else "")
    return Diagnosis(f"{raised_line(exc, files)} with ignore_index={bad[0]}{also} on a plain "
                     f"input, but runs with ignore_index={good}{fix}", user_traceback(exc, files))


def _range_ends(spec, case, files) -> Diagnosis | None:
    """Does it take the whole range of each drawn hyperparameter (--like NAME's, --range's)?"""
    for name, hp in spec.hparams.items():
        for value in sorted({hp.low, hp.high} - {hp.default}):
            try:
                case.call(returned(spec), **{name: value})
            except Exception as exc:
                where = "--range" if hp.doc == "--range" else spec.description.split()[-1]
                return Diagnosis(
                    f"{raised_line(exc, files)} at {name}={value:g}, in the range "
                    f"[{hp.low:g}, {hp.high:g}] of {where}: narrow it with --range "
                    f"{name}=LO:HI, or hold it with --set {name}=VALUE", user_traceback(exc, files))
    return None


def diagnose(spec: LossSpec) -> Diagnosis | None:
    """Call the loss on a plain input (2x3 positions, 5 classes, float64), once per ignore id
    it will be drawn with. An exception or a return value that would fail every property
    stops the run with one message instead of a cascade of failures."""
    files = _user_files(spec)
    errors, ran = {}, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its warnings are reported by the properties
        for ignore in getattr(spec, "ignore_indices", (-100,)) or (None,):
            case = _plain_case(spec, ignore)
            try:
                ran.append((ignore, case, case.call(returned(spec))))
            except Exception as exc:  # noqa: BLE001  the loss under test may raise anything
                errors[ignore] = exc
        if not ran:
            exc, case = next(iter(errors.values())), _plain_case(spec, next(iter(errors)))
            return Diagnosis(f"{raised_line(exc, files)} on a plain input (logits (2, 3, 5), "
                             f"targets (2, 3)){_flat_hint(spec, case)}",
                             user_traceback(exc, files))
        if errors:
            return _some_ids(spec, errors, ran, files)
        _, case, out = ran[0]
        problem = _shape_problem(spec, out, case)
        if problem:
            return Diagnosis(problem)
        if isinstance(spec.fn, Adapter):
            return _range_ends(spec, case, files) or _not_causal(spec)
    return None


def _not_causal(spec) -> Diagnosis | None:
    """A reduced loss whose per-token values its prefixes do not give: ask which it is."""
    adapter = spec.fn
    if adapter.opts.reduction == "none" or adapter.opts.non_causal:
        return None
    found = causality_violation(adapter.raw, adapter.opts.reduction, spec.defaults(),
                                spec.needs_teacher)
    if not found:
        return None
    flat = "" if adapter.opts.flat else (
        "; or, if it takes (N, V) logits, pass --flat" if causality_violation(
            adapter.variant(flat=True).raw, adapter.opts.reduction, spec.defaults(),
            spec.needs_teacher) is None else "")
    return Diagnosis(f"--reduction {adapter.opts.reduction}: the loss at a position depends on "
                     f"later positions ({found}), so its per-token values cannot be recovered "
                     f"from row prefixes. A sequence-level loss? pass --non-causal to check its "
                     f"total and its gradient at each position{flat}")


def same_error(a: PropertyResult, b: PropertyResult) -> bool:
    return bool(a.error) and a.error.splitlines()[-1:] == b.error.splitlines()[-1:] \
        and a.message == b.message
