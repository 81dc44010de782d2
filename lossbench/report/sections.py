"""The report's first sections: the verdict, the results tables, the paired statistics and
the glossary, laid out from an Evidence (report.evidence)."""

from __future__ import annotations

import math

from lossbench.analysis.diagnostics import DEGENERATE_MARGIN, LATE_FRACTION, NOT_CONVERGED_DROP
from lossbench.analysis.inference import MIN_SEEDS
from lossbench.core.metrics import metric
from lossbench.core.text import duration
from lossbench.report.document import Bold, Document, fmt
from lossbench.report.evidence import Evidence
from lossbench.report.protocol import protocol_of
from lossbench.report import teacher
from lossbench.report.verdict import WORD_TEXT, mean_with_spread, signed, spread_text, verdict_rows


def model_text(ev: Evidence, c: dict) -> str:
    """The model that ran: the built-in GPT's shape, an hf config or a factory, with the
    parameter count the runs recorded."""
    m = c["model"]
    arch = m.get("arch", "gpt")
    if arch == "hf":
        cfg = m.get("hf_config") or {}
        what = (f"transformers {cfg.get('model_type', 'model')} from "
                + (f"hf_path {m['hf_path']}" if m.get("hf_path") else
                   "hf_config " + ", ".join(f"{k}={v}" for k, v in sorted(cfg.items()))))
    elif arch.startswith("python:"):
        kwargs = ", ".join(f"{k}={v}" for k, v in sorted((m.get("model_kwargs") or {}).items()))
        what = f"custom factory {arch.removeprefix('python:')}({kwargs})"
    else:
        what = f"GPT, {m['n_layer']} layers × {m['n_embd']} wide, {m['n_head']} heads"
    params = ev.scores.runs.get("params_total")
    if params is not None and params.notna().any() and float(params.max()) > 0:
        what += f", {int(params.max()):,} parameters"
    return f"model: {what}"


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
        parts.append(model_text(ev, c))
    parts.append(f"seeds: {', '.join(map(str, seeds))} (every loss starts from the same "
                 f"weights and sees the same batches on a seed)")
    parts.append(f"baseline: {ev.baseline}")
    return "; ".join(parts) + "."


def procedure_text(ev: Evidence) -> str:
    """The report's one procedure, stated once (analysis.inference)."""
    c = ev.comparisons
    margin = float(c.margin.iloc[0]) if len(c) else math.nan
    unit = f" {ev.primary.unit}" if ev.primary.unit else ""
    n_claims = sum(r.family == "report" for r in ev.claims)
    family = f"{len(c)} comparison{'s' if len(c) != 1 else ''} with {ev.baseline}" + (
        f" and the suite's {n_claims} claim{'s' if n_claims != 1 else ''}" if n_claims else "")
    return (f"How to read it: each loss is compared with {ev.baseline} seed by seed (Δ = "
            f"loss − baseline; a seed the loss did not finish is scored worst-case against "
            f"it: the metric's whole range, at least the margin). One procedure decides every "
            f"statement of this report: a two-sided paired t-test, Holm-corrected over one "
            f"family ({family}; --claim claims are a separate family), at 0.05. \"better\"/"
            f"\"worse\": significant and |Δ| ≥ the practical margin ±{margin:.2g}{unit}; "
            f"\"practically equivalent\": TOST against that margin; \"no difference "
            f"detected\": tested, inconclusive; \"untested\": fewer than {MIN_SEEDS} paired "
            f"seeds. Brackets are 95% t-intervals (the seeds' range below {MIN_SEEDS} seeds). "
            f"Simulated error rates: docs/statistics.md.")


def verdict(doc: Document, ev: Evidence) -> None:
    m = ev.primary
    doc.section("Verdict")
    doc.text(f"Which loss gives the {'lowest' if m.lower_is_better else 'highest'} "
             f"{m.header} on {ev.name}, and by how much against {ev.baseline}?")
    doc.table(["rank", "loss", f"{m.heading()}, mean", f"against {ev.baseline}", "flags"],
              verdict_rows(ev.table, ev.comparisons, m, ev.baseline, ev.informed)
              + teacher.verdict_row(info := teacher.teacher_info(ev.results), 5))
    doc.text("Protocol: " + protocol(ev))
    doc.text(procedure_text(ev))
    teacher.gap_section(doc, info)  # a model teacher: each student's gap to it


