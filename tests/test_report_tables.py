"""The score table and the tables and verdict read from it, on hand-made results (no
training): survivorship, honest intervals, bold marks, flags and the verdict's words."""

import math

import numpy as np
import pandas as pd
import pytest

from lossbench.analysis.diagnostics import degenerate, late_drop
from lossbench.analysis.scores import build_scores
from lossbench.core.metrics import metric
from lossbench.report.tables import better_marks, comparisons, label_table, rank_table, ranked
from lossbench.report.verdict import verdict_rows

COLUMNS = ["final_val_ce", "steps_to_target", "tokens_per_s"]


def make_results(finals: dict[str, list[float]], status: dict[str, list[str]] | None = None,
                 curve=lambda v: [(0, 4.0), (100, 2.5), (200, v)]):
    """summary and curves of hand-made runs: label -> per-seed final val CE."""
    status = status or {}
    rows, curves = [], []
    for loss, values in finals.items():
        for seed, v in enumerate(values):
            run_id = f"{loss}-{seed}"
            st = status.get(loss, ["done"] * len(values))[seed]
            rows.append({"run_id": run_id, "loss": loss, "label": loss, "seed": seed,
                         "status": st, "final_val_ce": v if st == "done" else 1.0,
                         "diverged_step": 150 if st == "diverged" else math.nan,
                         "wall_s": 10.0, "tokens_per_s": 1000.0 + seed})
            for step, value in curve(v if st == "done" else math.nan):
                curves.append({"run_id": run_id, "step": step, "metric": "val_ce",
                               "value": value})
    return pd.DataFrame(rows), pd.DataFrame(curves)


def tables(finals, status=None, baseline="cross_entropy", **kw):
    scores = build_scores(*make_results(finals, status, **kw), baseline)
    return scores, ranked(label_table(scores, COLUMNS), "final_val_ce")


def best_labels(scores, table, column="final_val_ce"):
    """The labels bolded in ``column``, by the report's rule (tables.better_marks)."""
    comps = comparisons(scores, "final_val_ce")
    return better_marks(scores, COLUMNS, table, "final_val_ce", comps)[column]


def test_survivorship_a_loss_that_diverged_on_one_seed_is_never_best():
    # "planted" would have the best mean if its diverged seed were dropped silently
    finals = {"cross_entropy": [2.0, 2.2, 2.1], "mse": [2.5, 2.6, 2.4],
              "planted": [1.0, 1.1, 1.2]}
    scores, table = tables(finals, {"planted": ["done", "done", "diverged"]})
    row = table.set_index("label").loc["planted"]
    assert row.diverged == 1 and row.runs == 3
    assert row.final_val_ce == pytest.approx(1.05)  # the survivors' mean, shown with its count
    assert row.steps_to_target == math.inf  # a diverged seed never reaches the target
    assert list(table.label) == ["cross_entropy", "mse", "planted"]  # ranked after the rest
    assert "planted" not in best_labels(scores, table)
    # the diverged run's final metrics are not results, whatever it stored
    diverged = scores.runs[scores.runs.status == "diverged"]
    assert diverged.final_val_ce.isna().all()
    comps = comparisons(scores, "final_val_ce")
    rows = verdict_rows(table, comps, metric("final_val_ce"), "cross_entropy")
    planted = next(r for r in rows if r[1] == "planted")
    assert planted[0] == "3" and "diverged on 1 of 3 seeds" in planted[4]
    assert "never called better" in planted[4] and not planted[3].startswith("better")


def test_two_seeds_give_a_range_not_a_confidence_interval():
    scores, table = tables({"cross_entropy": [2.0, 2.2], "kl": [1.8, 1.9]})
    row = table.set_index("label").loc["kl"]
    assert row.final_val_ce_kind == "range"
    assert (row.final_val_ce_low, row.final_val_ce_high) == (1.8, 1.9)
    assert best_labels(scores, table) == set()  # two seeds: nothing is tested
    comps = comparisons(scores, "final_val_ce")
    rows = verdict_rows(table, comps, metric("final_val_ce"), "cross_entropy")
    kl = next(r for r in rows if r[1] == "kl")
    assert kl[3].startswith("untested: 2 seeds (the test needs 3")
    assert "range" in kl[3]
    assert "CI" not in kl[3] and "CI" not in kl[2]


def test_verdict_is_ranked_and_names_each_relation_to_the_baseline():
    rng = np.random.default_rng(0)
    base = list(2.0 + rng.normal(0, 0.01, 8))
    finals = {"cross_entropy": base,
              "kl": [v - 0.12 + e for v, e in zip(base, rng.normal(0, 0.003, 8))],
              "mse": [v + 0.3 + e for v, e in zip(base, rng.normal(0, 0.003, 8))],
              "focal": [v + e for v, e in zip(base, rng.normal(0, 0.01, 8))]}
    scores, table = tables(finals)
    comps = comparisons(scores, "final_val_ce")
    rows = verdict_rows(table, comps, metric("final_val_ce"), "cross_entropy")
    assert [r[1] for r in rows][0] == "kl" and [r[1] for r in rows][-1] == "mse"
    by = {r[1]: r[3] for r in rows}
    assert by["cross_entropy"] == "the baseline"
    assert by["kl"].startswith("better: val CE lower than cross_entropy by 0.12")
    c = comps.set_index("label")
    assert "95% CI" in by["kl"] and "8/8 seeds" in by["kl"]
    assert f"Holm p = {c.loc['kl', 'p_holm']:.2g}" in by["kl"] and c.loc["kl", "p_holm"] < 1e-6
    assert by["mse"].startswith("worse: val CE higher than cross_entropy by 0.3")
    assert by["focal"].startswith(("no difference detected at 8 seeds",
                                   "practically equivalent to cross_entropy"))
    assert best_labels(scores, table) == {"kl"}  # better by the same test


