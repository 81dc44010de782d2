"""The loss registry: a decorator stores a frozen spec for every loss.

Every registered loss has one signature::

    fn(logits, targets, *, ignore_index=-100, **hparams) -> per-token loss

with ``logits`` (B, T, V), ``targets`` (B, T) int64 and the result (B, T),
exactly 0 at ignored positions. Reduction is shared (:func:`mean_over_tokens`),
so losses cannot disagree on what "the mean loss" means.

Built-in losses register when :mod:`lossbench.losses` is imported (the only
place with import side effects); third-party losses register through the
``lossbench.losses`` entry-point group or ``--plugin`` (see :func:`load_plugin`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch

ENTRY_POINT_GROUP = "lossbench.losses"

# Properties every loss must satisfy; `lossbench check` runs them on any function.
GENERIC_PROPERTIES = (
    "output_contract",  # (B, T) float, 0 at ignored positions
    "finite_at_extremes",  # finite value and gradient for |logits| up to 1e4 in fp32
    "ignored_tokens_inert",  # logits at ignored positions change neither value nor gradient
    "batch_permutation_equivariant",  # reordering rows reorders the loss
    "row_independent",  # a row's loss is the same in the batch and alone
    "token_local",  # a position's loss depends on its own logits only
    "gradient_matches_finite_differences",  # float64 gradcheck
    "bf16_autocast",  # bf16 logits under CUDA's autocast policy give the fp32 result
)
# Properties a loss opts into (or gets automatically, see register_loss).
OPTIONAL_PROPERTIES = (
    "nonnegative",
    "shift_invariant",  # adding a constant to a row of logits changes nothing
    "minimal_at_perfect_prediction",  # one-hot-confident logits are a global minimum
    "zero_at_teacher",  # 0 when the model's distribution equals the target distribution
    "matches_reference",  # agrees with a plain reference implementation (auto)
    "neutral_hparams_give_cross_entropy",  # auto when a hyperparameter declares `neutral`
)
KNOWN_PROPERTIES = GENERIC_PROPERTIES + OPTIONAL_PROPERTIES


class UnknownLossError(KeyError):
    """Raised by :func:`get_loss` for a name not in the registry."""

    def __str__(self) -> str:  # KeyError's default str() adds quotes
        return str(self.args[0])


class PluginError(ImportError):
    """A plugin file or module could not be loaded."""


@dataclass(frozen=True)
class HParam:
    """A keyword-only hyperparameter of a loss."""

    default: float
    low: float  # inclusive bounds of the valid range
    high: float
    doc: str = ""
    neutral: float | None = None  # value at which the loss equals cross-entropy
    integer: bool = False

    def validate(self, name: str, value: Any) -> str | None:
        """Return an error message for an invalid value, or None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number, got {value!r}"
        if self.integer and not float(value).is_integer():
            return f"{name} must be an integer, got {value!r}"
        if not math.isfinite(value) or not (self.low <= value <= self.high):
            return f"{name}={value!r} is outside its range [{self.low}, {self.high}]"
        return None

    def describe(self) -> str:
        return f"{self.default:g} in [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class LossSpec:
    """Everything the tool knows about one loss. Calling it calls the loss."""

    name: str
    fn: Callable[..., torch.Tensor]
    description: str  # one line
    reference: str  # "Author et al., Title, Venue Year"
    hparams: Mapping[str, HParam] = field(default_factory=lambda: MappingProxyType({}))
    properties: frozenset[str] = frozenset(GENERIC_PROPERTIES)
    extra_inputs: tuple[str, ...] = ()  # optional keyword tensors, e.g. ("teacher_probs",)
    reference_impl: Callable[..., torch.Tensor] | None = None
    finetune_only: bool = False  # needs generated text (sequence-level unlikelihood)
    needs_hidden: bool = False  # takes the model's last hidden states, hidden_states (B, T, C),
    #   which the training loop supplies (SimCTG); "hidden_states" is then an extra input
    origin: str = "lossbench"  # module that registered it
    # the definition's version: a built-in's is bumped when its numbers change (tests/
    # test_loss_definitions.py), and enters the run id from 2 on (lossbench.losses.identity)
    version: int = 1
    distribution: str | None = None  # "name==version" of the package whose entry point
    #   registered it (None: built-in, --plugin, or imported by hand)

    def __call__(self, logits, targets, **kwargs):
        return self.fn(logits, targets, **kwargs)

    def defaults(self) -> dict[str, float]:
        return {k: h.default for k, h in self.hparams.items()}

    def validate_hparams(self, values: Mapping[str, Any]) -> list[str]:
        """Error messages for unknown or out-of-range hyperparameters."""
        errors = []
        for key, value in values.items():
            if key not in self.hparams:
                known = ", ".join(self.hparams) or "none"
                errors.append(f"{self.name} has no hyperparameter {key!r} (known: {known})")
            elif (msg := self.hparams[key].validate(key, value)) is not None:
                errors.append(f"{self.name}: {msg}")
        return errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "reference": self.reference,
            "hparams": {
                k: {"default": h.default, "low": h.low, "high": h.high, "neutral": h.neutral,
                    "integer": h.integer, "doc": h.doc}
                for k, h in self.hparams.items()
            },
            "properties": sorted(self.properties),
            "extra_inputs": list(self.extra_inputs),
            "finetune_only": self.finetune_only,
            "needs_hidden": self.needs_hidden,
            "origin": self.origin,
            "version": self.version,
        }


