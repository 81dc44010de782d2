"""`lossbench run`: validate a suite, sweep it (or show the plan), report, and say how it went."""

from __future__ import annotations

import sys

import click

from lossbench.cli.common import (
    InputError,
    echo,
    load_plugins_or_exit,
    os_error_line,
    plugin_option,
    warn,
)
from lossbench.cli.report import contradicted_claims, print_suite_summary, write_report
from lossbench.cli.status import plan_json, print_plan, store_errors
from lossbench.core.schema import TRACEBACK
from lossbench.store.runs import GIVE_UP_AFTER, run_dir
from lossbench.sweep.executors import ExecutorUnavailable


@click.command("run")
@click.argument("suite_path", metavar="SUITE")
@click.option("--out", "out", default=None, metavar="DIR",
              help="Results directory; the report goes to DIR/reports/<experiment id>/ "
                   "[default: results/<suite name>].")
@click.option("--report-out", default=None, metavar="REPORT_DIR",
              help="Report folder [default: DIR/reports/<experiment id>/].")
@click.option("--seeds", default=None, metavar="N|S,S,...",
              help="Seeds to run, replacing the suite's: N for the N seeds 0..N-1 (as "
                   "`seeds = N` in a suite), or a list such as 0,3,7; one seed alone is a "
                   "list of one: 7, (or [7]).")
@click.option("--dry-run", is_flag=True,
              help="Validate, then list the runs (finished, resumable, new), the steps to "
                   "train and an estimated wall time; start and write nothing.")
@click.option("--json", "as_json", is_flag=True,
              help="With --dry-run: print the plan as JSON (each run's id, label, seed, state "
                   "and steps; the estimate) for scripts and CI.")
@click.option("--workers", default="auto", show_default=True, metavar="N|auto",
              help="Worker processes (local executor).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option("--scheduler", default=None, metavar="ADDR", help="Dask scheduler address.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "mps"]), default=None,
              help="Override the suite's device.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a suite value, e.g. --set train.steps=100 (repeatable).")
@plugin_option
@click.option("--no-report", is_flag=True, help="Do not write the report at the end.")
@click.option("--fail-on-claims", is_flag=True,
              help="Exit 3 when a claim of the suite is contradicted (when no run failed).")
@click.option("--log", "trackers", multiple=True, metavar="TRACKER",
              help="Also log every run to tensorboard, mlflow or wandb (repeatable; adds to "
                   "the suite's [log] trackers).")
@click.option("--no-retry", is_flag=True,
              help="Keep failed runs as they are (default: retry them from their checkpoint).")
@click.option("--give-up-after", type=click.IntRange(0), default=GIVE_UP_AFTER, show_default=True,
              metavar="N", help="Stop retrying a run that failed the same way N times in a row "
                                "(0: always retry).")
def run_cmd(suite_path, out, report_out, seeds, dry_run, as_json, workers, executor, scheduler, device,
            overrides, plugins, no_report, trackers, no_retry, give_up_after, fail_on_claims):
    """Sweep a suite: losses x hyperparameter grids x seeds over identical runs.

    Rerunning the same command skips finished runs, resumes unfinished ones from
    their last checkpoint and retries failed ones. Each distinct invocation is an
    experiment of the results directory (`lossbench runs DIR`); its tables, report and
    load() never mix in another's runs. Exit 0 when every run is done or diverged, 1
    when any failed or the results directory cannot be written, 2 for bad input, 130
    when interrupted; with --fail-on-claims, 3 when every run finished but a claim of the
    suite is contradicted.
    """
    load_plugins_or_exit(plugins)
    suite = _load(suite_path, overrides, seeds, device)
    n_workers = _workers(workers)
    _check_executor(executor, scheduler)
    log = _trackers(suite, trackers)
    _check_device(suite)
    out = out or f"results/{suite.name}"
    if as_json and not dry_run:
        raise InputError("--json: applies to --dry-run (the plan); a sweep's results are "
                         "DIR/summary.csv and `lossbench runs DIR`")
    if dry_run:
        _print_plan(suite, out, n_workers, executor, as_json, retry=not no_retry,
                    give_up_after=give_up_after)
        sys.exit(0)
    from lossbench.sweep.sweep import run_suite

    try:
        outcome = run_suite(suite, out, workers=n_workers, executor=executor,
                            scheduler=scheduler, plugins=plugins, retry=not no_retry,
                            give_up_after=give_up_after, log=log)
    except OSError as exc:  # read-only, disk full, a file in the way: say which and why
        raise click.ClickException(os_error_line(exc)) from None
    problems: list[str] = []
    ev = _evidence(out, outcome.experiment, problems)
    report_dir = None if no_report else write_report(out, report_out, outcome.experiment,
                                                     evidence=ev, problems=problems)
    if report_dir is not None and log:
        _attach_report(log, out, outcome.experiment, report_dir)
    _print_outcome(suite, out, outcome)
    print_suite_summary(ev)
    if report_dir is not None:
        click.echo(f"\nreport: {report_dir}/index.html (and report.md)")
    if fail_on_claims and outcome.exit_code == 0 and ev is not None and contradicted_claims(ev):
        sys.exit(3)
    sys.exit(outcome.exit_code)


