"""The report's figures, drawn from computed tables (the drawing itself is in plots)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from lossbench.report import plots
from lossbench.results import label_of


def build_figures(summary, curves, results, h, floor):
    runs = summary[["run_id", "label"]]
    figs = {}
    val = plots.seed_bands(curves, runs, "val_ce")
    figs["convergence"] = ("Validation CE vs step (seed mean, min–max band)",
                           plots.convergence(val, floor=floor).figure)
    tokens = curves[curves.metric == "tokens"][["run_id", "step", "value"]].rename(
        columns={"value": "tokens"})
    val_tok = curves[curves.metric == "val_ce"].merge(tokens, on=["run_id", "step"], how="left")
    val_tok["tokens"] = val_tok.tokens.fillna(0.0)
    bands = plots.seed_bands(val_tok, runs, "val_ce", x="tokens")
    figs["convergence_tokens"] = ("Validation CE vs training tokens",
                                  plots.convergence(bands, x="tokens", floor=floor).figure)
    wall = curves[curves.metric == "wall_s"].sort_values("step").copy()
    wall["train_s"] = wall.groupby("run_id").value.cumsum()  # training time, evals excluded
    val_wall = curves[curves.metric == "val_ce"].merge(
        wall[["run_id", "step", "train_s"]], on=["run_id", "step"], how="left")
    val_wall["train_s"] = val_wall.train_s.fillna(0.0).round(1)
    bands = plots.seed_bands(val_wall, runs, "val_ce", x="train_s")
    figs["convergence_wall"] = ("Validation CE vs training wall time (s, evaluations excluded)",
                                plots.convergence(bands, x="train_s", floor=floor).figure)
    train = plots.seed_bands(curves, runs, "train_loss", smooth=0.05)
    figs["train_loss"] = ("Training loss in each loss's own units (EMA 0.05)",
                          plots.small_multiples(train, ylabel="training loss"))
    gn = plots.seed_bands(curves, runs, "grad_norm", smooth=0.05)
    figs["grad_norm"] = ("Global gradient norm before clipping (EMA 0.05)",
                         plots.convergence(gn, ylabel="grad norm").figure)
    if (curves.metric == "grad_cos_ce").any():
        cos = plots.seed_bands(curves, runs, "grad_cos_ce")
        figs["grad_cos"] = ("Cosine between the loss gradient and the CE gradient of the same batch",
                            plots.convergence(cos, ylabel="cosine", log_y=False).figure)
    if (curves.metric == "clip_rate").any():
        clip = plots.seed_bands(curves, runs, "clip_rate")
        figs["clip_rate"] = ("Fraction of steps so far whose gradient norm was clipped",
                             plots.convergence(clip, ylabel="clip rate", log_y=False).figure)
    layer = curves[curves.metric.str.startswith("grad_norm_")].merge(runs, on="run_id")
    if len(layer):
        matrix = layer.assign(group=layer.metric.str.removeprefix("grad_norm_")).pivot_table(
            index="label", columns="group", values="value", aggfunc="mean")
        order = sorted(matrix.columns, key=_layer_order)
        matrix = matrix[order]
        figs["layer_heatmap"] = ("Per-layer gradient norm (mean over evaluations and seeds)",
                                 plots.heatmap(matrix, title="per-layer grad norm").figure)
    rel = _pooled_reliability(results)
    if rel:
        ncols = min(4, len(rel))
        nrows = -(-len(rel) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols, 2.8 * nrows),
                                 constrained_layout=True, squeeze=False)
        for ax, (label, table) in zip(axes.flat, rel.items()):
            plots.reliability(table, title=label, ax=ax)
        for ax in list(axes.flat)[len(rel):]:
            ax.axis("off")
        figs["reliability"] = ("Reliability diagrams (final evaluation, seeds pooled)", fig)
    rep_cols = [c for c in ("final_seq_rep_4", "final_rep", "final_wrep") if c in h.table]
    if rep_cols:
        figs["repetition"] = ("Repetition (Welleck et al. 2020): lower is less repetitive",
                              plots.grouped_bars(h.table, rep_cols, title="repetition").figure)
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
