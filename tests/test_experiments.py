"""Experiments: one results directory, several suite invocations, each with its own tables,
report and load(); the run folders stay a shared cache."""

import json

import helpers
import pandas as pd
import pytest
from helpers import lossbench_cli as lossbench

from lossbench.store.experiments import UnknownExperiment, list_experiments
from lossbench.store.runs import run_dir
from lossbench.store.tables import load
from lossbench.suite.load import load_suite
from lossbench.sweep.sweep import run_suite


def write_suite(tmp_path, losses='["cross_entropy", "mse"]', name="exp"):
    return helpers.write_suite(tmp_path, name, losses, seeds=(0, 1), train={"steps": 20})


def headline(report_dir):
    return pd.read_csv(report_dir / "headline.csv").set_index("label")


@pytest.mark.slow
def test_two_invocations_with_different_sets_are_two_experiments(tmp_path):
    """The issue's first complaint: a 10-step rerun into the same directory must neither mix
    its runs into the 20-step tables nor replace the 20-step report."""
    suite, out = write_suite(tmp_path), tmp_path / "results"
    first = lossbench("run", suite, "--out", out, "--workers", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = lossbench("run", suite, "--out", out, "--workers", "2", "--set", "train.steps=10",
                       "--seeds", "1", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    old, new = list_experiments(out)
    assert new["id"] != old["id"] and len(old["run_ids"]) == 4 and len(new["run_ids"]) == 2

    summary, curves = load(out)  # the latest: only the 10-step runs
    assert len(summary) == 2 and set(summary.steps) == {10} and set(summary.seed) == {0}
    assert set(curves.run_id) == set(summary.run_id)
    assert len(pd.read_csv(out / "summary.csv")) == 2  # the table on disk is the same one
    earlier, _ = load(out, experiment=old["id"])
    assert len(earlier) == 4 and set(earlier.steps) == {20}
    # the README's groupby gives each experiment's own numbers, not a blend of both
    means = summary.groupby("label").final_val_ce.mean()
    assert means["mse"] == summary.loc[summary.label == "mse", "final_val_ce"].iloc[0]

    # each report in its own folder inside the results directory, none in ./reports
    reports = out / "reports"
    assert sorted(p.name for p in reports.iterdir()) == sorted([old["id"], new["id"]])
    assert not (tmp_path / "reports").exists()
    assert headline(reports / old["id"]).runs.to_dict() == {"cross_entropy": 2, "mse": 2}
    assert headline(reports / new["id"]).runs.to_dict() == {"cross_entropy": 1, "mse": 1}
    assert f"reports/{new['id']}/index.html" in second.stdout

    # `lossbench report DIR` reports the latest, and never over the earlier one's folder
    before = (reports / old["id"] / "report.md").read_bytes()
    again = lossbench("report", out)
    assert again.returncode == 0, again.stderr
    assert (reports / old["id"] / "report.md").read_bytes() == before
    assert f"reports/{new['id']}" in again.stdout


def test_identical_rerun_reuses_its_experiment_and_the_runs_are_shared(tmp_path):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    a = run_suite(load_suite(suite), out, workers=1, show_progress=False)
    b = run_suite(load_suite(suite), out, workers=1, show_progress=False)
    assert a.experiment == b.experiment and len(list_experiments(out)) == 1
    assert b.skipped == 4
    # a subset of the losses is another experiment that reuses the finished runs
    subset = tmp_path / "subset.toml"
    subset.write_text(suite.read_text().replace('["cross_entropy", "mse"]', '["cross_entropy"]'))
    c = run_suite(load_suite(subset), out, workers=1, show_progress=False)
    assert c.skipped == 2 and c.experiment != a.experiment
    assert set(load(out)[0].label) == {"cross_entropy"}
    assert set(load(out, experiment=a.experiment)[0].label) == {"cross_entropy", "mse"}


@pytest.mark.slow
def test_load_by_a_unique_start_of_the_id_and_unknown_ids(tmp_path):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    a = run_suite(load_suite(suite), out, workers=1, show_progress=False)
    run_suite(load_suite(suite, ["train.steps=10"]), out, workers=1, show_progress=False)
    assert len(load(out, experiment=a.experiment[:-3])[0]) == 4
    with pytest.raises(UnknownExperiment, match="names no experiment"):
        load(out, experiment="nope")
    with pytest.raises(UnknownExperiment, match="matches several"):
        load(out, experiment="exp-")  # both ids start so
    proc = lossbench("report", out, "--experiment", "nope")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--experiment: 'nope' names no experiment" in proc.stderr


@pytest.mark.slow
def test_runs_lists_the_experiments_with_what_changed(tmp_path):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    a = run_suite(load_suite(suite), out, workers=1, show_progress=False)
    b = run_suite(load_suite(suite, ["train.steps=10", "seeds=[0]"]), out, workers=1,
                  show_progress=False)
    proc = lossbench("runs", out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    first = next(x for x in lines if x.startswith(a.experiment))
    second = next(x for x in lines if x.startswith(b.experiment))
    assert "4 done" in first and first.rstrip().endswith("-")
    assert second.startswith(b.experiment + " *")  # the latest
    assert "2 done" in second and "seeds [0, 1]→[0]" in second and "train.steps 20→10" in second


@pytest.mark.slow
def test_report_out_and_out_decide_where_things_go(tmp_path):
    suite = write_suite(tmp_path)
    elsewhere, report = tmp_path / "elsewhere", tmp_path / "my-report"
    proc = lossbench("run", suite, "--out", elsewhere, "--workers", "2", "--report-out", report,
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (report / "index.html").exists() and not (elsewhere / "reports").exists()
    assert not (tmp_path / "reports").exists()


def test_a_directory_from_before_experiments_is_one_experiment(tmp_path):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    run_suite(load_suite(suite), out, workers=1, show_progress=False)
    # what an older lossbench left: suite.json without an id, no experiments/
    meta = json.loads((out / "suite.json").read_text())
    old = {k: meta[k] for k in ("name", "description", "path", "seeds", "baseline",
                                "target_val_ce", "run_ids")}
    (out / "suite.json").write_text(json.dumps(old))
    for f in (out / "experiments").iterdir():
        f.unlink()
    (out / "experiments").rmdir()
    (legacy,) = list_experiments(out)
    assert legacy["id"].startswith("exp-") and len(load(out)[0]) == 4
    # a new invocation records the old suite under that id, then adds its own
    b = run_suite(load_suite(suite, ["train.steps=10"]), out, workers=1, show_progress=False)
    ids = [r["id"] for r in list_experiments(out)]
    assert ids == [legacy["id"], b.experiment]
    assert len(load(out, experiment=legacy["id"])[0]) == 4 and set(load(out)[0].steps) == {10}


@pytest.mark.slow
def test_experiment_files_are_checked(tmp_path):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    run_suite(load_suite(suite), out, workers=1, show_progress=False)
    (out / "experiments" / "evil.json").write_text(json.dumps({"id": "../../evil",
                                                               "run_ids": []}))
    (out / "experiments" / "runs-escape.json").write_text(json.dumps(
        {"id": "runs-escape", "name": "exp", "run_ids": ["../../../etc"]}))
    problems = []
    assert len(list_experiments(out, problems)) == 2 and "evil.json" in problems[0]
    proc = lossbench("runs", out)
    assert proc.returncode == 0 and "evil.json skipped" in proc.stderr, proc.stderr
    assert "unreadable (experiment runs-escape: run id" in proc.stdout
    assert not list(tmp_path.rglob("etc"))
    with pytest.raises(UnknownExperiment):
        load(out, experiment="../../evil")


def test_seeds_option(tmp_path, monkeypatch, capsys):
    import lossbench.sweep.plan
    from lossbench.cli import main

    monkeypatch.setattr(lossbench.sweep.plan, "probe", lambda config: lossbench.sweep.plan.Probe(
        0.1, 0.01, 0.1, 0.1, 0.5))  # the timing is not what this test is about
    suite = write_suite(tmp_path)

    def lossbench_here(*args):
        try:
            main([str(a) for a in ("run", suite, "--out", tmp_path / "out", "--dry-run", *args)])
        except SystemExit as exc:
            return exc.code, *capsys.readouterr()
        return 0, *capsys.readouterr()

    def seeds_of(*args):
        code, out, err = lossbench_here(*args)
        assert code == 0, err
        return [int(x.split()[1]) for x in out.splitlines() if x.startswith("mse ")]

    assert seeds_of() == [0, 1]
    assert seeds_of("--seeds", "3") == [0, 1, 2]
    assert seeds_of("--seeds", "0,3,7") == [0, 3, 7]
    assert seeds_of("--seeds", "5,") == [5]
    for bad in ("x", "0", "-1,2", "1,1", ","):
        code, _, err = lossbench_here("--seeds", bad)
        assert code == 2 and err.count("\n") == 1, (bad, err)
        assert err.startswith("lossbench: error: --seeds:")


@pytest.mark.slow
def test_report_of_a_sweep_in_progress_shows_the_finished_runs(tmp_path):
    from lossbench.report.evidence import gather

    suite, out = write_suite(tmp_path), tmp_path / "out"
    outcome = run_suite(load_suite(suite), out, workers=1, show_progress=False)
    unfinished = sorted(outcome.statuses)[:1]
    for run_id in unfinished:  # as if it were still training
        (run_dir(out, run_id) / "DONE").unlink()
    ev = gather(out)
    assert ev.unfinished == unfinished and len(ev.scores.runs) == 3
    proc = lossbench("report", out, "--out", tmp_path / "report")
    assert proc.returncode == 0, proc.stderr
    assert "1 of 4 runs still running or not started" in proc.stdout
    for run_id in outcome.statuses:
        (run_dir(out, run_id) / "DONE").unlink(missing_ok=True)
    proc = lossbench("report", out, "--out", tmp_path / "report2")
    assert proc.returncode == 1 and "no run has finished yet" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "report2").exists()


@pytest.mark.slow
def test_report_of_an_earlier_experiment_and_of_a_sweep_in_progress(tmp_path):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    a = run_suite(load_suite(suite), out, workers=1, show_progress=False)
    run_suite(load_suite(suite, ["train.steps=10"]), out, workers=1, show_progress=False)
    proc = lossbench("report", out, "--experiment", a.experiment[:-2])
    assert proc.returncode == 0, proc.stderr
    report = out / "reports" / a.experiment
    assert set(pd.read_csv(report / "scores.csv").run_id) == set(a.statuses)
    (run_dir(out, sorted(a.statuses)[0]) / "DONE").unlink()  # as if it were still training
    proc = lossbench("report", out, "--experiment", a.experiment)
    assert proc.returncode == 0, proc.stderr
    md = (report / "report.md").read_text()
    assert "1 of this experiment's runs are still running or not started" in md
    assert len(pd.read_csv(report / "scores.csv")) == 3
