"""The report at the end of `lossbench run` and from `lossbench report`: where it goes,
what it says about runs still training, and the verdict printed in the terminal."""

from __future__ import annotations

import click

from lossbench.cli.common import InputError, print_table
from lossbench.cli.status import store_errors


def write_report(results_dir, out, experiment=None, **options):
    """Write the report of one experiment (default the latest) into ``out``, by default
    DIR/reports/<experiment id>/, where no other experiment's report is; runs it left out
    are warned about; an unsafe name, an unknown experiment, --metric or --only label is
    exit 2. Says so when some of the experiment's runs have not finished."""
    from lossbench.store.experiments import resolve_experiment, run_ids_of
    from lossbench.core.paths import UnsafePathError
    from lossbench.report.evidence import ReportRequestError
    from lossbench.report.render import build_report, report_dir_in
    from lossbench.store.runs import DONE, StoreError, run_dir

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
    missing = [r for r in final if not (run_dir(results_dir, r) / DONE).exists()]
    if final and len(missing) == len(final):
        raise click.ClickException(f"experiment {meta.get('id')}: no run has finished yet "
                                   f"(see `lossbench status {results_dir}`)")
    problems: list[str] = []
    try:
        report_dir = build_report(results_dir, out, problems, **options)
    except (UnsafePathError, ReportRequestError) as exc:
        raise InputError(str(exc)) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    for problem in problems:
        click.echo(f"lossbench: warning: {problem}", err=True)
    if missing:
        click.echo(f"note: {len(missing)} of {len(final)} runs still running or not started; "
                   f"the report shows the {len(final) - len(missing)} finished "
                   f"(`lossbench status {results_dir}`)")
    return report_dir


def contradicted_claims(ev) -> list[str]:
    """The statements of the contradicted claims of ``ev`` (print_suite_summary's), each
    also printed on stderr (`lossbench run --fail-on-claims` exits 3 when there is one)."""
    from lossbench.suite.claims import printable_names

    bad = [r.claim for r in ev.claims if r.verdict == "contradicted"]
    for claim in bad:  # names and labels come from the results folder: shown escaped
        same = claim.name == claim.statement()
        click.echo(f"lossbench: claim contradicted: {printable_names([claim.name])}"
                   + ("" if same else f" ({printable_names([claim.statement()])})"), err=True)
    return [c.statement() for c in bad]


def print_suite_summary(out, experiment: str | None = None):
    """The verdict's table in plain text, read from the same score table as the report;
    returns the Evidence it read (report.evidence.gather)."""
    from lossbench.report.document import fmt
    from lossbench.report.evidence import gather
    from lossbench.report.verdict import signed

    ev = gather(out, with_results=False, experiment=experiment)
    if ev.scores.runs.empty or ev.primary.column not in ev.table:
        return ev
    for label, choice in ev.meta.get("choices", {}).items():
        setting = choice["setting"]
        chosen = ", ".join(f"{k}={v}" for k, v in setting.items()) if setting else "none"
        click.echo(f"tuned {label}: {chosen}" + "".join(f"\n  note: {n}" for n in choice["notes"]))
    col = ev.primary.column
    deltas = dict(zip(ev.comparisons.label, ev.comparisons.mean_difference))
    rows = []
    for r in ev.table.itertuples():
        low, high, kind = (getattr(r, f"{col}_{k}") for k in ("low", "high", "kind"))
        spread = f"{kind} {fmt(low)}–{fmt(high)}" if low == low and high == high else ""
        status = ", ".join(f"{n} {w}" for n, w in ((r.diverged, "diverged"),
                                                   (r.failed, "failed")) if n)
        rows.append((r.label, f"{r.runs}" + (f" ({status})" if status else ""),
                     fmt(getattr(r, col)), spread,
                     "baseline" if r.label == ev.baseline else signed(deltas.get(r.label,
                                                                                 float("nan")))))
    click.echo("")
    if ev.scale is not None and ev.scale.sizes:
        click.echo(f"at the largest size of the scale ladder, {ev.scale.sizes[-1]} "
                   f"(every size: the report's Scale section)")
    print_table(("loss", "seeds", f"mean {ev.primary.header}", "spread",
                  f"Δ vs {ev.baseline}"), rows)
    if ev.claims:
        from lossbench.report.claims import effect_text

        click.echo("")
        print_table(("claim", "stated", "Δ = a − b", "verdict"),
                    [(r.claim.name, r.claim.statement(), effect_text(r), r.verdict)
                     for r in ev.claims])
    return ev
