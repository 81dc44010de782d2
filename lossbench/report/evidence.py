"""Everything a report states, computed once from one experiment of a results directory:
the score table and the tables read from it. Renderers (HTML/Markdown, LaTeX, the CLI
summary) only word and lay out what is here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lossbench.analysis.scores import ScoreTable, build_scale_scores, build_scores
from lossbench.core.metrics import BY_COLUMN, PRIMARY_COLUMNS, Metric, default_primary, metric
from lossbench.core.paths import safe_name
from lossbench.report.tables import better_marks, comparisons, label_table, rank_table, ranked
from lossbench.store.experiments import resolve_experiment
from lossbench.store.runs import label_of
from lossbench.store.tables import read_experiment


class ReportRequestError(ValueError):
    """A report option names something the results do not have (a metric, a label)."""


@dataclass
class Evidence:
    name: str
    meta: dict
    scores: ScoreTable
    primary: Metric
    columns: list[str]  # metrics shown, primary table first
    table: pd.DataFrame  # tables.label_table, ranked best first on the primary metric
    comparisons: pd.DataFrame  # tables.comparisons on the primary metric
    ranks: pd.DataFrame
    curves: pd.DataFrame  # the final runs' curves
    all_runs: pd.DataFrame  # score rows of every run of the experiment (tuning runs too)
    results: list[dict] = field(default_factory=list)  # the final runs' result.json
    experiment: str = ""  # its id (lossbench.store.experiments); "" for a hand-made directory
    # the experiment's final runs with no result yet (running, or not started): a report
    # of a sweep in progress shows the finished ones and says how many are missing
    unfinished: list[str] = field(default_factory=list)
    claims: list = field(default_factory=list)  # report.claims.ClaimResult: [[claims]], --claim
    # a scale ladder's every size (scores.build_scale_scores); then `scores` is its largest
    scale: ScoreTable | None = None
    # column -> labels the procedure calls better than the baseline (the bold marks)
    marks: dict = field(default_factory=dict)
    # label -> what it uses that the baseline does not (a teacher, the oracle)
    informed: dict = field(default_factory=dict)

    @property
    def baseline(self) -> str:
        return self.scores.baseline

    @property
    def primary_columns(self) -> list[str]:
        first = [self.primary.column] + [c for c in PRIMARY_COLUMNS if c != self.primary.column]
        return [c for c in first if c in self.columns]

    @property
    def other_columns(self) -> list[str]:
        """The Results section's second table (the gradient quantities have their own)."""
        return [c for c in self.columns
                if c not in self.primary_columns and not metric(c).section]


def _information(config: dict) -> str:
    """What a run's loss is given beyond the tokens ('' for nothing): the teacher."""
    from lossbench.losses import get_loss

    data, losses = config.get("data", {}), [config.get("loss")]
    if (config.get("finetune") or {}).get("steps"):
        losses.append(config["finetune"].get("loss"))
    try:
        taught = any("teacher_probs" in get_loss(n).extra_inputs for n in losses if n)
    except Exception:  # a plugin loss not registered here: nothing known about it
        return ""
    teacher = data.get("teacher")
    if not taught or teacher in (None, "smoothed"):
        return ""
    if teacher == "oracle":
        return "the oracle: the Markov corpus's exact next-token distribution"
    return (f"a {data.get('ngram_order', '')}-gram teacher fitted on the training split "
            f"(distillation targets the baseline never sees)")


def informed_losses(results: list[dict], baseline: str) -> dict[str, str]:
    """label -> the information its loss uses that the baseline's does not."""
    seen: dict[str, str] = {}
    for r in results:
        seen.setdefault(label_of(r["config"]), _information(r["config"]))
    base = seen.get(baseline, "")
    return {k: v for k, v in seen.items() if v and v != base and k != baseline}


def shown_columns(runs: pd.DataFrame) -> list[str]:
    """Metrics a report shows: the defined ones the runs have, in the glossary's order."""
    return [c for c in BY_COLUMN if c in runs and runs[c].notna().any()]


def _claims(meta: dict, texts: list[str] | None, scores: ScoreTable) -> tuple[list, list]:
    """(the suite's claims, ``texts`` (--claim)), each raw-tested on ``scores``."""
    from lossbench.report.claims import REPORT_TIME, claim_tests, stated_claims
    from lossbench.suite.claims import ClaimError

    try:
        suite, stated, late = stated_claims(meta, texts, scores)
    except ClaimError as exc:
        raise ReportRequestError("; ".join(exc.errors)) from None
    return (claim_tests(suite, scores, stated),
            claim_tests(late, scores, [REPORT_TIME] * len(late)))


