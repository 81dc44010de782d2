"""Across-suite statistics on hand-checkable inputs, and `lossbench compare` end to end."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers import lossbench_cli as _cli
from helpers import tiny_toml

from lossbench.analysis.profiles import (
    bootstrap_profiles,
    identical_profiles,
    profile,
    profile_score,
    rank_across_workloads,
    ratios,
    workload_times,
)
from lossbench.core.escaping import csv_text
from lossbench.report.compare import build_comparison

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


def test_workload_times_default_target_is_the_baseline_x_1_05_and_a_miss_is_infinite():
    summary = pd.DataFrame({"run_id": ["a0", "a1", "b0", "b1"], "label": ["a", "a", "b", "b"],
                            "loss": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                            "status": ["done", "done", "done", "diverged"],
                            "final_val_ce": [1.1, 1.0, 0.9, 0.5]})
    curve = [(10, 2.0), (20, 1.3), (30, 1.1)]
    rows = [(rid, s, v) for rid, pts in {"a0": curve, "a1": [(10, 2.0), (20, 1.1), (30, 1.0)],
                                         "b0": [(10, 1.2), (20, 1.0), (30, 0.9)],
                                         "b1": [(10, 1.0)]}.items() for s, v in pts]
    curves = pd.DataFrame(rows, columns=["run_id", "step", "value"]).assign(metric="val_ce")
    times, target = workload_times(summary, curves, "a")  # the baseline a: mean 1.05 x 1.05
    t = times.set_index("label")
    assert target == pytest.approx(1.1025)
    assert t.loc["a", "steps_to_target"] == 25.0  # seed 0 at step 30, seed 1 at step 20
    assert t.loc["b", "steps_to_target"] == INF  # seed 1 diverged (after reaching it)
    assert t.loc["a", "final_val_ce"] == pytest.approx(1.05)
    assert math.isnan(t.loc["b", "final_val_ce"])  # not 0.9, the mean of its survivor
    times, _ = workload_times(summary, curves, "a", target=1.35)  # a suite-named target
    assert times.set_index("label").loc["a", "steps_to_target"] == 20.0
    # the baseline b diverged on a seed: no target, so no loss reaches one (ratio inf)
    times, target = workload_times(summary, curves, "b")
    assert math.isnan(target) and times.steps_to_target.isna().all()
    assert (ratios(times.set_index("label")[["steps_to_target"]]) == INF).all().all()


def per_seed_frame(table: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """workload -> label -> per-seed steps_to_target, as the long per-seed table."""
    return pd.DataFrame([{"workload": w, "label": label, "seed": i, "steps_to_target": v}
                         for w, by_label in table.items() for label, values in by_label.items()
                         for i, v in enumerate(values)])


SEEDS = {"w1": {"a": [100, 120, 90, 110, 100], "b": [150, 140, 160, 170, 130],
                "c": [300, 250, INF, 280, 260]},
         "w2": {"a": [300, 280, 320, 310, 290], "b": [100, 110, 90, 105, 95],
                "c": [150, 160, 140, 170, 130]},
         "w3": {"a": [200, 210, 190, 220, 180], "b": [220, 200, 240, 210, 230],
                "c": [400, 380, 420, 390, 410]}}


def test_bootstrap_score_interval_brackets_the_point_and_collapses_when_seeds_agree():
    per_seed = per_seed_frame(SEEDS)
    labels, works = ["a", "b", "c"], ["w1", "w2", "w3"]
    boot = bootstrap_profiles(per_seed, labels, works)
    times = per_seed.groupby(["label", "workload"]).steps_to_target.mean().unstack()
    point = profile_score(ratios(times.loc[labels, works]))
    s = boot.scores.set_index("label")
    assert s.score.to_numpy() == pytest.approx(point.to_numpy())  # the same rule as the point
    assert (s.score_low <= s.score).all() and (s.score <= s.score_high).all()
    assert (s.score_low < s.score_high).all()  # the seeds disagree: a real interval
    assert boot.interval == "95% CI" and boot.min_seeds == 5
    bands = boot.profiles
    assert (bands.rho_low <= bands.rho_high).all() and bands.tau.min() == 1.0
    assert bootstrap_profiles(per_seed, labels, works).scores.equals(boot.scores)  # fixed seed
    agree = {w: {label: [v[0]] * 5 for label, v in by.items()} for w, by in SEEDS.items()}
    still = bootstrap_profiles(per_seed_frame(agree), labels, works)
    assert (still.scores.score_low == still.scores.score).all()
    assert (still.scores.score_high == still.scores.score).all()
    assert (still.profiles.rho_low == still.profiles.rho).all()
    assert (still.profiles.rho_high == still.profiles.rho).all()


def test_stratified_bootstrap_redraws_seeds_within_each_loss_and_workload():
    # a: one seed of 5 never reaches the target -> its mean is inf unless a redraw of 5
    # seeds misses that one: P(inf) = 1 - (4/5)^5 = 0.672. b's stratum is never inf.
    per_seed = per_seed_frame({"w": {"a": [100, 100, 100, 100, INF], "b": [200] * 5}})
    boot = bootstrap_profiles(per_seed, ["a", "b"], ["w"], n_resamples=4000)
    p = boot.strata.set_index("label").p_unreached
    assert p["a"] == pytest.approx(1 - 0.8 ** 5, abs=0.03) and p["b"] == 0.0
    # a alone on w: score 1 when a redraw reaches (a fastest), else 0; b then 2/3 or 1
    s = boot.scores.set_index("label")
    assert s.score["a"] == 0.0 and s.score["b"] == 1.0  # the point: a's mean is inf
    reach = 1 - p["a"]
    assert boot.samples[:, 0].mean() == pytest.approx(reach)
    assert boot.samples[:, 1].mean() == pytest.approx(reach * 2 / 3 + (1 - reach))
    assert s.score_low["a"] == 0.0 and s.score_high["a"] == 1.0
    # a loss not run on a workload is inf there in every replicate; 2 seeds: a range
    two = per_seed_frame({"w1": {"a": [10, 20], "b": [30, 40]}, "w2": {"a": [10, 20]}})
    boot = bootstrap_profiles(two, ["a", "b"], ["w1", "w2"])
    assert boot.interval == "bootstrap range (n<5 seeds)" and boot.min_seeds == 2
    assert (boot.scores.set_index("label").score_high["b"]
            == pytest.approx(0.5 * (4 - 30 / 20) / 3))  # w2 adds 0: never run there


def test_identical_profiles_are_grouped_together():
    times = TIMES.assign(w3=[50.0, 100.0, 100.0])
    times.loc["d"] = times.loc["a"]  # d's profile is a's
    times.loc["e"] = [INF, INF, INF]
    assert identical_profiles(profile(ratios(times))) == [["a", "d"]]
    assert identical_profiles(profile(ratios(TIMES))) == []


def write_workload(out, name: str, runs: dict[str, list[tuple[str, list]]], *,
                   target: float | None = None) -> str:
    """A results directory as `lossbench run` leaves it, from label -> per seed
    (status, val CE curve as [(step, value)]); the baseline is cross_entropy."""
    summary, curves = [], []
    for label, seeds in runs.items():
        for seed, (status, curve) in enumerate(seeds):
            run_id = f"{label}-s{seed}"
            # a diverged run's last eval looks great: it must not count
            summary.append({"run_id": run_id, "loss": label, "label": label, "seed": seed,
                            "status": status, "final_val_ce": curve[-1][1]})
            curves += [{"run_id": run_id, "step": s, "metric": "val_ce", "value": v}
                       for s, v in curve]
    out.mkdir(parents=True)
    (out / "summary.csv").write_text(csv_text(pd.DataFrame(summary)))
    (out / "curves.csv").write_text(csv_text(pd.DataFrame(curves)))
    (out / "suite.json").write_text(json.dumps(
        {"name": name, "baseline": "cross_entropy", "seeds": [0, 1, 2], "target_val_ce": target,
         "run_ids": [r["run_id"] for r in summary]}))
    return str(out)


def test_compare_never_ranks_a_loss_by_its_surviving_seeds(tmp_path):
    # planted: fastest and lowest on 2 of 3 seeds, diverged on the third (after passing
    # the target): steps-to-target inf, score 0, ranked last, in every table
    ce = [(10, 2.0), (20, 1.5), (30, 1.04), (40, 1.0)]  # baseline: target 1.05 at step 30
    mse = [(10, 2.0), (20, 1.6), (30, 1.2), (40, 1.02)]  # at step 40 under both targets
    fast = [(10, 1.0), (20, 0.9), (30, 0.85), (40, 0.8)]
    runs = {"cross_entropy": [("done", ce)] * 3, "mse": [("done", mse)] * 3,
            "twin": [("done", ce)] * 3,  # twin's profile is the baseline's
            "planted": [("done", fast), ("done", fast), ("diverged", [(10, 0.9), (20, 0.4)])]}
    dirs = [write_workload(tmp_path / "w1", "w1", runs),
            write_workload(tmp_path / "w2", "w2", runs, target=1.1)]
    out = build_comparison(dirs, tmp_path / "cmp")
    steps = pd.read_csv(out / "steps_to_target.csv").set_index("label")
    assert (steps.loc["planted"] == INF).all()
    assert steps.loc["cross_entropy"].tolist() == [30.0, 30.0]  # 1.05, then the suite's 1.1
    assert steps.loc["mse"].tolist() == [40.0, 40.0]
    scores = pd.read_csv(out / "scores.csv")
    assert scores.label.iloc[-1] == "planted" and scores.score.iloc[-1] == 0.0
    assert set(scores.label.iloc[:2]) == {"cross_entropy", "twin"}
    assert (scores.interval == "bootstrap range (n<5 seeds)").all()
    assert (scores.score_low <= scores.score).all() and (scores.score <= scores.score_high).all()
    ranks = pd.read_csv(out / "ranks.csv").set_index("label")
    assert ranks.loc["planted", "mean_rank"] == 4.0  # last, not first by 0.8
    workloads = pd.read_csv(out / "workloads.csv").set_index("workload")
    assert workloads.target_from["w1"] == "cross_entropy's mean final val CE × 1.05"
    assert workloads.target_from["w2"] == "named by the suite (target_val_ce)"
    md = (out / "report.md").read_text()
    assert "cross_entropy's mean final val CE × 1.05" in md
    assert "| cross_entropy, twin |" in md  # identical profiles, named together
    assert "not a 95% confidence interval" in md
    bands = pd.read_csv(out / "profile_bands.csv")
    assert {"rho_low", "rho_high"} <= set(bands.columns)


def workload_text(name: str, vocab: int) -> str:
    return tiny_toml(name, '["cross_entropy", "mse", "hinge"]', data={"markov_vocab": vocab},
                     train={"steps": 40, "batch_size": 8, "lr": 1e-2}, eval={"eval_every": 8})


@pytest.mark.slow
def test_compare_two_suites_writes_the_profile_report(tmp_path):
    from lossbench.suite.load import load_suite
    from lossbench.sweep.sweep import run_suite

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


@pytest.mark.slow
def test_compare_bad_input_is_one_line_exit_2(tmp_path):
    proc = _cli("compare", str(tmp_path))
    assert proc.returncode == 2 and "at least two" in proc.stderr
    proc = _cli("compare", str(tmp_path), str(tmp_path / "nope"))
    assert proc.returncode == 2 and "not a lossbench results directory" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
