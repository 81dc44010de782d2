"""How to call a user's loss: which parameter takes the logits, the targets (if any), the
teacher, each keyword, and which properties then apply (:func:`function_spec`).

The targets are the first positional parameter after the logits that nothing else accounts
for (``--teacher``, ``--set``, ``--range``, ``--vocab-arg``, a ``--like`` hyperparameter): a
distillation loss ``kd(student, teacher, temperature)`` checked with ``--teacher logits:teacher
--set temperature=4`` takes no targets. ``--targets NAME`` names them, ``--targets none`` says
there are none.
"""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from types import MappingProxyType

import torch

from lossbench.losses import GENERIC_PROPERTIES, LossSpec, get_loss
from lossbench.losses.registry import HParam

from .adapters import (
    REDUCTIONS,
    TEACHER_KINDS,
    Adapter,
    CheckOptions,
    CheckSpec,
    CheckTargetError,
    Signature,
)
from .strategies import IGNORE_INDICES

_TARGET_LIKE = re.compile(r"target|label|^y$|gold|tgt", re.IGNORECASE)
_VARIADIC = ("VAR_POSITIONAL", "VAR_KEYWORD")


def _parameters(obj, label: str, method: str | None = None):
    """(call parameters, constructor parameters or None) of a function, class (its forward,
    __call__ or ``method``) or instance."""
    try:
        if inspect.isclass(obj):
            if method is not None:
                entry = getattr(obj, method)
            else:
                entry = obj.forward if issubclass(obj, torch.nn.Module) else obj.__call__
                if entry is object.__call__ or entry is type.__call__:
                    raise CheckTargetError(f"{label}: its instances are not callable; name "
                                           f"the method that computes the loss: {label}.METHOD")
            call = list(inspect.signature(entry).parameters.values())[1:]  # drop self
            return call, list(inspect.signature(obj).parameters.values())
        target = obj.forward if isinstance(obj, torch.nn.Module) else obj
        return list(inspect.signature(target).parameters.values()), None
    except (TypeError, ValueError):
        raise CheckTargetError(f"{label}: cannot read its signature") from None


def _router(call, ctor, slots):
    """name -> "call" | "ctor" | None: where a keyword argument can go."""
    def takes(params, name):
        return any(p.name == name and p.kind not in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL,
                                                      p.VAR_KEYWORD) for p in params)

    def var_kw(params):
        return params is not None and any(p.kind == p.VAR_KEYWORD for p in params)

    def route(name):
        if name not in slots and takes(call, name):
            return "call"
        if ctor is not None and takes(ctor, name):
            return "ctor"
        if var_kw(ctor):
            return "ctor"
        return "call" if var_kw(call) else None
    return route


def _names(params) -> list[str]:
    return [p.name for p in params if p.kind.name not in _VARIADIC]


def _teacher_param(call, opts: CheckOptions, label: str):
    kind, _, param = opts.teacher.partition(":")
    if kind not in TEACHER_KINDS:
        raise CheckTargetError(f"--teacher: expected probs or logits[:PARAM], got {opts.teacher!r}")
    names = _names(call)
    if not param:
        guesses = [n for n in names if "teacher" in n.lower()]
        if len(guesses) != 1:
            raise CheckTargetError(f"--teacher {kind}: which parameter of {label} takes the "
                                   f"teacher? Name it: --teacher {kind}:PARAM (parameters: "
                                   f"{', '.join(names)})")
        param = guesses[0]
    elif param not in names:
        raise CheckTargetError(f"--teacher: {label} has no parameter {param!r} "
                               f"(parameters: {', '.join(names)})")
    return kind, param


def _accounted(opts: CheckOptions, like: LossSpec | None, teacher: str | None) -> set[str]:
    """Parameters that options give a value: they cannot be the targets."""
    names = {teacher, opts.vocab_arg, "ignore_index", *opts.fixed, *opts.ranges,
             *opts.hparam_names.values()}
    if like is not None:
        names |= {opts.hparam_names.get(n, n) for n in like.hparams}
    return names - {None}


def _slots(call, opts: CheckOptions, like, teacher: str | None, label: str, obj):
    """(logits parameter, targets parameter or None)."""
    names = _names(call)
    positional = [p for p in call if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.name != teacher]
    if opts.targets not in (None, "none") and opts.targets not in names:
        raise CheckTargetError(f"--targets: {label} has no parameter {opts.targets!r} "
                               f"(parameters: {', '.join(names)})")
    explicit = opts.targets if opts.targets not in (None, "none") else None
    free = [p for p in positional if p.name != explicit
            and p.name not in _accounted(opts, like, teacher)]
    if not free:
        raise CheckTargetError(f"{label}: no parameter left for the logits, got "
                               f"{label}{inspect.signature(obj)}")
    logits = free[0].name
    if opts.targets is not None:
        return logits, explicit
    second = free[1] if len(free) > 1 else None
    if second is None or (second.default is not second.empty
                          and not _TARGET_LIKE.search(second.name)):
        if teacher is None:
            raise CheckTargetError(f"{label}: expected signature fn(logits, targets, *, "
                                   f"ignore_index=-100, ...), got {label}"
                                   f"{inspect.signature(obj)} (a loss without targets: "
                                   f"--targets none)")
        return logits, None  # kd(student, teacher, temperature=1.0)
    if teacher is not None and not _TARGET_LIKE.search(second.name):
        raise CheckTargetError(
            f"{label}: does {second.name!r} take the targets? Name them with --targets NAME, "
            f"or pass --targets none and give {second.name} with --set {second.name}=VALUE "
            f"(or draw it with --range {second.name}=LO:HI)")
    return logits, second.name


