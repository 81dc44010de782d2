"""Names and paths that come from other people's files: checked, never trusted.

A suite name, or the name read back from a results directory's ``suite.json``,
becomes part of output paths (``results/<name>``, report folders). It must be a
safe slug, and every path built from untrusted parts must stay inside its root,
symlinks resolved.
"""

from __future__ import annotations

import re
from pathlib import Path

# letters, digits, '.', '_', '-'; starts with a letter or digit (no '.', '..', hidden names)
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class UnsafePathError(ValueError):
    """A name or path that would escape its root or is not a plain name."""


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a safe slug (None when it is): 1-100 characters of letters,
    digits, '.', '_' and '-', starting with a letter or digit."""
    if not isinstance(name, str) or not name:
        return "expected a non-empty string"
    if not _SLUG.fullmatch(name):
        return (f"{name!r} is not a safe name: use 1-100 letters, digits, '.', '_' or '-', "
                f"starting with a letter or digit")
    return None


def safe_name(name: object, what: str = "name") -> str:
    """``name`` if it is a safe slug, else UnsafePathError naming ``what``."""
    problem = name_problem(name)
    if problem:
        raise UnsafePathError(f"{what}: {problem}")
    return name  # type: ignore[return-value]


def inside(root: str | Path, path: str | Path) -> bool:
    """Does ``path`` (symlinks resolved) lie inside ``root`` (symlinks resolved)?"""
    root_r = Path(root).resolve()
    path_r = Path(path).resolve()
    return path_r == root_r or root_r in path_r.parents


def contained(root: str | Path, path: str | Path, what: str = "path") -> Path:
    """``path`` if it stays inside ``root`` once symlinks are resolved, else UnsafePathError."""
    if not inside(root, path):
        raise UnsafePathError(f"{what}: {path} resolves outside {root}")
    return Path(path)
