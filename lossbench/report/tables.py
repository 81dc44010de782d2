"""Computed tables of a report, all read from the score table (pandas in, pandas out; no
drawing, no wording). Runs are grouped by ``label`` (the loss name unless the suite gave
one), so a hyperparameter grid or a fine-tuned variant is its own row.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lossbench.analysis.diagnostics import degenerate, not_converged
from lossbench.analysis.scores import FINISHED, ScoreTable
from lossbench.analysis.stats import (
    ALPHA,
    CI_KIND,
    holm,
    interval,
    mean_ranks,
    paired_comparison,
    probability_of_improvement_ci,
    seeds_needed,
)
from lossbench.core.metrics import metric


def _flags(g: pd.DataFrame) -> tuple[int, int]:
    """(degenerate seeds, not-converged seeds) among a label's finished runs."""
    done = g[g.status == FINISHED]
    unigram = done.get("final_unigram_entropy", pd.Series(math.nan, index=done.index))
    calibrated = done.get("final_val_ce_calibrated", pd.Series(math.nan, index=done.index))
    n_degenerate = sum(degenerate(c, u) for c, u in zip(calibrated, unigram))
    n_late = sum(not_converged(d) for d in done.late_drop)
    return int(n_degenerate), int(n_late)


def label_table(scores: ScoreTable, columns: list[str]) -> pd.DataFrame:
    """One row per label: status counts, flag counts, and for each column its mean with
    ``_low``/``_high``/``_n``/``_kind`` (a seed range below 5 finished seeds, a 95%
    bootstrap CI from 5). Steps to target is inf when any seed's is (AlgoPerf)."""
    rows = []
    for label, g in scores.runs.groupby("label", sort=False):
        counts = scores.status_counts(label)
        n_deg, n_late = _flags(g)
        flat = g[g.status == FINISHED].get("final_temperature_flat", pd.Series(dtype=float))
        row = {"label": label, **counts, "degenerate": n_deg, "not_converged": n_late,
               "temperature_flat": int((flat == 1).sum()),
               "diverged_step": float(g.diverged_step.min()) if counts["diverged"] else math.nan}
        for col in columns:
            values = g[col].astype(float)
            if col == "steps_to_target" and values.notna().any() \
                    and not np.isfinite(values).all():
                ci = interval([])  # a seed never got there: the label's value is inf
                row[col] = math.inf
            else:
                ci = interval(values)
                row[col] = ci.mean
            row.update({f"{col}_low": ci.low, f"{col}_high": ci.high, f"{col}_n": ci.n,
                        f"{col}_kind": ci.kind})
        rows.append(row)
    return pd.DataFrame(rows)


def eligible(row) -> bool:
    """May this label be marked best on a final metric? Not with a diverged or failed seed
    (its mean would be of the survivors), nor when its predictions are degenerate."""
    return row.diverged == 0 and row.failed == 0 and row.degenerate == 0


def best_labels(table: pd.DataFrame, column: str) -> set[str]:
    """Labels to mark best in ``column``: the best mean among eligible labels, only when its
    95% CI does not overlap the runner-up's (so never with fewer than 5 seeds, whose
    brackets are ranges); labels tied on the mean are marked together. None for machine
    figures or metrics without a direction."""
    m = metric(column)
    if m.machine or m.lower_is_better is None or column not in table:
        return set()
    ok = table[[eligible(r) for r in table.itertuples()]]
    ok = ok[np.isfinite(ok[column].astype(float))]
    if len(ok) < 2:
        return set()
    sign = 1.0 if m.lower_is_better else -1.0
    ok = ok.assign(_key=sign * ok[column].astype(float)).sort_values("_key")
    best = ok._key.iloc[0]
    top, rest = ok[ok._key == best], ok[ok._key != best]
    if not len(rest):
        return set()  # every eligible label ties: nothing stands out
    runner = rest.iloc[0]
    kinds = {*top[f"{column}_kind"], runner[f"{column}_kind"]}
    if kinds != {CI_KIND}:
        return set()  # a range of fewer than 5 seeds is no evidence of a difference
    if m.lower_is_better:
        edge, other = top[f"{column}_high"].max(), runner[f"{column}_low"]
    else:
        edge, other = -top[f"{column}_low"].min(), -runner[f"{column}_high"]
    apart = math.isfinite(edge) and math.isfinite(other) and edge < other
    return set(top.label) if apart else set()


