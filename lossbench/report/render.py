"""Write a report: self-contained index.html, report.md with PNGs, the CSV tables, and on
request the headline and statistics as LaTeX (booktabs)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from lossbench.core.atomic import atomic_write_text
from lossbench.core.paths import StoreError, contained, safe_name
from lossbench.report import details, gradients, scale, sections
from lossbench.report.claims import claims_table
from lossbench.report.claims import section as claims_section
from lossbench.report.document import Document
from lossbench.report.evidence import Evidence, gather
from lossbench.report.figures import build_figures
from lossbench.report.latex import latex_tables


def default_out(root: str | Path, name: str) -> Path:
    """``root/<name>-<date>``, refused (UnsafePathError) unless it stays inside ``root``:
    ``name`` comes from a results directory, and ``root/<name>-<date>`` may already exist
    as a symlink leading elsewhere."""
    out = Path(root) / f"{safe_name(name, what='report name')}-{dt.date.today().isoformat()}"
    return contained(root, out, what="report folder")


def report_dir_in(results_dir: str | Path, name: str) -> Path:
    """``DIR/reports/<name>`` (an experiment's id): inside the results directory, so two
    experiments' reports never overwrite each other; refused unless it stays inside DIR."""
    folder = Path(results_dir) / "reports" / safe_name(name, what="experiment id")
    contained(results_dir, folder, what="report folder")
    for path in (folder.parent, folder):
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path}: a file where the report folder should be; move it "
                             f"or write the report elsewhere with --out")
    return folder


def experiment_out(results_dir: str | Path, ev: Evidence) -> Path:
    """Where an experiment's report goes by default: :func:`report_dir_in` its id. Results
    without an experiment id: ``reports/<name>-<date>``."""
    if not ev.experiment:
        return default_out("reports", ev.name)
    return report_dir_in(results_dir, ev.experiment)


def _floor(ev: Evidence) -> float | None:
    """The data's entropy rate (synthetic sources): val CE minus excess CE of finished runs."""
    runs = ev.scores.runs
    if "final_excess_ce" not in runs or not runs.final_excess_ce.notna().any():
        return None
    return float((runs.final_val_ce - runs.final_excess_ce).median())


def build_report(results_dir: str | Path, out_dir: str | Path | None = None,
                 problems: list[str] | None = None, *, metric: str | None = None,
                 only: list[str] | None = None, latex: bool = False,
                 experiment: str | None = None, claims: list[str] | None = None,
                 evidence: Evidence | None = None) -> Path:
    """Render the report of a results directory; returns the report folder. ``metric``:
    the primary metric (default whole-split val CE); ``only``: the labels to show (the
    baseline always stays). ``latex``: write only tables.tex (the verdict and statistics
    as booktabs tables). ``experiment``: which experiment of the directory (default the
    latest). Runs left out (a malformed result.json, an unsafe folder) are
    named in the report and appended to ``problems``. ``evidence``: the experiment's,
    already gathered with these options (`lossbench run` reads the store once)."""
    problems = [] if problems is None else problems
    ev = evidence if evidence is not None else gather(
        results_dir, metric_column=metric, only=only, problems=problems,
        experiment=experiment, claims=claims)
    out = Path(out_dir) if out_dir else experiment_out(results_dir, ev)
    if latex:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "tables.tex", latex_tables(ev), root=out)
        return out
    doc = Document(f"lossbench report: {ev.name}", out)
    for name, table in (("headline", ev.table), ("comparisons", ev.comparisons),
                        ("ranks", ev.ranks), ("scores", ev.scores.runs)):
        doc.csv(name, table)
    sections.verdict(doc, ev)
    if ev.scale is not None and ev.scale.sizes:
        doc.text(scale.scope_note(ev.scale))
    if ev.claims:  # beside the verdict: what the suite said it expected, tested
        doc.csv("claims", claims_table(ev.claims))
        claims_section(doc, ev.claims)
    if ev.unfinished:
        doc.text(f"{len(ev.unfinished)} of this experiment's runs are still running or not "
                 f"started: this report shows the {len(ev.scores.runs)} finished.")
    sections.results(doc, ev)
    sections.statistics(doc, ev)
    gradients.section(doc, ev)
    if ev.scale is not None and ev.scale.sizes:
        scale.section(doc, ev)
    if "tune" in ev.meta:
        details.tuning(doc, ev.meta, ev.all_runs)
    doc.section("Figures")
    runs = ev.scores.runs
    for name, (caption, fig) in build_figures(runs, ev.curves, ev.results, ev.table,
                                              _floor(ev), baseline=ev.baseline).items():
        doc.figure(name, caption, fig)
    details.runs(doc, ev, problems)
    details.samples(doc, ev.results)
    sections.glossary(doc, ev)
    details.details(doc, ev)
    return doc.write()
