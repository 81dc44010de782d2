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
from lossbench.executors import ExecutorUnavailable


class InputError(click.ClickException):
    """Bad user input: one line, exit code 2."""

    exit_code = 2


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
    _print_table(("loss", "description", "hyperparameters (default in range)", "reference"), rows)


@cli.command("check")
@click.argument("target")
@_plugin_option
@click.option("--profile", type=click.Choice(["dev", "ci"]), default="dev", show_default=True,
              help="Hypothesis profile: dev (fast) or ci (more examples, derandomized).")
@click.option("--max-examples", type=click.IntRange(1), default=None,
              help="Examples per property (overrides the profile).")
@click.option("--seed", type=int, default=None, help="Hypothesis seed for a reproducible search.")
@click.option("--property", "only", multiple=True, metavar="NAME",
              help="Run only these properties (repeatable).")
def check_cmd(target, plugins, profile, max_examples, seed, only):
    """Property-test losses with hypothesis.

    TARGET is a registered loss name, `all`, `path/file.py:function` or
    `module:function`. Registered losses are checked on the properties they
    declare; a plain function on the generic ones. Exit 0 when all pass,
    1 when any fails, 2 for bad input.
    """
    _load_plugins(plugins)
    from lossbench.checks import (PROPERTIES, CheckTargetError, check_loss, resolve_targets,
                                  run_property)

    try:
        specs = resolve_targets(target)
    except CheckTargetError as exc:
        raise InputError(f"TARGET: {exc}") from None
    unknown = [p for p in only if p not in PROPERTIES]
    if unknown:
        raise InputError(f"--property: unknown {unknown}; known: {', '.join(sorted(PROPERTIES))}")

    failures, rows = [], []
    for spec in specs:
        if only:
            results = [run_property(spec, p, profile=profile, max_examples=max_examples, seed=seed)
                       for p in only if p in spec.properties]
        else:
            results = check_loss(spec, profile=profile, max_examples=max_examples, seed=seed)
        for r in results:
            rows.append((r.loss, r.prop, "pass" if r.passed else "FAIL", r.message.splitlines()[0]
                         if r.message else ""))
            if not r.passed:
                failures.append(r)
    _print_table(("loss", "property", "result", "detail"), rows)
    for r in failures:
        click.echo(f"\n--- {r.loss}: {r.prop} failed: {r.message}")
        if r.counterexample:
            click.echo("Falsifying example (runnable; `from lossbench.checks import LossCase`, then "
                       "`case.call(fn)`):")
            click.echo(f"case = {r.counterexample}")
    n = len(rows)
    click.echo(f"\n{n - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


@cli.command("run")
@click.argument("suite_path", metavar="SUITE")
@click.option("--out", "out", default=None, metavar="DIR",
              help="Results directory [default: results/<suite name>].")
@click.option("--workers", default="auto", show_default=True, metavar="N|auto",
              help="Worker processes (local executor).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option("--scheduler", default=None, metavar="ADDR", help="Dask scheduler address.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Override the suite's device.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a suite value, e.g. --set train.steps=100 (repeatable).")
@_plugin_option
@click.option("--no-report", is_flag=True, help="Do not write the report at the end.")
@click.option("--log", "trackers", multiple=True, metavar="TRACKER",
              help="Also log every run to tensorboard, mlflow or wandb (repeatable; adds to "
                   "the suite's [log] trackers).")
@click.option("--no-retry", is_flag=True,
              help="Keep failed runs as they are (default: retry them from their checkpoint).")
@click.option("--give-up-after", type=click.IntRange(0), default=2, show_default=True,
              metavar="N", help="Stop retrying a run that failed the same way N times in a row "
                                "(0: always retry).")
def run_cmd(suite_path, out, workers, executor, scheduler, device, overrides, plugins, no_report,
            trackers, no_retry, give_up_after):
    """Sweep a suite: losses x hyperparameter grids x seeds over identical runs.

    Rerunning the same command skips finished runs, resumes unfinished ones from
    their last checkpoint and retries failed ones. Exit 0 when every run is done
    or diverged, 1 when any failed or the results directory cannot be written,
    2 for bad input, 130 when interrupted.
    """
    _load_plugins(plugins)
    from lossbench.runner import run_suite
    from lossbench.suites import SuiteError, load_suite

    if device is not None:
        overrides = (*overrides, f'device="{device}"')
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
        from lossbench.executors.dask import require_distributed
        try:
            require_distributed()
        except ExecutorUnavailable as exc:
            raise InputError(f"--executor dask: {exc}") from None
    log = tuple(dict.fromkeys((*suite.log, *trackers)))
    from lossbench.trackers import TrackerUnavailable, check_trackers
    try:
        check_trackers(log)
    except TrackerUnavailable as exc:
        raise InputError(f"--log: {exc}") from None
    if suite.runs[0].device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise InputError("--device cuda: torch sees no CUDA device on this machine")
    out = out or f"results/{suite.name}"
    try:
        outcome = run_suite(suite, out, workers=n_workers, executor=executor,
                            scheduler=scheduler, plugins=plugins, retry=not no_retry,
                            give_up_after=give_up_after, log=log)
    except OSError as exc:  # read-only, disk full, a file in the way: say which and why
        raise click.ClickException(_os_error_line(exc)) from None
    report_dir = _report(out, None) if not no_report else None
    counts = {s: list(outcome.statuses.values()).count(s) for s in ("done", "diverged", "failed")}
    click.echo(f"{suite.name}: {len(outcome.statuses)} runs ({outcome.skipped} already finished) "
               f"in {outcome.wall_s:.1f} s: {counts['done']} done, {counts['diverged']} diverged, "
               f"{counts['failed']} failed -> {out}/summary.csv")
    for run_id, (n, error) in outcome.failures.items():
        more = ("not retried: fix the cause, then rerun with --give-up-after 0"
                if run_id in outcome.gave_up else "rerun the command to retry it")
        click.echo(f"lossbench: run {run_id} failed ({n}× in a row): {error or 'see its folder'} "
                   f"(runs/{run_id}/traceback.txt); {more}", err=True)
    _print_suite_summary(out)
    if report_dir is not None:
        click.echo(f"\nreport: {report_dir}/index.html (and report.md)")
    sys.exit(outcome.exit_code)


def _os_error_line(exc: OSError) -> str:
    """'PATH: cause' for a filesystem error (the message of one that names no path)."""
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _require_results_dir(path: str) -> None:
    from pathlib import Path

    if not (Path(path) / "summary.csv").exists() or not (Path(path) / "suite.json").exists():
        raise InputError(f"DIR: {path} is not a lossbench results directory "
                         f"(no summary.csv / suite.json)")


def _report(results_dir, out, **options):
    """Write the report; runs it left out are warned about; an unsafe name, an unknown
    --metric or --only label is exit 2."""
    from lossbench.paths import UnsafePathError
    from lossbench.report.evidence import ReportRequestError
    from lossbench.report.render import build_report
    from lossbench.results import StoreError

    problems: list[str] = []
    try:
        report_dir = build_report(results_dir, out, problems, **options)
    except (UnsafePathError, ReportRequestError) as exc:
        raise InputError(str(exc)) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    for problem in problems:
        click.echo(f"lossbench: warning: {problem}", err=True)
    return report_dir


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
              help="Report folder [default: reports/<suite>-<date>].")
@click.option("--metric", default=None, metavar="M",
              help="Primary metric of the verdict and statistics, e.g. val_ce or seq_rep_4 "
                   "[default: val_ce_full, the whole-split val CE].")
@click.option("--only", default=None, metavar="LOSS,...",
              help="Labels to report (the baseline is always kept).")
@click.option("--format", "fmt", type=click.Choice(["html", "latex"]), default="html",
              show_default=True,
              help="html: index.html, report.md and CSVs; latex: tables.tex, the verdict and "
                   "statistics as booktabs tables (printed too).")
def report_cmd(results_dir, out, metric, only, fmt):
    """Write the comparison report of a results directory."""
    _require_results_dir(results_dir)
    report_dir = _report(results_dir, out, metric=metric, only=_labels(only),
                         latex=fmt == "latex")
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
    """Compare losses across suites (each results DIR is a workload): steps-to-target
    ratios, performance profiles, a profile score, and ranks with a Friedman test."""
    from lossbench.report.compare import build_comparison

    if len(results_dirs) < 2:
        raise InputError("DIR: compare needs at least two results directories")
    from lossbench.paths import UnsafePathError
    from lossbench.results import StoreError

    for d in results_dirs:
        _require_results_dir(d)
    try:
        click.echo(f"report: {build_comparison(list(results_dirs), out)}/index.html")
    except UnsafePathError as exc:
        raise InputError(str(exc)) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


def _print_suite_summary(out) -> None:
    """The verdict's table in plain text, read from the same score table as the report."""
    from lossbench.report.document import fmt
    from lossbench.report.evidence import gather
    from lossbench.report.verdict import signed

    ev = gather(out, with_results=False)
    if ev.scores.runs.empty or ev.primary.column not in ev.table:
        return
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
    _print_table(("loss", "seeds", f"mean {ev.primary.header}", "spread",
                  f"Δ vs {ev.baseline}"), rows)


def _print_table(header, rows) -> None:
    """Plain aligned columns; the last column is not padded (it may be long)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for i, row in enumerate([header, *rows]):
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths)] + [str(row[-1])]
        click.echo("  ".join(cells).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


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
