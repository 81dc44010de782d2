"""The results store under untrusted input and faults: crafted checkpoints, failed runs,
malformed results, leftovers, permissions, concurrent sweeps, symlinks, full disks."""

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from helpers import FIXTURES, tiny_toml
from helpers import lossbench_cli as lossbench

from lossbench.store.runs import attempts, run_dir, same_failures_in_a_row
from lossbench.store.tables import load
from lossbench.suite.load import load_suite
from lossbench.sweep.sweep import run_suite

PLUGIN = str(FIXTURES / "sweep_plugin.py")


def one_run_suite(tmp_path, loss="cross_entropy", steps=20, seeds=(0,)):
    path = tmp_path / "one.toml"
    path.write_text(f'baseline = "{loss}"\n' + tiny_toml(
        "one", f'["{loss}"]', seeds=seeds, train={"steps": steps, "checkpoint_every": 5}))
    return path


class _RunsCode:
    """Unpickling this runs a shell command: what a crafted checkpoint would carry."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_crafted_checkpoint_runs_nothing_is_kept_and_the_run_restarts(tmp_path):
    suite = load_suite(one_run_suite(tmp_path))
    reference = run_suite(suite, tmp_path / "reference", workers=1)
    assert set(reference.statuses.values()) == {"done"}
    out = tmp_path / "out"
    folder = run_dir(out, suite.runs[0].run_id())
    folder.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"next_step": 5, "model": _RunsCode(f"touch {marker}")}, folder / "checkpoint.pt")
    outcome = run_suite(suite, out, workers=1)
    assert not marker.exists(), "unpickling the checkpoint executed code"
    assert outcome.statuses == reference.statuses
    kept = list(folder.glob("checkpoint.pt.rejected-*"))
    assert len(kept) == 1 and not (folder / "checkpoint.pt").exists()
    summary, _ = load(out)
    assert "did not load safely" in summary.notes.iloc[0]
    ref, _ = load(tmp_path / "reference")
    assert summary.final_val_ce.iloc[0] == ref.final_val_ce.iloc[0]  # restarted from step 0


def test_checkpoint_of_another_shape_is_refused_not_fatal(tmp_path):
    suite = load_suite(one_run_suite(tmp_path))
    folder = run_dir(tmp_path / "out", suite.runs[0].run_id())
    folder.mkdir(parents=True)
    torch.save({"next_step": 5, "model": {"nonsense": torch.zeros(3)}}, folder / "checkpoint.pt")
    outcome = run_suite(suite, tmp_path / "out", workers=1)
    assert set(outcome.statuses.values()) == {"done"}
    assert list(folder.glob("checkpoint.pt.rejected-*"))


@pytest.mark.slow
def test_failed_run_is_retried_on_rerun_and_finishes(tmp_path):
    flag = tmp_path / "fail-now"
    flag.touch()
    suite = one_run_suite(tmp_path, loss="fixture_flaky")
    env = {"LOSSBENCH_FAIL_FLAG": str(flag)}
    args = ("run", suite, "--out", tmp_path / "out", "--workers", "1", "--plugin", PLUGIN,
            "--no-report")
    first = lossbench(*args, env=env)
    assert first.returncode == 1, first.stderr
    summary, _ = load(tmp_path / "out")
    assert list(summary.status) == ["failed"]
    flag.unlink()
    second = lossbench(*args, env=env)
    assert second.returncode == 0, second.stderr
    summary, _ = load(tmp_path / "out")
    assert list(summary.status) == ["done"] and list(summary.attempts) == [2]
    folder = tmp_path / "out" / "runs" / summary.run_id.iloc[0]
    assert "RuntimeError: flaky failure" in (folder / "traceback-1.txt").read_text()
    assert [e["status"] for e in attempts(folder) if e["event"] == "end"] == ["failed", "done"]


@pytest.mark.slow
def test_same_failure_twice_gives_up_and_no_retry_keeps_failed(tmp_path):
    suite = one_run_suite(tmp_path, loss="fixture_raises")
    out = tmp_path / "out"
    args = ("run", suite, "--out", out, "--workers", "1", "--plugin", PLUGIN, "--no-report")
    assert lossbench(*args, "--no-retry").returncode == 1
    assert lossbench(*args, "--no-retry").returncode == 1
    summary, _ = load(out)
    folder = out / "runs" / summary.run_id.iloc[0]
    assert same_failures_in_a_row(folder)[0] == 1  # --no-retry did not run it again
    for _ in range(3):
        assert lossbench(*args).returncode == 1
    n, error = same_failures_in_a_row(folder)
    assert n == 2 and error == "RuntimeError: deliberate failure"  # retried once, then given up
    proc = lossbench(*args)
    assert "failed (2× in a row): RuntimeError: deliberate failure" in proc.stderr
    assert "not retried" in proc.stderr


@pytest.mark.parametrize("content", ["garbage{", "{}", '{"status": "done"}', "[1, 2]"])
def test_malformed_result_is_an_unfinished_run(tmp_path, content):
    suite = load_suite(one_run_suite(tmp_path))
    out = tmp_path / "out"
    run_suite(suite, out, workers=1)
    folder = run_dir(out, suite.runs[0].run_id())
    (folder / "result.json").write_text(content)
    outcome = run_suite(suite, out, workers=1)
    assert outcome.skipped == 0 and set(outcome.statuses.values()) == {"done"}
    assert json.loads((folder / "result.json").read_text())["status"] == "done"


def test_leftover_temp_files_are_swept_and_files_honour_the_umask(tmp_path):
    suite = load_suite(one_run_suite(tmp_path))
    out = tmp_path / "out"
    folder = run_dir(out, suite.runs[0].run_id())
    folder.mkdir(parents=True)
    leftovers = [out / ".summary.csv.x1y2.tmp", folder / ".checkpoint.pt.a1b2.tmp"]
    for f in leftovers:
        f.write_text("half a file")
    old = os.umask(0o022)
    try:
        run_suite(suite, out, workers=1)
    finally:
        os.umask(old)
    assert not any(f.exists() for f in leftovers)
    for f in (out / "summary.csv", out / "curves.csv", folder / "result.json"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


@pytest.mark.slow
def test_two_sweeps_on_one_directory_train_each_run_once(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(tiny_toml("two", '["cross_entropy", "mse"]', seeds=(0, 1),
                              train={"steps": 60, "checkpoint_every": 10}))
    cmd = [sys.executable, "-m", "lossbench", "run", str(path), "--out", str(tmp_path / "out"),
           "--workers", "1", "--no-report"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    summary, _ = load(tmp_path / "out")
    assert len(summary) == 4 and set(summary.status) == {"done"}
    for run_id in summary.run_id:
        starts = [e for e in attempts(tmp_path / "out" / "runs" / run_id) if e["event"] == "start"]
        assert len(starts) == 1, (run_id, starts)


@pytest.mark.slow
def test_symlinked_run_folder_pointing_outside_is_refused(tmp_path):
    suite = load_suite(one_run_suite(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    os.symlink(elsewhere, run_dir(out, suite.runs[0].run_id()))
    proc = lossbench("run", one_run_suite(tmp_path), "--out", out, "--workers", "1",
                     "--no-report")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "outside" in proc.stderr
    assert "Traceback" not in proc.stderr and not any(elsewhere.iterdir())


@pytest.mark.slow
def test_results_path_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    proc = lossbench("run", one_run_suite(tmp_path), "--out", tmp_path / "out", "--workers", "1",
                     "--no-report")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and str(tmp_path / "out") in proc.stderr


@pytest.mark.slow
def test_a_file_where_a_run_folder_should_be_is_one_line(tmp_path):
    suite = load_suite(one_run_suite(tmp_path))
    folder = run_dir(tmp_path / "out", suite.runs[0].run_id())
    folder.parent.mkdir(parents=True)
    folder.write_text("in the way")
    proc = lossbench("run", one_run_suite(tmp_path), "--out", tmp_path / "out", "--workers", "1",
                     "--no-report")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and folder.name in proc.stderr


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs (needs root and mount rights; skipped where the machine refuses)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the disk-full test needs one")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_disk_full_is_one_line_and_loses_nothing(tmp_path, small_fs):
    path = tmp_path / "big.toml"  # a checkpoint of ~2 MB cannot fit in 1 MiB
    path.write_text(tiny_toml("big", '["cross_entropy"]', seeds=(0,),
                              model={"n_embd": 128, "n_head": 2},
                              train={"steps": 20, "checkpoint_every": 5}))
    proc = lossbench("run", path, "--out", small_fs / "out", "--workers", "1", "--no-report")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "No space left on device" in proc.stderr
    assert not list(small_fs.rglob("*.tmp"))


@pytest.mark.slow
def test_read_only_results_directory_is_one_line(tmp_path, small_fs):
    suite = one_run_suite(tmp_path)
    assert lossbench("run", suite, "--out", small_fs / "out", "--workers", "1",
                     "--no-report").returncode == 0
    before = (small_fs / "out" / "summary.csv").read_text()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    text = one_run_suite(tmp_path).read_text().replace("seeds = [0]", "seeds = [0, 1]")
    (tmp_path / "one.toml").write_text(text)
    proc = lossbench("run", tmp_path / "one.toml", "--out", small_fs / "out", "--workers", "1",
                     "--no-report")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "Read-only file system" in proc.stderr and proc.stderr.count("\n") == 1
    assert (small_fs / "out" / "summary.csv").read_text() == before


@pytest.mark.slow
def test_report_names_and_skips_a_malformed_result(tmp_path):
    suite = load_suite(one_run_suite(tmp_path, seeds=(0, 1)))
    out = tmp_path / "out"
    run_suite(suite, out, workers=1)
    bad = run_dir(out, suite.runs[1].run_id())
    (bad / "result.json").write_text("{}")
    proc = lossbench("report", out, "--out", tmp_path / "report")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"runs/{bad.name}/result.json: status: expected" in proc.stderr
    assert "; skipped" in proc.stderr
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Left out of this report" in md and bad.name in md


@pytest.mark.parametrize("name", ["../../evil", "a/b", ".hidden"])
@pytest.mark.slow
def test_report_of_a_crafted_suite_name_is_exit_2_and_writes_nothing(tmp_path, name):
    suite = load_suite(one_run_suite(tmp_path))
    out = tmp_path / "sub" / "out"
    run_suite(suite, out, workers=1)
    meta = json.loads((out / "suite.json").read_text())
    (out / "suite.json").write_text(json.dumps({**meta, "name": name}))
    before = sorted(p for p in tmp_path.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "lossbench", "report", str(out)],
                          capture_output=True, text=True, cwd=tmp_path / "sub", timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "suite.json name" in proc.stderr
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.slow
def test_report_of_a_suite_json_that_is_not_an_object_is_one_line(tmp_path):
    suite = load_suite(one_run_suite(tmp_path))
    run_suite(suite, tmp_path / "out", workers=1)
    (tmp_path / "out" / "suite.json").write_text("[1, 2]")
    proc = lossbench("report", tmp_path / "out", "--out", tmp_path / "report")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "expected a JSON object" in proc.stderr


def test_editing_the_corpus_re_executes_its_runs(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    path = tmp_path / "text.toml"
    text = tiny_toml("text", '["cross_entropy"]', seeds=(0,), train={"steps": 10})
    path.write_text(text.replace("[data]\n", f'[data]\ncorpus = "text"\npath = "{corpus}"\n')
                    .replace("markov_tokens = 20000\nmarkov_vocab = 8\n", ""))
    out = tmp_path / "out"
    first = run_suite(load_suite(path), out, workers=1)
    assert run_suite(load_suite(path), out, workers=1).skipped == 1  # unchanged: reused
    corpus.write_text("pack my box with five dozen liquor jugs. " * 200)
    edited = run_suite(load_suite(path), out, workers=1)
    assert edited.skipped == 0 and set(edited.statuses) != set(first.statuses)
    config = json.loads((run_dir(out, next(iter(edited.statuses))) / "config.json").read_text())
    assert config["data"]["content_hash"]


def test_tables_are_replaced_together_or_not_at_all(tmp_path, monkeypatch):
    import lossbench.core.atomic as atomic

    a, b = tmp_path / "summary.csv", tmp_path / "curves.csv"
    atomic.atomic_write_many({a: b"old summary", b: b"old curves"})
    real_stage, calls = atomic._stage, []

    def stage_then_fail(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(path))
        return real_stage(path, data)

    monkeypatch.setattr(atomic, "_stage", stage_then_fail)
    with pytest.raises(OSError):
        atomic.atomic_write_many({a: b"new summary", b: b"new curves"})
    assert (a.read_bytes(), b.read_bytes()) == (b"old summary", b"old curves")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.csv", "summary.csv"]
