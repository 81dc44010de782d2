"""Per-seed differences of a loss from its reference, with one rule for runs that did not
finish, used by every comparison and claim of a report.

**The rule.** A seed on which the loss being judged diverged or failed (or ended with a
non-finite value) is a result, not a gap: its Δ is scored worst-case against that loss,
Δ_s = ± P in the metric's worse direction, with the penalty P = max(range of the metric
over every finished run of the table, margin) (so never 0: never silently equal to the
reference). A seed the reference did not finish cannot be paired and is counted as
unpaired (the reference, not the loss, is missing). Claims apply the same penalty against
the claim (report.claims).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDeltas:
    seeds: tuple[int, ...]  # paired seeds, ascending
    deltas: tuple[float, ...]  # loss − reference per paired seed, penalties included
    penalized: int  # seeds the judged loss did not finish (scored at the penalty)
    unpaired: int  # seeds missing on one side, or not finished by the reference
    identical: bool  # both finished every paired seed with exactly the same value


def penalty(values, margin: float) -> float:
    """P = max(range of the finite ``values``, margin), and 1.0 when neither is known."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    spread = float(np.ptp(x)) if len(x) else 0.0
    p = max(spread, margin if math.isfinite(margin) else 0.0)
    return p if p > 0 else 1.0


def paired_deltas(reference: dict[int, float], judged: dict[int, float], *,
                  worse_sign: float, penalty_value: float) -> PairedDeltas:
    """Δ per seed both sides ran (value NaN/inf: did not finish).

    ``worse_sign``: +1 when higher is worse (a loss), -1 when lower is worse.

    >>> p = paired_deltas({0: 2.0, 1: 2.0, 2: 2.1}, {0: 1.9, 1: float("nan"), 2: 2.0},
    ...                   worse_sign=1.0, penalty_value=0.5)
    >>> p.deltas, p.penalized
    ((-0.10000000000000009, 0.5, -0.10000000000000009), 1)
    """
    common = sorted(set(reference) & set(judged))
    unpaired = len(set(reference) ^ set(judged))
    seeds, deltas, penalized, same = [], [], 0, True
    for s in common:
        ref, val = reference[s], judged[s]
        if not (ref is not None and math.isfinite(ref)):
            unpaired += 1
            continue
        seeds.append(s)
        if val is None or not math.isfinite(val):
            penalized += 1
            same = False
            deltas.append(worse_sign * penalty_value)
        else:
            same = same and val == ref
            deltas.append(val - ref)
    return PairedDeltas(tuple(seeds), tuple(deltas), penalized, unpaired,
                        bool(seeds) and same)