def _load(suite_path, overrides, seeds, device):
    """The suite with the command line's --set, --seeds and --device; every problem printed,
    one line each, then exit 2."""
    from lossbench.suite.load import SuiteError, load_suite

    try:
        return load_suite(suite_path, overrides, seeds=_seeds(seeds), device=device)
    except SuiteError as exc:
        for line in exc.errors[:-1]:
            echo(f"lossbench: error: {line}", err=True)
        raise InputError(exc.errors[-1]) from None


def _workers(workers: str) -> int | None:
    """--workers N or auto (None: as many one-run processes as the cores allow)."""
    if workers == "auto":
        return None
    if workers.isdigit() and int(workers) >= 1:
        return int(workers)
    raise InputError(f"--workers: expected a positive integer or 'auto', got {workers!r}")


def _check_executor(executor: str, scheduler: str | None) -> None:
    if executor == "dask" and not scheduler:
        raise InputError("--scheduler: required with --executor dask (e.g. tcp://host:8786)")
    if executor == "dask":
        from lossbench.sweep.executors.dask import require_distributed
        try:
            require_distributed()
        except ExecutorUnavailable as exc:
            raise InputError(f"--executor dask: {exc}") from None


def _trackers(suite, trackers) -> tuple[str, ...]:
    """The suite's [log] trackers and --log's, each checked to be installed."""
    from lossbench.sweep.trackers import TrackerUnavailable, check_trackers

    log = tuple(dict.fromkeys((*suite.log, *trackers)))
    try:
        check_trackers(log)
    except TrackerUnavailable as exc:
        raise InputError(f"--log: {exc}") from None
    return log


def _check_device(suite) -> None:
    if suite.runs[0].device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise InputError("--device cuda: torch sees no CUDA device on this machine")


def _print_plan(suite, out, n_workers, executor, as_json: bool, **options) -> None:
    """--dry-run: each run's state and an estimate of the sweep's wall time (as a table, or
    JSON with --json)."""
    from lossbench.sweep.plan import WORKER_START_S, estimate, plan_suite, process_age
    from lossbench.sweep.sweep import auto_workers

    with store_errors():
        planned = plan_suite(suite, out, **options)
        n = n_workers or auto_workers(suite)
        start_s = min(process_age() or WORKER_START_S, 60.0)  # before the probe
        guess = estimate(planned, out, n, start_s) if executor == "local" else None
        if as_json:
            click.echo(plan_json(suite, out, planned, guess, n))
        else:
            print_plan(suite, out, planned, guess, n)


def _evidence(out, experiment, problems: list[str]):
    """The experiment's evidence, read once for the report, the terminal summary and
    --fail-on-claims (None when there is nothing to read, e.g. every run failed early)."""
    from lossbench.report.evidence import gather

    with store_errors():
        try:
            return gather(out, experiment=experiment, problems=problems)
        except FileNotFoundError:
            return None


def _print_outcome(suite, out, outcome) -> None:
    for problem in outcome.problems:  # stored results that were not what they claimed
        warn(problem)
    counts = {s: list(outcome.statuses.values()).count(s) for s in ("done", "diverged", "failed")}
    click.echo(f"{suite.name}: {len(outcome.statuses)} runs ({outcome.skipped} already finished) "
               f"in {outcome.wall_s:.1f} s: {counts['done']} done, {counts['diverged']} diverged, "
               f"{counts['failed']} failed -> {out}/summary.csv")
    for run_id, (n, error) in outcome.failures.items():
        more = ("not retried: fix the cause, then rerun with --give-up-after 0"
                if run_id in outcome.gave_up else "rerun the command to retry it")
        traceback = run_dir(out, run_id) / TRACEBACK
        where = f" (runs/{run_id}/traceback.txt)" if traceback.is_file() else ""
        if not traceback.parent.is_dir():
            error = error or "its folder was removed while it trained"
        echo(f"lossbench: run {run_id} failed ({n}× in a row): {error or 'see its folder'}"
             f"{where}; {more}", err=True)


def _attach_report(log, out, experiment, report_dir) -> None:
    """The report as each final run's tracker artifact, where the tracker keeps files."""
    from lossbench.store.experiments import resolve_experiment
    from lossbench.sweep.trackers import attach_report

    run_ids = resolve_experiment(out, experiment).get("run_ids", [])
    for problem in attach_report(log, out, run_ids, report_dir):
        warn(problem)


def _seeds(value: str | None) -> list[int] | None:
    """--seeds N (the N seeds 0..N-1), --seeds 0,3,7 or [0,3,7] (these seeds), --seeds 7, or
    [7] (seed 7 alone): a comma or brackets make a list, a bare number is a count."""
    if value is None:
        return None
    text = value.strip()
    listed = text.startswith("[") and text.endswith("]")
    text = text[1:-1] if listed else text
    try:
        seeds = ([int(x) for x in text.split(",") if x.strip()] if listed or "," in text
                 else list(range(int(text))))
    except ValueError:
        seeds = None
    if seeds == [] and not listed and text == "0":
        raise InputError(f"--seeds: {value!r} is a count (N runs the seeds 0..N-1), and 0 "
                         f"seeds run nothing; for seed 0 alone write --seeds 0, (a list of one)")
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise InputError(f"--seeds: expected N (the seeds 0..N-1), distinct non-negative seeds "
                         f"such as 0,3,7, or one seed as 7, ; got {value!r}")
    return seeds
