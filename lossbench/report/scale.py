"""The Scale section of a report: does the ranking hold as the model grows?

Reads the ladder's score table (Evidence.scale, scores.build_scale_scores) and words what
lossbench.analysis.fits computes: the primary metric against parameters and training FLOPs,
a saturating power law per loss, ranks per size and their agreement (Kendall's tau),
crossovers of the fitted curves, and the paired tests of the statistics section at every
size."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import ticker

from lossbench.analysis.fits import Fit, crossovers, fit_ladder, rank_agreement, ranks
from lossbench.analysis.scores import ScoreTable
from lossbench.analysis.stats import MIN_SEEDS_FOR_T, interval
from lossbench.core.escaping import plain
from lossbench.core.metrics import PRIMARY_COLUMNS, metric
from lossbench.report.document import Document, fmt
from lossbench.report.plots import BASELINE_STYLE, MARKERS, _colors, _legend, plt
from lossbench.report.tables import comparisons
from lossbench.report.verdict import WORD_TEXT, signed, spread_text
from lossbench.suite.scale import MIN_SIZES_FOR_FIT, size_label

N_BOOT = 500


def scope_note(scale: ScoreTable) -> str:
    sizes = scale.sizes
    return (f"This suite is a scale ladder of {len(sizes)} model sizes ({', '.join(sizes)} "
            f"parameters): every section but Scale reports its largest size, {sizes[-1]}; the "
            f"Scale section compares the sizes.")


def per_seed(scale: ScoreTable, column: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """(seeds, label -> values [sizes x seeds]); NaN for a run that did not finish (or has
    not yet: a sweep in progress)."""
    runs = scale.runs
    seeds = sorted(set(runs.seed.astype(int)))
    out = {}
    for label in scale.labels:
        v = np.full((len(scale.sizes), len(seeds)), np.nan)
        g = runs[runs.label == label]
        for r in g.itertuples():
            v[scale.sizes.index(r.size), seeds.index(int(r.seed))] = float(getattr(r, column))
        out[label] = v
    return seeds, out


def size_means(scale: ScoreTable, column: str) -> dict[str, dict[str, float]]:
    """size -> label -> mean over seeds; NaN when any seed did not finish (ranks last)."""
    _, values = per_seed(scale, column)
    sign = 1.0 if metric(column).lower_is_better is not False else -1.0
    return {s: {label: sign * float(v[i].mean()) for label, v in values.items()}
            for i, s in enumerate(scale.sizes)}


def scale_tables(scale: ScoreTable, column: str, fits: dict[str, Fit]) -> dict[str, pd.DataFrame]:
    """The section's numbers as CSVs: per loss and size, and per loss the fit."""
    means = size_means(scale, column)
    n = scale.runs.groupby("size").n_params.first()
    rows = []
    for s in scale.sizes:
        rank = ranks(means[s])
        for label in scale.labels:
            g = scale.runs[(scale.runs["size"] == s) & (scale.runs.label == label)]
            ci = interval(g[column].astype(float))
            rows.append({"size": s, "n_params": n[s], "label": label, "mean": ci.mean,
                         "low": ci.low, "high": ci.high, "kind": ci.kind,
                         "seeds": len(g), "finished": ci.n, "rank": rank[label],
                         "train_flops": float(g.train_flops.mean())})
    fit_rows = [{"label": k, "sizes_used": f.sizes_used, "refused": f.refused,
                 **({p: getattr(f.law, p) for p in ("E", "A", "alpha")} if f.law else {}),
                 **{f"{p}_low": v for p, v in f.low.items()},
                 **{f"{p}_high": v for p, v in f.high.items()},
                 "interval": f.kind if f.law else "", "at_bound": ",".join(f.at_bound)}
                for k, f in fits.items()]
    return {"scale": pd.DataFrame(rows), "scale_fits": pd.DataFrame(fit_rows)}