def _cell(row, column: str, bold: set[str]):
    if column == "final_temperature" and row.done:
        bound = getattr(row, "temperature_bound", 0)
        if row.temperature_flat + bound >= row.done:
            return "no fit (at bound)" if bound else "no fit (flat)"
        text = mean_with_spread(row, column)
        extra = [f"{n} {w}" for n, w in ((row.temperature_flat, "flat"), (bound, "at bound"))
                 if n]
        return text + (f" ({', '.join(extra)}: no fit)" if extra else "")
    text = mean_with_spread(row, column)
    return Bold(text) if row.label in bold else text


def _status(row) -> str:
    extra = [f"{n} {what}" for n, what in ((row.diverged, "diverged"), (row.failed, "failed"))
             if n]
    return f"{row.runs}" + (f" ({', '.join(extra)})" if extra else "")


def metric_table(doc: Document, ev: Evidence, columns: list[str]) -> None:
    bold = {c: ev.marks.get(c, set()) for c in columns}
    header = ["loss", "seeds"] + [metric(c).heading() for c in columns]
    rows = [[r.label, _status(r), *(_cell(r, c, bold[c]) for c in columns)]
            for r in ev.table.itertuples()]
    doc.table(header, rows)


def results(doc: Document, ev: Evidence) -> None:
    doc.section("Results")
    target = ev.scores.target
    doc.text(f"Bold: better than {ev.baseline} by the report's procedure (paired t-test, "
             f"Holm, |Δ| ≥ margin): on {ev.primary.header} the Verdict's own words; every "
             f"other metric is tested the same way, Holm-corrected over all of their (loss, "
             f"metric) pairs as one family, each at its default margin. Never for a loss "
             f"with a diverged or failed seed, degenerate runs or machine figures. Steps to "
             f"target: first evaluation "
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
    doc.text(f"Each loss against {ev.baseline} on {m.header}, seed by seed (Δ = loss − "
             f"baseline), by the procedure stated under the Verdict: p from the two-sided "
             f"paired t-test (zeros are observations, not dropped), p (Holm) over the "
             f"report's family, TOST p (Holm) against ±margin, the 95% t-interval of mean Δ. "
             f"P(better): the share of paired seeds on which the loss ends better (a tie "
             f"counts ½), with a 95% Wilson interval. Seeds for 80% power: from the "
             f"procedure's own power (Holm's first-step level, the margin) at the observed "
             f"effect and at its interval's edge nearest 0 (\"at least\" when that edge is "
             f"within the margin); the time is the extra compute for both losses at the "
             f"measured speed. Simulated error rates: docs/statistics.md.")
    rows = []
    order = {label: i for i, label in enumerate(ev.table.label)}
    for c in sorted(ev.comparisons.itertuples(), key=lambda c: order.get(c.label, 0)):
        p_better = fmt(c.p_better, 2) + (f" [{fmt(c.p_better_low, 2)}, {fmt(c.p_better_high, 2)}]"
                                         if math.isfinite(c.p_better_low) else "")
        needed = c.seeds_text or "–"
        if c.extra_seconds and c.seeds_kind == "count":
            needed += f" (+{duration(c.extra_seconds)})"
        seeds = f"{c.n_pairs}" + (f" ({c.penalized} worst-case)" if c.penalized else "")
        rows.append([c.label, seeds, signed(c.mean_difference),
                     spread_text(c.diff_low, c.diff_high, c.diff_kind) or "–",
                     fmt(c.p_value, 3), fmt(c.p_holm, 3), fmt(c.p_equivalent_holm, 3),
                     WORD_TEXT.get(c.word, c.word), p_better, needed])
    doc.table(["loss", "seeds paired", f"Δ {m.header}", "spread of Δ", "p", "p (Holm)",
               "TOST p (Holm)", "verdict", "P(better), paired", "seeds for 80% power"], rows)
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
                 f"{LATE_FRACTION:.0%} of steps; plateau and underfitting: the Runs section's "
                 f"diagnoses, counted per loss; uses information the baseline lacks: a "
                 f"teacher or the oracle", "–"])
    doc.table(["metric", "unit", "better", "definition", "reference"], rows)
