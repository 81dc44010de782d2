"""Claims: the effects a suite expects, stated before it runs and tested by its report.

    [[claims]]
    name = "UL lowers greedy repetition"
    a = "unlikelihood"           # a label, as in the report
    b = "cross_entropy"          # a label, or a number (a's seeds against a constant)
    metric = "seq_rep_4"         # a final metric (report.metrics), with or without final_
    direction = "lower"          # lower | higher | equal
    margin = 0.0                 # lower/higher: by more than margin; equal: |a - b| <= margin
    source = "Welleck et al., ICLR 2020, Table 2"

or, on the command line, ``lossbench report DIR --claim "unlikelihood < cross_entropy on
seq_rep_4"`` (``>``, ``=``; ``by M`` or ``within M`` sets the margin). Stating a claim up
front is the point: a hypothesis written after reading the table is not tested by it, so
the experiment's record stamps each claim when it is first seen and marks one edited or
added after results existed (store.experiments.stamp_claims); the report says so.

Parsing and validation only, with no statistics and no I/O (report.claims tests them), so
a bad claim is one line naming the file and key, exit 2, before any run starts.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from lossbench.core.escaping import printable_names
from lossbench.core.fields import ProblemList
from lossbench.core.metrics import BY_COLUMN
from lossbench.core.text import did_you_mean

DIRECTIONS = ("lower", "higher", "equal")
SYMBOLS = {"lower": "<", "higher": ">", "equal": "≈"}
KEYS = ("name", "a", "b", "metric", "direction", "margin", "source")
REQUIRED = ("a", "b", "metric", "direction")


class ClaimError(ProblemList):
    """A claim that cannot be tested, one line per problem."""


@dataclass(frozen=True)
class Claim:
    name: str
    a: str  # a label
    b: str | float  # a label, or a constant every seed of a is compared with
    metric: str  # a score-table column (final_seq_rep_4, steps_to_target)
    direction: str  # lower | higher | equal
    margin: float = 0.0  # >= 0, in the metric's unit
    source: str = ""

    @property
    def b_is_constant(self) -> bool:
        return not isinstance(self.b, str)

    @property
    def short_metric(self) -> str:
        return self.metric.removeprefix("final_")

    def statement(self) -> str:
        """'unlikelihood < cross_entropy on seq_rep_4 by more than 0.01' (the claim alone)."""
        b = f"{self.b:g}" if self.b_is_constant else self.b
        text = f"{self.a} {SYMBOLS[self.direction]} {b} on {self.short_metric}"
        if self.direction == "equal":
            return text + f" within ±{self.margin:g}"
        return text + (f" by more than {self.margin:g}" if self.margin else "")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Claim":
        """A claim as an experiment record stored it (already validated when written)."""
        return cls(**{k: d[k] for k in KEYS if k in d})


def metric_column(name: str, columns) -> str | None:
    """The score-table column a claim's metric names (``seq_rep_4`` or ``final_seq_rep_4``),
    or None when ``columns`` has neither."""
    for column in (name, f"final_{name}"):
        if column in columns:
            return column
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_claim(raw: dict, where: str, labels, columns=BY_COLUMN) -> tuple[Claim | None, list[str]]:
    """One claim table: the Claim and no problems, or None and every problem (each naming
    ``where`` and the key). ``labels``: the suite's (or the results') labels; ``columns``:
    the metric columns a claim may name."""
    if not isinstance(raw, dict):
        return None, [f"{where}: expected a table with keys {', '.join(KEYS)}"]
    errors = [f"{where}: unknown key {k!r}{did_you_mean(str(k), KEYS)}" for k in raw if k not in KEYS]
    errors += [f"{where}: {k}: required" for k in REQUIRED if k not in raw]
    labels = list(labels)
    a, b = raw.get("a"), raw.get("b")
    if "a" in raw and not (isinstance(a, str) and a in labels):
        errors.append(f"{where}: a: {a!r} is not a label of the suite{did_you_mean(str(a), labels)}"
                      f" (labels: {printable_names(labels)})")
    if "b" in raw and not (_number(b) or (isinstance(b, str) and b in labels)):
        errors.append(f"{where}: b: {b!r} is neither a label of the suite "
                      f"{did_you_mean(str(b), labels)}nor a finite number (labels: "
                      f"{printable_names(labels)})")
    if isinstance(a, str) and a == b:
        errors.append(f"{where}: a and b are the same label {a!r}: nothing to compare")
    metric = raw.get("metric")
    column = metric_column(metric, columns) if isinstance(metric, str) else None
    if "metric" in raw and column is None:
        known = sorted(c.removeprefix("final_") for c in columns)
        errors.append(f"{where}: metric: {metric!r} is not a final metric"
                      f"{did_you_mean(str(metric), known)} (metrics: {printable_names(known)})")
    direction = raw.get("direction")
    if "direction" in raw and direction not in DIRECTIONS:
        errors.append(f"{where}: direction: expected one of {', '.join(DIRECTIONS)}, got "
                      f"{direction!r}")
    margin = raw.get("margin", 0.0)
    if not (_number(margin) and margin >= 0):
        errors.append(f"{where}: margin: expected a number >= 0, got {margin!r}")
    elif direction == "equal" and margin == 0:
        errors.append(f"{where}: margin: an 'equal' claim needs a margin > 0 (|a - b| <= "
                      f"margin): no test can show an exact equality")
    for key in ("name", "source"):
        if key in raw and not isinstance(raw[key], str):
            errors.append(f"{where}: {key}: expected a string")
    if errors:
        return None, errors
    claim = Claim(name="", a=a, b=b if isinstance(b, str) else float(b), metric=column,
                  direction=direction, margin=float(margin), source=raw.get("source", ""))
    return Claim(**{**claim.to_dict(), "name": raw.get("name") or claim.statement()}), []


def parse_claims(value, where: str, labels, errors: list[str],
                 columns=BY_COLUMN) -> tuple[Claim, ...]:
    """A suite's ``[[claims]]`` (a list of tables); problems are appended to ``errors``."""
    if not isinstance(value, list):
        errors.append(f"{where}: claims: expected [[claims]] tables (a list of tables)")
        return ()
    out = []
    for i, raw in enumerate(value):
        claim, problems = check_claim(raw, f"{where}: claims[{i}]", labels, columns)
        errors += problems
        if claim is not None:
            out.append(claim)
    names = [c.name for c in out]
    errors += [f"{where}: claims: name {n!r} is used twice" for n in sorted(set(names))
               if names.count(n) > 1]
    return tuple(out)


