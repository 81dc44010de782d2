"""Computed tables of a report, all read from the score table (pandas in, pandas out; no
drawing, no wording). Runs are grouped by ``label`` (the loss name unless the suite gave
one), so a hyperparameter grid or a fine-tuned variant is its own row.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lossbench.analysis.diagnostics import degenerate, not_converged
from lossbench.analysis.inference import (
    MIN_SEEDS,
    decide,
    default_margin,
    holm_family,
    p_better_paired,
    paired_t,
)
from lossbench.analysis.paired import paired_deltas, penalty
from lossbench.analysis.power import SeedAdvice, seeds_needed
from lossbench.analysis.scores import FINISHED, ScoreTable
from lossbench.analysis.stats import holm, interval, mean_ranks
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
    """One row per label: status counts, flag counts (the Runs section's diagnoses too:
    plateau, underfitting), and for each column its mean with ``_low``/``_high``/``_n``/
    ``_kind`` (a seed range below 3 finished seeds, a 95% t-interval from 3). Steps to
    target is inf when any seed's is (AlgoPerf)."""
    rows = []
    for label, g in scores.runs.groupby("label", sort=False):
        counts = scores.status_counts(label)
        n_deg, n_late = _flags(g)
        flat = g[g.status == FINISHED].get("final_temperature_flat", pd.Series(dtype=float))
        row = {"label": label, **counts, "degenerate": n_deg, "not_converged": n_late,
               **{k: int(g[k].sum()) if k in g else 0 for k in ("plateau", "underfitting")},
               "temperature_flat": int((flat == 1).sum()),
               "temperature_bound": int(g[g.status == FINISHED].get(
                   "temperature_bound", pd.Series(dtype=bool)).sum()),
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
    """May this label be marked in a table? Not with a diverged or failed seed, nor when
    its predictions are degenerate."""
    return row.diverged == 0 and row.failed == 0 and row.degenerate == 0


def _tests(scores: ScoreTable, column: str, margin: float | None) -> pd.DataFrame:
    """The procedure's raw test of every label against the baseline on ``column``."""
    m = metric(column)
    values = scores.per_seed(column) if column in scores.runs else {}
    base = values.get(scores.baseline)
    if base is None:
        return pd.DataFrame()
    base_mean = interval(list(base.values())).mean
    if margin is None:
        margin = default_margin(m.unit, base_mean)
    finite = scores.runs[column].astype(float)
    pen = penalty(finite[np.isfinite(finite)], margin)
    worse = -1.0 if m.lower_is_better is False else 1.0
    rows = []
    for label, other in values.items():
        if label == scores.baseline:
            continue
        pairs = paired_deltas(base, other, worse_sign=worse, penalty_value=pen)
        test = paired_t(pairs.deltas, margin)
        share = p_better_paired(pairs.deltas, m.lower_is_better)
        spread = interval(pairs.deltas)
        rows.append({"label": label, "n_pairs": test.n, "penalized": pairs.penalized,
                     "unpaired": pairs.unpaired, "mean_difference": test.mean,
                     "diff_low": spread.low, "diff_high": spread.high,
                     "diff_kind": spread.kind, "p_value": test.p,
                     "p_equivalent": test.p_equivalent, "margin": margin,
                     "identical": pairs.identical, "p_better": share.point,
                     "p_better_low": share.low, "p_better_high": share.high,
                     "test": "paired t" if test.n >= MIN_SEEDS else "none",
                     "_test": test, "_deltas": pairs.deltas})
    return pd.DataFrame(rows)


COMPARISON_COLUMNS = ["label", "n_pairs", "penalized", "unpaired", "mean_difference",
                      "diff_low", "diff_high", "diff_kind", "p_value", "p_holm",
                      "p_equivalent", "p_equivalent_holm", "margin", "identical", "word",
                      "test", "p_better", "p_better_low", "p_better_high", "seeds_kind",
                      "seeds_low", "seeds_high", "seeds_text", "extra_seconds"]


def comparisons(scores: ScoreTable, column: str, *, margin: float | None = None,
                family_extra: tuple[float, ...] = ()) -> pd.DataFrame:
    """Each label against the baseline on ``column`` by the report's one procedure
    (analysis.inference): per-seed Δ (unfinished seeds scored worst-case), the paired
    t-test Holm-corrected over the family (these comparisons plus ``family_extra``, the
    raw p of the suite's claims), the t-interval of mean Δ, TOST against the margin, the
    word, P(better) paired by seed, and the seeds the procedure needs (with the compute
    they cost at the measured speed)."""
    raw = _tests(scores, column, margin)
    if raw.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    m = metric(column)
    p_holm, _ = holm_family(raw.p_value.tolist(), list(family_extra))
    p_eq = holm(raw.p_equivalent.tolist())
    family = sum(math.isfinite(p) for p in [*raw.p_value, *family_extra])
    wall = scores.runs.groupby("label").wall_s.mean() if "wall_s" in scores.runs else {}
    rows = []
    for r, ph, pe in zip(raw.to_dict("records"), p_holm, p_eq):
        test = r.pop("_test")
        deltas = r.pop("_deltas")
        word = decide(test, ph, pe, m.lower_is_better, r["penalized"])
        advice = (seeds_needed(deltas, r["margin"], family)
                  if word in ("no difference", "untested") else SeedAdvice("none"))
        per_seed_s = float(wall.get(r["label"], math.nan)) + float(wall.get(scores.baseline,
                                                                             math.nan))
        extra = max(0, (advice.low or 0) - r["n_pairs"]) * per_seed_s if advice.low else 0.0
        rows.append({**r, "p_holm": ph, "p_equivalent_holm": pe, "word": word,
                     "seeds_kind": advice.kind, "seeds_low": advice.low,
                     "seeds_high": advice.high, "seeds_text": advice.text(r["margin"]),
                     "extra_seconds": extra if math.isfinite(extra) else 0.0})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def better_marks(scores: ScoreTable, columns: list[str], table: pd.DataFrame,
                 primary_column: str | None = None,
                 primary: pd.DataFrame | None = None) -> dict[str, set[str]]:
    """column -> the labels to bold: those the procedure calls better than the baseline.
    ``primary``: the primary metric's comparisons (its family is the report's); every
    other directional column is tested here, Holm over all of their (label, column)
    pairs as one family, each at its default margin. Never a machine figure, a metric
    without a direction, the baseline, or a label that is not ``eligible``."""
    ok = {r.label for r in table.itertuples() if eligible(r)}
    marks = {c: set() for c in columns}
    tested = [c for c in columns if c in scores.runs and not metric(c).machine
              and metric(c).lower_is_better is not None]
    if primary is not None and primary_column in marks:
        marks[primary_column] = {r.label for r in primary.itertuples()
                                 if r.word == "better"} & ok
        tested = [c for c in tested if c != primary_column]
    raws = {c: _tests(scores, c, None) for c in tested}
    raws = {c: r for c, r in raws.items() if not r.empty}
    adjusted = holm_family(*(r.p_value.tolist() for r in raws.values()))
    for (c, raw), p_holm in zip(raws.items(), adjusted):
        m = metric(c)
        for r, ph in zip(raw.to_dict("records"), p_holm):
            if decide(r["_test"], ph, math.nan, m.lower_is_better, r["penalized"]) == "better":
                marks[c].add(r["label"])
        marks[c] &= ok
    return marks


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
