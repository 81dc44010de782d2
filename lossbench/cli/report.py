"""The report at the end of `lossbench run` and from `lossbench report`: where it goes,
what it says about runs still training, and the verdict printed in the terminal."""

from __future__ import annotations

import click

from lossbench.cli.common import InputError, echo, os_error_line, print_table, warn
from lossbench.cli.status import require_results_dir, store_errors


def write_report(results_dir, out, experiment=None, *, evidence=None,
                 problems: list[str] | None = None, **options):
    """Write the report of one experiment (default the latest) into ``out``, by default
    DIR/reports/<experiment id>/, where no other experiment's report is; runs it left out
    are warned about; an unsafe name, an unknown experiment, --metric or --only label is
    exit 2. Says so when some of the experiment's runs have not finished. ``evidence``: the
    experiment's, already gathered (with the runs it left out in ``problems``)."""
    from lossbench.core.paths import UnsafePathError
    from lossbench.report.evidence import ReportRequestError
    from lossbench.report.render import build_report, report_dir_in
    from lossbench.store.experiments import resolve_experiment, run_ids_of
    from lossbench.store.tables import finished_run_ids

    with store_errors():
        meta = resolve_experiment(results_dir, experiment)
        if experiment is not None:
            options["experiment"] = experiment  # build_report resolves it the same way
        if out is None:
            out = report_dir_in(results_dir, meta.get("id") or meta.get("name"))
        final = run_ids_of(meta, final_only=True) or []  # checked: plain names
    if "tune" in meta and not final:
        raise click.ClickException(f"experiment {meta.get('id')} is still tuning: no final "
                                   f"runs to report yet (see `lossbench status {results_dir}`)")
    done = finished_run_ids(results_dir, final)  # run folders, or a copy of the tables
    missing = [r for r in final if r not in done]
    if final and len(missing) == len(final):
        raise click.ClickException(f"experiment {meta.get('id')}: no run has finished yet "
                                   f"(see `lossbench status {results_dir}`)")
    problems = [] if problems is None else problems
    try:
        report_dir = build_report(results_dir, out, problems, evidence=evidence, **options)
    except (UnsafePathError, ReportRequestError) as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:  # StoreError, a read-only folder, a full disk: one line, exit 1
        raise click.ClickException(os_error_line(exc)) from None
    for problem in problems:
        warn(problem)
    if missing:
        click.echo(f"note: {len(missing)} of {len(final)} runs still running or not started; "
                   f"the report shows the {len(final) - len(missing)} finished "
                   f"(`lossbench status {results_dir}`)")
    return report_dir


def contradicted_claims(ev) -> list[str]:
    """The statements of the contradicted claims of ``ev`` (print_suite_summary's), each
    also printed on stderr (`lossbench run --fail-on-claims` exits 3 when there is one)."""
    from lossbench.core.escaping import printable_names

    bad = [r.claim for r in ev.claims if r.verdict == "contradicted"]
    for claim in bad:  # names and labels come from the results folder: shown escaped
        same = claim.name == claim.statement()
        click.echo(f"lossbench: claim contradicted: {printable_names([claim.name])}"
                   + ("" if same else f" ({printable_names([claim.statement()])})"), err=True)
    return [c.statement() for c in bad]


def print_suite_summary(ev) -> None:
    """The verdict's table in plain text, from the same evidence (score table) as the report."""
    from lossbench.report.document import fmt
    from lossbench.report.verdict import WORD_TEXT, signed

    if ev is None or ev.scores.runs.empty or ev.primary.column not in ev.table:
        return
    for label, choice in ev.meta.get("choices", {}).items():
        setting = choice["setting"]
        chosen = ", ".join(f"{k}={v}" for k, v in setting.items()) if setting else "none"
        echo(f"tuned {label}: {chosen}" + "".join(f"\n  note: {n}" for n in choice["notes"]))
    col = ev.primary.column
    by_label = {c.label: c for c in ev.comparisons.itertuples()}
    rows = []
    for r in ev.table.itertuples():
        low, high, kind = (getattr(r, f"{col}_{k}") for k in ("low", "high", "kind"))
        spread = f"{kind} {fmt(low)}–{fmt(high)}" if low == low and high == high else ""
        status = ", ".join(f"{n} {w}" for n, w in ((r.diverged, "diverged"),
                                                   (r.failed, "failed")) if n)
        c = by_label.get(r.label)
        said = ("the baseline" if r.label == ev.baseline else "–" if c is None else
                f"untested: {c.n_pairs} seeds (Δ {signed(c.mean_difference)})"
                if c.word == "untested" else
                f"{WORD_TEXT.get(c.word, c.word)} (Δ {signed(c.mean_difference)}, "
                f"Holm p {fmt(c.p_holm, 2)})")
        rows.append((r.label, f"{r.runs}" + (f" ({status})" if status else ""),
                     fmt(getattr(r, col)), spread, said))
    click.echo("")
    if ev.scale is not None and ev.scale.sizes:
        echo(f"at the largest size of the scale ladder, {ev.scale.sizes[-1]} "
             f"(every size: the report's Scale section)")
    print_table(("loss", "seeds", f"mean {ev.primary.header}", "spread",
                  f"against {ev.baseline} (the report's test)"), rows)
    if ev.claims:
        from lossbench.report.claims import _verdict_text, effect_text

        click.echo("")
        print_table(("claim", "stated", "Δ = a − b", "p (Holm)", "verdict", "when stated"),
                    [(r.claim.name, r.claim.statement(), effect_text(r), fmt(r.p_holm, 3),
                      _verdict_text(r), r.stated) for r in ev.claims])


