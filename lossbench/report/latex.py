"""The verdict and the paired statistics as LaTeX booktabs tables, for papers (DeepOBS
exports its tables the same way). Needs ``\\usepackage{booktabs}``; every string from
the results is escaped (report.evidence holds the numbers, nothing is computed here)."""

from __future__ import annotations

from lossbench.core.escaping import latex_text
from lossbench.core.metrics import metric
from lossbench.report.document import fmt
from lossbench.report.evidence import Evidence
from lossbench.report.tables import best_labels
from lossbench.report.verdict import mean_with_spread, signed, spread_text

# Characters the report's own wording uses that pdfLaTeX's default fonts lack.
_SYMBOLS = {"∞": r"$\infty$", "…": r"\dots{}", "–": "--", "−": "-", "Δ": r"$\Delta$",
            "≈": r"$\approx$", "±": r"$\pm$", "≤": r"$\le$", "≥": r"$\ge$"}


def tex(text: object) -> str:
    """latex_text, then the report's own symbols as LaTeX commands."""
    return "".join(_SYMBOLS.get(ch, ch) for ch in latex_text(text))


def _cell(row, column: str, bold: set[str]) -> str:
    text = tex(mean_with_spread(row, column))
    return rf"\textbf{{{text}}}" if row.label in bold else text


def _tabular(header: list[str], rows: list[list[str]], caption: str, label: str) -> str:
    spec = "l" + "r" * (len(header) - 1)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def headline_table(ev: Evidence) -> str:
    columns = ev.primary_columns
    bold = {c: best_labels(ev.table, c) for c in columns}
    header = ["loss", "seeds"] + [tex(metric(c).heading()) for c in columns]
    rows = [[tex(r.label), str(r.runs) + (f" ({r.diverged} div.)" if r.diverged else ""),
             *(_cell(r, c, bold[c]) for c in columns)] for r in ev.table.itertuples()]
    caption = (f"{tex(ev.name)}: mean over seeds, best first by "
               f"{tex(ev.primary.header)}. Brackets: the seeds' range with fewer than 5 "
               f"seeds, else a 95\\% bootstrap CI. Bold: best, where its 95\\% CI does not "
               f"overlap the runner-up's.")
    return _tabular(header, rows, caption, f"tab:{_key(ev.name)}-headline")


def statistics_table(ev: Evidence) -> str:
    m = ev.primary
    header = ["loss", "seeds", rf"$\Delta$ {tex(m.header)}", "spread", "$p$ (Holm)",
              "P(better)"]
    rows = [[tex(c.label), str(c.n_pairs), tex(signed(c.mean_difference)),
             tex(spread_text(c.diff_low, c.diff_high, c.diff_kind) or "–"),
             tex(fmt(c.p_holm, 3)), tex(fmt(c.p_better, 2))]
            for c in ev.comparisons.itertuples()]
    caption = (f"{tex(ev.name)}: each loss against {tex(ev.baseline)}, paired "
               f"by seed ($\\Delta$ = loss $-$ baseline); exact Wilcoxon signed-rank test, "
               f"Holm-corrected; P(better): probability of improvement.")
    return _tabular(header, rows, caption, f"tab:{_key(ev.name)}-statistics")


def claims_table(ev: Evidence) -> str:
    """The suite's claims as the report's Claims section states them."""
    from lossbench.report.claims import effect_text

    header = ["claim", "stated", r"$\Delta = a - b$", "seeds", "$p$ (Holm)", "verdict"]
    rows = [[tex(r.claim.name), tex(r.claim.statement()), tex(effect_text(r)), str(r.n_pairs),
             tex(fmt(r.p_holm, 3)), tex(r.verdict)] for r in ev.claims]
    caption = (f"{tex(ev.name)}: claims stated before the runs, $\\Delta$ paired by seed "
               f"(unfinished runs scored against the claim); one-sided paired $t$-test, or "
               f"TOST for equality, Holm-corrected across the claims.")
    return _tabular(header, rows, caption, f"tab:{_key(ev.name)}-claims")


def _key(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name)


def latex_tables(ev: Evidence) -> str:
    claims = "\n\n" + claims_table(ev) if ev.claims else ""
    return ("% lossbench: the verdict, claims and statistics tables; needs "
            "\\usepackage{booktabs}\n"
            + headline_table(ev) + claims + "\n\n" + statistics_table(ev) + "\n")
