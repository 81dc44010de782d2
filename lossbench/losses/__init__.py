"""The loss registry and the built-in losses.

Importing this package registers the built-in losses; it is the only module
with registration side effects. Public API::

    get_loss(name) -> LossSpec      list_losses() -> [LossSpec]
    register_loss(name, ...)        mean_over_tokens(per_token, targets)
"""

from .registry import (
    ENTRY_POINT_GROUP,
    GENERIC_PROPERTIES,
    KNOWN_PROPERTIES,
    OPTIONAL_PROPERTIES,
    HParam,
    LossSpec,
    PluginError,
    UnknownLossError,
    get_loss,
    list_losses,
    load_plugin,
    mean_over_tokens,
    register_loss,
    unregister_loss,
)

# Built-in losses: imported for their @register_loss side effect.
from . import likelihood, square, divergence, margin, repetition  # noqa: E402,F401  isort: skip

__all__ = [
    "ENTRY_POINT_GROUP", "GENERIC_PROPERTIES", "KNOWN_PROPERTIES", "OPTIONAL_PROPERTIES",
    "HParam", "LossSpec", "PluginError", "UnknownLossError", "get_loss", "list_losses",
    "load_plugin", "mean_over_tokens", "register_loss", "unregister_loss",
]
