"""`--log tensorboard|mlflow|wandb`: what each tracker wrote, read back with its own reader
(TensorBoard's EventAccumulator, MLflow's client over the local store, W&B's offline run
file), equals curves.csv; resumed runs continue their tracker run; a missing extra or an
unknown tracker is a one-line error. Nothing goes over the network: MLflow writes to SQLite
in a temporary folder, W&B runs offline."""

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_same_results, tiny_toml

from lossbench.store.tables import load
from lossbench.suite.load import load_suite
from lossbench.sweep.sweep import run_suite
from lossbench.sweep.trackers import (
    KNOWN,
    TrackerUnavailable,
    check_trackers,
    eval_values,
    flatten,
    make_trackers,
    run_name,
)
from lossbench.train.loop import train_run
from lossbench.train.observers import Observer

pytestmark = pytest.mark.filterwarnings(  # MLflow 3.17 with SQLAlchemy 2.1, not ours
    "ignore:The ``noload`` loader strategy is deprecated")

PACKAGE = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
LOSSES = '[{ name = "cross_entropy", label = "ce base" }]'  # a label with a space in it


def available(name):
    try:
        check_trackers([name])
    except TrackerUnavailable as exc:
        pytest.skip(str(exc))


def suite_file(tmp_path, name="tiny"):
    path = tmp_path / f"{name}.toml"
    path.write_text('baseline = "ce base"\n'
                    + tiny_toml(name, LOSSES, seeds=(0,), train={"checkpoint_every": 5}))
    return path


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The same sweep without trackers: a tracker must change no result."""
    tmp = tmp_path_factory.mktemp("baseline")
    run_suite(load_suite(suite_file(tmp)), tmp / "out", workers=1)
    return tmp / "out"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One working folder for the MLflow tests: its ./mlflow.db is created once (~10 s)."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def isolated(monkeypatch, workdir):
    """Default locations, no user configuration: cwd = a temporary folder, no W&B login."""
    for var in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_PROJECT", "WANDB_DIR",
                "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ERROR_REPORTING"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(workdir / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(workdir / "wandb-cache"))
    monkeypatch.chdir(workdir)
    yield
    assert not wandb_processes(), "the W&B service outlived the run"


# --- reading back, one reader per tracker: {metric: {step: value}} -------------------------

def expected_curves(out):
    _, curves = load(out)
    (run_id,) = curves.run_id.unique()
    return run_id, {m: dict(zip(g.step, g.value)) for m, g in curves.groupby("metric")}


def read_tensorboard(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    curves = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        assert len({e.step for e in events}) == len(events), f"{tag}: a step logged twice"
        curves[tag] = {e.step: e.value for e in events}
    start = HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    hparams = {k: v.number_value if v.HasField("number_value") else v.string_value
               for k, v in start.hparams.items()}
    (text,) = acc.Tensors("tags/text_summary")
    return curves, hparams, text.tensor_proto.string_val[0].decode()


def read_mlflow(run_id):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    run = client.get_run(run_id)
    curves = {}
    for key in run.data.metrics:
        for m in client.get_metric_history(run_id, key):
            curves.setdefault(key, {}).setdefault(m.step, []).append(m.value)
    return run, client.get_experiment(run.info.experiment_id).name, curves


def wandb_records(path):
    """The protobuf records of a W&B transaction log (``run-<id>.wandb``): a 7-byte header,
    then LevelDB-log chunks (crc, length, type: full/first/middle/last) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, parts = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header: padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield pb.Record.FromString(parts)
            parts = b""


def read_wandb(run_dir):
    (path,) = run_dir.glob("run-*.wandb")
    run, config, curves, summary, exit_code = None, {}, {}, {}, None
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run = rec.run
            config.update({c.key: json.loads(c.value_json) for c in rec.run.config.update})
        elif kind == "config":
            config.update({c.key: json.loads(c.value_json) for c in rec.config.update})
        elif kind == "history":
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    curves.setdefault(key, {})[rec.history.step.num] = json.loads(item.value_json)
        elif kind == "summary":
            summary.update({s.key: json.loads(s.value_json) for s in rec.summary.update})
        elif kind == "exit":
            exit_code = rec.exit.exit_code
    return run, config, curves, summary, exit_code


