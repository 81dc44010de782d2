"""The report's figures, drawn from computed tables (the drawing itself is in plots)."""

from __future__ import annotations

import pandas as pd

from lossbench.report import plots
from lossbench.report.teacher import add_teacher_line, teacher_info
from lossbench.store.runs import label_of

REPETITION = {"final_seq_rep_4": "seq-rep-4", "final_rep": "rep", "final_wrep": "wrep"}


def tokens_per_step_vary(curves: pd.DataFrame) -> bool:
    """Whether runs train on different numbers of tokens per step (batch or block size
    varies). Only then does val CE vs tokens say something that val CE vs step does not:
    with a fixed batch it is the step plot with the x axis rescaled."""
    t = curves[(curves.metric == "tokens") & (curves.step > 0)]
    return (t.value / t.step).round(6).nunique() > 1


def _against(curves: pd.DataFrame, runs: pd.DataFrame, bands: pd.DataFrame, metric: str,
             cumulative: bool) -> pd.DataFrame:
    """``bands`` (per label and step) with the per-step ``metric`` (cumulated if asked) as
    its x, averaged over seeds at each step. Seeds evaluate at the same steps but not at
    the same seconds, so banding by rounded seconds would mix one seed here, one there."""
    m = curves[curves.metric == metric].sort_values("step").copy()
    if cumulative:
        m["value"] = m.groupby("run_id").value.cumsum()
    x = (m.merge(runs, on="run_id").groupby(["label", "step"]).value.mean()
         .rename(metric).reset_index())
    out = bands.merge(x, on=["label", "step"], how="left")
    out[metric] = out[metric].fillna(0.0)  # the evaluation before the first step
    return out


def build_figures(summary, curves, results, table, floor, *, baseline: str | None = None):
    """{name: (caption, figure)} of the report's figures. ``table``: one row per label
    (final_seq_rep_4, its _low/_high, ...). ``baseline``: the label drawn on top in black in every comparison
    (None: no label is singled out)."""
    runs = summary[["run_id", "label"]]
    figs = {}
    val = plots.seed_bands(curves, runs, "val_ce")
    ax = plots.convergence(val, floor=floor, baseline=baseline)
    add_teacher_line(ax, teacher_info(results))  # a model teacher's val CE, dashed
    figs["convergence"] = ("Validation CE vs training step (seed mean, min–max band)", ax.figure)
    if tokens_per_step_vary(curves):
        bands = _against(curves, runs, val, "tokens", cumulative=False)
        figs["convergence_tokens"] = (
            "Validation CE vs training tokens (runs differ in tokens per step)",
            plots.convergence(bands, x="tokens", floor=floor, baseline=baseline).figure)
    if (curves.metric == "wall_s").any():
        bands = _against(curves, runs, val, "wall_s", cumulative=True).rename(
            columns={"wall_s": "train_s"})
        figs["convergence_wall"] = (
            "Validation CE vs training time (seed mean; evaluations excluded)",
            plots.convergence(bands, x="train_s", floor=floor, baseline=baseline).figure)
    train = plots.seed_bands(curves, runs, "train_loss", smooth=0.05)
    figs["train_loss"] = ("Training loss, one panel per loss (EMA 0.05). Y axes are not shared: "
                          "each loss has its own units, so values are not comparable across "
                          "panels",
                          plots.small_multiples(train, ylabel="training loss (own units)",
                                                baseline=baseline))
    gn = plots.seed_bands(curves, runs, "grad_norm", smooth=0.05)
    figs["grad_norm"] = ("Global gradient norm before clipping (EMA 0.05)",
                         plots.convergence(gn, ylabel="gradient norm (before clipping)",
                                           baseline=baseline).figure)
    if (curves.metric == "grad_cos_ce").any():
        cos = plots.seed_bands(curves, runs, "grad_cos_ce")
        figs["grad_cos"] = ("Cosine between the loss gradient and the CE gradient of one batch",
                            plots.convergence(cos, ylabel="cosine(loss gradient, CE gradient)",
                                              log_y=False, baseline=baseline).figure)
    if (curves.metric == "clip_rate").any():
        clip = plots.seed_bands(curves, runs, "clip_rate")
        figs["clip_rate"] = ("Fraction of steps so far whose gradient norm was clipped",
                             plots.convergence(clip, ylabel="fraction of steps clipped",
                                               log_y=False, baseline=baseline).figure)
    layer = curves[curves.metric.str.startswith("grad_norm_")].merge(runs, on="run_id")
    if len(layer):
        matrix = layer.assign(group=layer.metric.str.removeprefix("grad_norm_")).pivot_table(
            index="label", columns="group", values="value", aggfunc="mean")
        order = sorted(matrix.columns, key=_layer_order)
        matrix = matrix[order]
        figs["layer_heatmap"] = ("Per-layer gradient norm (mean over evaluations and seeds)",
                                 plots.heatmap(matrix, title="per-layer gradient norm").figure)
    rel = _pooled_reliability(results)
    if rel:
        figs["reliability"] = ("Reliability diagrams (final evaluation, seeds pooled; "
                               "axes shared)", plots.reliability_grid(rel, baseline=baseline))
    # a metric no label has gets no bar (and no legend entry)
    rep_cols = [c for c in REPETITION if c in table and table[c].notna().any()]
    if rep_cols:
        figs["repetition"] = ("Repetition (Welleck et al. 2020): lower is less repetitive; "
                              "n/a: the loss has no value for that metric",
                              plots.grouped_bars(table, rep_cols, title="repetition",
                                                 names=REPETITION,
                                                 ylabel="fraction repeated").figure)
    return figs


def _layer_order(group: str) -> tuple:
    """embed, block0, block1, ..., head; group names come from result.json (data), so a
    name like 'blockX' sorts after the numbered blocks instead of failing the report."""
    number = group[5:]
    numbered = group.startswith("block") and number.isascii() and number.isdigit()
    return (group != "embed", group == "head", not numbered, int(number) if numbered else 0,
            group)


def _pooled_reliability(results) -> dict[str, pd.DataFrame]:
    pooled = {}
    for r in results:
        if r["status"] != "done" or not r["evals"] or "reliability" not in r["evals"][-1]:
            continue
        label = label_of(r["config"])
        t = pd.DataFrame(r["evals"][-1]["reliability"],
                         columns=["bin_lower", "bin_upper", "count", "confidence", "accuracy"])
        t["hits"] = (t.accuracy.fillna(0) * t["count"])
        pooled[label] = t if label not in pooled else pooled[label].assign(
            count=pooled[label]["count"] + t["count"], hits=pooled[label].hits + t.hits)
    for t in pooled.values():
        t["accuracy"] = t.hits / t["count"].where(t["count"] > 0)
    return pooled
