"""Valid values, declared once next to each config field and checked once.

A config dataclass declares what each field accepts in the field itself::

    lr: float = ranged(1e-3, 0.0, None, low_open=True)   # (0, inf)
    corpus: str = ranged("markov", choices=CORPORA)

and its ``__post_init__`` calls :func:`check`, which tests every field against
its annotation (int, float, str, bool, Optional), its range or choices, and
rejects NaN and infinity in every float (no float setting is meaningful at
either). Cross-field rules a class adds (n_embd divisible by n_head, ...) join
the same list. All problems are raised together as one :class:`ConfigError`:
Python users get a ValueError naming ``Class.field``, and a suite loader
catches it and lists each problem under its file and key.

The module also holds the memory estimate a suite is checked against before
any run starts (:func:`memory_need`, :func:`machine_memory`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

GiB = 1024**3


@dataclass(frozen=True)
class Range:
    """Accepted values of one field: [low, high] (None: open-ended; *_open: exclusive),
    or one of ``choices``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None

    def __str__(self) -> str:
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def ranged(default: Any = dataclasses.MISSING, low: float | None = None,
           high: float | None = None, *, low_open: bool = False, high_open: bool = False,
           choices: tuple | None = None, **field_kwargs) -> Any:
    """A dataclass field whose accepted values are declared in its metadata."""
    valid = Range(low, high, low_open, high_open, None if choices is None else tuple(choices))
    return field(default=default, metadata={"range": valid}, **field_kwargs)


def derived(default: Any = None) -> Any:
    """A field the tool computes (e.g. a corpus's content hash): a suite may not set it."""
    return field(default=default, metadata={"derived": True})