def report_margin(meta: dict) -> float | None:
    """The suite's ``[report] margin`` (recorded with the experiment), or None: the default
    of analysis.inference.default_margin."""
    value = (meta.get("report") or {}).get("margin") if isinstance(meta.get("report"),
                                                                   dict) else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return float(value) if ok else None


def judged(scores: ScoreTable, column: str, margin: float | None, suite_raw: list,
           late_raw: list) -> tuple[pd.DataFrame, list]:
    """The report's one family: the baseline comparisons on ``column`` and the suite's
    claims, Holm-corrected together; --claim claims in a family of their own."""
    from lossbench.analysis.inference import holm_family
    from lossbench.report.claims import finish_claims

    comps = comparisons(scores, column, margin=margin,
                        family_extra=tuple(r.p for r in suite_raw))
    size = sum(p == p for p in [*comps.p_value, *(r.p for r in suite_raw)])
    _, suite_holm = holm_family(comps.p_value.tolist(), [r.p for r in suite_raw])
    (late_holm,) = holm_family([r.p for r in late_raw])
    claims = (finish_claims(suite_raw, suite_holm, size)
              + finish_claims(late_raw, late_holm, sum(r.p == r.p for r in late_raw),
                              "report time"))
    return comps, claims


def gather(results_dir: str | Path, *, metric_column: str | None = None,
           only: list[str] | None = None, problems: list[str] | None = None,
           with_results: bool = True, experiment: str | None = None,
           claims: list[str] | None = None) -> Evidence:
    """Read one experiment of the store (``experiment``: its id or a unique start of it;
    default the latest) once and compute every table of the report. ``metric_column``:
    the primary metric (a score-table column, e.g. final_val_ce; default whole-split val
    CE); ``only``: labels to keep (the baseline is always kept, as everything is measured
    against it). Unknown names raise ReportRequestError."""
    results_dir = Path(results_dir)
    meta = resolve_experiment(results_dir, experiment)
    name = safe_name(meta.get("name"), what="suite.json name")
    all_summary, all_curves, all_results = read_experiment(results_dir, meta,
                                                           problems=problems)
    final_ids = meta.get("run_ids")
    keep = all_summary.run_id.isin(set(final_ids)) if final_ids else all_summary.run_id.notna()
    summary = all_summary[keep].reset_index(drop=True)
    curves = all_curves[all_curves.run_id.isin(set(summary.run_id))].reset_index(drop=True)
    unfinished = [r for r in final_ids or [] if r not in set(all_summary.run_id)]
    baseline = meta.get("baseline", "cross_entropy")
    scores = build_scores(summary, curves, baseline, meta.get("target_val_ce"))
    scale = None
    if meta.get("scale"):  # a ladder: every section but Scale reads its largest size
        scale = build_scale_scores(summary, curves, baseline, meta.get("target_val_ce"),
                                   meta["scale"])
        scores = scale.at_size(scale.sizes[-1]) if scale.sizes else scores
    suite_raw, late_raw = _claims(meta, claims, scores)  # every label, whatever --only keeps
    if only:
        unknown = [label for label in only if label not in scores.labels]
        if unknown:
            raise ReportRequestError(f"--only: no runs labelled {', '.join(unknown)} in "
                                     f"{results_dir} (labels: {', '.join(scores.labels)})")
        scores = scores.only(list(dict.fromkeys([*only, baseline])))
        scale = scale.only(list(dict.fromkeys([*only, baseline]))) if scale else None
    columns = shown_columns(scores.runs)
    column = metric_column or default_primary(scores.runs.columns)
    if metric_column is not None and column not in columns:
        column = f"final_{column}"
        if column not in columns:
            raise ReportRequestError(
                f"--metric: {metric_column} is not a metric of these runs (metrics: "
                f"{', '.join(c.removeprefix('final_') for c in columns)})")
    primary = metric(column)
    margin = report_margin(meta)
    comps, claim_results = judged(scores, column, margin, suite_raw, late_raw)
    table = ranked(label_table(scores, columns), column)
    marks = better_marks(scores, columns, table, column, comps)
    keep_ids = set(scores.runs.run_id)
    results = ([r for r in all_results if r["summary"].get("run_id") in keep_ids]
               if with_results else [])
    all_runs = (build_scores(all_summary, all_curves, baseline, scores.target).runs
                if "tune" in meta else scores.runs)  # the tuning table reads the same rules
    return Evidence(name, meta, scores, primary, columns, table, comps,
                    rank_table(scores, column), curves[curves.run_id.isin(keep_ids)],
                    all_runs, results, str(meta.get("id", "")), unfinished, claim_results,
                    scale=scale, marks=marks, informed=informed_losses(results, baseline))
