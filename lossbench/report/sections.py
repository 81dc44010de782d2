"""The report's first sections: the verdict, the results tables, the paired statistics and
the glossary, laid out from an Evidence (report.evidence)."""

from __future__ import annotations

import math

from lossbench.analysis.diagnostics import DEGENERATE_MARGIN, LATE_FRACTION, NOT_CONVERGED_DROP
from lossbench.analysis.stats import MIN_SEEDS_FOR_CI, min_wilcoxon_p
from lossbench.core.metrics import metric
from lossbench.core.text import duration
from lossbench.report.document import Bold, Document, fmt
from lossbench.report.evidence import Evidence
from lossbench.report.protocol import protocol_of
from lossbench.report.tables import best_labels
from lossbench.report import teacher
from lossbench.report.verdict import mean_with_spread, signed, spread_text, verdict_rows


def protocol(ev: Evidence) -> str:
    """Hyperparameters, steps, seeds, data and model of the final runs, in one paragraph."""
    configs = [r["config"] for r in ev.results]
    seeds = sorted(set(ev.scores.runs.seed.astype(int)))
    parts = [protocol_of(ev.meta) + (" (see Tuning)" if "tune" in ev.meta else "")]
    if configs:
        c = configs[0]
        d, m, t = c["data"], c["model"], c["train"]
        parts.append(f"{t['steps']} steps of {t['batch_size'] * t.get('grad_accum', 1)} × "
                     f"{m['block_size']} tokens")
        source = d.get("path") or d.get("corpus")
        parts.append(f"data: {source} ({d.get('tokenizer', '')} tokens)")
        parts.append(f"model: {m['n_layer']} layers × {m['n_embd']} wide, {m['n_head']} heads")
    parts.append(f"seeds: {', '.join(map(str, seeds))} (every loss starts from the same "
                 f"weights and sees the same batches on a seed)")
    parts.append(f"baseline: {ev.baseline}")
    return "; ".join(parts) + "."


def uncertainty_note(ev: Evidence) -> str:
    n = int(ev.scores.runs.groupby("label").seed.nunique().min()) if len(ev.scores.runs) else 0
    text = (f"Values are means over seeds. With fewer than {MIN_SEEDS_FOR_CI} seeds, the "
            f"bracket [a, b] is the range of the seeds (min and max), not a confidence "
            f"interval; with {MIN_SEEDS_FOR_CI} or more it is a 95% percentile-bootstrap CI.")
    if min_wilcoxon_p(n) > 0.05:
        text += (f" With {n} seed{'s' if n != 1 else ''} per loss the exact Wilcoxon "
                 f"signed-rank test cannot reach p < 0.05 (it needs 6), so no difference "
                 f"here is called significant; the Statistics section says how many seeds "
                 f"would resolve each one.")
    return text


def verdict(doc: Document, ev: Evidence) -> None:
    m = ev.primary
    doc.section("Verdict")
    doc.text(f"Which loss gives the {'lowest' if m.lower_is_better else 'highest'} "
             f"{m.header} on {ev.name}, and by how much against {ev.baseline}?")
    doc.table(["rank", "loss", f"{m.heading()}, mean", f"against {ev.baseline}", "flags"],
              verdict_rows(ev.table, ev.comparisons, m, ev.baseline)
              + teacher.verdict_row(info := teacher.teacher_info(ev.results), 5))
    doc.text("Protocol: " + protocol(ev))
    doc.text(uncertainty_note(ev))
    teacher.gap_section(doc, info)  # a model teacher: each student's gap to it


def _cell(row, column: str, bold: set[str]):
    if column == "final_temperature" and row.done and row.temperature_flat == row.done:
        return "no fit (flat)"
    text = mean_with_spread(row, column)
    if column == "final_temperature" and row.temperature_flat:
        text += f" ({row.temperature_flat} flat)"
    return Bold(text) if row.label in bold else text


def _status(row) -> str:
    extra = [f"{n} {what}" for n, what in ((row.diverged, "diverged"), (row.failed, "failed"))
             if n]
    return f"{row.runs}" + (f" ({', '.join(extra)})" if extra else "")


def metric_table(doc: Document, ev: Evidence, columns: list[str]) -> None:
    bold = {c: best_labels(ev.table, c) for c in columns}
    header = ["loss", "seeds"] + [metric(c).heading() for c in columns]
    rows = [[r.label, _status(r), *(_cell(r, c, bold[c]) for c in columns)]
            for r in ev.table.itertuples()]
    doc.table(header, rows)


