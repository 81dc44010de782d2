"""Check a loss in the shape it has: real-world signatures behind lossbench's contract.

The properties speak one language: ``fn(logits (B, T, V), targets (B, T), *,
ignore_index, **hparams) -> (B, T)`` per-token values. Real losses return a mean,
take ``(N, V)`` logits, are ``nn.Module`` classes or criterion objects, take the model's
output and the batch as dicts, have a fixed padding id, take log-probabilities, teacher
logits and no targets, or need the vocabulary size in their constructor. An :class:`Adapter`
(built by :func:`~.signature.function_spec`) calls such a callable as the contract says;
a :class:`CheckSpec` says which properties apply and how to draw inputs for it.

Every call hands the callable copies of its tensors, so a loss that modifies its inputs in
place cannot corrupt a drawn case (``inputs_unchanged`` reports it, once).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn.functional as F

from lossbench.losses import LossSpec

from .recovery import per_token_from_prefixes
from .strategies import IGNORE_INDICES

REDUCTIONS = ("none", "mean", "sum")
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
    targets: str | None = None  # --targets NAME|none: the targets parameter, or no targets
    logits_key: str | None = None  # --logits-key KEY: logits inside a model-output mapping
    targets_key: str | None = None  # --targets-key KEY: targets inside a batch dict
    vocab_arg: str | None = None  # --vocab-arg NAME: an argument that must equal V
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # --range NAME=LO:HI
    chunk: int | None = None  # --chunk N: probe shapes around a chunk size
    non_causal: bool = False  # --non-causal: a reduced loss checked on its total

    def changed(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(CheckOptions(), f.name)}


FLAGS = {"reduction": "--reduction", "flat": "--flat", "log_probs": "--log-probs",
         "ignore_index": "--ignore-index", "teacher": "--teacher", "like": "--like",
         "fixed": "--set", "hparam_names": "--hparam-name", "targets": "--targets",
         "logits_key": "--logits-key", "targets_key": "--targets-key",
         "vocab_arg": "--vocab-arg", "ranges": "--range", "chunk": "--chunk",
         "non_causal": "--non-causal"}


@dataclass(frozen=True)
class CheckSpec(LossSpec):
    """A loss under check. ``fn`` is per-token (for a reduced loss, recovered by
    :func:`~.recovery.per_token_from_prefixes`), or the total when ``per_token`` is "total";
    the other fields tell the properties what applies."""

    reduction: str = "none"
    raw: Callable | None = None  # the reduced scalar, called like fn (reduced losses only)
    ignore_indices: tuple[int, ...] = IGNORE_INDICES  # (): it cannot ignore; all positions kept
    needs_teacher: bool = False  # every case carries teacher_probs
    per_token: str = "prefix"  # reduced losses: "prefix" (recovered) or "total" (not causal)
    chunk: int | None = None  # --chunk: the shapes to probe
    own_hparams: tuple[str, ...] = ()  # drawn by --range for the function only, not the reference
    source: str = ""  # Python that rebuilds this spec, for reproductions
    user_files: tuple[str, ...] = ()  # where the user's frames are, for tracebacks
    notes: tuple[str, ...] = ()  # how it is being called, printed before the results


@dataclass(frozen=True)
class Signature:
    """Where lossbench's tensors and keywords go in the user's callable."""

    logits: str
    targets: str | None  # None: it takes no targets (a distillation loss)
    teacher: str | None
    positional: tuple[str, ...]  # slot names in call order, for positional-only callables
    by_keyword: bool
    routes: Mapping[str, str]  # keyword -> "call" or "ctor" (the constructor of a class)
    method: str | None = None  # criterion objects: the method called on the built instance


class ModelOutput(dict):
    """A model's output as training code receives it: ``out["logits"]``, ``out.logits`` and
    ``out[0]`` (the convention of model hubs' output classes)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key):
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)

    def to_tuple(self):
        return tuple(self.values())


