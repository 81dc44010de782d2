"""The `lossbench` command line.

Bad input (unknown loss, missing file, wrong signature, bad option) prints one
line ``lossbench: error: ...`` to stderr and exits 2, never a traceback.
"""

from __future__ import annotations

import json
import signal
import sys
import threading

import click

from lossbench import __version__
from lossbench.cli.common import InputError, os_error_line, print_table
from lossbench.cli.report import contradicted_claims, print_suite_summary, write_report
from lossbench.cli.status import print_plan, require_results_dir, runs_cmd, status_cmd, store_errors
from lossbench.sweep.executors import ExecutorUnavailable


def _load_plugins(plugins: tuple[str, ...]) -> None:
    """``--plugin`` targets, loaded here first so a bad one is exit 2 before any run."""
    from lossbench.losses import PluginError, load_plugins

    try:
        load_plugins(plugins)
    except PluginError as exc:
        raise InputError(f"--plugin: {exc}") from None


_plugin_option = click.option(
    "--plugin", "plugins", multiple=True, metavar="FILE.py|MODULE",
    help="Import a file or module that registers extra losses (repeatable).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lossbench")
def cli():
    """Compare training losses for language models on identical small GPT runs."""


@cli.command("losses")
@_plugin_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def losses_cmd(plugins, as_json):
    """List the registered losses with hyperparameters and references."""
    _load_plugins(plugins)
    from lossbench.losses import list_losses

    specs = list_losses()
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in specs], indent=2))
        return
    rows = [(s.name, s.description,
             ", ".join(f"{k}={h.describe()}" for k, h in s.hparams.items()) or "-",
             s.reference) for s in specs]
    print_table(("loss", "description", "hyperparameters (default in range)", "reference"), rows)


@cli.command("run")
@click.argument("suite_path", metavar="SUITE")
@click.option("--out", "out", default=None, metavar="DIR",
              help="Results directory; the report goes to DIR/reports/<experiment id>/ "
                   "[default: results/<suite name>].")
@click.option("--report-out", default=None, metavar="REPORT_DIR",
              help="Report folder [default: DIR/reports/<experiment id>/].")
@click.option("--seeds", default=None, metavar="N|S,S,...",
              help="Seeds to run: N for 0..N-1, or a list such as 0,3,7 (overrides the "
                   "suite's seeds).")
@click.option("--dry-run", is_flag=True,
              help="Validate, then list the runs (finished, resumable, new), the steps to "
                   "train and an estimated wall time; start and write nothing.")
@click.option("--workers", default="auto", show_default=True, metavar="N|auto",
              help="Worker processes (local executor).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option("--scheduler", default=None, metavar="ADDR", help="Dask scheduler address.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "mps"]), default=None,
              help="Override the suite's device.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a suite value, e.g. --set train.steps=100 (repeatable).")
@_plugin_option
@click.option("--no-report", is_flag=True, help="Do not write the report at the end.")
@click.option("--fail-on-claims", is_flag=True,
              help="Exit 3 when a claim of the suite is contradicted (when no run failed).")
@click.option("--log", "trackers", multiple=True, metavar="TRACKER",
              help="Also log every run to tensorboard, mlflow or wandb (repeatable; adds to "
                   "the suite's [log] trackers).")
@click.option("--no-retry", is_flag=True,
              help="Keep failed runs as they are (default: retry them from their checkpoint).")
@click.option("--give-up-after", type=click.IntRange(0), default=2, show_default=True,
              metavar="N", help="Stop retrying a run that failed the same way N times in a row "
                                "(0: always retry).")