def section(doc: Document, ev) -> None:
    scale, m = ev.scale, ev.primary
    column, sizes = m.column, scale.sizes
    n = scale.runs.groupby("size").n_params.first()
    doc.section("Scale")
    doc.text(f"Does the ranking hold as the model grows? The same losses, seeds, batches and "
             f"evaluation tokens at {len(sizes)} model sizes. Parameters: the model's "
             f"non-embedding count (blocks, final LayerNorm and the V × C head; the N of the "
             f"FLOPs formula); training FLOPs: FLOPs per token (6N + 12·L·C·T, PaLM appendix "
             f"B) × training tokens. Data budget: {ev.meta['scale'].get('budget', '?')}. "
             f"Tuning: {_tuning(ev.meta, sizes[0])}.")
    doc.table(["size", "layers", "heads", "width", "parameters", "requested", "steps",
               "training FLOPs per run"],
              [[s["label"], s["n_layer"], s["n_head"], s["n_embd"], f"{s['n_params']:,}",
                f"{s['requested']:.3g}" if s.get("requested") else "–", s["steps"],
                f"{scale.runs[scale.runs['size'] == s['label']].train_flops.mean():.3g}"]
               for s in ev.meta["scale"]["sizes"] if s["label"] in sizes])
    fit_ok = m.lower_is_better is True
    seeds, values = per_seed(scale, column)
    fits = fit_ladder(n[sizes].to_numpy(), values, n_boot=N_BOOT) if fit_ok else {}
    for name, table in scale_tables(scale, column, fits).items():
        doc.csv(name, table)
    means = size_means(scale, column)
    _means_table(doc, scale, column, means)
    doc.figure("scale", f"{m.header} against parameters and against training FLOPs, per loss "
               f"(lines: seed means; bands: min–max over seeds; dotted: the fitted power law)",
               scale_figure(scale, column, fits, ev.baseline))
    others = [c for c in PRIMARY_COLUMNS if c != column and c in scale.runs
              and scale.runs[c].notna().any()]
    if others:
        doc.figure("scale_metrics", "The other headline metrics against parameters and "
                   "training FLOPs (seed means, min–max bands)",
                   metrics_figure(scale, others, ev.baseline))
    if not fit_ok:
        doc.text(f"No power law is fitted: {m.header} is not a lower-is-better loss (the "
                 f"fit is for losses that fall with size).")
    else:
        _fits(doc, fits, len(sizes), len(seeds))
        _crossovers(doc, crossovers(fits, float(n[sizes].min()), float(n[sizes].max())), fits)
    _agreement(doc, means, sizes)
    _paired(doc, scale, column)


def _tuning(meta: dict, smallest: str) -> str:
    if "tune" in meta:
        return (f"[tune] chose each loss's setting at the smallest size ({smallest}); the "
                f"same setting runs at every size")
    return "none: every size shares the suite's hyperparameters"


def _means_table(doc: Document, scale: ScoreTable, column: str, means) -> None:
    doc.text(f"{metric(column).header} per size: mean over seeds [min, max] (the range below "
             f"{MIN_SEEDS_FOR_T} seeds) (rank, 1 = best; a loss with a diverged or "
             f"failed seed ranks last there):")
    rows = []
    for label in scale.labels:
        row = [label]
        for s in scale.sizes:
            g = scale.runs[(scale.runs["size"] == s) & (scale.runs.label == label)]
            ci = interval(g[column].astype(float))
            bad = int((g.status != "done").sum())
            text = fmt(ci.mean) + (f" [{fmt(ci.low)}, {fmt(ci.high)}]" if ci.n >= 2 else "")
            text += f" ({fmt(ranks(means[s])[label], 2)})"
            row.append(text + (f", {bad} not done" if bad else ""))
        rows.append(row)
    doc.table(["loss", *scale.sizes], rows)