_REGISTRY: dict[str, LossSpec] = {}
_entry_points_loaded = False


def _check_signature(name: str, fn: Callable, hparams: Mapping[str, HParam],
                     extra_inputs: tuple[str, ...]) -> None:
    """Fail at registration, not mid-sweep, when a function breaks the contract."""
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != 2:
        raise TypeError(f"loss {name!r}: expected fn(logits, targets, *, ignore_index=-100, ...)")
    keyword = {p.name: p for p in params if p.kind == p.KEYWORD_ONLY}
    if "ignore_index" not in keyword:
        raise TypeError(f"loss {name!r}: missing keyword-only argument ignore_index")
    for key, hp in hparams.items():
        if key not in keyword:
            raise TypeError(f"loss {name!r}: hyperparameter {key!r} is not a keyword-only argument")
        if keyword[key].default != hp.default:
            raise TypeError(f"loss {name!r}: default of {key!r} is {keyword[key].default!r} "
                            f"in the function but {hp.default!r} in the spec")
        if not hp.low <= hp.default <= hp.high:
            raise ValueError(f"loss {name!r}: default of {key!r} outside its range")
    for key in set(keyword) - set(hparams) - {"ignore_index", *extra_inputs}:
        raise TypeError(f"loss {name!r}: keyword {key!r} is neither a hyperparameter nor an extra input")


def register_loss(
    name: str,
    *,
    description: str,
    reference: str,
    hparams: Mapping[str, HParam] | None = None,
    properties: tuple[str, ...] = (),
    extra_inputs: tuple[str, ...] = (),
    reference_impl: Callable[..., torch.Tensor] | None = None,
    finetune_only: bool = False,
    version: int = 1,
    needs_hidden: bool = False,
):
    """Decorator: register ``fn`` under ``name`` and return it unchanged.

    ``version``: of the loss's definition; a built-in's is raised whenever a change could
    change a number it gives (a run id names it from 2 on, so results of version 1 stay
    valid until then). A plugin's run ids hash its source instead.

    ``properties`` lists the optional properties the loss claims; the generic
    ones always apply, ``matches_reference`` is added when ``reference_impl``
    is given and ``neutral_hparams_give_cross_entropy`` when a hyperparameter
    declares a ``neutral`` value. ``needs_hidden``: the loss takes the model's last hidden
    states as the keyword ``hidden_states`` (B, T, C), supplied by the training loop and
    drawn by ``lossbench check`` (added to ``extra_inputs``). Duplicate names raise
    ``ValueError``.
    """
    if needs_hidden and "hidden_states" not in extra_inputs:
        extra_inputs = (*extra_inputs, "hidden_states")
    hparams = MappingProxyType(dict(hparams or {}))
    unknown = set(properties) - set(KNOWN_PROPERTIES)
    if unknown:
        raise ValueError(f"loss {name!r}: unknown properties {sorted(unknown)}")
    props = set(GENERIC_PROPERTIES) | set(properties)
    if reference_impl is not None:
        props.add("matches_reference")
    if any(h.neutral is not None for h in hparams.values()):
        props.add("neutral_hparams_give_cross_entropy")

    def decorator(fn):
        if name in _REGISTRY:
            raise ValueError(f"a loss named {name!r} is already registered "
                             f"(by {_REGISTRY[name].origin})")
        _check_signature(name, fn, hparams, tuple(extra_inputs))
        _REGISTRY[name] = LossSpec(
            name=name, fn=fn, description=description, reference=reference, hparams=hparams,
            properties=frozenset(props), extra_inputs=tuple(extra_inputs),
            reference_impl=reference_impl, finetune_only=finetune_only,
            needs_hidden=needs_hidden, origin=getattr(fn, "__module__", "?"), version=version,
        )
        return fn

    return decorator


