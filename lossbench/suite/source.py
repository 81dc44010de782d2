"""A suite's text: the TOML file and the command line's ``--set`` overrides on top of it.

Problems are reported one line each, naming where the value came from: the suite file, or
the ``--set KEY=VALUE`` that put it there (not the file, which does not say it). Nesting is
limited (:data:`MAX_DEPTH`): no suite needs deep values, and deep ones only exhaust Python's
recursion (a RecursionError with thousands of lines of traceback) somewhere downstream.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from lossbench.core.fields import ProblemList

MAX_DEPTH = 32  # levels of tables and arrays; the deepest shipped value has 5


class SuiteError(ProblemList):
    """Everything wrong with a suite, one line per problem."""


def read_toml(path: str | Path) -> dict[str, Any]:
    """The suite file's document; SuiteError with one line when it cannot be read."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError([f"{where}: no such suite file"]) from None
    except (UnicodeDecodeError, IsADirectoryError, PermissionError) as exc:
        raise SuiteError([f"{where}: cannot read: {exc}"]) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError([f"{where}: TOML syntax error: {exc}"]) from None
    except RecursionError:  # tomllib recurses per level of [ and {
        raise SuiteError([f"{where}: a value nests arrays or tables too deeply to read "
                          f"(at most {MAX_DEPTH} levels)"]) from None
    if (path_ := too_deep(doc)) is not None:
        raise SuiteError([f"{where}: {path_}: nested more than {MAX_DEPTH} levels deep"])
    return doc


def too_deep(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """The dotted key of the first value nested deeper than ``limit`` (None: none is).
    Iterative, so it cannot itself run out of recursion."""
    stack = [(value, 0, "")]
    while stack:
        node, depth, key = stack.pop()
        if depth > limit:
            return _short(key)
        if isinstance(node, dict):
            stack += [(v, depth + 1, f"{key}.{k}" if key else str(k)) for k, v in node.items()]
        elif isinstance(node, list):
            stack += [(v, depth + 1, f"{key}[{i}]") for i, v in enumerate(node)]
    return None


def _short(key: str) -> str:
    return key if len(key) <= 80 else f"{key[:60]}...({len(key)} characters)"


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.steps=100' -> (['train', 'steps'], 100); the value is read as TOML, else a string."""
    if "=" not in text:
        raise SuiteError([f"--set {text}: expected SECTION.KEY=VALUE"])
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except RecursionError:
        raise SuiteError([f"--set {text[:60]}: nests too deeply (at most {MAX_DEPTH} "
                          f"levels)"]) from None
    path = key.strip().split(".")
    if not all(path):
        raise SuiteError([f"--set {text}: expected SECTION.KEY=VALUE"])
    if too_deep(value) is not None:
        raise SuiteError([f"--set {key.strip()}: nested more than {MAX_DEPTH} levels deep"])
    return path, value


def apply_overrides(doc: dict, overrides: list[str]) -> dict[tuple[str, ...], str]:
    """Apply ``--set`` texts to ``doc``; returns each overridden key path -> its text (for
    :func:`attribute`)."""
    applied: dict[tuple[str, ...], str] = {}
    for text in overrides:
        path, value = parse_override(text)
        node = doc
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SuiteError([f"--set {text}: {part} is not a section"])
        node[path[-1]] = value
        applied[tuple(path)] = text
    return applied


# "[section] key", "[section] unknown key 'key'" or "key:" at the start of a problem
_NAMED = re.compile(r"\[([\w.]+)\] (?:unknown key ')?(\w+)|(\w+)[:=\[ .]")


def attribute(problem: str, where: str, overridden: dict[tuple[str, ...], str]) -> str:
    """``problem`` ("WHERE: rest") with WHERE replaced by the ``--set`` that set the key it
    names, when one did: the file does not hold that value."""
    if not overridden or not problem.startswith(f"{where}: "):
        return problem
    rest = problem[len(where) + 2:]
    match = _NAMED.match(rest)
    if match is None:
        return problem
    key = (*match[1].split("."), match[2]) if match[1] else (match[3],)
    # the key itself, or a table above it set as a whole (--set train={lr=nan}); for a
    # top-level name, a key below it (--set tune.steps=0 for a [tune] problem)
    text = next((overridden[key[:n]] for n in range(len(key), 0, -1) if key[:n] in overridden),
                None)
    if text is None and len(key) == 1:
        text = next((t for k, t in overridden.items() if k[0] == key[0]), None)
    return f"--set {text}: {rest}" if text is not None else problem
