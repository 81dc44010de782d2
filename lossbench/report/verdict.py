"""The report's answer in words: one sentence per loss against the baseline, from the
computed tables (tables.label_table and tables.comparisons); nothing is computed here."""

from __future__ import annotations

import math

from lossbench.analysis.diagnostics import DEGENERATE_MARGIN, LATE_FRACTION, NOT_CONVERGED_DROP
from lossbench.analysis.stats import ALPHA, min_wilcoxon_p
from lossbench.core.metrics import Metric
from lossbench.core.text import duration
from lossbench.report.document import fmt


def signed(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{v:+.3g}"


def spread_text(low: float, high: float, kind: str) -> str:
    """'95% CI 0.112–0.126' or 'range −0.002…+0.02'; '' when there is no spread."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return ""
    if kind == "range":
        return f"range {signed(low)}…{signed(high)}"
    return f"{kind} {signed(low)}…{signed(high)}"


def mean_with_spread(row, column: str) -> str:
    """'2.324 [2.316, 2.331]': a label_table row's mean of ``column`` with its bracket (a
    seed range or a CI, as the row's ``_kind`` says), or the mean alone when there is none."""
    # a metric no run of the table reached (every run failed) has no column: NaN
    text = fmt(getattr(row, column, math.nan))
    low, high = (getattr(row, f"{column}_{k}", math.nan) for k in ("low", "high"))
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{fmt(low)}, {fmt(high)}]"
    return text


def seeds_clause(c) -> str:
    """'; about 9 seeds (≈ 6 min more) would resolve a difference this size'."""
    if not c.seeds_needed or c.seeds_needed <= c.n_pairs:
        return ""
    more = f", ≈ {duration(c.extra_seconds)} more" if c.extra_seconds else ""
    return f"; {c.seeds_needed} seeds would resolve it{more}"


def comparison_sentence(m: Metric, baseline: str, c, counts) -> str:
    """The loss against the baseline on ``m``, in the strongest words the seeds allow."""
    unit = f" {m.unit}" if m.unit else ""
    if counts.failed:
        return f"failed on {counts.failed} of {counts.runs} seeds: not compared"
    if c is None or c.n_pairs == 0:
        return f"no seed paired with {baseline}: not compared"
    delta = f"Δ {signed(c.mean_difference)}"
    spread = spread_text(c.diff_low, c.diff_high, c.diff_kind)
    testable = min_wilcoxon_p(c.n_pairs) <= ALPHA
    if testable and math.isfinite(c.p_holm) and c.p_holm < ALPHA:
        lower = c.mean_difference < 0
        good = lower == bool(m.lower_is_better) if m.lower_is_better is not None else None
        verb = "lower" if lower else "higher"
        tone = {True: "better: ", False: "worse: ", None: ""}[good]
        return (f"{tone}{m.header} {verb} than {baseline} by {fmt(abs(c.mean_difference), 3)}"
                f"{unit} ({spread}, {c.n_pairs}/{counts.runs} seeds, Holm p = "
                f"{fmt(c.p_holm, 2)})")
    if not testable:
        why = (f"{c.n_pairs} seed{'s' if c.n_pairs != 1 else ''}: too few to test")
    else:
        why = f"{c.n_pairs} seeds, Holm p = {fmt(c.p_holm, 2)}"
    inner = ", ".join(p for p in (delta, spread, why) if p)
    return f"not distinguishable from {baseline} ({inner}){seeds_clause(c)}"


def flags(row) -> list[str]:
    """Evidence-based warnings for a label (one table row of tables.label_table)."""
    out = []
    if row.diverged:
        out.append(f"diverged on {row.diverged} of {row.runs} seeds (first at step "
                   f"{fmt(row.diverged_step)}): its means are of the seeds that finished, so it "
                   f"is ranked after the losses that finished every seed and never marked best")
    if row.degenerate:
        out.append(f"degenerate on {row.degenerate} of {row.done} seeds: near-constant "
                   f"predictions (calibrated CE within {DEGENERATE_MARGIN:.0%} of the unigram "
                   f"entropy)")
    if row.not_converged:
        out.append(f"not converged on {row.not_converged} of {row.done} seeds: val CE still "
                   f"fell more than {NOT_CONVERGED_DROP:.0%} over the last "
                   f"{LATE_FRACTION:.0%} of steps, so conclusions may change with more steps")
    return out


def verdict_rows(ranked_table, comps, m: Metric, baseline: str) -> list[list[str]]:
    """[rank, loss, value, against the baseline, flags] per label, best first."""
    by_label = {c.label: c for c in comps.itertuples()}
    rows = []
    for i, row in enumerate(ranked_table.itertuples(), start=1):
        value = mean_with_spread(row, m.column)
        sentence = ("the baseline" if row.label == baseline
                    else comparison_sentence(m, baseline, by_label.get(row.label), row))
        rows.append([str(i), row.label, value, sentence, "; ".join(flags(row))])
    return rows