class ProblemList(ValueError):
    """Every problem found in one input (a suite file, a claim), one line each in ``errors``:
    the command line prints them all at once and exits 2."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


class ConfigError(ValueError):
    """Every problem of one config object; each problem starts with its field's name."""

    def __init__(self, owner: str, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{owner}.{text}" for _, text in problems))
        self.owner = owner
        self.problems = problems  # (field name, message that starts with the field name)

    @property
    def keys(self) -> set[str]:
        return {key for key, _ in self.problems}


def type_ok(value: Any, annotation: Any) -> bool:
    """Does a value fit a dataclass field annotation (int, float, str, bool, Optional, dict)?"""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return True


def type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # resolves the string annotations of __future__


def value_problem(cls: type, name: str, value: Any) -> str | None:
    """Why ``value`` cannot be field ``name`` of ``cls`` (None when it can)."""
    annotation = _hints(cls)[name]
    if not type_ok(value, annotation):
        return f"{name}: expected {type_name(annotation)}, got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name}={value!r} is not a finite number"
    valid = next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get("range")
    if valid is None or value is None:  # None only passes type_ok where Optional allows it
        return None
    if valid.choices is not None and value not in valid.choices:
        return f"{name}: unknown value {value!r}; expected one of {valid.choices}"
    if not valid.contains(value):
        return f"{name}={value!r} is out of range {valid}"
    return None


def check(obj: Any, *cross_field: tuple[str, str]) -> None:
    """Raise ConfigError listing every field of ``obj`` that is invalid, plus the
    ``cross_field`` problems its class found, as (field name, message)."""
    problems = []
    for f in dataclasses.fields(obj):
        text = value_problem(type(obj), f.name, getattr(obj, f.name))
        if text is not None:
            problems.append((f.name, text))
    problems += cross_field
    if problems:
        raise ConfigError(type(obj).__name__, problems)


def fields_ok(obj: Any, *names: str) -> bool:
    """Are these fields of ``obj`` valid on their own? (Cross-field rules compare only
    values that are; otherwise ``None < 3`` would raise a TypeError of its own.)"""
    return all(value_problem(type(obj), n, getattr(obj, n)) is None for n in names)


ARCHS = ("gpt", "hf", "python:package.module:factory")


def arch_problem(arch: str, hf_config: dict, hf_path: str | None) -> str | None:
    """Why [model] arch (with its hf_config / hf_path) cannot name a model; None if it can.
    The spelling only: whether a factory imports or a path exists is checked by preflight."""
    if not isinstance(arch, str):
        return f"arch: expected a string, got {arch!r}"
    if arch.startswith("python:"):
        if not re.fullmatch(r"python:[A-Za-z_][\w.]*:[A-Za-z_]\w*", arch):
            return f"arch: expected \"python:package.module:factory\", got {arch!r}"
        return None
    if arch not in ("gpt", "hf"):
        return f"arch: unknown value {arch!r}; expected one of {ARCHS}"
    if arch == "hf" and bool(hf_config) == bool(hf_path):
        return "arch: \"hf\" needs exactly one of hf_config (a table) or hf_path (a folder)"
    if arch != "hf" and (hf_config or hf_path):
        return f"arch: hf_config / hf_path apply to arch = \"hf\", not {arch!r}"
    if hf_config and not isinstance(hf_config.get("model_type"), str):
        return "hf_config: needs model_type, e.g. model_type = \"llama\""
    return None


# ---- memory -------------------------------------------------------------------------

# Sampling a Markov corpus holds, per token, the uniform draws as a numpy array (8 B) and as
# a Python list of floats (~32 B), the list of sampled ids (8 B), the int64 array and its
# hashed and split copies (3 x 8 B): about 72 bytes per token at the peak.
MARKOV_BYTES_PER_TOKEN = 72
# A text corpus, per token: the int64 ids and their train/val copies (16 B) and the text's
# UTF-32 code points (4 B) while tokenizing, plus the bytes and str themselves (~4 B).
TEXT_BYTES_PER_TOKEN = 24
EVAL_CHUNK = 64  # evaluation forwards up to 64 windows at once (lossbench.train.evaluation)


def memory_need(*, n_layer: int, n_head: int, n_embd: int, block_size: int, vocab: int,
                batch_size: int, tie_weights: bool = True,
                corpus_bytes: int = 0) -> dict[str, int]:
    """Estimated peak bytes of one training run, fp32, by part.

    With L = n_layer, H = n_head, C = n_embd, T = block_size, V = vocab, B = batch_size
    (one micro-batch) and P the parameter count:

        P           = L (12 C^2 + 13 C) + 2 C + T C + V C (x 2 when untied)
        params      = 4 P                  the weights
        optimizer   = 12 P                 their gradients and AdamW's two moments
        activations = 4 B T L (17 C + 2 H T)
                      per layer and token the backward pass keeps ~17 C floats
                      (LayerNorm inputs and outputs, q, k, v, attention output, the
                      4C MLP hidden before and after GELU) and two H x T attention rows
        logits      = 4 x 3 max(B, 64) T V  the (B, T, V) logits, their softmax and
                      gradient in the loss; evaluation forwards 64 windows at a time
        corpus      = ``corpus_bytes``, the tokens while the corpus is built

    An estimate within tens of percent, meant to catch sizes that cannot fit at all.
    """
    L, H, C, T, V, B = n_layer, n_head, n_embd, block_size, vocab, batch_size
    n_params = L * (12 * C * C + 13 * C) + 2 * C + T * C + V * C * (1 if tie_weights else 2)
    return {"params": 4 * n_params, "optimizer": 12 * n_params,
            "activations": 4 * B * T * L * (17 * C + 2 * H * T),
            "logits": 4 * 3 * max(B, EVAL_CHUNK) * T * V, "corpus": corpus_bytes}


def machine_memory(device: str = "cpu") -> int | None:
    """Total memory of the device a run uses, in bytes (None when unknown): physical RAM,
    or the first GPU's memory for "cuda". Total, not currently free: the verdict must
    not change with whatever else is running when the suite is loaded."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return None  # the command line reports the missing GPU itself
        return torch.cuda.get_device_properties(0).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX: do not guess
        return None


def size(n_bytes: float) -> str:
    """Bytes for people: '37.2 GiB', '1,230 GiB', '512 KiB'."""
    for unit, scale in (("GiB", GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if n_bytes >= scale:
            value = n_bytes / scale
            return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return f"{n_bytes:.0f} B"


def memory_problem(need: dict[str, int], have: int | None) -> str | None:
    """``needs ~X GiB (params ..., ...) but the machine has Y GiB``, or None if it fits."""
    total = sum(need.values())
    if have is None or total <= have:
        return None
    parts = ", ".join(f"{k} {size(v)}" for k, v in need.items() if v)
    return f"needs ~{size(total)} ({parts}) but the machine has {size(have)}"
