"""What `lossbench check TARGET` names: 'all', a registered loss, or a callable in a file
or module (``path/file.py:NAME``, ``module:NAME``) adapted by :mod:`.adapters`."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

from lossbench.losses import LossSpec, PluginError, get_loss, list_losses
from lossbench.losses.registry import import_target

from .adapters import FLAGS, CheckOptions, CheckTargetError
from .signature import function_spec


def _load_object(target: str):
    """(callable, method): ``file.py:NAME`` or ``file.py:Class.method``, a criterion class
    built per call whose ``method`` computes the loss (``obj.method`` for an instance)."""
    where, _, attr = target.rpartition(":")
    try:
        module = import_target(where)
    except PluginError as exc:
        raise CheckTargetError(str(exc)) from None
    name, _, method = attr.partition(".")
    obj = getattr(module, name, None)
    if obj is None:
        raise CheckTargetError(f"{where} has no function {name!r}{_candidates(module)}")
    if method:
        if "." in method or not callable(getattr(obj, method, None)):
            raise CheckTargetError(f"{where}:{name} has no method {method!r}")
        if not inspect.isclass(obj):
            return getattr(obj, method), None
        return obj, method
    if not callable(obj):
        raise CheckTargetError(f"{where}:{attr} is not callable")
    return obj, None


def _candidates(module) -> str:
    """'; candidates: a, B' — the functions and nn.Module classes a module defines."""
    found = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj) and issubclass(obj, torch.nn.Module):
            found.append(name)
        elif inspect.isfunction(obj) and len(inspect.signature(obj).parameters) >= 2:
            found.append(name)
    return f"; candidates: {', '.join(found)}" if found else "; it defines no loss-like function"


def resolve_targets(target: str, **options) -> list[LossSpec]:
    """'all', a registered name, 'path/file.py:function' or 'module:Class'. ``options``
    are :class:`CheckOptions` fields; they apply to function targets only."""
    opts = CheckOptions(**options)
    if ":" in target:
        obj, method = _load_object(target)
        return [function_spec(obj, target, opts, method)]
    is_file = target.endswith(".py") or Path(target).is_file()
    if not is_file:
        if opts.changed():
            flag = FLAGS[next(iter(opts.changed()))]
            raise CheckTargetError(f"{flag}: applies to FILE.py:FUNCTION or module:FUNCTION "
                                   f"targets, not to registered losses")
        if target == "all":
            return list_losses()
        try:
            return [get_loss(target)]
        except KeyError as exc:
            if "." not in target:
                raise CheckTargetError(str(exc)) from None
    try:  # a file or module without ':function': say so, and what it defines
        module = import_target(target)
    except PluginError as exc:
        raise CheckTargetError(str(exc)) from None
    raise CheckTargetError(f"{target} names no function: use {target}:NAME{_candidates(module)}")


def load_target(target: str, *, plugins=(), **options) -> LossSpec:
    """The spec ``lossbench check TARGET`` would check (one target, not 'all'); the
    reproductions that `lossbench check` prints start with it."""
    from lossbench.losses import load_plugins

    load_plugins(plugins)
    (spec,) = resolve_targets(target, **options)
    return spec
