"""Property checks for losses: hypothesis strategies, named properties, a runner.

Used by ``lossbench check`` and by the test suite, which is parametrized over
the registry so every new loss is checked for free.
"""

from .properties import PROPERTIES, Property
from .runner import CheckTargetError, PropertyResult, check_loss, resolve_targets, run_property
from .strategies import LossCase

__all__ = ["PROPERTIES", "Property", "CheckTargetError", "PropertyResult", "check_loss",
           "resolve_targets", "run_property", "LossCase"]