def run_cmd(suite_path, out, report_out, seeds, dry_run, workers, executor, scheduler, device,
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
    _load_plugins(plugins)
    from lossbench.sweep.sweep import auto_workers, run_suite
    from lossbench.suite.load import SuiteError, load_suite

    if device is not None:
        overrides = (*overrides, f'device="{device}"')
    if seeds is not None:
        overrides = (*overrides, _seeds_override(seeds))
    try:
        suite = load_suite(suite_path, overrides)
    except SuiteError as exc:
        for line in exc.errors[:-1]:
            click.echo(f"lossbench: error: {line}", err=True)
        raise InputError(exc.errors[-1]) from None
    if workers == "auto":
        n_workers = None
    elif workers.isdigit() and int(workers) >= 1:
        n_workers = int(workers)
    else:
        raise InputError(f"--workers: expected a positive integer or 'auto', got {workers!r}")
    if executor == "dask" and not scheduler:
        raise InputError("--scheduler: required with --executor dask (e.g. tcp://host:8786)")
    if executor == "dask":
        from lossbench.sweep.executors.dask import require_distributed
        try:
            require_distributed()
        except ExecutorUnavailable as exc:
            raise InputError(f"--executor dask: {exc}") from None
    log = tuple(dict.fromkeys((*suite.log, *trackers)))
    from lossbench.sweep.trackers import TrackerUnavailable, check_trackers
    try:
        check_trackers(log)
    except TrackerUnavailable as exc:
        raise InputError(f"--log: {exc}") from None
    if suite.runs[0].device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise InputError("--device cuda: torch sees no CUDA device on this machine")
    out = out or f"results/{suite.name}"
    if dry_run:
        from lossbench.sweep.plan import WORKER_START_S, estimate, plan_suite, process_age

        with store_errors():
            planned = plan_suite(suite, out, retry=not no_retry, give_up_after=give_up_after)
            n = n_workers or auto_workers(suite)
            start_s = min(process_age() or WORKER_START_S, 60.0)  # before the probe
            guess = estimate(planned, out, n, start_s) if executor == "local" else None
            print_plan(suite, out, planned, guess, n)
        sys.exit(0)
    try:
        outcome = run_suite(suite, out, workers=n_workers, executor=executor,
                            scheduler=scheduler, plugins=plugins, retry=not no_retry,
                            give_up_after=give_up_after, log=log)
    except OSError as exc:  # read-only, disk full, a file in the way: say which and why
        raise click.ClickException(os_error_line(exc)) from None
    report_dir = write_report(out, report_out, outcome.experiment) if not no_report else None
    if report_dir is not None and log:
        _attach_report(log, out, outcome.experiment, report_dir)
    counts = {s: list(outcome.statuses.values()).count(s) for s in ("done", "diverged", "failed")}
    click.echo(f"{suite.name}: {len(outcome.statuses)} runs ({outcome.skipped} already finished) "
               f"in {outcome.wall_s:.1f} s: {counts['done']} done, {counts['diverged']} diverged, "
               f"{counts['failed']} failed -> {out}/summary.csv")
    for run_id, (n, error) in outcome.failures.items():
        more = ("not retried: fix the cause, then rerun with --give-up-after 0"
                if run_id in outcome.gave_up else "rerun the command to retry it")
        click.echo(f"lossbench: run {run_id} failed ({n}× in a row): {error or 'see its folder'} "
                   f"(runs/{run_id}/traceback.txt); {more}", err=True)
    ev = print_suite_summary(out, outcome.experiment)
    if report_dir is not None:
        click.echo(f"\nreport: {report_dir}/index.html (and report.md)")
    if fail_on_claims and outcome.exit_code == 0 and contradicted_claims(ev):
        sys.exit(3)
    sys.exit(outcome.exit_code)


def _attach_report(log, out, experiment, report_dir) -> None:
    """The report as each final run's tracker artifact, where the tracker keeps files."""
    from lossbench.store.experiments import resolve_experiment
    from lossbench.sweep.trackers import attach_report

    run_ids = resolve_experiment(out, experiment).get("run_ids", [])
    for problem in attach_report(log, out, run_ids, report_dir):
        click.echo(f"warning: {problem}", err=True)


def _seeds_override(value: str) -> str:
    """--seeds N (0..N-1) or --seeds 0,3,7 as the override of the suite's seeds."""
    try:
        seeds = ([int(x) for x in value.split(",") if x.strip()] if "," in value
                 else list(range(int(value))))
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise InputError(f"--seeds: expected N (seeds 0..N-1) or distinct non-negative seeds "
                         f"such as 0,3,7, got {value!r}")
    return f"seeds={seeds}"


def _labels(value: str | None) -> list[str] | None:
    if value is None:
        return None
    labels = [v.strip() for v in value.split(",") if v.strip()]
    if not labels:
        raise InputError("--only: give one or more labels, separated by commas")
    return labels


@cli.command("report")
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
        click.echo((report_dir / "tables.tex").read_text(encoding="utf-8"), nl=False)
        click.echo(f"% written to {report_dir / 'tables.tex'}", err=True)
    else:
        click.echo(f"report: {report_dir}/index.html")


@cli.command("compare")
@click.argument("results_dirs", metavar="DIR [DIR ...]", nargs=-1)
@click.option("--out", "out", default=None, metavar="REPORT_DIR",
              help="Report folder [default: reports/compare-<date>].")
def compare_cmd(results_dirs, out):
    """Compare losses across suites (each results DIR is a workload, each size of a scale
    ladder too): steps-to-target ratios, performance profiles, a profile score, and ranks
    with a Friedman test."""
    from lossbench.core.paths import UnsafePathError
    from lossbench.report.compare import build_comparison
    from lossbench.store.runs import StoreError, suite_meta

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


cli.add_command(runs_cmd)
cli.add_command(status_cmd)


def main(argv=None) -> None:
    """Entry point: click errors become one line on stderr with exit code 2; Ctrl-C and
    SIGTERM one line with exit code 130 (running runs saved a checkpoint: rerun to resume)."""
    previous = _sigterm_as_interrupt()
    try:
        cli.main(args=argv, prog_name="lossbench", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):  # click turns KeyboardInterrupt into Abort
        _ignore_interrupts()  # a second Ctrl-C now would only print a traceback
        click.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except ExecutorUnavailable as exc:
        click.echo(f"lossbench: error: {exc}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"lossbench: error: {exc.format_message()}", err=True)
        sys.exit(2 if isinstance(exc, (InputError, click.UsageError)) else exc.exit_code)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


INTERRUPTED = "lossbench: interrupted; rerun the same command to resume (finished runs are kept)"


def _sigterm_as_interrupt():
    """Make SIGTERM (kill, a CI timeout, systemd) stop us like Ctrl-C; return the old handler
    (None when not on the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return signal.SIG_DFL if previous is None else previous


def _ignore_interrupts() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


from lossbench.cli.check import check_cmd  # noqa: E402  (its own module: it is long)

cli.add_command(check_cmd)