def test_bold_ties_machine_figures_and_degenerate_runs():
    rng = np.random.default_rng(1)
    noise = lambda: list(rng.normal(0, 0.01, 5))  # noqa: E731
    finals = {"cross_entropy": [2.0 + e for e in noise()], "a": [1.0 + e for e in noise()],
              "b": [1.0 + e for e in noise()], "c": [3.0 + e for e in noise()]}
    scores, table = tables(finals)
    # a and b are both better than the baseline by the test: both bold
    assert best_labels(scores, table) == {"a", "b"}
    assert best_labels(scores, table, "tokens_per_s") == set()  # the machine, not the loss
    table.loc[table.label == "a", "degenerate"] = 1
    assert best_labels(scores, table) == {"b"}  # a degenerate run is never marked
    assert "cross_entropy" not in best_labels(scores, table)  # nor the baseline


def test_late_drop_flags_a_run_still_falling_and_not_a_converged_one():
    steps = [0, 250, 500, 750, 1000]
    falling = [4.0, 3.0, 2.6, 2.4, 2.2]  # 2.36 at step 800 -> 2.2: 6.8% in the last 20%
    converged = [4.0, 2.2, 2.05, 2.01, 2.005]  # 2.009 at step 800 -> 2.005: 0.2%
    assert late_drop(steps, falling) == pytest.approx((2.36 - 2.2) / 2.36)
    assert late_drop(steps, converged) < 0.01
    assert math.isnan(late_drop([0], [4.0])) and math.isnan(late_drop(steps, [4, 3, 2, math.inf, 1]))
    _, table = tables({"cross_entropy": [2.0, 2.1], "slow": [2.2, 2.3]},
                      curve=lambda v: list(zip(steps, [4.0, 3.0, 2.6, 2.4, v])))
    row = table.set_index("label")
    assert row.loc["slow", "not_converged"] == 2


def test_degenerate_fires_near_the_unigram_entropy_only():
    assert degenerate(4.15, 4.17)  # no better than token frequencies
    assert degenerate(4.17, 4.17)
    assert not degenerate(2.0, 4.17)  # a model that learned
    assert not degenerate(4.15, math.nan)  # unknown entropy: no claim
    summary, curves = make_results({"cross_entropy": [2.0, 2.1], "hinge": [2.77, 2.77]})
    summary["final_val_ce_calibrated"] = summary.final_val_ce
    summary["final_unigram_entropy"] = 2.7726
    scores = build_scores(summary, curves, "cross_entropy")
    table = label_table(scores, COLUMNS).set_index("label")
    assert table.loc["hinge", "degenerate"] == 2 and table.loc["cross_entropy", "degenerate"] == 0


def test_target_rule_and_steps_to_target():
    finals = {"cross_entropy": [2.0, 2.2, 2.1], "mse": [2.5, 2.6, 2.4]}
    scores, table = tables(finals)
    assert scores.target == pytest.approx(2.1 * 1.05)
    assert "cross_entropy's mean final val CE × 1.05" == scores.target_rule
    t = table.set_index("label")
    assert t.loc["cross_entropy", "steps_to_target"] == pytest.approx(200)
    assert t.loc["mse", "steps_to_target"] == math.inf  # never reached
    named = build_scores(*make_results(finals), "cross_entropy", 2.55)
    assert named.target == 2.55 and "suite" in named.target_rule
    no_base = build_scores(*make_results(finals, {"cross_entropy": ["done", "diverged", "done"]}),
                           "cross_entropy")
    assert math.isnan(no_base.target) and "did not finish every seed" in no_base.target_rule


def test_comparisons_pair_by_seed_and_rank_table_puts_unfinished_last():
    finals = {"cross_entropy": [2.0, 2.2, 2.1], "mse": [2.5, 2.6, 2.4], "hinge": [1.9, 2.0, 0.0]}
    scores, _ = tables(finals, {"hinge": ["done", "done", "diverged"]})
    c = comparisons(scores, "final_val_ce").set_index("label")
    assert c.loc["mse", "n_pairs"] == 3 and c.loc["mse", "mean_difference"] == pytest.approx(0.4)
    d = [0.5, 0.4, 0.3]  # mse − CE per seed: the paired t-test by hand
    t = np.mean(d) / (np.std(d, ddof=1) / np.sqrt(3))
    assert c.loc["mse", "p_value"] == pytest.approx(2 * (1 - __import__("scipy").stats.t.cdf(t, 2)))
    # the diverged seed is paired, scored worst-case: the range of every finished value
    assert c.loc["hinge", "n_pairs"] == 3 and c.loc["hinge", "penalized"] == 1
    assert c.loc["hinge", "mean_difference"] == pytest.approx((-0.1 - 0.2 + (2.6 - 1.9)) / 3)
    assert (c.p_holm >= c.p_value).all()
    assert c.loc["mse", "p_better"] == pytest.approx(0.0)  # worse on every paired seed
    ranks = rank_table(scores, "final_val_ce").set_index("label").mean_rank
    assert ranks.to_dict() == pytest.approx({"hinge": 5 / 3, "cross_entropy": 5 / 3, "mse": 8 / 3})