def _fits(doc: Document, fits: dict[str, Fit], n_sizes: int, n_seeds: int) -> None:
    doc.text(f"Fitted L(N) = E + A·N^(−α) per loss (least squares on the seed means, "
             f"scipy.optimize.curve_fit; E ≥ 0, A ≥ 0, 0 ≤ α ≤ 4), with intervals from "
             f"{N_BOOT} bootstrap replicates over seeds (each size's seeds redrawn, the same "
             f"draw for every loss). E is the loss this family of models would reach with "
             f"unlimited parameters at this data budget; α how fast it gets there.")
    if n_sizes < MIN_SIZES_FOR_FIT:
        doc.text(f"No exponent is reported: {n_sizes} sizes were measured, and three "
                 f"parameters (E, A, α) need at least {MIN_SIZES_FOR_FIT} sizes to be more "
                 f"than a curve drawn through the points.")
        return
    if n_sizes == MIN_SIZES_FOR_FIT:
        doc.text(f"With {n_sizes} sizes each fit has one degree of freedom: read E and α "
                 f"as rough.")
    if n_seeds < 5:
        doc.text(f"{n_seeds} seeds per size: the intervals are rough bootstrap intervals, "
                 f"not 95% confidence intervals.")
    rows = []
    for label, f in fits.items():
        if f.law is None:
            rows.append([label, f.sizes_used, "–", "–", "–", f"no fit: {f.refused}"])
            continue
        note = (f"at a bound: {', '.join(f.at_bound)} (the data do not show a saturating "
                f"decrease there)" if f.at_bound else "")
        rows.append([label, f.sizes_used] + [f"{fmt(getattr(f.law, p))} [{fmt(f.low[p])}, "
                                              f"{fmt(f.high[p])}]" for p in ("E", "A", "alpha")]
                    + [note])
    doc.table(["loss", "sizes fitted", "E (nats/token)", "A", "α", "note"], rows)


def _crossovers(doc: Document, found, fits: dict[str, Fit]) -> None:
    fitted = sum(f.law is not None for f in fits.values())
    if fitted < 2:
        doc.text(f"No crossovers: {'only one loss has' if fitted else 'no loss has'} a fitted "
                 f"curve, and a crossing needs two.")
        return
    if not found:
        doc.text("No two fitted curves cross between a hundredth of the smallest size and a "
                 "hundred times the largest.")
        return
    doc.text("Where two fitted curves cross (searched from a hundredth of the smallest size "
             "to a hundred times the largest); the interval is over the bootstrap replicates "
             "whose curves cross, 'replicates crossing' the share of all replicates that do. "
             "A crossing outside the measured sizes is an extrapolation of the fits, not a "
             "measurement.")
    bounded = {k for k, f in fits.items() if f.at_bound}
    doc.table(["losses", "crossover (parameters)", "interval", "replicates crossing",
               "lower above it", "where"],
              [[f"{c.a} × {c.b}", size_label(c.n),
                f"[{size_label(c.low)}, {size_label(c.high)}]" if math.isfinite(c.low) else "–",
                f"{c.share:.0%}", c.better_above,
                ("extrapolation" if c.extrapolated else "within the measured sizes")
                + ("; a fit at a bound: not a law the data support"
                   if {c.a, c.b} & bounded else "")]
               for c in found])


def _predicts(tau: float) -> str:
    """The verb the sentence can honestly use: τ = 1 is the same order, 0 < τ < 1 part of
    it, τ <= 0 none of it (τ = −1 is the order reversed)."""
    if tau >= 1 - 1e-12:
        return "predicts"
    return "partly predicts" if tau > 0 else "does not predict"


def _agreement(doc: Document, means, sizes: list[str]) -> None:
    if len(sizes) < 2:
        return
    first = rank_agreement(means, sizes[0], sizes[-1])
    if math.isfinite(first.tau):
        text = (f"The ranking at {sizes[0]} params {_predicts(first.tau)} the ranking at "
                f"{sizes[-1]}")
    else:
        text = (f"The rankings at {sizes[0]} and {sizes[-1]} params cannot be compared (fewer "
                f"than two losses, or every loss tied at one of the sizes)")
    text += (f": τ = {fmt(first.tau, 3)} (Kendall, p = {fmt(first.p_value, 3)}, "
             f"{first.n} losses")
    if first.n > 1 and first.min_p > 0.05:
        text += f"; with {first.n} losses no τ can reach p < 0.05, the smallest p is " \
                f"{fmt(first.min_p, 2)}"
    doc.text(text + ").")
    r0 = ranks(means[sizes[0]])
    moved = []
    for s in sizes[1:]:
        r = ranks(means[s])
        changed = [f"{k} {fmt(r0[k], 2)} → {fmt(r[k], 2)}" for k in r0 if r0[k] != r.get(k)]
        if changed:
            moved.append(f"at {s}: {', '.join(changed)}")
    doc.text(f"Where the ranking does not hold (ranks that differ from those at {sizes[0]}): "
             + ("; ".join(moved) if moved else "nowhere: every loss keeps its rank at every "
                                                 "size") + ".")
    pairs = [(a, b) for a, b in zip(sizes, sizes[1:])] + \
            [(s, sizes[-1]) for s in sizes[:-2]]
    doc.table(["sizes", "Kendall τ", "p", "losses"],
              [[f"{a} → {b}", fmt(r.tau, 3), fmt(r.p_value, 3), r.n]
               for a, b in pairs for r in [rank_agreement(means, a, b)]])


