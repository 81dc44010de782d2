"""The Dask executor against a real `dask scheduler` and `dask worker` on 127.0.0.1."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from helpers import assert_same_results, tiny_suite, tiny_toml, wait_for

from lossbench.store.runs import attempts
from lossbench.suite.load import load_suite
from lossbench.sweep.sweep import run_suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One scheduler and two one-thread workers for the module's tests (each test leaves them
    idle); tests without distributed installed are skipped."""
    pytest.importorskip("distributed")
    tmp_path = tmp_path_factory.mktemp("cluster")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler = subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                               "--nthreads", "1", "--nworkers", "2", "--no-dashboard",
                               "--local-directory", str(tmp_path / "dask-worker")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from distributed import Client
        deadline = time.time() + 60
        while True:
            try:
                with Client(address, timeout="5s") as client:
                    client.wait_for_workers(2, timeout=60)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
        for proc in (worker, scheduler):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.slow
def test_dask_sweep_equals_local_sweep(tmp_path, cluster):
    suite = load_suite(tiny_suite(tmp_path))
    run_suite(suite, tmp_path / "local", workers=1)
    outcome = run_suite(suite, tmp_path / "dask", executor="dask", scheduler=cluster)
    assert outcome.exit_code == 0 and set(outcome.statuses.values()) == {"done"}
    assert_same_results(tmp_path / "local", tmp_path / "dask")


def test_missing_distributed_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from lossbench.cli import main

    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tiny_suite(tmp_path)), "--out", str(tmp_path / "out"), "--executor",
              "dask", "--scheduler", "tcp://127.0.0.1:1", "--no-report"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == ('lossbench: error: --executor dask: the Dask executor '
                                       'needs distributed: pip install "lossbench[dask]"\n')
    assert not (tmp_path / "out").exists()  # refused before anything was written


def _long_sweep(tmp_path, scheduler):
    """A client process sweeping two runs far too long to finish during the test, once both
    are training (each has a periodic checkpoint)."""
    path = tmp_path / "long.toml"
    path.write_text(tiny_toml("long", '["cross_entropy"]', train={"steps": 5000,
                                                                   "checkpoint_every": 25},
                              eval={"eval_every": 1000}))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", "run", str(path), "--out",
                             str(out), "--executor", "dask", "--scheduler", scheduler,
                             "--no-report"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    wait_for(lambda: len(list(out.glob("runs/*/checkpoint.pt"))) == 2, 120, "2 runs training",
             proc)
    return proc, out


def _assert_tasks_stop(out, scheduler, within: float) -> float:
    """Both runs end as interrupted with a checkpoint at that step, and the workers run nothing;
    returns how long that took."""
    from distributed import Client

    start = time.monotonic()

    def stopped():
        return all(attempts(f) and attempts(f)[-1].get("status") == "interrupted"
                   for f in (out / "runs").iterdir())

    wait_for(stopped, within, "the runs of the dead client to stop")
    with Client(scheduler, timeout="10s") as client:
        wait_for(lambda: not any(client.run(lambda dask_worker: dask_worker.active_threads)
                                 .values()), 5, "the workers to be idle")
    for folder in (out / "runs").iterdir():
        state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
        assert state["next_step"] == attempts(folder)[-1]["step"]
    return time.monotonic() - start


@pytest.mark.slow
def test_tasks_of_a_killed_client_checkpoint_and_stop(tmp_path, cluster):
    proc, out = _long_sweep(tmp_path, cluster)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    took = _assert_tasks_stop(out, cluster, within=15)
    print(f"tasks stopped {took:.2f} s after their client was killed")


@pytest.mark.slow
def test_ctrl_c_cancels_the_tasks_and_exits_130(tmp_path, cluster):
    proc, out = _long_sweep(tmp_path, cluster)
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - start < 10, stderr
    assert "Traceback" not in stderr and stderr.count("interrupted") == 1, stderr
    _assert_tasks_stop(out, cluster, within=15)


def test_unreachable_scheduler_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    distributed = pytest.importorskip("distributed")
    from lossbench.cli import main

    def refuse(*args, **kwargs):
        raise OSError("Timed out trying to connect to tcp://10.0.0.1:8786 after 30 s")

    monkeypatch.setattr(distributed, "Client", refuse)
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tiny_suite(tmp_path)), "--out", str(tmp_path / "out"), "--executor",
              "dask", "--scheduler", "tcp://10.0.0.1:8786", "--no-report"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("lossbench: error: cannot connect to the Dask scheduler at "
                          "tcp://10.0.0.1:8786: OSError: Timed out")
