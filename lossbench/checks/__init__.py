"""Property checks for losses: hypothesis strategies, named properties, a runner.

Used by ``lossbench check`` and by the test suite, which is parametrized over
the registry so every new loss is checked for free. :func:`load_target` adapts a
loss in its real-world shape (mean-reduced, (N, V), an ``nn.Module`` class or a criterion
object, dict inputs, a fixed padding id, teacher logits, no targets) to the properties'
per-token contract.

The names below load on first use: the command line imports this package to register
`lossbench check`, and its other commands should not pay for torch and hypothesis.
"""

import sys
from importlib import import_module

_WHERE = {
    "PROPERTIES": "properties", "Property": "properties",
    "CheckOptions": "adapters", "CheckSpec": "adapters", "CheckTargetError": "adapters",
    "Diagnosis": "runner", "PropertyResult": "runner", "check_loss": "runner",
    "diagnose": "runner", "run_property": "runner",
    "LossCase": "strategies", "seeded_tensors": "strategies", "ModelOutput": "adapters",
    "load_target": "targets", "resolve_targets": "targets",
}
__all__ = list(_WHERE)

if "hypothesis" in sys.modules:  # a test session: its conftest loads the profiles by name
    from . import hypothesis_settings  # noqa: F401


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
