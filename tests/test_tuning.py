"""Per-loss tuning: grid parsing, selection on hand-made results, and a tiny tuned sweep end to end."""

import json
import math

import pandas as pd
import pytest
from helpers import tiny_toml

from lossbench.store.tables import load
from lossbench.suite.load import SuiteError, load_suite
from lossbench.suite.tuning import TuneSpec, log_grid, select, tuning_table
from lossbench.sweep.sweep import run_suite

SPEC = TuneSpec(grid=(("lr", (1e-4, 1e-3, 1e-2)),), steps=10, seeds=(0, 1))


def _results(rows):
    """rows: (label, lr, seed, status, final_val_ce) -> (suite.json-style runs, summary)."""
    runs, summary = [], []
    for i, (label, lr, seed, status, ce) in enumerate(rows):
        runs.append({"run_id": f"r{i}", "label": label, "setting": {"lr": lr}})
        summary.append({"run_id": f"r{i}", "status": status, "final_val_ce": ce})
    return runs, pd.DataFrame(summary)


def _choose(rows, spec=SPEC):
    runs, summary = _results(rows)
    return select(tuning_table(runs, summary, spec), spec)


def test_best_mean_over_seeds_wins_and_middle_has_no_edge_note():
    c = _choose([("ce", 1e-4, 0, "done", 2.0), ("ce", 1e-4, 1, "done", 2.2),
                 ("ce", 1e-3, 0, "done", 1.5), ("ce", 1e-3, 1, "done", 1.9),  # mean 1.7
                 ("ce", 1e-2, 0, "done", 1.6), ("ce", 1e-2, 1, "done", 1.85)])  # mean 1.725
    assert c["ce"].setting == {"lr": 1e-3}
    assert c["ce"].score == pytest.approx(1.7)
    assert c["ce"].notes == ()


def test_tie_goes_to_the_earlier_grid_point():
    c = _choose([("ce", 1e-4, 0, "done", 3.0), ("ce", 1e-4, 1, "done", 3.0),
                 ("ce", 1e-3, 0, "done", 1.5), ("ce", 1e-3, 1, "done", 1.7),
                 ("ce", 1e-2, 0, "done", 1.7), ("ce", 1e-2, 1, "done", 1.5)])
    assert c["ce"].setting == {"lr": 1e-3}


def test_a_setting_with_a_diverged_seed_is_not_eligible():
    # lr 1e-2 has the best finite value on seed 0 but diverged on seed 1
    c = _choose([("mse", 1e-4, 0, "done", 2.0), ("mse", 1e-4, 1, "done", 2.0),
                 ("mse", 1e-3, 0, "done", 1.9), ("mse", 1e-3, 1, "done", 1.9),
                 ("mse", 1e-2, 0, "done", 1.0), ("mse", 1e-2, 1, "diverged", 1.1)])
    assert c["mse"].setting == {"lr": 1e-3}
    runs, summary = _results([("mse", 1e-2, 0, "done", 1.0), ("mse", 1e-2, 1, "diverged", 1.1)])
    row = tuning_table(runs, summary, SPEC).iloc[0]
    assert row.status == "diverged" and math.isnan(row.score)


def test_best_on_the_grid_edge_is_flagged_both_ways():
    low = _choose([("focal", 1e-4, s, "done", 1.0) for s in (0, 1)]
                  + [("focal", lr, s, "done", 2.0) for lr in (1e-3, 1e-2) for s in (0, 1)])
    assert low["focal"].setting == {"lr": 1e-4}
    assert len(low["focal"].notes) == 1 and "grid edge" in low["focal"].notes[0]
    assert "smallest" in low["focal"].notes[0] and "focal" in low["focal"].notes[0]
    high = _choose([("hinge", 1e-2, s, "done", 1.0) for s in (0, 1)]
                   + [("hinge", lr, s, "done", 2.0) for lr in (1e-4, 1e-3) for s in (0, 1)])
    assert "largest" in high["hinge"].notes[0]


def test_every_setting_diverged_means_no_choice():
    c = _choose([("hinge", lr, s, "diverged", math.nan) for lr in (1e-4, 1e-3, 1e-2)
                 for s in (0, 1)])
    assert c["hinge"].setting is None and "no eligible setting" in c["hinge"].notes[0]


def test_unfinished_runs_are_not_eligible_and_contenders_are_independent():
    runs, summary = _results([("a", 1e-4, 0, "done", 1.0), ("a", 1e-4, 1, "done", 1.0),
                              ("b", 1e-3, 0, "done", 1.0), ("b", 1e-3, 1, "done", 1.0)])
    runs.append({"run_id": "missing", "label": "a", "setting": {"lr": 1e-3}})
    table = tuning_table(runs, summary, SPEC)
    assert table.set_index(["label", "lr"]).loc[("a", 1e-3), "status"] == "missing"
    c = select(table, SPEC)
    assert c["a"].setting == {"lr": 1e-4} and c["b"].setting == {"lr": 1e-3}


def test_higher_is_better_metric():
    spec = TuneSpec(grid=(("lr", (1e-4, 1e-3)),), steps=10, seeds=(0,), metric="val_acc")
    runs = [{"run_id": "x", "label": "ce", "setting": {"lr": 1e-4}},
            {"run_id": "y", "label": "ce", "setting": {"lr": 1e-3}}]
    summary = pd.DataFrame({"run_id": ["x", "y"], "status": ["done", "done"],
                            "final_val_acc": [0.3, 0.4]})
    assert select(tuning_table(runs, summary, spec), spec)["ce"].setting == {"lr": 1e-3}


