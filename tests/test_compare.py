"""Across-suite statistics on hand-checkable inputs, and `lossbench compare` end to end."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import tiny_toml
from lossbench.report.profiles import (best_loss_target, profile, profile_score,
                                       rank_across_workloads, ratios, workload_times)

INF = math.inf
TIMES = pd.DataFrame({"w1": {"a": 100.0, "b": 200.0, "c": INF},
                      "w2": {"a": 300.0, "b": 100.0, "c": 150.0}})


def test_ratios_to_the_best_loss_per_workload():
    r = ratios(TIMES)
    assert r.loc["a"].tolist() == [1.0, 3.0]
    assert r.loc["b"].tolist() == [2.0, 1.0]
    assert r.loc["c", "w1"] == INF and r.loc["c", "w2"] == 1.5


def test_target_met_at_initialization_gives_ratio_one_to_every_loss_at_step_0():
    r = ratios(pd.DataFrame({"w": {"a": 0.0, "b": 0.0, "c": INF}}))
    assert r.w.tolist() == [1.0, 1.0, INF]


def test_missing_loss_and_unreached_workload_are_infinite():
    times = TIMES.assign(w3=[INF, INF, INF])
    times.loc["d"] = [50.0, math.nan, math.nan]  # d ran on w1 only
    r = ratios(times)
    assert (r["w3"] == INF).all()
    assert r.loc["d", "w1"] == 1.0 and r.loc["d", "w2"] == INF
    assert r.loc["a", "w1"] == 2.0


def test_profile_steps_at_each_ratio():
    p = profile(ratios(TIMES)).set_index(["label", "tau"]).rho
    assert p[("a", 1.0)] == 0.5 and p[("a", 3.0)] == 1.0
    assert p[("b", 1.0)] == 0.5 and p[("b", 2.0)] == 1.0
    assert p[("c", 1.0)] == 0.0 and p[("c", 1.5)] == 0.5 and p[("c", 4.0)] == 0.5


def test_score_is_the_normalized_area_under_the_profile():
    s = profile_score(ratios(TIMES))
    assert s["a"] == pytest.approx((1 + 1 / 3) / 2)  # ratios 1 and 3: (3/3 + 1/3) / 2
    assert s["b"] == pytest.approx((2 / 3 + 1) / 2)
    assert s["c"] == pytest.approx((2.5 / 3) / 2)
    # the same by integrating the step function numerically
    p = profile(ratios(TIMES))
    taus = np.linspace(1, 4, 300001)
    for label in "abc":
        g = p[p.label == label]
        rho = np.array([g[g.tau <= t].rho.iloc[-1] for t in taus[::1000]])
        assert np.mean(rho) == pytest.approx(s[label], abs=0.01)


def test_friedman_matches_the_textbook_formula():
    # ranks: a 1,1,1; b 2,3,2; c 3,2,3 -> R = 3, 7, 8; n = 3 blocks, k = 3
    values = pd.DataFrame({"w1": {"a": 1.0, "b": 2.0, "c": 3.0},
                           "w2": {"a": 1.5, "b": 2.5, "c": 2.0},
                           "w3": {"a": 0.5, "b": 0.6, "c": 0.7}})
    res = rank_across_workloads(values)
    chi2 = 12 / (3 * 3 * 4) * (3 ** 2 + 7 ** 2 + 8 ** 2) - 3 * 3 * 4
    assert res.statistic == pytest.approx(chi2)  # 4.667
    assert res.ranks.mean_rank.to_dict() == pytest.approx({"a": 1.0, "b": 7 / 3, "c": 8 / 3})
    assert list(res.ranks.index) == ["a", "b", "c"]


def test_friedman_refuses_too_few_workloads_and_ranks_missing_last():
    values = pd.DataFrame({"w1": {"a": 1.0, "b": 2.0, "c": INF},
                           "w2": {"a": 2.0, "b": 1.0, "c": math.nan}})
    res = rank_across_workloads(values)
    assert math.isnan(res.p_value) and "needs >= 3 workloads" in res.note
    assert res.ranks.loc["c", "mean_rank"] == 3.0
    assert res.ranks.loc["a", "mean_rank"] == 1.5


def test_workload_times_default_target_and_infinite_when_a_seed_misses():
    summary = pd.DataFrame({"run_id": ["a0", "a1", "b0", "b1"], "label": ["a", "a", "b", "b"],
                            "loss": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                            "status": ["done", "done", "done", "diverged"],
                            "final_val_ce": [1.1, 1.0, 0.9, math.nan]})
    curve = [(10, 2.0), (20, 1.3), (30, 1.1)]
    rows = [(rid, s, v) for rid, pts in {"a0": curve, "a1": [(10, 2.0), (20, 1.1), (30, 1.0)],
                                         "b0": [(10, 1.2), (20, 1.0), (30, 0.9)],
                                         "b1": [(10, 1.0)]}.items() for s, v in pts]
    curves = pd.DataFrame(rows, columns=["run_id", "step", "value"]).assign(metric="val_ce")
    # b has the lower mean (0.9) but a diverged seed: a (mean 1.05) sets the target
    assert best_loss_target(summary) == pytest.approx(1.05 * 1.05)
    times, target = workload_times(summary, curves)
    t = times.set_index("label")
    assert target == pytest.approx(1.1025)
    assert t.loc["a", "steps_to_target"] == 25.0  # seed 0 at step 30, seed 1 at step 20
    assert t.loc["b", "steps_to_target"] == INF  # seed 1 diverged
    assert t.loc["a", "final_val_ce"] == pytest.approx(1.05)
    times, _ = workload_times(summary, curves, target=1.35)  # a suite-named target
    assert times.set_index("label").loc["a", "steps_to_target"] == 20.0


def workload_text(name: str, vocab: int) -> str:
    return tiny_toml(name, '["cross_entropy", "mse", "hinge"]', data={"markov_vocab": vocab},
                     train={"steps": 40, "batch_size": 8, "lr": 1e-2}, eval={"eval_every": 8})


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lossbench", *args], capture_output=True,
                          text=True, timeout=600)


def test_compare_two_suites_writes_the_profile_report(tmp_path):
    from lossbench.runner import run_suite
    from lossbench.suites import load_suite

    dirs = []
    for name, vocab in (("small-vocab", 8), ("large-vocab", 24)):
        path = tmp_path / f"{name}.toml"
        path.write_text(workload_text(name, vocab))
        run_suite(load_suite(path), tmp_path / name, workers=1, show_progress=False)
        dirs.append(str(tmp_path / name))
    out = tmp_path / "cmp"
    proc = _cli("compare", *dirs, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for name in ("index.html", "report.md", "profiles.png", "scores.csv", "ratios.csv",
                 "steps_to_target.csv", "ranks.csv", "workloads.csv"):
        assert (out / name).exists(), name
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores.label) == {"cross_entropy", "mse", "hinge"}
    assert scores.score.between(0, 1).all() and scores.score.max() > 0
    ratio = pd.read_csv(out / "ratios.csv").set_index("label")
    assert list(ratio.columns) == ["small-vocab", "large-vocab"]
    assert (ratio.min(axis=0) == 1.0).all()  # the best loss on each workload has ratio 1
    md = (out / "report.md").read_text()
    assert "Friedman test not run" in md and "shared hyperparameters, not tuned" in md


def test_compare_bad_input_is_one_line_exit_2(tmp_path):
    proc = _cli("compare", str(tmp_path))
    assert proc.returncode == 2 and "at least two" in proc.stderr
    proc = _cli("compare", str(tmp_path), str(tmp_path / "nope"))
    assert proc.returncode == 2 and "not a lossbench results directory" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
