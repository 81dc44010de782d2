"""Watching a sweep: the dry run (what would run, how long), progress lines in logs, live
metrics files, `lossbench status`."""

import json
import math
import multiprocessing.process
import os
import subprocess
import sys
import time

import pytest
from helpers import FIXTURES, tiny_toml, wait_for

from lossbench.cli import main
from lossbench.core.locks import file_lock
from lossbench.core.schema import LOCK
from lossbench.losses import load_plugins
from lossbench.store.metrics_log import read_metrics
from lossbench.store.runs import read_result, run_dir
from lossbench.store.tables import load
from lossbench.suite.load import load_suite
from lossbench.sweep.attempt import execute_run
from lossbench.sweep.executors import Job
from lossbench.sweep.sweep import run_suite

PLUGIN = str(FIXTURES / "sweep_plugin.py")


def write_suite(tmp_path, losses='["cross_entropy", "mse"]', seeds=(0, 1), steps=20):
    path = tmp_path / "watch.toml"
    path.write_text(tiny_toml("watch", losses, seeds=seeds,
                              train={"steps": steps, "checkpoint_every": 5}))
    return path


def cli(capsys, *args) -> tuple[int, str, str]:
    """`lossbench ARGS` in this process: (exit code, stdout, stderr)."""
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def rows(stdout: str) -> dict[tuple[str, int], str]:
    """(loss, seed) -> the rest of its line, from a table `lossbench` printed."""
    table, inside = {}, False
    for line in stdout.splitlines():
        if line.startswith("---"):
            inside = True
        elif not line.strip():
            inside = False
        elif inside:
            parts = line.split()
            table[(parts[0], int(parts[1]))] = " ".join(parts[2:])
    return table