class Adapter:
    """The user's callable behind lossbench's signature (see the module docstring)."""

    def __init__(self, target, sig: Signature, opts: CheckOptions, teacher_kind: str | None,
                 hparam_params: Mapping[str, str | None], fixed: Mapping[str, Any]):
        self.target, self.sig, self.opts = target, sig, opts
        self.teacher_kind = teacher_kind
        self.hparam_params = dict(hparam_params)  # lossbench name -> its parameter (None: not passed)
        self.fixed = dict(fixed)  # keyword values that are not drawn hyperparameters
        self.is_class = inspect.isclass(target)
        self.__name__ = getattr(target, "__name__", type(target).__name__)
        self._watch: list | None = None

    def variant(self, **changes) -> Adapter:
        """The same callable under other options (diagnosis hints)."""
        return Adapter(self.target, self.sig, replace(self.opts, **changes), self.teacher_kind,
                       self.hparam_params, self.fixed)

    @contextmanager
    def watching(self):
        """Record (parameter, tensor passed, tensor it was copied from) for every call."""
        self._watch = []
        try:
            yield self._watch
        finally:
            self._watch = None

    def _keywords(self, hparams, ignore_index, vocab: int) -> dict[str, dict]:
        kw: dict[str, dict] = {"call": {}, "ctor": {}}
        for name, value in self.fixed.items():
            kw[self.sig.routes[name]][name] = value
        for name, value in hparams.items():
            param = self.hparam_params.get(name, name)
            if param is not None:
                kw[self.sig.routes[param]][param] = value
        if "ignore_index" in self.sig.routes:
            kw[self.sig.routes["ignore_index"]]["ignore_index"] = ignore_index
        if self.opts.vocab_arg:
            kw[self.sig.routes[self.opts.vocab_arg]][self.opts.vocab_arg] = vocab
        return kw

    def _callable(self, ctor: dict, device):
        if not self.is_class:
            return self.target
        fn = self.target(**ctor)
        if isinstance(fn, torch.nn.Module) and device.type != "cpu":
            fn = fn.to(device)
        return getattr(fn, self.sig.method) if self.sig.method else fn

    def invoke(self, logits, targets, *, ignore_index=-100, teacher_probs=None, **hparams):
        """Whatever the user's callable returns (the first element of a tuple)."""
        x = F.log_softmax(logits, dim=-1) if self.opts.log_probs else logits
        teacher = None
        if self.sig.teacher is not None:
            teacher = teacher_probs if self.teacher_kind == "probs" else teacher_probs.log()
        V = x.shape[-1]
        if self.opts.flat:
            x, targets = x.reshape(-1, V), targets.reshape(-1)
            teacher = None if teacher is None else teacher.reshape(-1, V)
        kw = self._keywords(hparams, ignore_index, V)
        fn = self._callable(kw["ctor"], x.device)
        given = {self.sig.logits: x, self.sig.targets: targets, self.sig.teacher: teacher}
        given.pop(None, None)
        passed = {name: t.clone() for name, t in given.items()}  # the caller's stay untouched
        if self._watch is not None:
            keys = {self.sig.logits: self.opts.logits_key, self.sig.targets: self.opts.targets_key}
            self._watch += [(f"{name}[{keys[name]!r}]" if keys.get(name) else name, passed[name],
                             given[name]) for name in passed]
        slots = dict(passed)
        if self.opts.logits_key:
            slots[self.sig.logits] = ModelOutput({self.opts.logits_key: passed[self.sig.logits]})
        if self.opts.targets_key and self.sig.targets is not None:
            slots[self.sig.targets] = {self.opts.targets_key: passed[self.sig.targets]}
        if self.sig.by_keyword:
            out = fn(**slots, **kw["call"])
        else:
            out = fn(*(slots[name] for name in self.sig.positional), **kw["call"])
        if isinstance(out, (tuple, list)) and out:
            out = out[0]  # fairseq-style (loss, nll_loss)
        elif isinstance(out, dict) and "loss" in out:
            out = out["loss"]  # a criterion's {"loss": ..., ...}
        return out

    def raw(self, logits, targets, **kwargs):
        """The reduced value as a 0-d tensor (a reduced loss's own return value)."""
        out = self.invoke(logits, targets, **kwargs)
        return out.reshape(()) if isinstance(out, torch.Tensor) and out.numel() == 1 else out

    def __call__(self, logits, targets, **kwargs):
        """Per-token values (B, T); the total when the loss is checked on its total."""
        if self.opts.reduction != "none":
            if self.opts.non_causal:
                return self.raw(logits, targets, **kwargs)
            return per_token_from_prefixes(self.raw, self.opts.reduction, logits, targets,
                                           **kwargs)
        out = self.invoke(logits, targets, **kwargs)
        if (self.opts.flat and isinstance(out, torch.Tensor) and out.dim() == 1
                and out.numel() == targets.numel()):
            out = out.reshape(targets.shape)
        return out