def _narrowed(hp: HParam, name: str, lo: float, hi: float, label: str) -> HParam:
    if not (hp.low <= lo <= hi <= hp.high):
        raise CheckTargetError(f"--range {name}={lo:g}:{hi:g}: outside {label}'s range "
                               f"[{hp.low:g}, {hp.high:g}] (or LO > HI)")
    default = min(max(hp.default, lo), hi)
    neutral = hp.neutral if hp.neutral is not None and lo <= hp.neutral <= hi else None
    return HParam(default, lo, hi, hp.doc, neutral=neutral, integer=hp.integer)


def _like_hparams(like: LossSpec, route, opts: CheckOptions, label: str):
    """NAME's hyperparameters (fixed ones as one-point ranges, --range ones narrowed) and
    where each goes."""
    names = ", ".join(like.hparams) or "none"
    for name in [*opts.hparam_names, *(k for k in opts.fixed if k in like.hparams)]:
        if name not in like.hparams:
            raise CheckTargetError(f"--hparam-name {name}: {like.name} has no hyperparameter "
                                   f"{name!r} ({like.name}'s hyperparameters: {names})")
    hparams, params = {}, {}
    for name, hp in like.hparams.items():
        param = opts.hparam_names.get(name, name)
        if name in opts.fixed:
            value = opts.fixed[name]
            if (msg := hp.validate(name, value)) is not None:
                raise CheckTargetError(f"--set {msg}")
            hp = HParam(value, value, value, hp.doc, integer=hp.integer)
        elif name in opts.ranges:
            hp = _narrowed(hp, name, *opts.ranges[name], like.name)
        elif route(param) is None:
            raise CheckTargetError(
                f"--like {like.name}: {label} takes no hyperparameter {param!r} "
                f"({like.name}'s hyperparameters: {names}); pass yours under "
                f"--hparam-name {name}=PARAM, or hold it with --set {name}=VALUE")
        hparams[name] = hp
        params[name] = param if route(param) is not None else None  # None: reference only
    return hparams, params


def _own_ranges(opts: CheckOptions, route, params, taken: set[str], label: str):
    """--range on the function's own parameters: drawn hyperparameters of its own."""
    hparams = {}
    for name, (lo, hi) in opts.ranges.items():
        if name in taken:
            continue
        if name in opts.fixed:
            raise CheckTargetError(f"--range {name}: also held with --set {name}; give one")
        if route(name) is None:
            raise CheckTargetError(f"--range {name}: {label} takes no parameter {name!r}")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise CheckTargetError(f"--range {name}={lo:g}:{hi:g}: expected finite LO <= HI")
        default = next((p.default for p in params if p.name == name), None)
        integer = float(lo).is_integer() and float(hi).is_integer() and \
            (default is None or isinstance(default, int) or default is inspect.Parameter.empty)
        if not isinstance(default, (int, float)) or isinstance(default, bool) \
                or not lo <= default <= hi:
            default = lo
        if integer:
            default, lo, hi = int(default), int(lo), int(hi)
        hparams[name] = HParam(default, lo, hi, "--range", integer=integer)
    return hparams


def _what_applies(like, opts: CheckOptions, targets_p, routes, per_token: str):
    """(ignore ids to draw, properties, notes) for a function under these options."""
    notes = []
    if targets_p is None:
        ignore_indices = ()
        notes.append("takes no targets: every position counts")
    elif opts.ignore_index is not None:
        ignore_indices = (opts.ignore_index,)
    elif "ignore_index" in routes:
        ignore_indices = IGNORE_INDICES
    else:
        ignore_indices = ()
        notes.append("takes no ignore_index: checked with every position kept "
                     "(a fixed padding id? pass --ignore-index K)")
    properties = set(GENERIC_PROPERTIES) | {"inputs_unchanged"}
    if like is not None:
        properties |= like.properties | {"matches_reference"}
        if any(like.hparams[k].neutral is not None for k in opts.fixed if k in like.hparams):
            properties.discard("neutral_hparams_give_cross_entropy")  # held off neutral
    if opts.reduction != "none" and (per_token == "prefix" or like is not None):
        properties.add("reduction")  # on a total: only against --like's reference
    if not ignore_indices:
        properties.discard("ignored_tokens_inert")
    return ignore_indices, properties, notes


