"""`lossbench runs`, `lossbench status` and the plan `lossbench run --dry-run` prints: what a
results directory holds, what a sweep is doing, and what it would do."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from lossbench.cli.common import InputError, echo, print_table, warn


def require_results_dir(path: str) -> None:
    """Exit 2 unless ``path`` is a results directory: an experiment record, or the tables
    and suite.json of an older or hand-made one (a sweep in progress has no tables yet)."""
    p = Path(path)
    if (p / "suite.json").exists() and ((p / "summary.csv").exists() or (p / "runs").is_dir()):
        return
    if (p / "experiments").is_dir():
        return
    raise InputError(f"DIR: {path} is not a lossbench results directory "
                     f"(no suite.json with summary.csv or runs/)")


@contextlib.contextmanager
def store_errors():
    """An unknown --experiment is bad input (exit 2); an unreadable store is exit 1."""
    from lossbench.core.paths import UnsafePathError
    from lossbench.store.experiments import UnknownExperiment
    from lossbench.store.runs import StoreError

    try:
        yield
    except (UnknownExperiment, UnsafePathError) as exc:
        raise InputError(str(exc)) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


def _when(iso) -> str:
    """'2026-11-24T00:51:26Z' -> '2026-11-24 00:51'."""
    return str(iso or "?").replace("T", " ")[:16]


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def status_counts(states) -> str:
    """'12 done, 1 diverged, 2 running, 1 not started'."""
    from lossbench.sweep.status import overall

    counts, _ = overall(states)
    order = ["done", "diverged", "failed", "running", "stopped", "not started", "unreadable"]
    return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k)) or "no runs"


@click.command("runs")
@click.argument("results_dir", metavar="DIR")
def runs_cmd(results_dir):
    """List the experiments in a results directory, oldest first.

    An experiment is the runs one `lossbench run` asked for; rerunning the identical suite
    reuses it, anything else (another --set, --seeds, a subset of the losses) is a new
    one. The last one is what `lossbench report DIR` and `load(DIR)` use.
    """
    from lossbench.store.experiments import config_diff, list_experiments, resolve_experiment
    from lossbench.store.runs import StoreError
    from lossbench.sweep.status import experiment_states

    require_results_dir(results_dir)
    problems: list[str] = []
    with store_errors():
        records = list_experiments(results_dir, problems)
        latest = resolve_experiment(results_dir).get("id")
        rows, previous = [], None
        for r in records:
            try:
                states = experiment_states(results_dir, r, problems)
                n, status = len(states), status_counts(states)
            except StoreError as exc:  # a record naming unsafe run ids: listed, not read
                n, status = "?", f"unreadable ({exc})"
            rows.append((r["id"] + (" *" if r["id"] == latest else ""), _when(r.get("updated")),
                         n, status, config_diff(previous, r)))
            previous = r
    for problem in dict.fromkeys(problems):  # a run of several experiments: once
        warn(problem)
    if not rows:
        click.echo(f"{results_dir}: no experiments")
        return
    print_table(("experiment", "last run (UTC)", "runs", "status", "changes from the one above"),
                rows)
    click.echo(f"\n* latest: what `lossbench report {results_dir}` and load() use; "
               f"another with --experiment ID (or a unique start of it)")


@click.command("status")
@click.argument("results_dir", metavar="DIR")
@click.option("--experiment", default=None, metavar="ID",
              help="An experiment of `lossbench runs DIR` (its id or a unique start of it) "
                   "[default: the latest].")
def status_cmd(results_dir, experiment):
    """The runs of an experiment while it trains: state, step, latest val CE and ETA.

    Read from each run's folder: its lock (held while a process trains it), its live
    metrics (runs/<id>/metrics.jsonl) and its result. Safe to run at any time, from
    anywhere that sees the directory; it writes nothing.
    """
    from lossbench.core.text import duration
    from lossbench.store.experiments import resolve_experiment
    from lossbench.sweep.status import experiment_states, overall

    require_results_dir(results_dir)
    problems: list[str] = []
    with store_errors():
        meta = resolve_experiment(results_dir, experiment)
        states = experiment_states(results_dir, meta, problems)
    for problem in problems:
        warn(problem)
    shown = ("tuning", "teacher")  # the phases before the final runs
    rows = [(s.label, s.seed, s.state + (f" ({s.phase})" if s.phase in shown else ""),
             f"{'-' if s.step is None else s.step}/{'?' if s.total is None else s.total}",
             _fmt(s.val_ce), duration(s.eta_s) if s.eta_s is not None else "")
            for s in states]
    header = ("loss", "seed", "state", "step", "val CE", "ETA")
    sizes = (meta.get("scale") or {}).get("runs")  # a scale ladder: which size each run is
    if isinstance(sizes, dict):
        header = ("size",) + header
        rows = [(str(sizes.get(s.run_id, "")),) + row for s, row in zip(states, rows)]
    echo(f"experiment {meta.get('id', '?')} ({meta.get('name', '?')}), "
         f"last run {_when(meta.get('updated'))} UTC\n")
    print_table(header, rows)
    _, eta = overall(states)
    left = f"; about {duration(eta)} left at the current pace" if eta is not None else ""
    click.echo(f"\n{len(states)} runs: {status_counts(states)}{left}")


def print_plan(suite, out: str, planned, estimate, workers: int) -> None:
    """The dry run's output: every run's state, the steps to train and the estimate (None
    for a Dask cluster: its workers are elsewhere)."""
    from lossbench.core.text import duration

    tuned = any(p.phase in ("tuning", "teacher") for p in planned)  # then a phase column
    rows = []
    for p in planned:
        state = p.state + (f" ({p.detail})" if p.detail else "")
        steps = f"{p.steps_left}/{p.total}"
        row = (p.config.display_name, p.config.seed, state, steps)
        rows.append(((p.phase,) + row) if tuned else row)
    header = ("loss", "seed", "state", "steps to train")
    print_table((("phase",) + header) if tuned else header, rows)
    counts: dict[str, int] = {}
    for p in planned:
        counts[p.state] = counts.get(p.state, 0) + 1
    steps = sum(p.steps_left for p in planned if p.state != "finished")
    states = ", ".join(f"{counts[k]} {k}" for k in ("finished", "resumable", "retry", "new")
                       if counts.get(k))
    click.echo(f"\n{suite.name}: {len(planned)} runs into {out} ({states}); "
               f"{steps:,} steps to train")
    if estimate is None:
        click.echo("wall time: not estimated for a Dask cluster (its workers are elsewhere)")
    elif not steps:
        click.echo("nothing to train: every run has finished")
    else:
        exact = f" ({estimate.seconds:.0f} s)" if estimate.seconds >= 90 else ""
        click.echo(f"≈ {duration(estimate.seconds)}{exact} on {workers} worker"
                   f"{'s' * (workers != 1)} ({estimate.basis})")
    click.echo("dry run: nothing started, nothing written")


def plan_json(suite, out: str, planned, estimate, workers: int) -> str:
    """The dry run as JSON: the suite, each run (id, label, seed, phase, state, steps) and
    the wall-time estimate (null for a Dask cluster or when nothing is left to train)."""
    import json

    steps = sum(p.steps_left for p in planned if p.state != "finished")
    return json.dumps({
        "suite": suite.name, "out": str(out), "workers": workers, "steps_to_train": steps,
        "estimate_s": estimate.seconds if estimate is not None and steps else None,
        "estimate_basis": estimate.basis if estimate is not None and steps else None,
        "runs": [p.to_dict() for p in planned]}, indent=2)
