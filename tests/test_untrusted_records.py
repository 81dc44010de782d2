"""Files read back from a results directory are checked field by field: a wrong type, a
400-digit number or a list as a label is one warning naming the file and field, that run or
record is skipped (or, for `run`, trained again) and the rest is reported. Terminal output
shows control characters instead of sending them; a copy of the tables alone is reported;
the latest experiment is decided by a sequence number, not the clock."""

import json
import shutil
import time

import pytest
from test_untrusted_dirs import (  # noqa: F401  (the fixtures copy and finished)
    cli,
    copy_fixture,
    finished_fixture,
    ids,
    write_suite,
)

from lossbench.store.experiments import resolve_experiment
from lossbench.store.tables import load
from lossbench.suite.load import load_suite
from lossbench.sweep.status import experiment_states, overall
from lossbench.sweep.sweep import run_suite


def edit_json(path, change):
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(record):
        for key in keys[:-1]:
            record = record[key]
        record[keys[-1]] = value
    return change


# (what, how to break result.json, the field the warning must name)
RESULT_ATTACKS = [
    ("string for a float", _set("summary", "final_val_ce", "2.0"), "summary.final_val_ce"),
    ("list as label", _set("config", "label", ["a", "b"]), "config.label"),
    ("list as hparams", _set("config", "hparams", [1, 2]), "config.hparams"),
    ("int as evals", _set("evals", 5), "evals"),
    ("400-digit number", _set("summary", "final_val_ce", 10 ** 400), "summary.final_val_ce"),
    ("400-digit step count", _set("summary", "steps", 10 ** 400), "summary.steps"),
    ("float seed", _set("config", "seed", 1.5), "config.seed"),
    ("object as eval value", lambda r: r["evals"][0].update(val_ce={"a": 1}), "evals[0].val_ce"),
    ("string in steps", lambda r: r["steps"]["train_loss"].__setitem__(0, "x"),
     "steps.train_loss[0]"),
    ("ragged steps", lambda r: r["steps"]["lr"].pop(), "steps"),
    ("another run's id", _set("summary", "run_id", "mse-000000000000"), "summary.run_id"),
    ("string as hparams", _set("config", "hparams", "lr=1"), "config.hparams"),
]


@pytest.mark.parametrize("what,change,field", RESULT_ATTACKS, ids=[a[0] for a in RESULT_ATTACKS])
def test_wrong_types_in_a_result_are_one_warning_and_the_rest_is_read(copy, capsys, what,
                                                                      change, field):
    out, _ = copy
    bad = ids(out)[2]
    edit_json(out / "runs" / bad / "result.json", change)
    problems = []
    summary, curves = load(out, problems=problems)
    assert sorted(summary.run_id) == [r for r in ids(out) if r != bad]
    assert bad not in set(curves.run_id)
    assert len(problems) == 1 and f"runs/{bad}/result.json: {field}: expected" in problems[0]
    assert problems[0].endswith("; skipped")
    for command in ("status", "runs"):
        code, stdout, err = cli(capsys, command, out)
        assert code == 0 and f"result.json: {field}: expected" in err, (command, err)
        assert err.count("warning") == 1, err


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"status": 1' + "0" * 5000 + "}"],
                         ids=["nested 100,000 deep", "5000-digit number"])
def test_unparseable_results_are_one_warning(copy, text):
    out, _ = copy
    bad = ids(out)[0]
    (out / "runs" / bad / "result.json").write_text(text)
    problems = []
    summary, _ = load(out, problems=problems)
    assert len(summary) == 3 and len(problems) == 1 and "result.json" in problems[0]


def test_report_of_broken_results_warns_and_reports_the_rest(copy, tmp_path, capsys):
    out, _ = copy
    runs = ids(out)  # cross_entropy seeds, then mse seeds
    edit_json(out / "runs" / runs[0] / "result.json", _set("config", "label", ["x"]))
    edit_json(out / "runs" / runs[3] / "result.json", _set("summary", "final_val_ce", 10 ** 400))
    code, stdout, err = cli(capsys, "report", out, "--out", tmp_path / "report")
    assert code == 0 and "Traceback" not in err, err
    assert err.count("warning") == 2 and "config.label: expected a string" in err
    assert "Left out of this report" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize("change,field", [
    (lambda m: m["runs"].append({"run_id": ["x"], "label": "l"}), "runs[4].run_id"),
    (lambda m: m.update(tuning_runs=[{"run_id": {"a": 1}}]), "tuning_runs[0].run_id"),
    (lambda m: m.update(choices={"mse": "lr=1"}), "choices.mse"),
    (lambda m: m.update(run_ids="abc"), "run_ids"),
    (lambda m: m.update(seq=10 ** 400), "seq"),
])
def test_wrong_types_in_an_experiment_record(copy, capsys, change, field):
    out, _ = copy
    record = next((out / "experiments").glob("*.json"))
    edit_json(record, change)
    code, _, err = cli(capsys, "runs", out)  # the record is skipped with a warning
    assert code == 0 and f"{record.name} skipped" in err and f"{field}: expected" in err, err
    edit_json(out / "suite.json", change)  # the latest itself: one line, exit 1
    for command in ("status", "report"):
        code, _, err = cli(capsys, command, out)
        assert code == 1 and f"suite.json: {field}: expected" in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("config,field", [
    ({"train": {"steps": "20"}}, "train.steps"), ({"train": "steps"}, "train"),
    ({"label": {"x": 1}}, "label")])
