"""Testing a suite's claims (lossbench.suite.claims) on its score table, and the report's Claims
section, by the report's one procedure (lossbench.analysis.inference).

Each claim is tested on a's and b's values paired by seed (same weights, same batches):
d_s = a_s - b_s (b a constant: a_s - b).

- **Runs that did not finish count against the claim** (analysis.paired's rule): a seed
  either side did not finish gets d_s = the penalty P = max(range of the two sides'
  finished values, margin), on the side against the claim (lower: +P; higher: -P; equal:
  margin + P). A finished run that never reached the steps-to-target target counts as
  reaching it at its last step (a lower bound; the highest value seen when steps are
  unknown).
- **Test.** lower/higher: the two-sided paired t-test of d against the claim's boundary
  (-margin / +margin): significant with the mean beyond it on the claimed side is
  "supported", on the other side "contradicted". equal: TOST against ±margin (supported)
  and the test of |mean| > margin (contradicted); the claim's p is twice the smaller.
  Every seed's d the same: t is infinite (p 0). Fewer than MIN_SEEDS paired seeds:
  "untested".
- **Holm**: the suite's claims share one family with the report's baseline comparisons
  (report.evidence); claims given with ``--claim`` at report time are a family of their
  own, labelled so: adding one changes no verdict and no suite claim's p.
- **The effect** is the mean of d with the project's interval (a t-interval from 3 seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lossbench.analysis.inference import MIN_SEEDS, _t_p
from lossbench.analysis.paired import penalty
from lossbench.analysis.power import seeds_for
from lossbench.analysis.scores import FINISHED, ScoreTable
from lossbench.analysis.stats import ALPHA, Interval, holm, interval
from lossbench.report.document import Document, fmt
from lossbench.report.verdict import signed, spread_text
from lossbench.suite.claims import Claim

# when a claim was stated (suite.claims' stamp, and --claim)
BEFORE, AFTER, REPORT_TIME = "before the results", "stated after the results", "at report time"


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    n_pairs: int
    against: int  # seeds scored against the claim because a run did not finish
    differences: tuple[float, ...]  # d per paired seed, after scoring unfinished runs
    effect: Interval  # mean d with its range (< 3 seeds) or 95% t-interval
    p: float  # raw p of the claim's test (see the module docstring); NaN: no test
    side: str = ""  # "supported" | "contradicted": the side the test points to
    p_holm: float = math.nan
    verdict: str = "inconclusive"  # supported | contradicted | inconclusive | untested
    seeds_needed: int = 0  # 0: unknown (no effect to detect, no test)
    note: str = ""
    stated: str = BEFORE  # BEFORE | AFTER | REPORT_TIME
    family: str = "report"  # "report" (with the baseline comparisons) | "report time"


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
    pen = penalty([lo, top], claim.margin)
    against_d = {"lower": pen, "higher": -pen, "equal": claim.margin + pen}[claim.direction]

    def value(v, ok):
        if not ok:
            return None
        return top if v == math.inf else lo if v == -math.inf else v

    diffs, against = [], 0
    for s in seeds:
        va, vb = value(*a[s]), value(*b[s])
        if va is None or vb is None:
            against += 1
            diffs.append(against_d)
        else:
            diffs.append(va - vb)
    missing = sum(not math.isfinite(x) for x in diffs)
    if missing:  # a finished run without this metric: no test, and the section says why
        note = "; ".join(filter(None, [note, f"{missing} finished seed(s) have no "
                                             f"{claim.short_metric}: no test"]))
    return diffs, against, note


def _test(claim: Claim, d: np.ndarray) -> tuple[float, str]:
    """(p of the claim's test, the side it points to); NaN below MIN_SEEDS."""
    if len(d) < MIN_SEEDS or not np.all(np.isfinite(d)):
        return math.nan, ""
    m, mean = claim.margin, float(d.mean())
    if claim.direction in ("lower", "higher"):
        edge = -m if claim.direction == "lower" else m
        claimed = mean < edge if claim.direction == "lower" else mean > edge
        return _t_p(d, edge, "two-sided"), "supported" if claimed else "contradicted"
    tost = max(_t_p(d, -m, "greater"), _t_p(d, m, "less"))
    outside = min(1.0, 2 * min(_t_p(d, m, "greater"), _t_p(d, -m, "less")))
    side = "supported" if tost <= outside else "contradicted"
    return min(1.0, 2 * min(tost, outside)), side


def _seeds_needed(claim: Claim, d: np.ndarray, level: float) -> int:
    """Seeds the claim's test at ``level`` (Holm's first step) needs to decide at the
    observed effect with power 0.8 (analysis.power); 0 when unknown."""
    if len(d) < 2 or not np.all(np.isfinite(d)):
        return 0
    mean, m = float(d.mean()), claim.margin
    distance = m - abs(mean) if claim.direction == "equal" else (
        mean + m if claim.direction == "lower" else mean - m)
    if distance == 0:
        return 0
    sd = float(d.std(ddof=1))
    return seeds_for(abs(distance), sd, 0.0, level=level) or 0


def claim_tests(claims, scores: ScoreTable, stated=None) -> list[ClaimResult]:
    """Every claim's raw test (before Holm); ``stated``: when each was stated."""
    raw, stated_list = [], list(stated or [])
    for i, claim in enumerate(claims):
        diffs, against, note = _scored(claim, scores)
        d = np.asarray(diffs, dtype=float)
        p, side = _test(claim, d)
        if len(d) < MIN_SEEDS and not note:
            note = f"{len(d)} paired seed(s): untested (the test needs {MIN_SEEDS})"
        stated = stated_list[i] if i < len(stated_list) else BEFORE
        raw.append(ClaimResult(claim, len(d), against, tuple(diffs), interval(d), p, side,
                               note=note, stated=stated))
    return raw


def finish_claims(raw: list[ClaimResult], p_holm, family_size: int,
                  family: str = "report") -> list[ClaimResult]:
    """Verdicts from the Holm-corrected p's of ``raw`` in a family of ``family_size`` tests."""
    level = ALPHA / max(1, family_size)
    out = []
    for r, ph in zip(raw, p_holm):
        verdict = (r.side if ph < ALPHA else "untested" if r.n_pairs < MIN_SEEDS
                   else "inconclusive")
        needed = (_seeds_needed(r.claim, np.asarray(r.differences, float), level)
                  if verdict == "inconclusive" else 0)
        out.append(ClaimResult(**{**r.__dict__, "p_holm": ph, "verdict": verdict,
                                  "seeds_needed": needed, "family": family}))
    return out


def evaluate_claims(claims, scores: ScoreTable) -> list[ClaimResult]:
    """Every claim tested on ``scores``, Holm-corrected across these claims alone (the
    report puts the suite's claims in its family: report.evidence)."""
    raw = claim_tests(claims, scores)
    return finish_claims(raw, holm([r.p for r in raw]), sum(math.isfinite(r.p) for r in raw))


def _test_name(claim: Claim) -> str:
    return "TOST (paired t)" if claim.direction == "equal" else "paired t"


def _verdict_text(r: ClaimResult) -> str:
    if r.verdict == "untested":
        return f"untested: {r.n_pairs} seed{'s' if r.n_pairs != 1 else ''}"
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
        "margin": r.claim.margin, "source": r.claim.source, "stated": r.stated,
        "family": r.family, "seeds_paired": r.n_pairs,
        "seeds_counted_against": r.against, "mean_difference": r.effect.mean,
        "difference_low": r.effect.low, "difference_high": r.effect.high,
        "difference_kind": r.effect.kind, "test": _test_name(r.claim), "p": r.p,
        "p_holm": r.p_holm, "verdict": r.verdict,
        "seeds_needed": r.seeds_needed or math.nan, "note": r.note,
    } for r in results])


