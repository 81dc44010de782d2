"""Faults anywhere are one line: a full disk, a read-only directory or a file in the way
(ENOSPC / EROFS / ENOTDIR, simulated by making os.replace, os.open or os.mkdir fail the way
the kernel does, no real disk filled) is exit 1 with a line naming the path, never a temp
file, and the tables stay a matching pair; Ctrl-C at any moment, start-up included, is exit
130 with one line; a run folder deleted while it trains is one clear line."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import wait_for
from test_stopping import session_processes
from test_untrusted_dirs import (  # noqa: F401  (the fixtures copy and finished)
    cli,
    copy_fixture,
    finished_fixture,
    write_suite,
)

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a write's error: no file name


def fail_from(monkeypatch, name: str, k: int, error: OSError, when=lambda *a, **kw: True):
    """``os.<name>`` raises ``error`` from its k-th call that ``when`` accepts on (a full
    disk stays full)."""
    real, calls = getattr(os, name), []

    def fake(*args, **kwargs):
        if when(*args, **kwargs):
            calls.append(args)
            if len(calls) >= k:
                raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)
    return calls


def tables(out) -> tuple[bytes, bytes]:
    return (out / "summary.csv").read_bytes(), (out / "curves.csv").read_bytes()


def one_line(code, err, expected_code=1):
    """Exit ``expected_code`` with one error line (progress lines of a sweep aside)."""
    errors = [line for line in err.splitlines() if not line.startswith(("run ", "runs: "))]
    assert code == expected_code and len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("lossbench: error: ") and ".tmp" not in err, err


def _summary(src, dst, *args, **kwargs):
    return str(dst).endswith("summary.csv")


@pytest.mark.parametrize("name,k,when", [
    ("replace", 1, None), ("replace", 2, None), ("replace", 4, None), ("replace", 9, None),
    ("replace", 1, _summary), ("fsync", 1, None), ("fsync", 7, None)],
    ids=["1st rename", "2nd", "4th", "9th", "the tables", "1st fsync", "7th fsync"])
def test_disk_full_at_any_write_of_a_sweep_is_one_line_naming_the_file(
        copy, tmp_path, monkeypatch, capsys, name, k, when):
    out, _ = copy
    before = tables(out)
    more = write_suite(tmp_path, seeds=(0, 1, 2), name="trust")  # two runs to train
    fail_from(monkeypatch, name, k, ENOSPC, **({"when": when} if when else {}))
    code, _, err = cli(capsys, "run", more, "--out", out, "--workers", "1", "--no-report")
    monkeypatch.undo()
    one_line(code, err)
    assert "No space left on device" in err and f"{out}{os.sep}" in err, err
    assert tables(out) == before  # never half replaced
    assert not list(out.rglob("*.tmp"))


def test_disk_full_while_writing_a_report_is_one_line(copy, tmp_path, monkeypatch, capsys):
    out, _ = copy
    fail_from(monkeypatch, "replace", 3, ENOSPC)
    code, _, err = cli(capsys, "report", out, "--out", tmp_path / "report")
    monkeypatch.undo()
    one_line(code, err)
    assert f"{tmp_path / 'report'}{os.sep}" in err and "No space left" in err


def test_report_in_a_read_only_directory_is_one_line(copy, monkeypatch, capsys):
    out, _ = copy
    shutil.rmtree(out / "reports", ignore_errors=True)
    erofs = OSError(errno.EROFS, os.strerror(errno.EROFS))
    fail_from(monkeypatch, "mkdir", 1, erofs)
    fail_from(monkeypatch, "open", 1, erofs, when=lambda path, flags, *a, **kw:
              bool(flags & os.O_CREAT) and str(path).startswith(str(out)))
    code, _, err = cli(capsys, "report", out)
    monkeypatch.undo()
    one_line(code, err)
    assert "Read-only file system" in err


@pytest.mark.parametrize("where", ["reports", "reports/<id>"])
def test_a_file_where_the_report_folder_should_be_is_one_line(copy, capsys, where):
    out, _ = copy
    shutil.rmtree(out / "reports", ignore_errors=True)
    experiment = next((out / "experiments").glob("*.json")).stem
    path = out / where.replace("<id>", experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("in the way")
    code, _, err = cli(capsys, "report", out)
    one_line(code, err)
    assert str(path) in err


def test_summary_csv_as_a_folder_is_one_line_naming_it(copy, capsys):
    out, suite = copy
    curves = (out / "curves.csv").read_bytes()
    (out / "summary.csv").unlink()
    (out / "summary.csv").mkdir()
    code, _, err = cli(capsys, "run", suite, "--out", out, "--workers", "1", "--no-report")
    one_line(code, err)
    assert f"{out / 'summary.csv'}: a folder" in err
    assert (out / "curves.csv").read_bytes() == curves  # replaced together: neither


# ---- signals and deleted folders: real `lossbench run` processes --------------------------

def start(suite, out, workers=2) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lossbench", "run", str(suite), "--out", str(out),
           "--workers", str(workers), "--no-report"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def slow_suite(tmp_path, seeds=(0, 1)):
    path = tmp_path / "slow.toml"
    path.write_text(write_suite(tmp_path).read_text()
                    .replace("steps = 10", "steps = 400")
                    .replace("eval_every = 5", "eval_every = 100")
                    .replace("seeds = [0, 1]", f"seeds = {list(seeds)}"))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3, 0.6])
def test_ctrl_c_while_workers_start_is_one_line(tmp_path, delay):
    """SIGINT to the process group (what a terminal's Ctrl-C does), twice, ``delay`` s after
    the experiment was recorded: the moment the workers are being spawned and import."""
    out = tmp_path / "out"
    proc = start(slow_suite(tmp_path), out)
    wait_for(lambda: list(out.glob("experiments/*.json")), 120, "the experiment record", proc)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].startswith("lossbench: interrupted"), err
    wait_for(lambda: not session_processes(proc.pid), 10, "no process left")


@pytest.mark.slow
def test_ctrl_c_while_the_command_line_loads_is_one_line(tmp_path):
    proc = start(slow_suite(tmp_path), tmp_path / "out")
    time.sleep(0.3)  # importing torch and the commands
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.count("\n") == 1, err


@pytest.mark.slow
def test_a_run_folder_deleted_while_it_trains_is_one_clear_line(tmp_path):
    out = tmp_path / "out"
    proc = start(slow_suite(tmp_path, seeds=(0,)), out)  # two runs, two workers: a pool
    folders = wait_for(lambda: [p.parent for p in out.glob("runs/*/checkpoint.pt")], 120,
                       "a checkpoint", proc)
    os.rename(folders[0], tmp_path / "gone")  # at once, while the run writes into it
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "unexpected error" not in err, err
    assert f"{folders[0].name}: its folder" in err and "removed while it trained" in err, err
    assert f"runs/{folders[0].name}/traceback.txt" not in err  # no pointer to nothing