def _paired(doc: Document, scale: ScoreTable, column: str) -> None:
    doc.text(f"Paired tests at each size, by the report's procedure (as in the Statistics "
             f"section): each loss against {scale.baseline}, seed by seed, paired t-test, "
             f"Holm-corrected across the losses of that size.")
    rows = []
    for s in scale.sizes:
        for c in comparisons(scale.at_size(s), column).itertuples():
            rows.append([s, c.label, c.n_pairs, signed(c.mean_difference),
                         spread_text(c.diff_low, c.diff_high, c.diff_kind) or "–",
                         fmt(c.p_value, 3), fmt(c.p_holm, 3), WORD_TEXT.get(c.word, c.word),
                         fmt(c.p_better, 2)])
    doc.table(["size", "loss", "seeds paired", f"Δ {metric(column).header}", "spread of Δ",
               "p", "p (Holm)", "verdict", "P(better), paired"], rows)


def _bands(scale: ScoreTable, column: str, x: str) -> pd.DataFrame:
    return (scale.runs.groupby(["label", "size"], sort=False)
            .agg(x=(x, "mean"), mean=(column, "mean"), low=(column, "min"),
                 high=(column, "max")).reset_index())


def _two_and_five(v, _pos=None) -> str:
    """Minor ticks: 200k and 500k between decades are labelled, the rest left blank."""
    mantissa = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6)
    return ticker.EngFormatter(sep="")(v) if mantissa in (2.0, 5.0) else ""


def _draw(ax, scale: ScoreTable, column: str, x: str, baseline: str,
          fits: dict[str, Fit] | None = None):
    colors, handles = _colors(scale.labels, baseline), []
    bands = _bands(scale, column, x)
    for i, label in enumerate(scale.labels):
        b = bands[bands.label == label].sort_values("x")
        style = dict(BASELINE_STYLE) if label == baseline else dict(color=colors[label], lw=1.6)
        (line,) = ax.plot(b.x, b["mean"], marker=MARKERS[i % len(MARKERS)], ms=4,
                          label=plain(label), **style)
        handles.append(line)
        ax.fill_between(b.x, b.low, b.high, color=colors[label], alpha=0.15, lw=0)
        fit = (fits or {}).get(label)
        if fit is not None and fit.law is not None:
            grid = np.geomspace(b.x.min() / 1.5, b.x.max() * 1.5, 100)
            ax.plot(grid, fit.law(grid), color=colors[label], lw=0.9, ls=":", alpha=0.9)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))  # 100k, 1M, 2T: plain numbers
    ax.xaxis.set_minor_formatter(ticker.FuncFormatter(_two_and_five))
    ax.grid(True, which="both", alpha=0.3)
    return handles


def scale_figure(scale: ScoreTable, column: str, fits: dict[str, Fit], baseline: str):
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.0), constrained_layout=True)
    handles = _draw(a, scale, column, "n_params", baseline, fits)
    _draw(b, scale, column, "train_flops", baseline)
    a.set_xlabel("parameters (non-embedding)")
    b.set_xlabel("training FLOPs")
    for ax in (a, b):
        ax.set_ylabel(metric(column).heading())
    _legend(b, handles)
    return fig


def metrics_figure(scale: ScoreTable, columns: list[str], baseline: str):
    """One column per metric: against parameters (top) and training FLOPs (bottom)."""
    fig, axes = plt.subplots(2, len(columns), figsize=(4.2 * len(columns) + 1.5, 6.6),
                             constrained_layout=True, squeeze=False)
    handles = []
    for row, (x, xlabel) in enumerate((("n_params", "parameters (non-embedding)"),
                                       ("train_flops", "training FLOPs"))):
        for ax, c in zip(axes[row], columns):
            handles = _draw(ax, scale, c, x, baseline)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(metric(c).heading())
    _legend(axes[0][-1], handles)
    return fig

