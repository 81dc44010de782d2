"""The Dask executor against a real `dask scheduler` and `dask worker` on 127.0.0.1."""

import socket
import subprocess
import sys
import time

import pytest

from test_runner import assert_same_results, tiny_suite

from lossbench.runner import run_suite
from lossbench.suites import load_suite

pytest.importorskip("distributed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
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