def test_wrong_types_in_a_running_runs_config_and_metrics(copy, capsys, config, field):
    out, _ = copy
    folder = out / "runs" / ids(out)[0]
    (folder / "DONE").unlink()  # running: status reads its config.json and metrics.jsonl
    edit_json(folder / "config.json", lambda c: c.update(config))
    now = time.time()
    lines = [{"kind": "step", "step": 2, "total": 10, "time": now - 2},
             {"kind": "step", "step": 10 ** 400, "total": 10, "time": now - 1},
             {"kind": "eval", "step": 3, "time": "now", "val_ce": "low"}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    code, stdout, err = cli(capsys, "status", out)
    assert code == 0 and f"config.json: {field}: expected" in err, err
    assert "Traceback" not in err


def test_an_inconsistent_result_is_trained_again_with_a_warning(copy, capsys):
    out, suite = copy
    bad = ids(out)[1]
    edit_json(out / "runs" / bad / "result.json", lambda r: r["evals"].pop(1))
    code, stdout, err = cli(capsys, "run", suite, "--out", out, "--workers", "1", "--no-report")
    assert code == 0 and "(3 already finished)" in stdout, stdout + err
    assert f"runs/{bad}/result.json: evals: at steps" in err and "trained again" in err


# ---- the terminal ---------------------------------------------------------------------------

EVIL = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e"


def test_control_characters_in_labels_are_shown_not_sent(copy, tmp_path, capsys):
    out, _ = copy
    for run_id in ids(out):
        if run_id.startswith("mse"):
            edit_json(out / "runs" / run_id / "result.json", _set("config", "label", EVIL))
            edit_json(out / "runs" / run_id / "config.json", _set("label", EVIL))
    for path in [out / "suite.json", *(out / "experiments").glob("*.json")]:
        edit_json(path, lambda m: m.update(runs=[{**r, "label": EVIL} for r in m["runs"]],
                                           description=EVIL))
    for args in (["status", out], ["runs", out],
                 ["report", out, "--out", tmp_path / "r", "--only", "nothing"]):
        code, stdout, err = cli(capsys, *args)
        assert "Traceback" not in err
        for c in "\x1b\x07\x9b\u202e":
            assert c not in stdout + err, (args, stdout, err)
    assert "\\x1b]0;pwned\\x07" in stdout + err  # shown, escaped


# ---- a copy of the tables alone, and clocks --------------------------------------------------

def test_report_of_a_tables_only_copy(copy, tmp_path, capsys):
    out, _ = copy
    tables = tmp_path / "attached"
    tables.mkdir()
    for name in ("summary.csv", "curves.csv", "suite.json"):
        shutil.copy(out / name, tables)
    shutil.copytree(out / "experiments", tables / "experiments")
    code, stdout, err = cli(capsys, "report", tables, "--out", tmp_path / "report")
    assert code == 0, err
    assert (tmp_path / "report" / "index.html").exists() and "mse" in (
        tmp_path / "report" / "report.md").read_text()


def test_tables_only_copy_with_text_in_a_number_column(copy, tmp_path):
    out, _ = copy
    tables = tmp_path / "attached"
    tables.mkdir()
    shutil.copy(out / "suite.json", tables)
    text = (out / "summary.csv").read_text().splitlines()
    header = text[0].split(",")
    column = header.index("tokens_per_s")
    row = text[1].split(",")
    row[column] = "fast"
    (tables / "summary.csv").write_text("\n".join([text[0], ",".join(row), *text[2:]]) + "\n")
    problems = []
    summary, _ = load(tables, problems=problems)
    assert "tokens_per_s" not in summary and len(summary) == 4
    assert problems == [f"{tables / 'summary.csv'}: column tokens_per_s: expected numbers; "
                        f"skipped"]


def test_the_latest_experiment_does_not_depend_on_the_clock(copy, tmp_path, monkeypatch,
                                                            capsys):
    out, _ = copy
    import lossbench.store.experiments as experiments

    monkeypatch.setattr(experiments, "now_utc", lambda: "2001-01-01T00:00:00.000000Z")
    later = write_suite(tmp_path, seeds=(0,), name="later")
    outcome = run_suite(load_suite(later), out, workers=1, show_progress=False)
    assert resolve_experiment(out)["id"] == outcome.experiment
    summary, _ = load(out)
    assert len(summary) == 2 and set(summary.seed) == {0}
    code, stdout, _ = cli(capsys, "runs", out)
    latest = [line for line in stdout.splitlines() if " *" in line]
    assert len(latest) == 1 and latest[0].startswith(outcome.experiment)


# ---- `status` over a whole experiment ---------------------------------------------------------

def test_status_eta_counts_runs_not_started_and_stopped_runs_are_stopped(copy):
    out, _ = copy
    runs = ids(out)
    now = time.time()
    for run_id in runs[1:]:
        shutil.rmtree(out / "runs" / run_id)  # not started
    folder = out / "runs" / runs[0]
    (folder / "DONE").unlink()
    (folder / "result.json").unlink()
    lines = [{"kind": "step", "step": 2, "total": 10, "time": now - 4},
             {"kind": "step", "step": 4, "total": 10, "time": now - 2}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    from lossbench.core.locks import file_lock
    from lossbench.core.schema import LOCK

    with file_lock(folder / LOCK):  # running at 1 step/s: 6 steps left, 3 runs of 10 to come
        states = experiment_states(out, resolve_experiment(out))
        _, eta = overall(states)
    assert sorted(s.state for s in states) == ["not started"] * 3 + ["running"]
    assert eta == pytest.approx(36, abs=0.5)
    with (folder / "attempts.jsonl").open("a") as f:  # Ctrl-C: its attempt ended, seconds ago
        f.write(json.dumps({"event": "end", "status": "interrupted", "step": 4}) + "\n")
    state = {s.run_id: s for s in experiment_states(out, resolve_experiment(out))}[runs[0]]
    assert state.state == "stopped" and state.eta_s is None