def unregister_loss(name: str) -> None:
    """Remove a loss (for tests and interactive sessions)."""
    _REGISTRY.pop(name, None)


_broken_entry_points: list[str] = []  # one line each: which plugin and why


def _load_entry_points() -> None:
    """Load every installed plugin once. A broken one is reported once (a warning, and
    by ``broken_entry_points``) and skipped: it must not hide the built-ins or the
    plugins that do load."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        before = set(_REGISTRY)
        try:
            ep.load()  # loading the module runs its @register_loss decorators
        except Exception as exc:
            line = f"entry point {ep.name!r} ({ep.value}) failed to load: {exc}"
            _broken_entry_points.append(line)
            warnings.warn(f"lossbench: {line}", RuntimeWarning, stacklevel=3)
            continue
        if ep.dist is not None:  # its losses' run ids name the package and its version
            for name in set(_REGISTRY) - before:
                _REGISTRY[name] = dataclasses.replace(
                    _REGISTRY[name], distribution=f"{ep.dist.name}=={ep.dist.version}")


def broken_entry_points() -> list[str]:
    """The installed plugins that failed to load, one line each."""
    _load_entry_points()
    return list(_broken_entry_points)


def get_loss(name: str) -> LossSpec:
    """The spec registered under ``name``; unknown names suggest the closest ones."""
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(_REGISTRY))}"
        if _broken_entry_points:
            hint += f" ({len(_broken_entry_points)} plugin(s) failed to load: " \
                    f"{'; '.join(_broken_entry_points)})"
        raise UnknownLossError(f"unknown loss {name!r}{hint}") from None


def list_losses() -> list[LossSpec]:
    """All registered losses, sorted by name."""
    _load_entry_points()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def import_target(target: str):
    """Import ``path/to/file.py`` (once per resolved path) or ``package.module``; PluginError
    with a one-line reason when it cannot be imported."""
    path = Path(target)
    if not (target.endswith(".py") or path.exists()):
        try:
            return importlib.import_module(target)
        except Exception as exc:
            raise PluginError(f"cannot import module {target!r}: {type(exc).__name__}: {exc}") from exc
    if not path.is_file():
        raise PluginError(f"no such file: {target}")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    mod_name = f"lossbench_plugin_{path.stem}_{digest}"
    if mod_name in sys.modules:  # importing twice would register its losses twice
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        source = path.read_bytes()  # hashed as executed: its losses' run ids name this code
        module.__lossbench_sha256__ = hashlib.sha256(source).hexdigest()
        exec(compile(source, str(path), "exec"), module.__dict__)
    except Exception as exc:
        del sys.modules[mod_name]
        raise PluginError(f"{target} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def load_plugin(target: str) -> None:
    """Import ``path/to/file.py`` or ``package.module`` so its losses register."""
    import_target(target)


def load_plugins(targets) -> None:
    """Load each ``--plugin`` target in order (in the CLI and in every sweep worker).
    Raises PluginError naming the first one that fails."""
    for target in targets:
        load_plugin(target)


def mean_over_tokens(per_token: torch.Tensor, targets: torch.Tensor, *,
                     ignore_index: int = -100) -> torch.Tensor:
    """The one reduction: mean of ``per_token`` (B, T) over non-ignored positions.

    Returns 0 (not NaN) when every position is ignored, so an all-padding
    micro-batch contributes nothing instead of poisoning the step.
    """
    keep = targets != ignore_index
    return (per_token * keep).sum() / keep.sum().clamp_min(1)
