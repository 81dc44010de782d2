"""A results directory someone sent you: writes never leave it (symlinks inside it are not
followed), special files are refused without blocking, every file read back is checked field
by field (one warning naming file and field, the rest reported), terminal output is escaped,
a copy of only the tables is reported, and the latest experiment does not depend on clocks.

Each attack is built on a copy of one small finished sweep (4 runs); the commands run in this
process, so a hang is caught by a thread's timeout instead of hanging the test session."""

import os
import shutil
import threading

import pytest
from helpers import tiny_toml

from lossbench.cli import main
from lossbench.core.atomic import append_bytes, atomic_write_json
from lossbench.core.locks import file_lock
from lossbench.core.paths import StoreError
from lossbench.store.tables import load
from lossbench.suite.load import load_suite
from lossbench.sweep.sweep import run_suite


def write_suite(folder, seeds=(0, 1), name="trust"):
    path = folder / f"{name}.toml"
    path.write_text(tiny_toml(name, '["cross_entropy", "mse"]', seeds=seeds,
                              train={"steps": 10, "checkpoint_every": 5},
                              eval={"eval_every": 5}))
    return path


@pytest.fixture(scope="module", name="finished")
def finished_fixture(tmp_path_factory):
    """A finished sweep: 4 runs (cross_entropy and mse, seeds 0 and 1), and its suite."""
    root = tmp_path_factory.mktemp("finished")
    suite = write_suite(root)
    run_suite(load_suite(suite), root / "out", workers=1, show_progress=False)
    return root / "out", suite


@pytest.fixture(name="copy")
def copy_fixture(finished, tmp_path):
    """A fresh copy of the finished sweep (symlinks kept as symlinks) and its suite."""
    out, suite = finished
    shutil.copytree(out, tmp_path / "out", symlinks=True)
    return tmp_path / "out", suite


def ids(out) -> list[str]:
    return sorted(p.name for p in (out / "runs").iterdir())


def cli(capsys, *args, timeout: float = 60) -> tuple[int, str, str]:
    """`lossbench ARGS` in this process, in a thread: a command that blocks (on a FIFO)
    fails the test after ``timeout`` s instead of hanging it. (exit code, stdout, stderr)"""
    result = {}

    def target():
        try:
            main([str(a) for a in args])
            result["code"] = 0
        except SystemExit as exc:
            result["code"] = exc.code
        except BaseException as exc:  # a traceback: the test shows it
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"lossbench {' '.join(map(str, args))} blocked"
    if "error" in result:
        raise result["error"]
    out, err = capsys.readouterr()
    return result["code"], out, err


def one_line(err: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err


# ---- writes stay inside -------------------------------------------------------------------

def _link_runs(out, outside):  # the case: runs/ -> ../outside
    shutil.rmtree(out / "runs")
    os.symlink(outside, out / "runs")


def _link_experiments(out, outside):
    shutil.rmtree(out / "experiments")
    os.symlink(outside, out / "experiments")
    (outside / ".mine.tmp").write_text("not a leftover of ours: never swept")


def _link_tables_lock(out, outside):
    (out / ".tables.lock").unlink(missing_ok=True)
    os.symlink(outside / "victim", out / ".tables.lock")


def _link_attempts(out, outside):
    folder = out / "runs" / ids(out)[0]
    (folder / "DONE").unlink()  # unfinished: a rerun trains it and appends to its history
    (folder / "attempts.jsonl").unlink()
    os.symlink(outside / "victim", folder / "attempts.jsonl")


def _link_run_lock(out, outside):
    folder = out / "runs" / ids(out)[0]
    (folder / "DONE").unlink()
    (folder / ".lock").unlink(missing_ok=True)
    os.symlink(outside / "victim", folder / ".lock")


@pytest.mark.parametrize("attack", [_link_runs, _link_experiments, _link_tables_lock,
                                    _link_attempts, _link_run_lock])
def test_a_rerun_never_writes_through_a_symlink(copy, tmp_path, capsys, attack):
    out, suite = copy
    outside = tmp_path / "outside"
    outside.mkdir()
    attack(out, outside)
    code, _, err = cli(capsys, "run", suite, "--out", out, "--workers", "1", "--no-report")
    assert code == 1, err
    one_line(err)
    assert "symlink" in err
    assert [p.name for p in outside.iterdir()] in ([], [".mine.tmp"]), \
        "a write followed a symlink out of the directory"


def test_writers_refuse_symlinks_and_special_files(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    os.symlink(outside, out / "linked")
    with pytest.raises(StoreError, match="outside"):
        atomic_write_json(out / "linked" / "suite.json", {}, root=out)
    os.symlink(outside / "x", out / "link.json")
    with pytest.raises(StoreError, match="symlink"):
        atomic_write_json(out / "link.json", {}, root=out)
    os.mkfifo(out / "fifo")
    with pytest.raises(StoreError, match="FIFO"):
        append_bytes(out / "fifo", b"line\n", root=out)  # never blocks waiting for a reader
    with pytest.raises(StoreError, match="symlink"):
        with file_lock(out / "link.json", root=out):
            pass
    assert not list(outside.iterdir())


# ---- special files: refused without blocking ----------------------------------------------

def _fifo(path):
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize("name,command", [
    ("result.json", "report"), ("result.json", "status"), ("result.json", "runs"),
    ("config.json", "status"), ("metrics.jsonl", "status"), ("suite.json", "report"),
    ("experiment", "runs")])
def test_a_fifo_in_the_directory_is_refused_without_blocking(copy, tmp_path, capsys, name,
                                                             command):
    out, _ = copy
    if name == "experiment":
        target = next((out / "experiments").glob("*.json"))
    elif name == "suite.json":
        target = out / "suite.json"
    else:
        target = out / "runs" / ids(out)[1] / name
    _fifo(target)
    args = [command, out] + (["--out", tmp_path / "report"] if command == "report" else [])
    code, _, err = cli(capsys, *args)
    assert "Traceback" not in err, err
    if name in ("result.json", "experiment", "config.json"):  # that one skipped, the rest shown
        assert code == 0 and target.name in err and "FIFO" in err, err
    elif name == "suite.json":
        assert code == 1 and "FIFO" in err, err
        one_line(err)


def test_load_of_a_tables_copy_with_a_fifo_is_one_error(copy, tmp_path):
    out, _ = copy
    tables = tmp_path / "tables"
    tables.mkdir()
    shutil.copy(out / "suite.json", tables)
    os.mkfifo(tables / "summary.csv")
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        error=pytest.raises(StoreError, load, tables).value), daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "load() blocked on a FIFO"
    assert "summary.csv" in str(result["error"]) and "FIFO" in str(result["error"])