def _source_file(obj) -> tuple[str, ...]:
    try:
        path = inspect.getsourcefile(obj if inspect.isclass(obj) or inspect.isfunction(obj)
                                     else type(obj))
    except TypeError:  # a builtin
        return ()
    return (str(Path(path).resolve()),) if path else ()


def function_spec(obj, label: str, opts: CheckOptions, method: str | None = None) -> CheckSpec:
    """The spec checking ``obj`` (a function, class or callable; ``method``: the entry of a
    criterion class) called as ``opts`` say; CheckTargetError, one line, when they do not fit."""
    if opts.reduction not in REDUCTIONS:
        raise CheckTargetError(f"--reduction: expected one of {', '.join(REDUCTIONS)}")
    call, ctor = _parameters(obj, label, method)
    like = None
    if opts.like is not None:
        try:
            like = get_loss(opts.like)
        except KeyError as exc:
            raise CheckTargetError(f"--like: {exc}") from None
        if like.needs_hidden:  # an adapter has no hidden-states parameter to draw for
            raise CheckTargetError(
                f"--like {like.name}: {like.name} needs the model's hidden states "
                f"(hidden_states, B x T x C), which --like cannot pass to a function; register "
                f"yours with needs_hidden=True (--plugin) and check it by name")
        if opts.teacher and "teacher_probs" not in like.extra_inputs:
            raise CheckTargetError(f"--teacher: {like.name} takes no teacher")
    elif opts.hparam_names:
        raise CheckTargetError("--hparam-name: renames the hyperparameters of --like NAME; "
                               "give --like")
    kind, teacher = _teacher_param(call, opts, label) if opts.teacher else (None, None)
    logits_p, targets_p = _slots(call, opts, like, teacher, label, obj)
    slots = {logits_p, targets_p, teacher} - {None}
    route = _router(call, ctor, slots)
    if opts.vocab_arg is not None and route(opts.vocab_arg) is None:
        raise CheckTargetError(f"--vocab-arg: {label} takes no parameter {opts.vocab_arg!r}")
    if opts.targets_key and targets_p is None:
        raise CheckTargetError("--targets-key: the function takes no targets")

    hparams, hparam_params = _like_hparams(like, route, opts, label) if like else ({}, {})
    own = _own_ranges(opts, route, [*call, *(ctor or [])], set(hparams), label)
    hparams |= own
    hparam_params |= {name: name for name in own}
    fixed = {k: v for k, v in opts.fixed.items() if k not in hparams}
    for name in fixed:
        if route(name) is None:
            raise CheckTargetError(f"--set {name}: {label} takes no parameter {name!r}")

    given = slots | set(fixed) | {p for p in hparam_params.values() if p} | \
        {"ignore_index", opts.vocab_arg}
    missing = [p.name for p in [*call, *(ctor or [])] if p.default is p.empty
               and p.kind.name not in _VARIADIC and p.name not in given]
    if missing:
        raise CheckTargetError(f"{label}: arguments {missing} have no default; give them "
                               f"with --set NAME=VALUE (--vocab-arg NAME for the vocabulary "
                               f"size, --targets none for a loss without targets)")
    routes = {n: route(n) for n in [*fixed, *(p for p in hparam_params.values() if p),
                                    "ignore_index", opts.vocab_arg] if n and route(n) is not None}
    slot_order = tuple(p.name for p in call if p.name in slots)
    by_keyword = not any(p.kind == p.POSITIONAL_ONLY for p in call if p.name in slots)
    sig = Signature(logits_p, targets_p, teacher, slot_order, by_keyword, routes, method)
    adapter = Adapter(obj, sig, opts, kind, hparam_params, fixed)
    notes = []
    per_token = "total" if adapter.opts.non_causal else "prefix"

    ignore_indices, properties, more = _what_applies(like, opts, targets_p, routes, per_token)
    if per_token == "total" and like is None and opts.reduction != "none":
        more.append("reduction: not checked (no per-token values; --like NAME compares the "
                    "total with NAME's)")
    changed = "".join(f", {k}={v!r}" for k, v in opts.changed().items()
                      if k not in ("fixed", "hparam_names", "ranges") or v)
    return CheckSpec(
        name=label, fn=adapter, description=f"checked as {like.name}" if like else "user function",
        reference="", hparams=MappingProxyType(hparams), properties=frozenset(properties),
        extra_inputs=("teacher_probs",) if teacher else (),
        reference_impl=(like.reference_impl or like.fn) if like else None,
        origin=getattr(obj, "__module__", "?"), reduction=opts.reduction,
        raw=adapter.raw if opts.reduction != "none" else None, ignore_indices=ignore_indices,
        needs_teacher=teacher is not None, per_token=per_token, chunk=opts.chunk,
        own_hparams=tuple(own),
        source=f"load_target({label!r}{changed})", user_files=_source_file(obj),
        notes=tuple(notes + more))

