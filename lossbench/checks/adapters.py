"""Check a loss in the shape it has: real-world signatures behind lossbench's contract.

The properties speak one language: ``fn(logits (B, T, V), targets (B, T), *,
ignore_index, **hparams) -> (B, T)`` per-token values. Real losses return a mean,
take ``(N, V)`` logits, are ``nn.Module`` classes, have a fixed padding id, take
log-probabilities or teacher logits. :func:`function_spec` wraps such a callable
in an :class:`Adapter` that speaks the contract and returns a :class:`CheckSpec`
saying which properties apply and how to draw inputs for it.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from lossbench.losses import GENERIC_PROPERTIES, LossSpec, get_loss
from lossbench.losses.registry import HParam

from .strategies import IGNORE_INDICES

REDUCTIONS = ("none", "mean", "sum")
_TARGET_LIKE = re.compile(r"target|label|^y$|gold", re.IGNORECASE)
TEACHER_KINDS = ("probs", "logits")


class CheckTargetError(ValueError):
    """TARGET of `lossbench check`, or an option for it, does not fit: one line."""


@dataclass(frozen=True)
class CheckOptions:
    """How to call a function target; each field is a `lossbench check` option."""

    reduction: str = "none"  # --reduction: what the function returns
    flat: bool = False  # --flat: takes (N, V) logits and (N,) targets
    log_probs: bool = False  # --log-probs: takes log_softmax(logits)
    ignore_index: int | None = None  # --ignore-index: its fixed padding id
    teacher: str | None = None  # --teacher KIND[:PARAM]
    like: str | None = None  # --like NAME: check it as an implementation of NAME
    fixed: Mapping[str, Any] = field(default_factory=dict)  # --set NAME=VALUE
    hparam_names: Mapping[str, str] = field(default_factory=dict)  # --hparam-name NAME=PARAM

    def changed(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(CheckOptions(), f.name)}


FLAGS = {"reduction": "--reduction", "flat": "--flat", "log_probs": "--log-probs",
          "ignore_index": "--ignore-index", "teacher": "--teacher", "like": "--like",
          "fixed": "--set", "hparam_names": "--hparam-name"}


@dataclass(frozen=True)
class CheckSpec(LossSpec):
    """A loss under check. ``fn`` is always per-token (for a reduced loss, recovered by
    :meth:`Adapter.per_token`); the other fields tell the properties what applies."""

    reduction: str = "none"
    raw: Callable | None = None  # the reduced scalar, called like fn (reduced losses only)
    ignore_indices: tuple[int, ...] = IGNORE_INDICES  # (): it cannot ignore; all positions kept
    needs_teacher: bool = False  # every case carries teacher_probs
    source: str = ""  # Python that rebuilds this spec, for reproductions
    user_files: tuple[str, ...] = ()  # where the user's frames are, for tracebacks
    notes: tuple[str, ...] = ()  # how it is being called, printed before the results


@dataclass(frozen=True)
class _Signature:
    """Where lossbench's tensors and keywords go in the user's callable."""

    logits: str
    targets: str | None  # None: it takes no targets (a distillation loss)
    teacher: str | None
    positional: tuple[str, ...]  # slot names in call order, for positional-only callables
    by_keyword: bool
    routes: Mapping[str, str]  # keyword -> "call" or "ctor" (the constructor of a class)


class Adapter:
    """The user's callable behind lossbench's signature (see the module docstring)."""

    def __init__(self, target, sig: _Signature, opts: CheckOptions, teacher_kind: str | None,
                 hparam_params: Mapping[str, str | None], fixed: Mapping[str, Any]):
        self.target, self.sig, self.opts = target, sig, opts
        self.teacher_kind = teacher_kind
        self.hparam_params = dict(hparam_params)  # lossbench name -> its parameter (None: not passed)
        self.fixed = dict(fixed)  # keyword values that are not hyperparameters of --like NAME
        self.is_class = inspect.isclass(target)
        self.__name__ = getattr(target, "__name__", type(target).__name__)

    def variant(self, **changes) -> "Adapter":
        """The same callable under other options (diagnosis hints)."""
        return Adapter(self.target, self.sig, replace(self.opts, **changes), self.teacher_kind,
                       self.hparam_params, self.fixed)

    def invoke(self, logits, targets, *, ignore_index=-100, teacher_probs=None, **hparams):
        """Whatever the user's callable returns (the first element of a tuple)."""
        x = F.log_softmax(logits, dim=-1) if self.opts.log_probs else logits
        teacher = None
        if self.sig.teacher is not None:
            teacher = teacher_probs if self.teacher_kind == "probs" else teacher_probs.log()
        if self.opts.flat:
            V = x.shape[-1]
            x, targets = x.reshape(-1, V), targets.reshape(-1)
            teacher = None if teacher is None else teacher.reshape(-1, V)
        kw: dict[str, dict] = {"call": {}, "ctor": {}}
        for name, value in self.fixed.items():
            kw[self.sig.routes[name]][name] = value
        for name, value in hparams.items():
            param = self.hparam_params.get(name, name)
            if param is not None:
                kw[self.sig.routes[param]][param] = value
        if "ignore_index" in self.sig.routes:
            kw[self.sig.routes["ignore_index"]]["ignore_index"] = ignore_index
        fn = self.target
        if self.is_class:
            fn = self.target(**kw["ctor"])
            if isinstance(fn, torch.nn.Module) and x.device.type != "cpu":
                fn = fn.to(x.device)
        slots = {self.sig.logits: x, self.sig.targets: targets, self.sig.teacher: teacher}
        slots.pop(None, None)
        if self.sig.by_keyword:
            out = fn(**slots, **kw["call"])
        else:
            out = fn(*(slots[name] for name in self.sig.positional), **kw["call"])
        if isinstance(out, (tuple, list)) and out:
            out = out[0]  # fairseq-style (loss, nll_loss)
        return out

    def raw(self, logits, targets, **kwargs):
        """The reduced value as a 0-d tensor (a reduced loss's own return value)."""
        out = self.invoke(logits, targets, **kwargs)
        return out.reshape(()) if isinstance(out, torch.Tensor) and out.numel() == 1 else out

    def __call__(self, logits, targets, **kwargs):
        """Per-token values (B, T)."""
        if self.opts.reduction != "none":
            return self.per_token(logits, targets, **kwargs)
        out = self.invoke(logits, targets, **kwargs)
        if (self.opts.flat and isinstance(out, torch.Tensor) and out.dim() == 1
                and out.numel() == targets.numel()):
            out = out.reshape(targets.shape)
        return out

    def per_token(self, logits, targets, *, ignore_index=-100, teacher_probs=None, **hparams):
        """Per-token values of a reduced loss from its value on growing prefixes of each row:
        l[b, t] = S_b(t) - S_b(t - 1), with S_b(t) the loss summed over the first t + 1
        positions of row b (the sum, or the mean times the kept count). Exact whenever
        token t's loss depends on positions up to t only, as for every next-token loss.
        Rows are called one at a time: `row_independent` checks the batch as a whole."""
        keep = targets != ignore_index
        sums = []
        for b in range(targets.shape[0]):
            row = []
            for t in range(targets.shape[1]):
                n = int(keep[b, :t + 1].sum())
                if self.opts.reduction == "mean" and n == 0:
                    row.append(None)  # a mean over no token: nothing to call
                    continue
                out = self.raw(logits[b:b + 1, :t + 1], targets[b:b + 1, :t + 1],
                               ignore_index=ignore_index, **hparams,
                               teacher_probs=None if teacher_probs is None
                               else teacher_probs[b:b + 1, :t + 1])
                row.append(out * n if self.opts.reduction == "mean" else out)
            sums.append(row)
        made = [s for row in sums for s in row if s is not None]
        dtype = made[0].dtype if made else torch.promote_types(logits.dtype, torch.float32)
        zero = torch.zeros((), dtype=dtype, device=logits.device)
        sums = [[zero if s is None else s for s in row] for row in sums]
        return torch.stack([torch.stack([s - (row[t - 1] if t else zero) for t, s in enumerate(row)])
                            for row in sums])