def test_log_grid_is_rounded_and_geometric():
    assert log_grid(1e-4, 1e-2, 5) == (1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2)


def tuned_text(grid: str) -> str:
    return tiny_toml("tiny-tuned", '["cross_entropy", "mse", { name = "focal", label = "focal" }]',
                     train={"steps": 12, "lr": 1e-3, "min_lr": 1e-4}, eval={"eval_every": 6},
                     extra=f"[tune]\nsteps = 8\nseeds = [0]\n{grid}\n" if grid else "")


def _write(tmp_path, grid, name="t.toml"):
    path = tmp_path / name
    path.write_text(tuned_text(grid))
    return path


@pytest.mark.parametrize("grid, message", [
    ("[tune.grid]\nlr = []", "non-empty list"),
    ("[tune.grid]\nlr = { log_grid = [1e-2, 1e-4, 3] }", "0 < low < high"),
    ("[tune.grid]\nbatch_size = [4, 8]", "neither a tunable train key"),
    ("[tune.grid]\ngamma = [-1.0]", "gamma"),
    ("metric = \"train_loss\"\n[tune.grid]\nlr = [1e-3]", "training loss units differ"),
    ("metric = \"nope\"\n[tune.grid]\nlr = [1e-3]", "unknown 'nope'"),
])
def test_bad_tune_sections_are_one_line_errors(tmp_path, grid, message):
    with pytest.raises(SuiteError) as err:
        load_suite(_write(tmp_path, grid))
    assert any(message in line and "t.toml" in line for line in err.value.errors), err.value.errors


@pytest.mark.slow
def test_tuned_sweep_uses_each_losss_winning_setting(tmp_path):
    grid = "[tune.grid]\nlr = { log_grid = [1e-3, 3e-2, 3] }\ngamma = [1.0, 3.0]"
    suite = load_suite(_write(tmp_path, grid))
    out = tmp_path / "out"
    outcome = run_suite(suite, out, workers=1, show_progress=False)
    meta = json.loads((out / "suite.json").read_text())
    # focal alone tunes gamma too: 3 lr x 2 gamma; the others 3 lr
    per_label = pd.Series([r["label"] for r in meta["tuning_runs"]]).value_counts()
    assert per_label.to_dict() == {"focal": 6, "cross_entropy": 3, "mse": 3}
    summary, _ = load(out)
    tuning = tuning_table(meta["tuning_runs"], summary, suite.tune)
    for label, group in tuning.groupby("label"):
        winner = group.loc[group.score.idxmin()]  # what the tuning runs measured
        chosen = meta["choices"][label]["setting"]
        assert chosen == winner["setting"]
        finals = [json.loads((out / "runs" / rid / "config.json").read_text())
                  for rid in meta["run_ids"]]
        mine = [c for c in finals if (c["label"] or c["loss"]) == label]
        assert sorted(c["seed"] for c in mine) == [0, 1]
        for c in mine:
            assert c["train"]["lr"] == chosen["lr"] and c["train"]["steps"] == 12
            assert c["train"]["min_lr"] == pytest.approx(chosen["lr"] / 10)
            assert c["hparams"].get("gamma") == chosen.get("gamma")
    final, _ = load(out, final_only=True)
    assert len(final) == 6 and set(final.run_id) == set(meta["run_ids"])
    assert outcome.exit_code == 0
    # a rerun reuses every tuning and final run
    again = run_suite(load_suite(_write(tmp_path, grid)), out, workers=1, show_progress=False)
    assert again.skipped == len(meta["tuning_runs"]) + 6


@pytest.mark.slow
def test_tuned_report_names_the_protocol_and_draws_sensitivity(tmp_path):
    from lossbench.report.render import build_report

    grid = "[tune.grid]\nlr = [1e-3, 1e-2]"
    out = tmp_path / "out"
    run_suite(load_suite(_write(tmp_path, grid)), out, workers=1, show_progress=False)
    report = build_report(out, tmp_path / "report")
    md = (report / "report.md").read_text()
    # report.md escapes Markdown syntax in text: [ and ] would start a link
    assert ("Protocol: tuned per loss: lr over 2 values \\[0.001 … 0.01\\]; budget 8 steps × 1 "
            "seed") in md
    assert "selected on final val CE" in md
    assert "## Tuning" in md and (report / "sensitivity_lr.png").stat().st_size > 10_000
    assert "grid edge" in md  # two values: every winner sits on an edge, and the report says so
    tuning = pd.read_csv(report / "tuning.csv")
    assert len(tuning) == 6 and set(tuning.columns) >= {"label", "lr", "score", "status"}
    headline = pd.read_csv(report / "headline.csv")
    assert (headline.runs == 2).all()  # final runs only, not the tuning runs


@pytest.mark.slow
def test_untuned_report_says_shared(tmp_path):
    from lossbench.report.render import build_report

    path = tmp_path / "plain.toml"
    path.write_text(tuned_text(""))
    suite = load_suite(path)
    assert suite.tune is None
    out = tmp_path / "out"
    run_suite(suite, out, workers=1, show_progress=False)
    md = (build_report(out, tmp_path / "report") / "report.md").read_text()
    assert "Protocol: shared hyperparameters, not tuned" in md and "## Tuning" not in md