def files(root):
    return sorted((str(p), p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.fixture
def no_processes(monkeypatch):
    """Starting a process (a worker, a subprocess) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the dry run started a process")

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def test_dry_run_of_a_new_directory_starts_and_writes_nothing(tmp_path, capsys, no_processes):
    suite, out = write_suite(tmp_path), tmp_path / "results"
    before = files(tmp_path)
    code, stdout, _ = cli(capsys, "run", suite, "--out", out, "--dry-run", "--workers", "2")
    assert code == 0 and files(tmp_path) == before and not out.exists()
    table = rows(stdout)
    assert set(table) == {(loss, s) for loss in ("cross_entropy", "mse") for s in (0, 1)}
    assert all(v == "new 20/20" for v in table.values())
    assert "4 runs into" in stdout and "80 steps to train" in stdout
    assert "on 2 workers (estimated from a" in stdout and "s probe)" in stdout
    assert "nothing started, nothing written" in stdout


def test_dry_run_json_is_the_plan_for_scripts(tmp_path, capsys, no_processes):
    suite, out = write_suite(tmp_path), tmp_path / "results"
    code, stdout, _ = cli(capsys, "run", suite, "--out", out, "--dry-run", "--json",
                          "--workers", "1")
    assert code == 0 and not out.exists()
    plan = json.loads(stdout)  # nothing but the JSON on stdout
    assert [r["run_id"] for r in plan["runs"]] == [r.run_id() for r in load_suite(suite).runs]
    assert {(r["label"], r["seed"], r["state"], r["steps_left"]) for r in plan["runs"]} == \
        {(loss, s, "new", 20) for loss in ("cross_entropy", "mse") for s in (0, 1)}
    assert plan["steps_to_train"] == 80 and plan["estimate_s"] > 0
    run_suite(load_suite(suite), out, workers=1, show_progress=False)
    code, stdout, _ = cli(capsys, "run", suite, "--out", out, "--dry-run", "--json")
    plan = json.loads(stdout)
    assert {r["state"] for r in plan["runs"]} == {"finished"} and plan["estimate_s"] is None
    code, _, stderr = cli(capsys, "run", suite, "--out", out, "--json")
    assert code == 2 and "--json: applies to --dry-run" in stderr


def test_dry_run_after_a_partial_sweep_says_what_is_finished_resumable_or_new(
        tmp_path, capsys, no_processes):
    load_plugins((PLUGIN,))
    suite = write_suite(tmp_path, '["cross_entropy", "mse", "fixture_raises"]')
    out = tmp_path / "out"
    (tmp_path / "partial").mkdir()
    partial = write_suite(tmp_path / "partial", '["cross_entropy", "fixture_raises"]', seeds=(0,))
    # cross_entropy seed 0 done, fixture_raises seed 0 failed
    run_suite(load_suite(partial), out, workers=1, show_progress=False)
    mse1 = next(r for r in load_suite(suite).runs if r.loss == "mse" and r.seed == 1)
    # stopped after its 7th step, at a checkpoint: resumable
    steps = iter(range(100))
    assert execute_run(mse1.to_dict(), Job(str(out)), stop=lambda: next(steps) >= 6)[1] == \
        "interrupted"
    before = files(tmp_path)
    code, stdout, _ = cli(capsys, "run", suite, "--out", out, "--dry-run", "--workers", "1",
                          "--plugin", PLUGIN)
    assert code == 0 and files(tmp_path) == before
    table = rows(stdout)
    assert table[("cross_entropy", 0)] == "finished (done) 0/20"
    assert table[("cross_entropy", 1)] == "new 20/20"
    assert table[("mse", 1)] == "resumable (from step 7) 13/20"
    assert table[("fixture_raises", 0)] == "retry (from step 0) 20/20"
    assert "(1 finished, 1 resumable, 1 retry, 3 new); 93 steps to train" in stdout
    code, stdout, _ = cli(capsys, "run", suite, "--out", out, "--dry-run", "--no-retry",
                          "--plugin", PLUGIN)
    assert rows(stdout)[("fixture_raises", 0)] == "finished (failed, not retried) 0/20"
    # the finished run gives the estimate its seconds per step (the rest of the shape)
    assert "estimated from 1 finished run of the same shape" in stdout


def test_estimate_from_finished_runs_and_from_a_probe(tmp_path):
    from lossbench.sweep.plan import RUN_OVERHEAD_S, estimate, makespan, plan_suite

    assert makespan([3, 1, 1, 1], 2) == 3 and makespan([1, 1, 1], 1) == 3
    suite, out = load_suite(write_suite(tmp_path)), tmp_path / "out"
    probed = estimate(plan_suite(suite, out), out, 1)
    assert "probe" in probed.basis and probed.seconds > 0
    outcome = run_suite(suite, out, workers=1, show_progress=False)
    more = load_suite(write_suite(tmp_path), ["seeds=[0, 1, 2, 3]"])
    guess = estimate(plan_suite(more, out), out, 1)
    assert guess.basis == "estimated from 4 finished runs of the same shape"
    summary, _ = load(out)
    per_step = summary.wall_s / summary.steps
    assert guess.seconds == pytest.approx(2 * 20 * (per_step[summary.loss == "cross_entropy"]
                                                    .median() + per_step[summary.loss == "mse"]
                                                    .median()) + 4 * RUN_OVERHEAD_S)
    assert outcome.wall_s > 0


def test_metrics_jsonl_grows_during_the_run_and_equals_the_final_curves(tmp_path):
    suite = load_suite(write_suite(tmp_path, seeds=(0,), steps=30))
    config, out = suite.runs[0], tmp_path / "out"
    folder = run_dir(out, config.run_id())
    seen = {}

    class Peek(dict):  # execute_run's progress sink: called after every step, mid-run
        def __setitem__(self, run_id, value):
            evals = [x for x in read_metrics(folder) if x["kind"] == "eval"]
            seen[value[0]] = [x["step"] for x in evals]

    assert execute_run(config.to_dict(), Job(str(out)), Peek())[1] == "done"
    assert seen[5] == [0] and seen[15] == [0, 10] and seen[25] == [0, 10, 20]
    lines = [x for x in read_metrics(folder) if x["kind"] == "eval"]
    assert [x["step"] for x in lines] == [0, 10, 20, 30]
    run_suite(suite, out, workers=1, show_progress=False)  # the tables of that finished run
    _, curves = load(out)
    evals = read_result(folder)["evals"]
    assert len(evals) == len(lines)
    for line, final in zip(lines, evals):
        for metric, value in final.items():
            if isinstance(value, float) and metric != "step":
                # JSON has no NaN: metrics.jsonl writes null
                assert line[metric] == (None if math.isnan(value) else pytest.approx(value))
                stored = curves[(curves.step == line["step"]) & (curves.metric == metric)].value
                assert stored.iloc[0] == pytest.approx(value, nan_ok=True), metric


@pytest.mark.slow
def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    suite, out = write_suite(tmp_path, steps=120), tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", "run", str(suite), "--out",
                             str(out), "--workers", "2", "--no-report"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LOSSBENCH_PROGRESS_EVERY_S": "0.5"})
    # meanwhile `lossbench status` sees runs training (their locks are held)
    wait_for(lambda: "running" in _states(out), 240, "a run to be running", proc)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    lines = stderr.splitlines()
    assert "runs: 4 runs to train, 480 steps" in lines
    done = [x for x in lines if x.startswith("run ")]
    assert len(done) == 4 and all(" done (val CE 2." in x for x in done), done
    assert sorted(x.rsplit("[", 1)[1] for x in done) == ["1/4]", "2/4]", "3/4]", "4/4]"]
    assert any(x.startswith("run mse seed 1 done") for x in done)
    progress = [x for x in lines if "steps (" in x]
    assert progress and all("/480 steps (" in x and "runs finished" in x and "ETA" in x
                            for x in progress), lines
    assert "\r" not in stderr  # no bar


def _states(out) -> list[str]:
    """What `lossbench status` would show for each run (read in this process: fast)."""
    from lossbench.store.experiments import resolve_experiment
    from lossbench.sweep.status import experiment_states

    if not (out / "suite.json").exists():
        return []
    return [s.state for s in experiment_states(out, resolve_experiment(out))]


def test_status_table(tmp_path, capsys):
    suite = load_suite(write_suite(tmp_path, seeds=(0, 1, 2)))
    out = tmp_path / "out"
    finished = [r for r in suite.runs if r.seed == 0]
    run_suite(load_suite(write_suite(tmp_path, seeds=(0,))), out, workers=1, show_progress=False)
    from lossbench.store.experiments import new_meta, open_experiment

    meta, _, ids = new_meta(suite)
    open_experiment(out, meta, ids)  # the full sweep has started
    running = next(r for r in suite.runs if r.loss == "mse" and r.seed == 1)
    folder = run_dir(out, running.run_id())
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(running.to_dict()))
    now = time.time()
    lines = [{"kind": "eval", "step": 0, "time": now - 15, "val_ce": 2.5},
             {"kind": "step", "step": 5, "total": 20, "time": now - 10, "train_loss": 2.4},
             {"kind": "eval", "step": 10, "time": now - 5, "val_ce": 2.25},
             {"kind": "step", "step": 10, "total": 20, "time": now - 5, "train_loss": 2.2}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    os.utime(folder / "metrics.jsonl", (now - 3600, now - 3600))  # old: only the lock says so
    stopped = next(r for r in suite.runs if r.loss == "cross_entropy" and r.seed == 2)
    run_dir(out, stopped.run_id()).mkdir()
    (run_dir(out, stopped.run_id()) / "checkpoint.pt").write_bytes(b"")
    with file_lock(folder / LOCK):
        code, stdout, _ = cli(capsys, "status", out)
    assert code == 0
    table = rows(stdout)
    for r in finished:
        state = table[(r.display_name, 0)].split()
        assert state[:2] == ["done", "20/20"] and float(state[2]) > 0
    assert table[("mse", 1)].split()[:3] == ["running", "10/20", "2.2500"]
    assert table[("mse", 1)].split()[3:] == ["5", "s"]  # 10 steps at 1/s, 5 s since the line
    assert table[("cross_entropy", 2)].startswith("stopped")
    assert table[("cross_entropy", 1)] == "not started -/20 -"  # the usual total: in the ETA
    assert "6 runs: 2 done, 1 running, 1 stopped, 2 not started" in stdout
    # without the lock, and with metrics written long ago: not running any more
    code, stdout, _ = cli(capsys, "status", out)
    assert rows(stdout)[("mse", 1)].startswith("stopped 10/20 2.2500")
