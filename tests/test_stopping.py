"""Stopping a sweep: Ctrl-C and SIGTERM checkpoint the running runs, start no new ones and exit
130 with one line; killing the main process leaves no worker behind; worker crashes are
failed runs, not a hung pool. Real `python -m lossbench run` processes, signalled like a
terminal does (the whole process group) or like `kill` does (one process)."""

import os
import signal
import subprocess
import sys
import time

import helpers
import pytest
import torch
from helpers import assert_same_results, tiny_toml, wait_for

from lossbench.store.runs import attempts
from lossbench.store.tables import load
from lossbench.suite.load import load_suite
from lossbench.sweep.sweep import run_suite

INTERRUPTED = "lossbench: interrupted; rerun the same command to resume (finished runs are kept)"


def write_suite(tmp_path, steps: int, seeds=(0, 1, 2)):
    """Three runs: with two workers, the third is still queued when the first two train.
    Periodic checkpoints every 25 steps tell the test that training is under way."""
    return helpers.write_suite(tmp_path, "stop", '["cross_entropy"]', seeds=seeds,
                               train={"steps": steps, "checkpoint_every": 25},
                               eval={"eval_every": 200})


def start_sweep(path, out, workers: int = 2) -> subprocess.Popen:
    """A sweep in its own session (so its process group is its pid, as in a terminal)."""
    cmd = [sys.executable, "-m", "lossbench", "run", str(path), "--out", str(out),
           "--workers", str(workers), "--no-report"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_until_training(proc, out, runs: int) -> None:
    """Until ``runs`` runs wrote a checkpoint: their workers are past start-up (imports,
    data) and poll the stop flag at every step."""
    wait_for(lambda: len(list(out.glob("runs/*/checkpoint.pt"))) >= runs, 120,
             f"{runs} runs training", proc)


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``: field 6 of /proc/PID/stat."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # exited meanwhile
            continue
        state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2:].split()[:4]
        if int(session) == sid and state not in "ZX":
            pids.append(int(entry))
    return pids


def assert_session_gone(sid: int, within: float = 5.0) -> float:
    """Every process of the session exits within ``within`` s; returns how long it took
    (the resource tracker exits once the last holder of its pipe is gone)."""
    start = time.monotonic()
    wait_for(lambda: not session_processes(sid), within, f"session {sid} to end "
             f"(left: {session_processes(sid)})")
    return time.monotonic() - start


def interrupt(proc, send) -> tuple[str, float]:
    """Send the signal; return stderr and how long the sweep took to exit (killed if > 30 s)."""
    start = time.monotonic()
    send()
    try:
        _, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("the sweep did not exit within 30 s of the signal") from None
    return stderr, time.monotonic() - start


def assert_stopped_cleanly(proc, stderr: str, elapsed: float) -> None:
    print(f"exited {proc.returncode} {elapsed:.2f} s after the signal")
    assert proc.returncode == 130, stderr
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    assert "Traceback" not in stderr, stderr
    assert stderr.count("interrupted") == 1 and INTERRUPTED in stderr, stderr
    assert_session_gone(proc.pid)


def assert_checkpointed(out, running: int) -> None:
    """The runs that were training saved a checkpoint at the step they stopped (not only the
    periodic one) and are not finished; the queued runs never started."""
    started = [f for f in (out / "runs").iterdir() if attempts(f)]
    assert len(started) == running, [f.name for f in started]
    for folder in started:
        assert not (folder / "DONE").exists()
        last = attempts(folder)[-1]
        assert last["event"] == "end" and last["status"] == "interrupted", last
        state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
        assert state["next_step"] == last["step"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted sweep, in this process (one worker: same numbers)."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "out"
    run_suite(load_suite(write_suite(tmp, steps=300, seeds=(0, 1))), out, workers=1,
              show_progress=False)
    return out


@pytest.mark.slow
def test_ctrl_c_checkpoints_exits_130_and_resumes(tmp_path, reference):
    path, out = write_suite(tmp_path, steps=300, seeds=(0, 1)), tmp_path / "out"
    proc = start_sweep(path, out)
    wait_until_training(proc, out, 2)
    stderr, elapsed = interrupt(proc, lambda: os.killpg(proc.pid, signal.SIGINT))
    assert_stopped_cleanly(proc, stderr, elapsed)
    assert_checkpointed(out, running=2)
    rerun = start_sweep(path, out)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert_same_results(reference, out)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["group", "main"])
