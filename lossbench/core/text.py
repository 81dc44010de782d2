"""Wording shared by every command and the report: durations and "did you mean"."""

from __future__ import annotations

import difflib
import math

from lossbench.core.escaping import printable_names


def duration(seconds: float, unknown: str = "unknown time") -> str:
    """'45 s', '3 min', '2 h 05 min': rounded as a person would say it; ``unknown`` when
    the time is not finite."""
    if not math.isfinite(seconds):
        return unknown
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def did_you_mean(word: str, options) -> str:
    """`` (did you mean a, b?)`` for the options close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(options), n=3, cutoff=0.5)
    return f" (did you mean {printable_names(close)}?)" if close else ""