# --------------------------------------------------------------------------- resolving


def _parameters(obj, label: str):
    """(call parameters, constructor parameters or None) of a function, class or instance."""
    try:
        if inspect.isclass(obj):
            method = obj.forward if issubclass(obj, torch.nn.Module) else obj.__call__
            if method is object.__call__ or method is type.__call__:
                raise CheckTargetError(f"{label}: its instances are not callable")
            call = list(inspect.signature(method).parameters.values())[1:]  # drop self
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


def _teacher_param(call, opts: CheckOptions, label: str):
    kind, _, param = opts.teacher.partition(":")
    if kind not in TEACHER_KINDS:
        raise CheckTargetError(f"--teacher: expected probs or logits[:PARAM], got {opts.teacher!r}")
    names = [p.name for p in call if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
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


def _like_hparams(like: LossSpec, route, opts: CheckOptions, label: str):
    """NAME's hyperparameters (fixed ones as one-point ranges) and where each goes."""
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
        elif route(param) is None:
            raise CheckTargetError(
                f"--like {like.name}: {label} takes no hyperparameter {param!r} "
                f"({like.name}'s hyperparameters: {names}); pass yours under "
                f"--hparam-name {name}=PARAM, or hold it with --set {name}=VALUE")
        hparams[name] = hp
        params[name] = param if route(param) is not None else None  # None: reference only
    return hparams, params


def _what_applies(like, opts: CheckOptions, targets_p, routes):
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
    properties = set(GENERIC_PROPERTIES)
    if like is not None:
        properties |= like.properties | {"matches_reference"}
        if any(like.hparams[k].neutral is not None for k in opts.fixed if k in like.hparams):
            properties.discard("neutral_hparams_give_cross_entropy")  # held off neutral
    if opts.reduction != "none":
        properties.add("reduction")
    if not ignore_indices:
        properties.discard("ignored_tokens_inert")
    return ignore_indices, properties, tuple(notes)


def function_spec(obj, label: str, opts: CheckOptions) -> CheckSpec:
    """The spec checking ``obj`` (a function, class or callable) called as ``opts`` say;
    CheckTargetError, one line, when they do not fit its signature."""
    if opts.reduction not in REDUCTIONS:
        raise CheckTargetError(f"--reduction: expected one of {', '.join(REDUCTIONS)}")
    call, ctor = _parameters(obj, label)
    like = None
    if opts.like is not None:
        try:
            like = get_loss(opts.like)
        except KeyError as exc:
            raise CheckTargetError(f"--like: {exc}") from None
        if opts.teacher and "teacher_probs" not in like.extra_inputs:
            raise CheckTargetError(f"--teacher: {like.name} takes no teacher")
    elif opts.hparam_names:
        raise CheckTargetError("--hparam-name: renames the hyperparameters of --like NAME; "
                               "give --like")
    kind, teacher = _teacher_param(call, opts, label) if opts.teacher else (None, None)
    positional = [p for p in call if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.name != teacher]
    # The second positional parameter takes the targets unless it has a default and a name
    # that is not target-like (kd(student_logits, teacher_logits, temperature=1.0)).
    second = positional[1] if len(positional) > 1 else None
    targets_p = second.name if second is not None and (
        second.default is second.empty or _TARGET_LIKE.search(second.name)) else None
    if not positional or (targets_p is None and not teacher):
        raise CheckTargetError(f"{label}: expected signature fn(logits, targets, *, "
                               f"ignore_index=-100, ...), got {label}{inspect.signature(obj)}")
    logits_p = positional[0].name
    slots = {logits_p, targets_p, teacher} - {None}
    route = _router(call, ctor, slots)

    hparams, hparam_params = _like_hparams(like, route, opts, label) if like else ({}, {})
    fixed = {k: v for k, v in opts.fixed.items() if k not in hparams}
    for name in fixed:
        if route(name) is None:
            raise CheckTargetError(f"--set {name}: {label} takes no parameter {name!r}")

    given = slots | set(fixed) | {p for p in hparam_params.values() if p} | {"ignore_index"}
    missing = [p.name for p in [*call, *(ctor or [])] if p.default is p.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in given]
    if missing:
        raise CheckTargetError(f"{label}: arguments {missing} have no default; give them "
                               f"with --set NAME=VALUE")
    routes = {n: route(n) for n in [*fixed, *(p for p in hparam_params.values() if p),
                                    "ignore_index"] if route(n) is not None}
    slot_order = tuple(p.name for p in call if p.name in slots)
    by_keyword = not any(p.kind == p.POSITIONAL_ONLY for p in call if p.name in slots)
    sig = _Signature(logits_p, targets_p, teacher, slot_order, by_keyword, routes)
    adapter = Adapter(obj, sig, opts, kind, hparam_params, fixed)

    ignore_indices, properties, notes = _what_applies(like, opts, targets_p, routes)
    changed = "".join(f", {k}={v!r}" for k, v in opts.changed().items()
                      if k not in ("fixed", "hparam_names") or v)
    try:
        source_file = inspect.getsourcefile(
            obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj))
    except TypeError:  # a builtin
        source_file = None
    return CheckSpec(
        name=label, fn=adapter, description=f"checked as {like.name}" if like else "user function",
        reference="", hparams=MappingProxyType(hparams), properties=frozenset(properties),
        extra_inputs=("teacher_probs",) if teacher else (),
        reference_impl=(like.reference_impl or like.fn) if like else None,
        origin=getattr(obj, "__module__", "?"), reduction=opts.reduction,
        raw=adapter.raw if opts.reduction != "none" else None, ignore_indices=ignore_indices,
        needs_teacher=teacher is not None, source=f"load_target({label!r}{changed})",
        user_files=(str(Path(source_file).resolve()),) if source_file else (),
        notes=notes)