_TEXT = re.compile(r"^\s*(?P<a>\S+)\s*(?P<op><=?|>=?|==?|≈|~)\s*(?P<b>\S+)\s+on\s+(?P<metric>\S+)"
                   r"(?:\s+(?:by|within|±)\s*(?P<margin>\S+))?\s*$")
_OPS = {"<": "lower", "<=": "lower", ">": "higher", ">=": "higher", "=": "equal",
        "==": "equal", "≈": "equal", "~": "equal"}


def parse_claim_text(text: str, labels, columns) -> Claim:
    """``"A < B on METRIC"`` (or ``>``, ``=``), optionally ``by M`` (lower/higher: by more
    than M) or ``within M`` (equal); raises ClaimError naming the --claim."""
    where = f"--claim {text!r}"
    match = _TEXT.match(text)
    if not match:
        raise ClaimError([f"{where}: expected 'A < B on METRIC' (or >, =; optionally 'by M' "
                          f"or 'within M')"])
    raw = {"a": match["a"], "metric": match["metric"], "direction": _OPS[match["op"]]}
    b = match["b"]
    try:
        raw["b"] = b if b in labels else float(b)
    except ValueError:
        raw["b"] = b
    if match["margin"] is not None:
        try:
            raw["margin"] = float(match["margin"])
        except ValueError:
            raw["margin"] = match["margin"]
    claim, errors = check_claim(raw, where, labels, columns)
    if errors:
        raise ClaimError(errors)
    return claim
