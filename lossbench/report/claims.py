"""Testing a suite's claims (lossbench.suite.claims) on its score table, and the report's Claims
section.

Each claim is tested on a's and b's values paired by seed (same weights, same batches):
d_s = a_s - b_s (b a constant: a_s - b).

- **Runs that did not finish count against the claim.** A diverged or failed seed of
  either side is scored at the worst value any run of the two sides reached, for the
  claim (a claimed lower: a at the highest value seen, b at the lowest). A finished run
  that never reached the steps-to-target target counts as reaching it at its last step (a
  lower bound; the highest value seen when steps are unknown). Nothing is dropped, and a
  claim never wins on a run that did not finish.
- **Tests.** lower/higher: a one-sided paired t-test of d against -margin / +margin;
  equal: TOST (two one-sided paired t-tests against -margin and +margin; its p is the
  larger). A t-test, not the Statistics section's exact Wilcoxon: a suite states several
  claims, and with Holm across them and 5-8 seeds the exact test cannot reach 0.05 at all
  (its smallest one-sided p is 1/2^n); the t-test assumes roughly normal differences,
  which the section says.
- **Holm** across the claims of the report, separately for the claim and for its
  opposite: each kind of verdict, "supported" and
  "contradicted", keeps its family-wise error under alpha, so a wrong verdict of either
  kind has a chance of at most 2 alpha (one Holm family over both would halve each
  side's level). Verdict: supported (the claim's Holm p < 0.05), contradicted (the opposite's:
  a significantly on the other side of the margin, or for equal, outside it), otherwise
  inconclusive, with the seeds a paired t-test would need at the observed effect
  (stats.paired_t_seeds at Holm's first-step level, alpha / the claims with a test,
  one-sided; every seed's difference the same: the sign test's n, 1/2^n below that level).
- **The effect** is the mean of d with the project's interval rule (stats.interval): the
  seeds' range below 5 seeds, a 95% bootstrap CI from 5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from lossbench.analysis.scores import FINISHED, ScoreTable
from lossbench.analysis.stats import ALPHA, Interval, holm, interval, paired_t_seeds
from lossbench.report.document import Document, fmt
from lossbench.report.verdict import signed, spread_text
from lossbench.suite.claims import Claim


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    n_pairs: int
    against: int  # seeds scored against the claim because a run did not finish
    differences: tuple[float, ...]  # d per paired seed, after scoring unfinished runs
    effect: Interval  # mean d with its range (< 5 seeds) or 95% bootstrap CI
    p: float  # raw p of the claim (one-sided, or TOST); NaN when no test was possible
    p_against: float  # raw p of its opposite
    p_holm: float = math.nan
    p_against_holm: float = math.nan
    verdict: str = "inconclusive"  # supported | contradicted | inconclusive
    seeds_needed: int = 0  # 0: unknown (no spread, no test)
    note: str = ""


def _scored(claim: Claim, scores: ScoreTable) -> tuple[list[float], int, str]:
    """d per seed both sides ran, with unfinished runs scored against the claim; the count
    of seeds so scored; a note when seeds are missing from one side."""
    runs = scores.runs
    if claim.metric not in runs:
        return [], 0, f"no {claim.short_metric} in these runs"

    def side(label):
        g = runs[runs.label == label]
        return {int(s): (float(v), st == FINISHED) for s, v, st in
                zip(g.seed, g[claim.metric].astype(float), g.status)}

    a = side(claim.a)
    b = ({s: (float(claim.b), True) for s in a} if claim.b_is_constant else side(claim.b))
    seeds = sorted(set(a) & set(b))
    note = ""
    if len(seeds) < max(len(a), len(b)):
        note = f"{max(len(a), len(b)) - len(seeds)} seed(s) ran on one side only: not paired"
    seen = [v for s in seeds for v, ok in (a[s], b[s]) if ok and math.isfinite(v)]
    if not seen:
        why = f"no seed has a finite {claim.short_metric} on either side: no test"
        return ([float("nan")] * len(seeds), sum(not (a[s][1] and b[s][1]) for s in seeds),
                "; ".join(filter(None, [note, why])) if seeds else note)
    lo, hi = min(seen), max(seen)
    top = hi  # a finished run's inf: steps to target never reached: at least its last step
    if claim.metric == "steps_to_target" and "steps" in runs:
        top = max([hi, *runs[runs.label.isin([claim.a, claim.b])].steps.astype(float)])

    def value(v, ok):
        if not ok:
            return None
        return top if v == math.inf else lo if v == -math.inf else v

    diffs, against = [], 0
    for s in seeds:
        va, vb = value(*a[s]), value(*b[s])
        if va is None or vb is None:
            against += 1
            if claim.direction == "lower":
                va, vb = (hi if va is None else va), (lo if vb is None else vb)
            elif claim.direction == "higher":
                va, vb = (lo if va is None else va), (hi if vb is None else vb)
            elif va is None and vb is None:
                va, vb = hi, lo
            elif va is None:
                va = hi if abs(hi - vb) >= abs(lo - vb) else lo
            else:
                vb = hi if abs(hi - va) >= abs(lo - va) else lo
        diffs.append(va - vb)
    missing = sum(not math.isfinite(x) for x in diffs)
    if missing:  # a finished run without this metric: no test, and the section says why
        note = "; ".join(filter(None, [note, f"{missing} finished seed(s) have no "
                                             f"{claim.short_metric}: no test"]))
    return diffs, against, note


def _no_spread(d: np.ndarray, at: float = 0.0) -> bool:
    """Every seed's difference the same, up to floating-point rounding: a - b computed from
    values near 2.0 differs in its last bits (a spread of 1e-17 around -0.1), which would
    give a t of 1e15 and p = 1e-60 where exactly equal differences give no t at all."""
    scale = max(float(np.abs(d).max()), abs(at))
    return float(np.ptp(d)) <= 1e-9 * scale


def _t(d: np.ndarray, at: float, alternative: str) -> float:
    """One-sided one-sample t-test p of d against ``at``. With no spread (every seed the
    same, e.g. steps to target, or the same up to rounding) there is no t: the exact sign
    test's p, 1/2^n when every seed is beyond ``at``, else 1."""
    if _no_spread(d, at):
        mean = float(d.mean())
        beyond = mean < at if alternative == "less" else mean > at
        return 0.5 ** len(d) if beyond else 1.0
    return float(sps.ttest_1samp(d, at, alternative=alternative).pvalue)


