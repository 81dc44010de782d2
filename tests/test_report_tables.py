"""Report tables on a hand-made results set (no training)."""

import math

import pandas as pd
import pytest

from lossbench.report.tables import baseline_comparisons, default_target, headline, rank_table


def make_results():
    rows, curves = [], []
    finals = {"cross_entropy": [2.0, 2.2, 2.1], "mse": [2.5, 2.6, 2.4], "hinge": [1.9, 2.0, math.nan]}
    status = {"hinge": ["done", "done", "diverged"]}
    for loss, values in finals.items():
        for seed, v in enumerate(values):
            run_id = f"{loss}-{seed}"
            st = status.get(loss, ["done"] * 3)[seed]
            rows.append({"run_id": run_id, "loss": loss, "label": loss, "seed": seed, "status": st,
                         "final_val_ce": v if st == "done" else 3.0,
                         "final_val_ppl": math.exp(v) if st == "done" else math.nan,
                         "tokens_per_s": 1000.0})
            for step, value in [(0, 4.0), (100, 2.5), (200, v if st == "done" else math.nan)]:
                curves.append({"run_id": run_id, "step": step, "metric": "val_ce", "value": value})
    return pd.DataFrame(rows), pd.DataFrame(curves)


def test_headline_means_best_and_divergence():
    summary, curves = make_results()
    h = headline(summary, curves, "cross_entropy")
    t = h.table.set_index("label")
    assert t.loc["cross_entropy", "final_val_ce"] == pytest.approx(2.1)
    assert t.loc["hinge", "final_val_ce"] == pytest.approx(1.95)  # the diverged seed is excluded
    assert t.loc["hinge", "diverged"] == 1
    assert h.best["final_val_ce"] == "hinge"
    assert h.target == pytest.approx(2.1 * 1.05)
    # target 2.205: every CE seed (2.0, 2.2, 2.1) first gets below it at step 200
    assert t.loc["cross_entropy", "steps_to_target"] == pytest.approx(200)
    assert t.loc["mse", "steps_to_target"] == math.inf  # never reached


def test_default_target():
    summary, _ = make_results()
    assert default_target(summary, "mse") == pytest.approx(2.5 * 1.05)


def test_baseline_comparisons_paired_and_holm():
    summary, _ = make_results()
    table = baseline_comparisons(summary, "cross_entropy").set_index("label")
    assert table.loc["mse", "n_pairs"] == 3
    assert table.loc["mse", "mean_difference"] == pytest.approx(0.4)
    assert table.loc["mse", "p_value"] == pytest.approx(0.25)
    assert table.loc["hinge", "n_pairs"] == 2  # the diverged seed cannot be paired
    assert "no difference can be significant" in table.loc["mse", "note"]
    assert (table.p_holm >= table.p_value).all()


def test_rank_table_puts_diverged_last():
    summary, _ = make_results()
    ranks = rank_table(summary).set_index("label").mean_rank
    # seed0: hinge 1, ce 2, mse 3; seed1: hinge 1, ce 2, mse 3; seed2: ce 1, mse 2, hinge 3
    assert ranks.to_dict() == pytest.approx({"hinge": 5 / 3, "cross_entropy": 5 / 3, "mse": 8 / 3})


def test_one_seed_missing_the_target_makes_steps_infinite():
    summary, curves = make_results()
    # with mse as baseline the target is 2.625: every mse seed is at 2.5 by step 100
    t = headline(summary, curves, "mse").table.set_index("label")
    assert t.loc["mse", "steps_to_target"] == pytest.approx(100)
    curves.loc[(curves.run_id == "mse-1") & (curves.step >= 100), "value"] = 9.0
    t = headline(summary, curves, "mse").table.set_index("label")
    assert t.loc["mse", "steps_to_target"] == math.inf
