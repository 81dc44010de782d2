"""MLflow: one MLflow run per lossbench run, in the experiment named after the suite.

Where: ``MLFLOW_TRACKING_URI`` when set (a server, a database, ``file:`` store), else
``sqlite:///mlflow.db`` in the working directory. That is MLflow 3's own default, so
``mlflow ui`` started in the same directory shows the runs; the ``./mlruns`` file store of
older MLflow is deprecated there (it raises unless ``MLFLOW_ALLOW_FILE_STORE=true``), and
the SQLite store needs the full ``mlflow`` package, which is what the extra installs. Either
way nothing leaves the machine unless you point MLFLOW_TRACKING_URI elsewhere. The first run
creates the database (MLflow's migrations, ~10 s once); concurrent workers wait for it.

Logged: params = the flattened config (``train.lr``); tags = suite, experiment, run id (and
``status`` = done | diverged at the end); metrics under curves.csv's names and steps,
buffered and sent in batches (every evaluation, every 10 s, and at the end). After the
sweep, `lossbench run` attaches the report folder as artifacts under ``report/``
(:func:`attach_report`; with the default store they lie in ``./mlruns``, where ``mlflow ui``
serves them).

Resume: the MLflow run id is kept in ``tracker-mlflow.json`` in the run folder; a resumed
run reopens that MLflow run (status RUNNING again) and logs from its checkpoint on, so the
steps a killed attempt logged past its checkpoint appear twice, with the same values
(training is deterministic). A run that raised or was interrupted is marked KILLED.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from urllib.parse import unquote

from lossbench.sweep.trackers import (Sink, TrackerBase, flatten, read_state, run_name,
    unavailable, write_state)

FLUSH_EVERY_S = 10.0
BATCH = 1000  # MLflow's limit of metrics per log_batch call (params: 100)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def require() -> None:
    """Raise TrackerUnavailable (one line, with the pip command) if MLflow is missing, or,
    for the default SQLite store, only mlflow-skinny is installed."""
    try:
        import mlflow  # noqa: F401
        if tracking_uri().startswith("sqlite:"):
            import alembic  # noqa: F401
            import sqlalchemy  # noqa: F401
    except ImportError as exc:
        raise unavailable("mlflow", exc) from None


def _client(uri: str):
    """An MlflowClient; a SQLite store is first opened (created, the first time) under a
    lock on its folder: two workers creating one database at once break MLflow's
    migrations."""
    from mlflow.tracking import MlflowClient

    folder = _sqlite_folder(uri)
    if folder is None:
        return MlflowClient(tracking_uri=uri)
    fd = os.open(folder, os.O_RDONLY)  # flock on the folder: no lock file left behind
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # the tables exist now
    finally:
        os.close(fd)  # releases the lock
    return client


def _sqlite_folder(uri: str) -> Path | None:
    """The existing folder of a ``sqlite:///PATH`` database (None for other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    folder = Path(unquote(uri[len("sqlite:///"):].split("?")[0])).absolute().parent
    return folder if folder.is_dir() else None


def _experiment_id(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # another worker created it meanwhile
        return client.get_experiment_by_name(name).experiment_id


class _Run(Sink):
    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id
        self.pending: list = []
        self.flushed = time.monotonic()

    def log(self, step, values):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, v, now, step) for k, v in values.items()]
        if len(self.pending) >= BATCH or time.monotonic() - self.flushed > FLUSH_EVERY_S:
            self.flush()

    def flush(self):
        while self.pending:
            self.client.log_batch(self.run_id, metrics=self.pending[:BATCH])
            del self.pending[:BATCH]
        self.flushed = time.monotonic()

    def close(self, status):
        try:
            self.flush()
            if status is not None:
                self.client.set_tag(self.run_id, "status", status)
        finally:
            self.client.set_terminated(self.run_id, "FINISHED" if status else "KILLED")


class Tracker(TrackerBase):
    """Logs one lossbench run to one MLflow run."""

    name = "mlflow"

    def open(self, start_step: int) -> Sink:
        from mlflow.entities import Param

        uri = tracking_uri()
        client = _client(uri)
        state = read_state(self.folder, self.name)
        if state and state.get("tracking_uri") == uri and _exists(client, state.get("run_id")):
            client.update_run(state["run_id"], status="RUNNING")
            return _Run(client, state["run_id"])
        experiment = _experiment_id(client, self.tags.get("suite") or "lossbench")
        run = client.create_run(experiment, run_name=run_name(self.config), tags=self.tags)
        write_state(self.folder, self.name, {"tracking_uri": uri, "run_id": run.info.run_id})
        params = [Param(k, str(v)[:6000]) for k, v in flatten(self.config).items()]
        for i in range(0, len(params), 100):
            client.log_batch(run.info.run_id, params=params[i:i + 100])
        return _Run(client, run.info.run_id)

    def on_eval(self, step, metrics):
        super().on_eval(step, metrics)
        self.sink.flush()  # evaluations are the checkpoints a watcher looks for


def attach_report(state: dict, report_dir: Path) -> None:
    """Log the report folder (index.html, report.md, figures, CSVs) as the finished MLflow
    run's artifacts under ``report/``."""
    client = _client(state["tracking_uri"])
    client.log_artifacts(state["run_id"], str(report_dir), artifact_path="report")


def _exists(client, run_id) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return isinstance(run_id, str) and client.get_run(run_id) is not None
    except MlflowException:
        return False