def effect_text(r: ClaimResult) -> str:
    """'−0.12 (95% CI −0.15…−0.09)'."""
    spread = spread_text(r.effect.low, r.effect.high, r.effect.kind)
    return signed(r.effect.mean) + (f" ({spread})" if spread else "")


def counts_text(results: list[ClaimResult]) -> str:
    """'2 claims stated before the results, 1 stated after them, 1 at report time: ...'."""
    when = [(sum(r.stated == w for r in results), w) for w in (BEFORE, AFTER, REPORT_TIME)]
    stated = ", ".join(f"{n} {'stated ' if w == BEFORE else ''}{w}" for n, w in when if n)
    verdicts = ", ".join(f"{sum(r.verdict == v for r in results)} {v}"
                         for v in ("supported", "contradicted", "inconclusive", "untested")
                         if any(r.verdict == v for r in results))
    return f"{len(results)} claim{'s' if len(results) != 1 else ''} ({stated}): {verdicts}."


def section(doc: Document, results: list[ClaimResult]) -> None:
    """The Claims section: each stated claim, its paired effect, test and verdict."""
    if not results:
        return
    doc.section("Claims")
    doc.text(counts_text(results) + " Δ = a − b per seed (paired: same weights and "
             "batches), its mean with a 95% t-interval (the seeds' range below 3 seeds). "
             "The report's one procedure (see Statistics): lower/higher: two-sided paired "
             "t-test of Δ against ∓margin, supported or contradicted by the side the mean "
             "lies on; equal: TOST against ±margin, or contradicted outside it (p: twice the "
             "smaller). The suite's claims are Holm-corrected in one family with the "
             "Verdict's comparisons; claims given with --claim at report time are a family "
             "of their own (they change no verdict). A run that diverged or failed is "
             "scored against the claim (the range of the values seen, at least the margin), "
             "never dropped; a target never reached, at the run's last step. A claim edited "
             "or added once results existed is marked \"stated after the results\": the "
             "table could have suggested it.")
    rows = []
    for r in results:
        seeds = f"{r.n_pairs}" + (f" ({r.against} against: not finished)" if r.against else "")
        rows.append([r.claim.name, r.claim.statement(), effect_text(r), _test_name(r.claim),
                     fmt(r.p_holm, 3), seeds, _verdict_text(r), r.stated,
                     r.claim.source or "–"])
    doc.table(["claim", "stated", "Δ = a − b", "test", "p (Holm)", "seeds", "verdict",
               "when stated", "source"], rows)