def wandb_processes():
    """W&B service processes started by this process (Linux /proc)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == os.getpid() and b"wandb" in (proc / "cmdline").read_bytes():
                found.append(proc.name)
        except (OSError, IndexError, ValueError):
            continue
    return found


def assert_equal_curves(logged, expected, *, rel=0.0):
    assert set(logged) == set(expected), "logged metrics differ from curves.csv's"
    for metric, points in expected.items():
        assert set(logged[metric]) == set(points), metric
        for step, value in points.items():
            assert logged[metric][step] == pytest.approx(value, rel=rel, nan_ok=True), \
                (metric, step)


# --- a sweep with --log NAME: what was logged equals curves.csv ----------------------------

@pytest.mark.parametrize("name", KNOWN)
@pytest.mark.slow
def test_tracker_logs_equal_curves_csv(name, tmp_path, isolated, baseline):
    available(name)
    out = tmp_path / "out"
    outcome = run_suite(load_suite(suite_file(tmp_path)), out, workers=1, log=(name,))
    assert set(outcome.statuses.values()) == {"done"}
    assert_same_results(baseline, out)  # logging changed no result
    run_id, expected = expected_curves(out)
    assert {"train_loss", "train_ce", "grad_norm", "lr", "val_ce"} <= set(expected)
    config = json.loads((out / "runs" / run_id / "config.json").read_text())
    tags = {"suite": "tiny", "run_id": run_id, "experiment": outcome.experiment}
    CHECK[name](out, run_id, config, expected, tags)


@pytest.mark.slow
def test_run_attaches_the_report_to_mlflow_runs(tmp_path, isolated):
    """`lossbench run --log mlflow`: the report folder becomes each final run's artifacts."""
    from click.testing import CliRunner
    from mlflow.tracking import MlflowClient

    from lossbench.cli import cli

    available("mlflow")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(suite_file(tmp_path)), "--out", str(out),
                                      "--workers", "1", "--log", "mlflow"])
    assert result.exit_code == 0, result.output
    (folder,) = (out / "runs").iterdir()
    state = json.loads((folder / "tracker-mlflow.json").read_text())
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    attached = {a.path for a in client.list_artifacts(state["run_id"], "report")}
    assert {"report/index.html", "report/report.md", "report/headline.csv"} <= attached
    (report,) = (out / "reports").iterdir()
    local = Path(client.download_artifacts(state["run_id"], "report/index.html", str(tmp_path)))
    assert local.read_bytes() == (report / "index.html").read_bytes()


@pytest.mark.slow
def test_pool_workers_leave_no_wandb_temporary_folders(tmp_path, isolated, monkeypatch):
    """Workers end with os._exit; with a tracker they first run the exit handlers, in which
    W&B removes the temporary folders it made."""
    available("wandb")
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the spawned workers' tempfile.gettempdir()
    outcome = run_suite(load_suite(suite_file(tmp_path)), tmp_path / "out", workers=2,
                        log=("wandb",))
    assert set(outcome.statuses.values()) == {"done"}
    assert [p.name for p in temp.iterdir() if "wandb" in p.name] == []


def check_tensorboard(out, run_id, config, expected, tags):
    (log_dir,) = (out / "tensorboard").iterdir()
    assert log_dir.name == f"ce_base-seed0-{run_id}"
    curves, hparams, text = read_tensorboard(log_dir)
    assert_equal_curves(curves, expected, rel=1e-6)  # float32, as TensorBoard stores scalars
    assert hparams["train.lr"] == config["train"]["lr"] and hparams["loss"] == "cross_entropy"
    assert set(text.split("  \n")) == {f"{k}: {v}" for k, v in tags.items()}


