"""The verdict and the paired statistics as LaTeX booktabs tables, for papers (DeepOBS
exports its tables the same way). Needs ``\\usepackage{booktabs}``; every string from
the results is escaped (report.evidence holds the numbers, nothing is computed here)."""

from __future__ import annotations

from lossbench.core.escaping import latex_text
from lossbench.core.metrics import metric
from lossbench.report.document import fmt
from lossbench.report.evidence import Evidence
from lossbench.report.verdict import WORD_TEXT, mean_with_spread, signed, spread_text

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
    bold = {c: ev.marks.get(c, set()) for c in columns}
    header = ["loss", "seeds"] + [tex(metric(c).heading()) for c in columns]
    rows = [[tex(r.label), str(r.runs) + (f" ({r.diverged} div.)" if r.diverged else ""),
             *(_cell(r, c, bold[c]) for c in columns)] for r in ev.table.itertuples()]
    caption = (f"{tex(ev.name)}: mean over seeds, best first by "
               f"{tex(ev.primary.header)}. Brackets: the seeds' range with fewer than 3 "
               f"seeds, else a 95\\% $t$-interval. Bold: better than {tex(ev.baseline)} by "
               f"the report's procedure (paired $t$-test, Holm, $|\\Delta| \\ge$ margin).")
    return _tabular(header, rows, caption, f"tab:{_key(ev.name)}-headline")


def statistics_table(ev: Evidence) -> str:
    m = ev.primary
    header = ["loss", "seeds", rf"$\Delta$ {tex(m.header)}", "spread", "$p$ (Holm)",
              "verdict", "P(better), paired"]
    rows = [[tex(c.label), str(c.n_pairs), tex(signed(c.mean_difference)),
             tex(spread_text(c.diff_low, c.diff_high, c.diff_kind) or "–"),
             tex(fmt(c.p_holm, 3)), tex(WORD_TEXT.get(c.word, c.word)),
             tex(fmt(c.p_better, 2))]
            for c in ev.comparisons.itertuples()]
    margin = float(ev.comparisons.margin.iloc[0]) if len(ev.comparisons) else float("nan")
    caption = (f"{tex(ev.name)}: each loss against {tex(ev.baseline)}, paired "
               f"by seed ($\\Delta$ = loss $-$ baseline, an unfinished seed scored "
               f"worst-case); two-sided paired $t$-test, Holm-corrected over the report's "
               f"family; better/worse: significant and $|\\Delta| \\ge$ {margin:.2g}; "
               f"P(better): share of seeds better.")
    return _tabular(header, rows, caption, f"tab:{_key(ev.name)}-statistics")


def claims_table(ev: Evidence) -> str:
    """The suite's claims as the report's Claims section states them."""
    from lossbench.report.claims import _verdict_text, counts_text, effect_text

    header = ["claim", "stated", r"$\Delta = a - b$", "seeds", "$p$ (Holm)", "verdict",
              "when stated"]
    rows = [[tex(r.claim.name), tex(r.claim.statement()), tex(effect_text(r)), str(r.n_pairs),
             tex(fmt(r.p_holm, 3)), tex(_verdict_text(r)), tex(r.stated)] for r in ev.claims]
    caption = (f"{tex(ev.name)}: {tex(counts_text(ev.claims))} $\\Delta$ paired by seed "
               f"(unfinished runs scored against the claim); paired $t$-test, or TOST for "
               f"equality; the suite's claims Holm-corrected with the comparisons, --claim "
               f"claims as their own family.")
    return _tabular(header, rows, caption, f"tab:{_key(ev.name)}-claims")


def _key(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name)


def latex_tables(ev: Evidence) -> str:
    claims = "\n\n" + claims_table(ev) if ev.claims else ""
    return ("% lossbench: the verdict, claims and statistics tables; needs "
            "\\usepackage{booktabs}\n"
            + headline_table(ev) + claims + "\n\n" + statistics_table(ev) + "\n")
