"""Valid values, declared once next to each config field and checked once.

A config dataclass declares what each field accepts in the field itself::

    lr: float = ranged(1e-3, 0.0, None, low_open=True, doc="peak learning rate")  # (0, inf)
    corpus: str = ranged("markov", choices=CORPORA, doc="where the tokens come from")
    tie_weights: bool = described(True, doc="LM head shares the embedding matrix")

and its ``__post_init__`` calls :func:`check`, which tests every field against
its annotation (int, float, str, bool, Optional), its range or choices, and
rejects NaN and infinity in every float (no float setting is meaningful at
either). Cross-field rules a class adds (n_embd divisible by n_head, ...) join
the same list. All problems are raised together as one :class:`ConfigError`:
Python users get a ValueError naming ``Class.field``, and a suite loader
catches it and lists each problem under its file and key.

``doc`` is the field's description, kept in its metadata (not in ``to_dict()``,
so never in a run id): the suite-key reference (docs/reference/suite-keys.md) is
generated from it by lossbench.suite.keys, so it cannot go stale.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any


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
           choices: tuple | None = None, doc: str = "", **field_kwargs) -> Any:
    """A dataclass field whose accepted values are declared in its metadata, with the
    sentence that describes it (``doc``: the suite-key reference prints it)."""
    valid = Range(low, high, low_open, high_open, None if choices is None else tuple(choices))
    return field(default=default, metadata={"range": valid, "doc": doc}, **field_kwargs)


def described(default: Any = dataclasses.MISSING, *, doc: str, **field_kwargs) -> Any:
    """A dataclass field with no declared range, and its description (``doc``)."""
    return field(default=default, metadata={"doc": doc}, **field_kwargs)


def derived(default: Any = None, *, doc: str = "") -> Any:
    """A field the tool computes (e.g. a corpus's content hash): a suite may not set it."""
    return field(default=default, metadata={"derived": True, "doc": doc})


def doc_of(f: dataclasses.Field) -> str:
    """A field's description, as declared by :func:`ranged`, :func:`described` or
    :func:`derived` ("" when it has none)."""
    return f.metadata.get("doc", "")


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