def comparisons(scores: ScoreTable, column: str) -> pd.DataFrame:
    """Each label against the baseline on ``column``, paired by seed: mean difference
    (label − baseline) and its interval, the exact Wilcoxon p and its Holm correction
    across labels, the probability that a run of the label beats a run of the baseline,
    and the seeds that would resolve the observed difference at 80% power (with the
    compute they cost at the measured speed)."""
    m = metric(column)
    values = scores.per_seed(column) if column in scores.runs else {}
    base = values.get(scores.baseline)
    cols = ["label", "n_pairs", "mean_difference", "diff_low", "diff_high", "diff_kind",
            "p_value", "p_holm", "test", "p_better", "p_better_low", "p_better_high",
            "seeds_needed", "extra_seconds"]
    if base is None:
        return pd.DataFrame(columns=cols)
    wall = scores.runs.groupby("label").wall_s.mean() if "wall_s" in scores.runs else {}
    rows = []
    for label, other in values.items():
        if label == scores.baseline:
            continue
        c = paired_comparison(base, other, alpha=ALPHA)
        seeds = [s for s in base if s in other and math.isfinite(base[s])
                 and math.isfinite(other[s])]
        diffs = [other[s] - base[s] for s in seeds]
        spread = interval(diffs)
        sign = 1.0 if m.lower_is_better is not False else -1.0
        better = probability_of_improvement_ci([sign * v for v in other.values()],
                                               [sign * v for v in base.values()])
        needed = seeds_needed(diffs, alpha=ALPHA)
        per_seed_s = float(wall.get(label, math.nan)) + float(wall.get(scores.baseline, math.nan))
        extra = max(0, needed - len(seeds)) * per_seed_s if needed else 0.0
        rows.append({"label": label, "n_pairs": c.n_pairs, "mean_difference": c.mean_difference,
                     "diff_low": spread.low, "diff_high": spread.high, "diff_kind": spread.kind,
                     "p_value": c.p_value, "test": c.test, "p_better": better.mean,
                     "p_better_low": better.low, "p_better_high": better.high,
                     "seeds_needed": needed, "extra_seconds": extra})
    table = pd.DataFrame(rows, columns=[c for c in cols if c != "p_holm"])
    table.insert(7, "p_holm", holm(table.p_value.tolist()) if len(table) else [])
    return table


def rank_table(scores: ScoreTable, column: str) -> pd.DataFrame:
    """Mean rank across seeds (1 = best); a run that did not finish ranks last."""
    if column not in scores.runs:
        return pd.DataFrame(columns=["label", "mean_rank"])
    sign = 1.0 if metric(column).lower_is_better is not False else -1.0
    table = {label: {s: sign * v if math.isfinite(v) else math.inf for s, v in seeds.items()}
             for label, seeds in scores.per_seed(column).items()}
    ranks = mean_ranks(table)
    return (pd.DataFrame({"label": list(ranks), "mean_rank": list(ranks.values())})
            .sort_values("mean_rank").reset_index(drop=True))


def ranked(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Labels best first on ``column``: those with every seed finished by their mean, then
    those with a diverged or failed seed (their means are of survivors), fewest first."""
    if column not in table:
        return table  # no run reported it (every run failed): nothing to rank by
    sign = 1.0 if metric(column).lower_is_better is not False else -1.0
    key = (sign * table[column].astype(float)).fillna(math.inf)
    unfinished = table.diverged + table.failed
    return (table.assign(_unfinished=unfinished, _key=key)
            .sort_values(["_unfinished", "_key"], kind="stable")
            .drop(columns=["_unfinished", "_key"]).reset_index(drop=True))
