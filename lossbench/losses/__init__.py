"""The loss registry and the built-in losses.

Importing this package registers the built-in losses; it is the only module
with registration side effects. Public API::

    get_loss(name) -> LossSpec      list_losses() -> [LossSpec]
    register_loss(name, ...)        mean_over_tokens(per_token, targets)

Every loss maps logits (B, T, V) and targets (B, T) to a per-token loss (B, T), 0 at
ignored positions; :func:`mean_over_tokens` is the one reduction, the mean over the
kept positions (0, not NaN, when none is kept):

    >>> import math, torch
    >>> targets = torch.tensor([[3, 1, -100]])
    >>> per_token = get_loss("cross_entropy")(torch.zeros(1, 3, 4), targets)
    >>> per_token[0, 2].item(), round(mean_over_tokens(per_token, targets).item(), 4)
    (0.0, 1.3863)
    >>> mean_over_tokens(torch.zeros(1, 2), torch.full((1, 2), -100)).item()
    0.0
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
    load_plugins,
    mean_over_tokens,
    register_loss,
    unregister_loss,
)

# Built-in losses: imported for their @register_loss side effect.
from . import likelihood, square, divergence, distill, mixture, margin, repetition, novelty, simctg  # noqa: E402,F401,E501  isort: skip

__all__ = [
    "ENTRY_POINT_GROUP", "GENERIC_PROPERTIES", "KNOWN_PROPERTIES", "OPTIONAL_PROPERTIES",
    "HParam", "LossSpec", "PluginError", "UnknownLossError", "get_loss", "list_losses",
    "load_plugin", "load_plugins", "mean_over_tokens", "register_loss", "unregister_loss",
]