def _labels(value: str | None) -> list[str] | None:
    if value is None:
        return None
    labels = [v.strip() for v in value.split(",") if v.strip()]
    if not labels:
        raise InputError("--only: give one or more labels, separated by commas")
    return labels


@click.command("report")
@click.argument("results_dir", metavar="DIR")
@click.option("--out", "out", default=None, metavar="REPORT_DIR",
              help="Report folder [default: DIR/reports/<experiment id>/].")
@click.option("--experiment", default=None, metavar="ID",
              help="An experiment of `lossbench runs DIR` (its id or a unique start of it) "
                   "[default: the latest].")
@click.option("--metric", default=None, metavar="M",
              help="Primary metric of the verdict and statistics, e.g. val_ce or seq_rep_4 "
                   "[default: val_ce_full, the whole-split val CE].")
@click.option("--only", default=None, metavar="LOSS,...",
              help="Labels to report (the baseline is always kept).")
@click.option("--format", "fmt", type=click.Choice(["html", "latex"]), default="html",
              show_default=True,
              help="html: index.html, report.md and CSVs; latex: tables.tex, the verdict and "
                   "statistics as booktabs tables (printed too).")
@click.option("--claim", "claims", multiple=True, metavar='"A < B on METRIC"',
              help="Test a claim too, e.g. \"unlikelihood < cross_entropy on seq_rep_4\" "
                   "(<, >, =; optionally 'by M' or 'within M'; repeatable).")
def report_cmd(results_dir, out, experiment, metric, only, fmt, claims):
    """Write the comparison report of an experiment of a results directory (a sweep in
    progress: of its finished runs)."""
    require_results_dir(results_dir)
    report_dir = write_report(results_dir, out, experiment, metric=metric, only=_labels(only),
                         latex=fmt == "latex", claims=list(claims))
    if fmt == "latex":
        echo((report_dir / "tables.tex").read_text(encoding="utf-8"), nl=False)
        click.echo(f"% written to {report_dir / 'tables.tex'}", err=True)
    else:
        click.echo(f"report: {report_dir}/index.html")


@click.command("compare")
@click.argument("results_dirs", metavar="DIR [DIR ...]", nargs=-1)
@click.option("--out", "out", default=None, metavar="REPORT_DIR",
              help="Report folder [default: reports/compare-<date>].")
def compare_cmd(results_dirs, out):
    """Compare losses across suites (each results DIR is a workload, each size of a scale
    ladder too): steps-to-target ratios, performance profiles, a profile score, and ranks
    with a Friedman test."""
    from lossbench.core.paths import UnsafePathError
    from lossbench.report.compare import build_comparison
    from lossbench.store.experiments import suite_meta
    from lossbench.store.runs import StoreError

    try:  # one directory is enough when it is a scale ladder (lossbench.suite.scale)
        ladder = len(results_dirs) == 1 and suite_meta(results_dirs[0]).get("scale")
    except (StoreError, OSError):
        ladder = False  # require_results_dir names the problem below
    if len(results_dirs) < 2 and not ladder:
        raise InputError("DIR: compare needs at least two results directories (or one "
                         "scale ladder: each of its sizes is a workload)")
    for d in results_dirs:
        require_results_dir(d)
    try:
        click.echo(f"report: {build_comparison(list(results_dirs), out)}/index.html")
    except UnsafePathError as exc:
        raise InputError(str(exc)) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