def check_mlflow(out, run_id, config, expected, tags):
    assert not Path("mlruns").exists()  # the SQLite store in the working folder, only
    state = json.loads((out / "runs" / run_id / "tracker-mlflow.json").read_text())
    run, experiment, curves = read_mlflow(state["run_id"])
    assert experiment == "tiny" and run.info.run_name == "ce base-seed0"
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "done"
    assert {k: run.data.tags.get(k) for k in tags} == tags
    assert run.data.params["train.lr"] == str(config["train"]["lr"])
    assert set(run.data.params) == set(flatten(config))
    assert all(len(values) == 1 for points in curves.values() for values in points.values())
    assert_equal_curves({k: {s: v[0] for s, v in p.items()} for k, p in curves.items()}, expected)


def check_wandb(out, run_id, config, expected, tags):
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    run, logged_config, curves, summary, exit_code = read_wandb(run_dir)
    state = json.loads((out / "runs" / run_id / "tracker-wandb.json").read_text())
    assert run.run_id == state["id"] and run.display_name == "ce base-seed0"
    assert run.project == "tiny" and run.run_group == tags.get("experiment", "")
    assert set(run.tags) == {f"{k}:{v}" for k, v in tags.items()}
    assert logged_config["train.lr"] == config["train"]["lr"]
    assert summary["status"] == "done" and exit_code == 0
    assert_equal_curves(curves, expected)


CHECK = {"tensorboard": check_tensorboard, "mlflow": check_mlflow, "wandb": check_wandb}


# --- a run that fails mid-way, then resumes from its checkpoint ----------------------------

class Crash(Observer):
    """Raises after step ``at`` is logged: the checkpoint (every 5 steps) is older, so the
    tracker saw steps the resumed run does again."""

    def __init__(self, at):
        self.at = at

    def on_step(self, record):
        if record["step"] == self.at:
            raise RuntimeError("crash")


@pytest.mark.parametrize("name", KNOWN)
@pytest.mark.slow
def test_resumed_run_continues_its_tracker_run(name, tmp_path, isolated, baseline):
    available(name)
    (config,) = load_suite(suite_file(tmp_path, "resumed")).runs
    run_id = config.run_id()
    folder = tmp_path / "out" / "runs" / run_id
    folder.mkdir(parents=True)
    kw = dict(config=config.to_dict(), run_id=run_id, folder=folder,
              tags={"suite": "resumed", "run_id": run_id, "experiment": "e1"})
    with pytest.raises(RuntimeError, match="crash"):
        train_run(config, checkpoint_dir=folder, observers=[*make_trackers([name], **kw),
                                                            Crash(13)])
    # the tracker run was closed (unfinished) with no on_end: by on_close or on collection
    CRASHED[name](tmp_path / "out", folder)
    result = train_run(config, checkpoint_dir=folder, observers=make_trackers([name], **kw))
    assert result.status == "done"
    _, expected = expected_curves(baseline)
    expected.pop("wall_s")  # timings differ between runs
    RESUME[name](tmp_path / "out", run_id, folder, expected)


def crashed_tensorboard(out, folder):
    (log_dir,) = (out / "tensorboard").iterdir()
    assert max(read_tensorboard(log_dir)[0]["train_loss"]) == 13  # flushed: the writer closed


def crashed_mlflow(out, folder):
    run, _, curves = read_mlflow(json.loads((folder / "tracker-mlflow.json").read_text())["run_id"])
    assert run.info.status == "KILLED" and max(curves["train_loss"]) == 13


def crashed_wandb(out, folder):
    assert not wandb_processes()
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    _, _, curves, _, exit_code = read_wandb(run_dir)
    assert exit_code == 1 and max(curves["train_loss"]) == 13


CRASHED = {"tensorboard": crashed_tensorboard, "mlflow": crashed_mlflow, "wandb": crashed_wandb}


def check_tensorboard_resume(out, run_id, folder, expected):
    (log_dir,) = (out / "tensorboard").iterdir()
    curves, _, _ = read_tensorboard(log_dir)  # steps 11-13 of the crashed attempt purged
    assert set(curves.pop("wall_s")) == set(range(1, 21))
    assert_equal_curves(curves, expected, rel=1e-6)