STAMPS = ("stated_at", "after_results")  # written by the store with each suite claim


def stated_claims(meta: dict, texts, scores: ScoreTable) -> tuple[list, list[str], list]:
    """(the experiment's [[claims]], when each was stated, the command line's ``--claim``
    claims), checked against these runs' labels and metrics (ClaimError). A suite claim
    records whether results existed when it was stated (store.experiments stamps it)."""
    from lossbench.core.escaping import printable_names
    from lossbench.core.metrics import BY_COLUMN
    from lossbench.suite.claims import ClaimError, check_claim, parse_claim_text

    columns = [c for c in scores.runs.columns if c.startswith("final_") or c in BY_COLUMN]
    # the record is a file anyone may have written: checked again, against every label of
    # the experiment (a label with no finished run yet is still a label)
    labels = [*scores.labels, *(r.get("label") for r in meta.get("runs") or []
                                if isinstance(r, dict) and isinstance(r.get("label"), str))]
    suite, stated, late, errors = [], [], [], []
    for i, raw in enumerate(meta.get("claims") or []):
        after = isinstance(raw, dict) and raw.get("after_results") is True
        raw = {k: v for k, v in raw.items() if k not in STAMPS} if isinstance(raw, dict) else raw
        claim, problems = check_claim(raw, f"experiment {printable_names([meta.get('id', '')])}: "
                                           f"claims[{i}]",
                                      dict.fromkeys(labels), [*BY_COLUMN, *columns])
        if claim:
            suite.append(claim)
            stated.append(AFTER if after else BEFORE)
        errors += problems
    for text in texts or ():
        try:
            late.append(parse_claim_text(text, scores.labels, columns))
        except ClaimError as exc:
            errors += exc.errors
    if errors:
        raise ClaimError(errors)
    return suite, stated, late
