"""The sweep runner: resumable, worker-count independent, failures and divergence as results."""

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import FIXTURES, assert_same_results, tiny_suite

from lossbench.store.tables import load
from lossbench.suite.load import load_suite
from lossbench.sweep.sweep import run_suite


def test_sweep_writes_store_and_tables(tmp_path):
    suite = load_suite(tiny_suite(tmp_path))
    outcome = run_suite(suite, tmp_path / "out", workers=1)
    assert outcome.exit_code == 0 and set(outcome.statuses.values()) == {"done"}
    summary, curves = load(tmp_path / "out")
    assert len(summary) == 6
    for col in ("run_id", "loss", "seed", "status", "steps", "final_train_loss", "final_val_ce",
                "final_val_ppl", "wall_s", "tokens_per_s", "final_val_acc", "final_ece",
                "final_seq_rep_4", "final_wrep", "hp_alpha"):
        assert col in summary, col
    assert set(summary.loc[summary.loss == "unlikelihood", "hp_alpha"]) == {0.5}
    assert {"train_loss", "train_ce", "val_ce", "grad_norm"} <= set(curves.metric)
    for run_id in summary.run_id:
        folder = tmp_path / "out" / "runs" / run_id
        assert (folder / "DONE").read_text().strip() == "done"
        assert not (folder / "checkpoint.pt").exists()
    # a second invocation skips everything and changes nothing
    tables = {name: (tmp_path / "out" / name).read_bytes() for name in ("summary.csv", "curves.csv")}
    again = run_suite(suite, tmp_path / "out", workers=1)
    assert again.skipped == 6
    assert {name: (tmp_path / "out" / name).read_bytes() for name in tables} == tables


@pytest.mark.slow
def test_results_do_not_depend_on_worker_count(tmp_path):
    suite = load_suite(tiny_suite(tmp_path))
    run_suite(suite, tmp_path / "w1", workers=1)
    run_suite(suite, tmp_path / "w2", workers=2)
    assert_same_results(tmp_path / "w1", tmp_path / "w2")


@pytest.mark.slow
def test_sigkill_and_rerun_equals_uninterrupted(tmp_path):
    path = tiny_suite(tmp_path, steps=60)
    reference = tmp_path / "reference"
    run_suite(load_suite(path), reference, workers=1)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "lossbench", "run", str(path), "--out", str(out), "--workers", "2",
           "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    # kill once some checkpoint exists but the sweep is not finished
    while time.time() < deadline and not list(out.glob("runs/*/checkpoint.pt")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(out.glob("runs/*/checkpoint.pt")), "the sweep was killed before any checkpoint"
    assert len(list(out.glob("runs/*/DONE"))) < 6
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_results(reference, out)


@pytest.mark.slow
def test_failed_and_diverged_runs_are_results(tmp_path):
    path = tiny_suite(tmp_path, extra_losses='"fixture_raises", "fixture_nan"')
    proc = subprocess.run([sys.executable, "-m", "lossbench", "run", str(path), "--out",
                           str(tmp_path / "out"), "--workers", "2",
                           "--plugin", str(FIXTURES / "sweep_plugin.py"), "--no-report"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr  # a failed run makes the exit code 1
    summary, _ = load(tmp_path / "out")
    status = summary.groupby("loss").status.agg(set).to_dict()
    assert status["fixture_raises"] == {"failed"} and status["fixture_nan"] == {"diverged"}
    assert status["cross_entropy"] == {"done"}
    failed_id = summary.loc[summary.loss == "fixture_raises", "run_id"].iloc[0]
    trace = (tmp_path / "out" / "runs" / failed_id / "traceback.txt").read_text()
    assert "RuntimeError: deliberate failure" in trace
    assert summary.loc[summary.loss == "fixture_nan", "diverged_step"].notna().all()