def check_mlflow_resume(out, run_id, folder, expected):
    state = json.loads((folder / "tracker-mlflow.json").read_text())
    run, experiment, curves = read_mlflow(state["run_id"])  # one MLflow run for both attempts
    assert experiment == "resumed" and run.info.status == "FINISHED"
    assert run.data.tags["experiment"] == "e1"
    del curves["wall_s"]
    # steps 11-13 were logged by both attempts, with the same values
    assert {k: len(p[12]) for k, p in curves.items() if 12 in p}["train_loss"] == 2
    assert all(len(set(v)) == 1 for points in curves.values() for v in points.values())
    assert_equal_curves({k: {s: v[0] for s, v in p.items()} for k, p in curves.items()}, expected)


def check_wandb_resume(out, run_id, folder, expected):
    state = json.loads((folder / "tracker-wandb.json").read_text())
    first, second = sorted((out / "wandb").glob("offline-run-*"))  # offline: one per attempt
    merged = {}
    codes = []
    for run_dir in (first, second):
        run, _, curves, _, exit_code = read_wandb(run_dir)
        assert run.run_id == state["id"] and run.run_group == "e1"
        codes.append(exit_code)
        for k, points in curves.items():
            merged.setdefault(k, {}).update(points)
    assert codes == [1, 0]  # the crashed attempt was finished as failed
    del merged["wall_s"]
    assert_equal_curves(merged, expected)


RESUME = {"tensorboard": check_tensorboard_resume, "mlflow": check_mlflow_resume,
          "wandb": check_wandb_resume}


# --- errors before any run ------------------------------------------------------------------

@pytest.mark.parametrize("name", KNOWN)
def test_missing_package_names_the_pip_command(name, monkeypatch):
    monkeypatch.setitem(sys.modules, PACKAGE[name], None)  # `import <package>` now fails
    with pytest.raises(TrackerUnavailable) as info:
        check_trackers([name])
    assert str(info.value) == f"{name} is not installed: pip install 'lossbench[{name}]'"


def test_missing_package_is_exit_2_before_any_run(tmp_path, monkeypatch, capsys):
    from lossbench.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(SystemExit) as info:
        main(["run", str(suite_file(tmp_path)), "--log", "wandb", "--out", str(tmp_path / "out"),
              "--no-report"])
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "lossbench: error: --log: wandb is not installed: pip install 'lossbench[wandb]'"
    assert not (tmp_path / "out" / "runs").exists()


def test_mlflow_skinny_without_sqlalchemy_names_the_pip_command(monkeypatch):
    available("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(TrackerUnavailable, match=r"pip install 'lossbench\[mlflow\]'$"):
        check_trackers(["mlflow"])


@pytest.mark.slow
def test_unknown_tracker_is_exit_2_before_any_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lossbench", "run", str(suite_file(tmp_path)),
                           "--log", "nope", "--out", str(tmp_path / "out"), "--no-report"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "unknown tracker 'nope'" in line and "tensorboard, mlflow, wandb" in line
    assert not (tmp_path / "out" / "runs").exists()


def test_what_is_logged():
    config = {"loss": "ls", "label": "", "seed": 3, "train": {"lr": 0.1, "decay_steps": None},
              "hparams": {"alpha": 0.5}, "eval": {"bins": [1, 2]}}
    assert flatten(config) == {"loss": "ls", "label": "", "seed": 3, "train.lr": 0.1,
                               "train.decay_steps": None, "hparams.alpha": 0.5,
                               "eval.bins": "[1, 2]"}
    assert run_name(config) == "ls-seed3" and run_name({**config, "label": "x"}) == "x-seed3"
    assert eval_values({"step": 5, "val_ce": 1, "ok": True, "samples": ["a"], "r": [[1]],
                        "ece": math.inf}) == {"val_ce": 1.0, "ece": math.inf}
