"""Run a sweep on an existing Dask cluster (``lossbench[dask]``).

Each pending run becomes one task calling :func:`lossbench.runner.execute_run`
on a worker; the task writes into the shared results directory, so the
directory must be visible to every worker under the same path (a shared
filesystem on a cluster; the local disk for workers on this machine).
Start workers with ``--nthreads 1`` (a run sets its own intra-op thread
count; more Dask threads per worker would share cores between runs).
"""

from __future__ import annotations

from pathlib import Path

from lossbench.config import RunConfig


def run_on_dask(pending: list[RunConfig], out: Path, scheduler: str | None,
                plugins: tuple[str, ...], show_progress: bool) -> dict[str, str]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise RuntimeError("the Dask executor needs `pip install lossbench[dask]`") from None
    from tqdm import tqdm

    from lossbench.runner import execute_run

    statuses: dict[str, str] = {}
    with Client(scheduler, timeout="30s") as client:
        # pure=False: a rerun of the same config after a crash must execute, not be deduplicated
        futures = [client.submit(execute_run, r.to_dict(), str(Path(out).resolve()), plugins,
                                 pure=False, key=f"lossbench-{r.run_id()}") for r in pending]
        with tqdm(total=len(futures), unit="run", desc="suite (dask)",
                  disable=not show_progress) as bar:
            for future in as_completed(futures):
                run_id, status = future.result()
                statuses[run_id] = status
                bar.update(1)
    return statuses