def test_sigterm_checkpoints_and_exits_130(tmp_path, target):
    """SIGTERM to the group (a CI runner, systemd) or to the main process only (`kill PID`)."""
    path, out = write_suite(tmp_path, steps=3000), tmp_path / "out"
    proc = start_sweep(path, out)
    wait_until_training(proc, out, 2)
    send = os.killpg if target == "group" else os.kill
    stderr, elapsed = interrupt(proc, lambda: send(proc.pid, signal.SIGTERM))
    assert_stopped_cleanly(proc, stderr, elapsed)
    assert_checkpointed(out, running=2)


@pytest.mark.slow
def test_ctrl_c_in_process_checkpoints_and_exits_130(tmp_path):
    path, out = write_suite(tmp_path, steps=3000), tmp_path / "out"
    proc = start_sweep(path, out, workers=1)
    wait_until_training(proc, out, 1)
    stderr, elapsed = interrupt(proc, lambda: os.killpg(proc.pid, signal.SIGINT))
    assert_stopped_cleanly(proc, stderr, elapsed)
    assert_checkpointed(out, running=1)


@pytest.mark.slow
def test_killed_main_process_leaves_no_workers(tmp_path):
    path, out = write_suite(tmp_path, steps=3000), tmp_path / "out"
    proc = start_sweep(path, out)
    wait_until_training(proc, out, 2)
    assert len(session_processes(proc.pid)) >= 3  # main, two workers (and a resource tracker)
    os.kill(proc.pid, signal.SIGKILL)  # only the main process, as the OOM killer would
    proc.wait()  # not communicate(): orphaned workers would hold its pipes open
    took = assert_session_gone(proc.pid, within=30)
    proc.communicate()  # nothing holds its pipes any more
    print(f"session gone {took:.2f} s after the main process was killed")


EXITS_PLUGIN = '''
import os
from lossbench.losses import register_loss

@register_loss("fixture_exits", description="ends its process", reference="test fixture")
def fixture_exits(logits, targets, *, ignore_index=-100):
    os._exit(3)
'''


@pytest.mark.slow
def test_dead_worker_fails_its_run_and_the_sweep_goes_on(tmp_path):
    """A worker that dies (a segfault, the OOM killer) fails its run; a new worker takes over."""
    from lossbench.losses import load_plugin

    plugin = tmp_path / "exits_plugin.py"
    plugin.write_text(EXITS_PLUGIN)
    load_plugin(str(plugin))  # the suite names its loss
    path = tmp_path / "s.toml"
    path.write_text(tiny_toml("dies", '["fixture_exits", "cross_entropy", "mse"]', seeds=(0,)))
    outcome = run_suite(load_suite(path), tmp_path / "out", workers=2, plugins=(str(plugin),),
                        show_progress=False)
    statuses = {run_id.split("-")[0]: status for run_id, status in outcome.statuses.items()}
    assert statuses == {"fixture_exits": "failed", "cross_entropy": "done", "mse": "done"}
    summary, _ = load(tmp_path / "out")  # the death is a failure like any other: recorded
    died = summary[summary.loss == "fixture_exits"].iloc[0]
    assert died.status == "failed" and died.error == "worker process died (exit code 3)"
    assert outcome.failures[died.run_id] == (1, "worker process died (exit code 3)")


@pytest.mark.slow
def test_error_escaping_execute_run_fails_the_run_without_hanging(tmp_path):
    """An exception execute_run does not turn into a status (here: a plugin that fails to
    import in the workers) is a failed run, and the pool still ends."""
    plugin = tmp_path / "broken_in_workers.py"
    plugin.write_text("raise RuntimeError('broken plugin')\n")
    path = tmp_path / "s.toml"
    path.write_text(tiny_toml("broken", '["cross_entropy"]'))
    outcome = run_suite(load_suite(path), tmp_path / "out", workers=2, plugins=(str(plugin),),
                        show_progress=False)
    assert list(outcome.statuses.values()) == ["failed", "failed"]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_second_ctrl_c_stops_at_once_without_traceback(tmp_path, workers):
    """An impatient second Ctrl-C skips the wait for checkpoints; still one line, exit 130."""
    path, out = write_suite(tmp_path, steps=3000), tmp_path / "out"
    proc = start_sweep(path, out, workers=workers)
    wait_until_training(proc, out, workers)

    def twice():
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)

    stderr, elapsed = interrupt(proc, twice)
    assert_stopped_cleanly(proc, stderr, elapsed)
