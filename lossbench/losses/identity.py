"""What defines a loss, for run ids: a built-in's definition version, a plugin's source.

A run id must change when the loss's code does, or an edited loss is handed the old
loss's results. :func:`loss_identity` is the string a resolved run config records
(``RunConfig.loss_source``, ``FinetuneConfig.loss_source``):

- a built-in loss: ``None`` at definition version 1 (the ids of every result written before
  versions existed stay valid), ``"v<N>"`` from version 2 on. The version is bumped by hand
  in ``register_loss(..., version=N)``; tests/test_loss_definitions.py pins
  :func:`definition_digest` of every built-in and fails when one changes without a bump.
- a plugin (``--plugin file.py``, ``--plugin package.module``, an entry point, or any loss
  registered outside lossbench.losses): ``"sha256:<hex>"`` of the file that defines the
  function (its source, where the file is gone), preceded by ``"<dist>==<version> "`` when
  an installed distribution provides it (the entry point's, or the one owning its package).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

from .registry import LossSpec

BUILTIN_PACKAGE = "lossbench.losses"


def is_builtin(spec: LossSpec) -> bool:
    """Registered by lossbench's own loss modules (not a plugin, not a test)."""
    return spec.origin.startswith(BUILTIN_PACKAGE + ".")


def loss_identity(spec: LossSpec) -> str | None:
    """The loss's part of a run id (see the module docstring); None: nothing to add."""
    if is_builtin(spec):
        return None if spec.version == 1 else f"v{spec.version}"
    dist = spec.distribution or _installed_distribution(spec.origin)
    digest = f"sha256:{source_hash(spec.fn)}"
    return f"{dist} {digest}" if dist else digest


def source_hash(fn) -> str:
    """sha256 of the file that defines ``fn`` (its module's file: a helper beside it changes
    it too; a --plugin file's bytes as they were imported); of ``fn``'s own source when that file cannot be read; of its qualified name
    when neither exists (a function built at run time has no source to hash)."""
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    if (executed := getattr(module, "__lossbench_sha256__", None)) is not None:
        return executed  # a --plugin file: the bytes it ran (lossbench.losses.registry)
    file = getattr(module, "__file__", None)
    if file:
        try:
            return hashlib.sha256(Path(file).read_bytes()).hexdigest()
        except OSError:
            pass
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        text = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def _packages() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


def _installed_distribution(module: str) -> str | None:
    """"name==version" of the installed distribution that provides ``module``'s top-level
    package (None for a file loaded by --plugin, or code that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    top = module.split(".")[0]
    if top.startswith("lossbench_plugin_") or top == "__main__":
        return None
    for name in sorted(_packages().get(top, [])):
        try:
            return f"{name}=={version(name)}"
        except PackageNotFoundError:
            continue
    return None


# ---- built-in definition digests -----------------------------------------------------

def definition_digest(spec: LossSpec) -> str:
    """sha256 of what decides a built-in loss's numbers: the code of its function and of
    every function, class and constant of lossbench.losses it uses (transitively; comments,
    docstrings and decorators left out: they change no number), and its hyperparameters'
    defaults and ranges. tests/test_loss_definitions.py pins it per definition version."""
    parts = _closure(spec.fn)
    parts["<hparams>"] = repr(sorted((k, repr(h)) for k, h in spec.hparams.items()))
    parts["<extra_inputs>"] = repr(spec.extra_inputs)
    return hashlib.sha256(json.dumps(sorted(parts.items())).encode()).hexdigest()


def _ours(value: Any) -> bool:
    """Defined by a built-in loss module (the registry's own types are the frame, not a
    definition)."""
    module = getattr(value, "__module__", None) or ""
    return module.startswith(BUILTIN_PACKAGE) and module != f"{BUILTIN_PACKAGE}.registry"


def _closure(fn) -> dict[str, str]:
    """qualified name -> normalized code, for ``fn`` and what it uses in lossbench.losses."""
    parts: dict[str, str] = {}
    todo = [fn]
    while todo:
        obj = todo.pop()
        key = f"{obj.__module__.rpartition('.')[2]}.{obj.__qualname__}"
        if key in parts:
            continue
        parts[key] = _normalized_source(obj)
        namespace = vars(sys.modules[obj.__module__])
        names = _names_used(obj)
        for name in sorted(names):
            value = namespace.get(name)
            if isinstance(value, types.ModuleType) and value.__name__.startswith(BUILTIN_PACKAGE):
                todo += [getattr(value, n) for n in names
                         if callable(getattr(value, n, None)) and _ours(getattr(value, n))]
            elif callable(value) and _ours(value):
                todo.append(value)
            elif isinstance(value, (bool, int, float, str, bytes, tuple, frozenset)):
                # a module constant the code reads (HParams are in the digest already)
                parts[f"{obj.__module__.rpartition('.')[2]}.{name}"] = repr(value)
    return parts


def _names_used(obj) -> set[str]:
    """Global and attribute names the code of a function (or a class's methods) loads."""
    codes = [obj.__code__] if hasattr(obj, "__code__") else [
        f.__code__ for f in (getattr(v, "__func__", v) for v in vars(obj).values())
        if hasattr(f, "__code__")]
    names: set[str] = set()
    while codes:
        code = codes.pop()
        names |= set(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return names


def _normalized_source(obj) -> str:
    """The object's source re-printed from its syntax tree: no comments, docstrings or
    decorators, one formatting (so a reformat or a comment needs no version bump)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            node.decorator_list = []
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)
