"""Optional extras (``pip install 'lossbench[hf]'`` and the like), imported only when a
suite uses them; a missing one is an ImportError whose message names the pip command."""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def import_extra(module: str, feature: str, extra: str,
                 offline: tuple[str, ...] = ()) -> ModuleType:
    """``module``, imported for ``feature`` (words for the error: 'arch "hf"'), or an
    ImportError naming ``pip install 'lossbench[extra]'``. ``offline``: environment variables
    set to 1 first (unless the user set them), so a Hugging Face library never downloads."""
    for var in offline:
        os.environ.setdefault(var, "1")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{feature} needs the optional dependency: "
                          f"pip install 'lossbench[{extra}]'") from e