def _tests(claim: Claim, d: np.ndarray) -> tuple[float, float]:
    """(p of the claim, p of its opposite); NaN when fewer than 2 seeds paired."""
    if len(d) < 2 or not np.all(np.isfinite(d)):
        return math.nan, math.nan
    m = claim.margin
    if claim.direction == "lower":
        return _t(d, -m, "less"), _t(d, -m, "greater")
    if claim.direction == "higher":
        return _t(d, m, "greater"), _t(d, m, "less")
    tost = max(_t(d, -m, "greater"), _t(d, m, "less"))
    outside = min(1.0, 2 * min(_t(d, m, "greater"), _t(d, -m, "less")))
    return tost, outside


def _seeds_needed(claim: Claim, d: np.ndarray, alpha: float) -> int:
    """Seeds a one-sided paired test at ``alpha`` would need to decide at the observed
    effect (toward the claim or against it); 0 when unknown (no effect beyond the margin
    either way). Every seed the same: the sign test's, the fewest n with 1/2^n < alpha
    (2/2^n for 'outside an equality margin', a two-sided test)."""
    if len(d) < 2 or not np.all(np.isfinite(d)):
        return 0
    mean, m = float(d.mean()), claim.margin
    if claim.direction == "equal":
        distance = m - abs(mean)
    else:
        distance = mean + m if claim.direction == "lower" else mean - m
    if distance == 0:
        return 0
    if _no_spread(d, m):
        two_sided = claim.direction == "equal" and distance < 0
        return math.floor(math.log2((2 if two_sided else 1) / alpha)) + 1
    # one-sided at alpha = two-sided at 2 alpha
    needed = paired_t_seeds(abs(distance) / float(d.std(ddof=1)), alpha=min(1.0, 2 * alpha))
    return max(2, needed) if needed else 0


def evaluate_claims(claims, scores: ScoreTable) -> list[ClaimResult]:
    """Every claim tested on ``scores``, Holm-corrected across the claims."""
    raw = []
    for claim in claims:
        diffs, against, note = _scored(claim, scores)
        d = np.asarray(diffs, dtype=float)
        p, p_against = _tests(claim, d)
        if len(d) < 2 and not note:
            note = f"{len(d)} paired seed(s): no test possible"
        raw.append(ClaimResult(claim, len(d), against, tuple(diffs), interval(d), p, p_against,
                               note=note))
    p_holm, against_holm = holm([r.p for r in raw]), holm([r.p_against for r in raw])
    # Holm's family is the claims with a test (a NaN p is left out of it): the seeds needed
    # are for its first step, alpha / that many
    alpha_each = ALPHA / max(1, sum(math.isfinite(r.p) for r in raw))
    out = []
    for r, ph, pa in zip(raw, p_holm, against_holm):
        verdict = ("supported" if ph < ALPHA else "contradicted" if pa < ALPHA
                   else "inconclusive")
        needed = (_seeds_needed(r.claim, np.asarray(r.differences, float), alpha_each)
                  if verdict == "inconclusive" else 0)
        out.append(ClaimResult(**{**r.__dict__, "p_holm": ph, "p_against_holm": pa,
                                  "verdict": verdict, "seeds_needed": needed}))
    return out


def _test_name(claim: Claim) -> str:
    return ("TOST (paired t)" if claim.direction == "equal"
            else "one-sided paired t")