def results(doc: Document, ev: Evidence) -> None:
    doc.section("Results")
    target = ev.scores.target
    doc.text(f"Bold: the best mean, only where its 95% CI does not overlap the runner-up's "
             f"(so never with fewer than {MIN_SEEDS_FOR_CI} seeds; ties are bolded together); never for a loss with a diverged or failed seed, "
             f"nor for degenerate runs or machine figures. Steps to target: first evaluation "
             f"with val CE ≤ {fmt(target)} ({ev.scores.target_rule}); ∞ if any seed never "
             f"gets there." + (" The target holds at step 0 for the baseline (the shared "
                                "initialization), so steps to target cannot separate the losses "
                                "here." if _trivial_target(ev) else ""))
    metric_table(doc, ev, ev.primary_columns)
    if ev.other_columns:
        doc.text("Other metrics (definitions in the Glossary):")
        metric_table(doc, ev, ev.other_columns)


def _trivial_target(ev: Evidence) -> bool:
    base = ev.scores.runs[ev.scores.runs.label == ev.baseline].steps_to_target
    return bool(len(base)) and bool((base == 0).all())


def statistics(doc: Document, ev: Evidence) -> None:
    m = ev.primary
    doc.section("Statistics (paired by seed)")
    doc.text(f"Each loss against {ev.baseline} on {m.header}, seed by seed: Δ = loss − "
             f"baseline; the exact Wilcoxon signed-rank test, Holm-corrected across losses; "
             f"P(better): the probability that a run of the loss ends better than a run of the "
             f"baseline (rliable's probability of improvement). Seeds for 80% power: the "
             f"paired-t sample size for the observed effect (mean Δ over its seed-to-seed "
             f"sd), at least 6; the time is the extra compute for both losses at the measured "
             f"speed.")
    rows = []
    order = {label: i for i, label in enumerate(ev.table.label)}
    for c in sorted(ev.comparisons.itertuples(), key=lambda c: order.get(c.label, 0)):
        p_better = fmt(c.p_better, 2) + (f" [{fmt(c.p_better_low, 2)}, {fmt(c.p_better_high, 2)}]"
                                         if math.isfinite(c.p_better_low) else "")
        needed = "–" if not c.seeds_needed else (
            f"{c.seeds_needed}" + (f" (+{duration(c.extra_seconds)})" if c.extra_seconds else ""))
        rows.append([c.label, c.n_pairs, signed(c.mean_difference),
                     spread_text(c.diff_low, c.diff_high, c.diff_kind) or "–",
                     fmt(c.p_value, 3), fmt(c.p_holm, 3), p_better, needed])
    doc.table(["loss", "seeds paired", f"Δ {m.header}", "spread of Δ", "p", "p (Holm)",
               "P(better)", "seeds for 80% power"], rows)
    doc.text(f"Mean rank by {m.header} across seeds (1 = best; a run that did not finish "
             f"ranks last):")
    doc.table(["loss", "mean rank"], [[r.label, fmt(r.mean_rank, 3)]
                                      for r in ev.ranks.itertuples()])


def _context(ev: Evidence, column: str) -> str:
    """' Here l = 64.' for rep/wrep: the context length these runs actually used."""
    runs = ev.scores.runs
    if column not in ("final_rep", "final_wrep") or "final_rep_context" not in runs:
        return ""
    used = sorted({int(v) for v in runs.final_rep_context.dropna()})
    return f" Here l = {', '.join(map(str, used))}." if used else ""


def glossary(doc: Document, ev: Evidence) -> None:
    doc.section("Glossary")
    rows = [[m.header, m.unit or "–", m.direction, m.definition + _context(ev, m.column),
             m.reference or "–"] for m in map(metric, ev.columns)]
    rows.append(["flags", "–", "–",
                 f"degenerate: calibrated CE within {DEGENERATE_MARGIN:.0%} of the unigram "
                 f"entropy of the same tokens (a constant prediction scores that entropy); not "
                 f"converged: val CE fell more than {NOT_CONVERGED_DROP:.0%} over the last "
                 f"{LATE_FRACTION:.0%} of steps", "–"])
    doc.table(["metric", "unit", "better", "definition", "reference"], rows)
