"""The report's answer in words: one sentence per loss against the baseline, from the
computed tables (tables.label_table and tables.comparisons); nothing is computed here."""

from __future__ import annotations

import math

from lossbench.analysis.diagnostics import DEGENERATE_MARGIN, LATE_FRACTION, NOT_CONVERGED_DROP
from lossbench.analysis.inference import MIN_SEEDS
from lossbench.core.metrics import Metric
from lossbench.core.text import duration
from lossbench.report.document import fmt

# the procedure's words (analysis.inference.WORDS) as every format prints them
WORD_TEXT = {"better": "better", "worse": "worse", "different": "different",
             "equivalent": "practically equivalent", "below margin": "below the margin",
             "no difference": "no difference detected", "untested": "untested",
             "identical": "identical to the baseline"}


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
    """'; 9–15 seeds would resolve it, ≈ 6 min more' (analysis.power), or the margin's
    answer for a negligible Δ."""
    text = getattr(c, "seeds_text", "") or ""
    if not text:
        return ""
    if c.seeds_kind == "equivalent":
        return f"; {text}"
    if c.seeds_low and c.seeds_low <= c.n_pairs and c.seeds_high is None:
        text = f"more than {c.n_pairs} seeds (the interval allows an effect within the margin)"
    more = f", ≈ {duration(c.extra_seconds)} more" if c.extra_seconds else ""
    return f"; {text} would resolve it{more}"


def _seeds(c, counts) -> str:
    text = f"{c.n_pairs}/{counts.runs} seeds"
    if c.penalized:
        text += f", {c.penalized} not finished: scored worst-case"
    if getattr(c, "unpaired", 0):
        text += f", {c.unpaired} unpaired (not run or not finished by the baseline)"
    return text


def comparison_sentence(m: Metric, baseline: str, c, counts) -> str:
    """The loss against the baseline on ``m``, in the procedure's words
    (analysis.inference.decide): the same words the Claims, LaTeX and terminal use."""
    unit = f" {m.unit}" if m.unit else ""
    if c is None or c.n_pairs == 0:
        return f"no seed paired with {baseline}: not compared"
    delta = f"Δ {signed(c.mean_difference)}"
    spread = spread_text(c.diff_low, c.diff_high, c.diff_kind)
    holm_p = f"Holm p = {fmt(c.p_holm, 2)}"
    word = c.word
    if word == "untested":
        inner = ", ".join(p for p in (delta, spread) if p)
        return (f"untested: {c.n_pairs} seed{'s' if c.n_pairs != 1 else ''} (the test needs "
                f"{MIN_SEEDS}; {inner}){seeds_clause(c)}")
    if word == "identical":
        return (f"identical to {baseline} on every seed ({c.n_pairs} seeds): does the loss "
                f"reach the model?")
    if word in ("better", "worse", "different"):
        verb = "lower" if c.mean_difference < 0 else "higher"
        tone = "" if word == "different" else f"{word}: "
        return (f"{tone}{m.header} {verb} than {baseline} by {fmt(abs(c.mean_difference), 3)}"
                f"{unit} ({spread}, {_seeds(c, counts)}, {holm_p})")
    if word == "equivalent":
        return (f"practically equivalent to {baseline} within ±{c.margin:.2g}{unit} ({delta}, "
                f"{spread}, {_seeds(c, counts)}, TOST Holm p = {fmt(c.p_equivalent_holm, 2)})")
    inner = ", ".join(p for p in (delta, spread, _seeds(c, counts), holm_p) if p)
    if word == "below margin":
        return (f"different from {baseline}, but by less than the ±{c.margin:.2g}{unit} "
                f"margin ({inner})")
    if c.penalized and c.p_holm < 0.05:  # significant in its favour, but a seed did not finish
        return (f"not called better: {c.penalized} seed{'s' if c.penalized != 1 else ''} did "
                f"not finish ({inner})")
    return f"no difference detected at {c.n_pairs} seeds ({inner}){seeds_clause(c)}"


def flags(row, informed: str = "", comparison=None) -> list[str]:
    """Evidence-based warnings for a label (one table row of tables.label_table): the Runs
    section's diagnoses counted, what the loss uses that the baseline does not, and a
    loss identical to the baseline."""
    out = []
    if comparison is not None and getattr(comparison, "identical", False):
        out.append("identical to the baseline on every seed: does the loss reach the model?")
    if informed:
        out.append(f"uses information the baseline lacks: {informed}")
    if row.diverged:
        out.append(f"diverged on {row.diverged} of {row.runs} seeds (first at step "
                   f"{fmt(row.diverged_step)}): scored worst-case in the test, ranked after "
                   f"the losses that finished every seed, never called better or marked")
    if row.failed:
        out.append(f"failed on {row.failed} of {row.runs} seeds: scored worst-case")
    if row.degenerate:
        out.append(f"degenerate on {row.degenerate} of {row.done} seeds: near-constant "
                   f"predictions (calibrated CE within {DEGENERATE_MARGIN:.0%} of the unigram "
                   f"entropy)")
    if row.not_converged:
        out.append(f"not converged on {row.not_converged} of {row.done} seeds: val CE still "
                   f"fell more than {NOT_CONVERGED_DROP:.0%} over the last "
                   f"{LATE_FRACTION:.0%} of steps, so conclusions may change with more steps")
    for flag, what in (("plateau", "val CE changed < 1% over the last third of evaluations"),
                       ("underfitting", "training CE within 5% of its start")):
        n = getattr(row, flag, 0)
        if n:
            out.append(f"{flag} on {n} of {row.done} seeds ({what})")
    return out


def verdict_rows(ranked_table, comps, m: Metric, baseline: str,
                 informed: dict | None = None) -> list[list[str]]:
    """[rank, loss, value, against the baseline, flags] per label, best first."""
    by_label = {c.label: c for c in comps.itertuples()}
    informed = informed or {}
    rows = []
    for i, row in enumerate(ranked_table.itertuples(), start=1):
        value = mean_with_spread(row, m.column)
        c = by_label.get(row.label)
        sentence = ("the baseline" if row.label == baseline
                    else comparison_sentence(m, baseline, c, row))
        rows.append([str(i), row.label, value, sentence,
                     "; ".join(flags(row, informed.get(row.label, ""), c))])
    return rows