def _verdict_text(r: ClaimResult) -> str:
    if r.verdict != "inconclusive":
        return r.verdict
    if r.seeds_needed and r.seeds_needed > r.n_pairs:
        return f"inconclusive: about {r.seeds_needed} seeds would decide it"
    return "inconclusive" + (f" ({r.note})" if r.note else "")


def _b(claim: Claim) -> str:
    return f"{claim.b:g}" if claim.b_is_constant else claim.b


def claims_table(results: list[ClaimResult]) -> pd.DataFrame:
    """claims.csv: one row per claim, every number the section shows."""
    return pd.DataFrame([{
        "name": r.claim.name, "statement": r.claim.statement(), "a": r.claim.a,
        "b": _b(r.claim), "metric": r.claim.short_metric, "direction": r.claim.direction,
        "margin": r.claim.margin, "source": r.claim.source, "seeds_paired": r.n_pairs,
        "seeds_counted_against": r.against, "mean_difference": r.effect.mean,
        "difference_low": r.effect.low, "difference_high": r.effect.high,
        "difference_kind": r.effect.kind, "test": _test_name(r.claim), "p": r.p,
        "p_holm": r.p_holm, "p_opposite": r.p_against, "p_opposite_holm": r.p_against_holm,
        "verdict": r.verdict, "seeds_needed": r.seeds_needed or math.nan, "note": r.note,
    } for r in results])


def effect_text(r: ClaimResult) -> str:
    """'−0.12 (95% CI −0.15…−0.09)'."""
    spread = spread_text(r.effect.low, r.effect.high, r.effect.kind)
    return signed(r.effect.mean) + (f" ({spread})" if spread else "")


def section(doc: Document, results: list[ClaimResult]) -> None:
    """The Claims section: each stated claim, its paired effect, test and verdict."""
    if not results:
        return
    doc.section("Claims")
    counts = {v: sum(r.verdict == v for r in results)
              for v in ("supported", "contradicted", "inconclusive")}
    doc.text(f"{len(results)} claim{'s' if len(results) != 1 else ''} stated before the runs: "
             f"{counts['supported']} supported, {counts['contradicted']} contradicted, "
             f"{counts['inconclusive']} inconclusive. Δ = a − b per seed (paired: same "
             f"weights and batches), its mean with the seeds' range below 5 seeds, else a 95% "
             f"bootstrap CI. lower/higher: one-sided paired t-test of Δ against ∓margin; "
             f"equal: TOST (|Δ| ≤ margin). A t-test assumes roughly normal Δ; it is used "
             f"because with Holm across the claims and 5–8 seeds the exact Wilcoxon test of "
             f"the Statistics section could not reach 0.05. p is Holm-corrected across the "
             f"claims, and so is the opposite's (a wrong verdict of either kind: at most "
             f"2 × 0.05); contradicted: the opposite is significant (its p is shown). Every "
             f"seed's Δ equal (up to rounding): the exact sign test's 1/2^n. A run that "
             f"diverged or failed is scored at the worst value seen, against the claim, never "
             f"dropped; a target never reached, at the run's last step.")
    rows = []
    for r in results:
        seeds = f"{r.n_pairs}" + (f" ({r.against} against: not finished)" if r.against else "")
        p = fmt(r.p_against_holm if r.verdict == "contradicted" else r.p_holm, 3)
        rows.append([r.claim.name, r.claim.statement(), effect_text(r), _test_name(r.claim),
                     p, seeds, _verdict_text(r), r.claim.source or "–"])
    doc.table(["claim", "stated", "Δ = a − b", "test", "p (Holm)", "seeds", "verdict",
               "source"], rows)


def stated_claims(meta: dict, texts, scores: ScoreTable) -> list[Claim]:
    """The experiment's [[claims]] (validated when the suite was loaded) then the command
    line's ``--claim`` texts, checked against these runs' labels and metrics (ClaimError)."""
    from lossbench.core.escaping import printable_names
    from lossbench.core.metrics import BY_COLUMN
    from lossbench.suite.claims import ClaimError, check_claim, parse_claim_text

    columns = [c for c in scores.runs.columns if c.startswith("final_") or c in BY_COLUMN]
    # the record is a file anyone may have written: checked again, against every label of
    # the experiment (a label with no finished run yet is still a label)
    labels = [*scores.labels, *(r.get("label") for r in meta.get("runs") or []
                                if isinstance(r, dict) and isinstance(r.get("label"), str))]
    out, errors = [], []
    for i, raw in enumerate(meta.get("claims") or []):
        claim, problems = check_claim(raw, f"experiment {printable_names([meta.get('id', '')])}: "
                                           f"claims[{i}]",
                                      dict.fromkeys(labels), [*BY_COLUMN, *columns])
        out += [claim] if claim else []
        errors += problems
    for text in texts or ():
        try:
            out.append(parse_claim_text(text, scores.labels, columns))
        except ClaimError as exc:
            errors += exc.errors
    if errors:
        raise ClaimError(errors)
    return out
