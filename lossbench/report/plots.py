"""Report figures. Every function takes computed tables and an optional ``ax``; nothing
here computes a statistic that a table does not already hold (rliable style).

Labels, metric and parameter names are data: every string drawn goes through
``plain``, so ``$`` in a label is drawn as ``$`` and never parsed as mathtext."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only: reports must render on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lossbench.escaping import plain  # noqa: E402
from lossbench.report.stats import ema  # noqa: E402


def _ax(ax, figsize=(6.4, 4.0)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, constrained_layout=True)
    return ax


def _legend(ax, handles, **kwargs):
    """A legend of exactly ``handles``, with their labels given explicitly: matplotlib's
    automatic legend drops every artist whose label starts with '_', so a loss labelled
    '_x' would silently be missing from the key."""
    return ax.legend(handles, [h.get_label() for h in handles], **kwargs)


def _colors(labels):
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def seed_bands(curves: pd.DataFrame, runs: pd.DataFrame, metric: str, x: str = "step",
               smooth: float | None = None) -> pd.DataFrame:
    """Per label and x: mean, min and max over seeds of ``metric`` (optionally EMA-smoothed)."""
    data = curves[curves.metric == metric].merge(runs[["run_id", "label"]], on="run_id")
    if smooth:
        data = data.sort_values("step")
        data["value"] = data.groupby("run_id")["value"].transform(lambda v: ema(v.tolist(), smooth))
    return (data.groupby(["label", x]).value.agg(["mean", "min", "max"]).reset_index())


def convergence(bands: pd.DataFrame, *, x: str = "step", ylabel: str = "val CE (nats/token)",
                log_y: bool = True, floor: float | None = None, ax=None):
    """Seed mean with a min-max band per label."""
    ax = _ax(ax)
    colors = _colors(list(dict.fromkeys(bands.label)))
    handles = []
    for label, g in bands.groupby("label", sort=False):
        handles += ax.plot(g[x], g["mean"], label=plain(label), color=colors[label], lw=1.6)
        ax.fill_between(g[x], g["min"], g["max"], color=colors[label], alpha=0.15, lw=0)
    if floor is not None and math.isfinite(floor):
        handles.append(ax.axhline(floor, color="k", ls=":", lw=1, label="entropy floor"))
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(plain(x))
    ax.set_ylabel(plain(ylabel))
    ax.grid(alpha=0.3, which="both")
    _legend(ax, handles, fontsize=7, ncol=2)
    return ax


def small_multiples(bands: pd.DataFrame, *, ylabel: str, ncols: int = 4):
    """One panel per label (losses have different units: no shared y axis)."""
    labels = list(dict.fromkeys(bands.label))
    nrows = max(1, math.ceil(len(labels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows),
                             constrained_layout=True, squeeze=False)
    colors = _colors(labels)
    for ax, label in zip(axes.flat, labels):
        g = bands[bands.label == label]
        ax.plot(g.step, g["mean"], color=colors[label], lw=1.2)
        ax.fill_between(g.step, g["min"], g["max"], color=colors[label], alpha=0.2, lw=0)
        ax.set_title(plain(label), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    fig.supylabel(plain(ylabel), fontsize=9)
    return fig


def heatmap(matrix: pd.DataFrame, *, title: str, ax=None, fmt: str = "{:.2g}"):
    """Rows: labels, columns: groups (e.g. per-layer gradient norms)."""
    ax = _ax(ax, figsize=(1.1 * max(4, matrix.shape[1]) + 2, 0.45 * max(3, matrix.shape[0]) + 1))
    values = matrix.to_numpy(dtype=float)
    logs = np.log10(np.clip(values, 1e-12, None))
    im = ax.imshow(logs, aspect="auto", cmap="viridis")
    bright = logs > np.nanmin(logs) + 0.6 * (np.nanmax(logs) - np.nanmin(logs))  # yellow end
    ax.set_xticks(range(matrix.shape[1]), [plain(c) for c in matrix.columns], rotation=30,
                  ha="right", fontsize=8)
    ax.set_yticks(range(matrix.shape[0]), [plain(i) for i in matrix.index], fontsize=8)
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                color="k" if bright[i, j] else "w")
    ax.set_title(plain(title), fontsize=10)
    ax.figure.colorbar(im, ax=ax, label="log10")
    return ax


def reliability(table: pd.DataFrame, *, title: str, ax=None):
    """Reliability diagram from (bin_lower, bin_upper, count, confidence, accuracy) rows."""
    ax = _ax(ax, figsize=(3.0, 3.0))
    t = table[table["count"] > 0]
    width = (t.bin_upper - t.bin_lower).to_numpy()
    ax.bar(t.bin_lower, t.accuracy, width=width, align="edge", color="tab:blue", alpha=0.7,
           edgecolor="k", lw=0.3, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(plain(title), fontsize=9)
    return ax


def grouped_bars(table: pd.DataFrame, columns: list[str], *, title: str, ax=None):
    """Bars of several metrics per label (with error bars from *_low/*_high when present)."""
    ax = _ax(ax, figsize=(max(6.0, 0.9 * len(table)), 3.6))
    n = len(columns)
    width = 0.8 / n
    x = np.arange(len(table))
    handles = []
    for i, col in enumerate(columns):
        y = table[col].to_numpy(dtype=float)
        err = None
        if f"{col}_low" in table:
            low, high = table[f"{col}_low"].to_numpy(float), table[f"{col}_high"].to_numpy(float)
            err = np.nan_to_num(np.vstack([y - low, high - y]), nan=0.0).clip(min=0)
        handles.append(ax.bar(x + (i - (n - 1) / 2) * width, y, width, yerr=err, capsize=2,
                              label=plain(col)))
    ax.set_xticks(x, [plain(label) for label in table.label], rotation=30, ha="right",
                  fontsize=8)
    ax.set_title(plain(title), fontsize=10)
    _legend(ax, handles, fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return ax


def sensitivity(table: pd.DataFrame, *, param: str, metric: str, chosen: dict[str, dict],
                ax=None):  # metric: its name for the axis, e.g. "val CE"
    """Selection metric vs one tuned hyperparameter per loss (DeepOBS style).

    ``table``: the tuning table (label, param, score, status, other tuned params);
    rows whose other tuned params differ from the chosen setting are left out, so
    each line is a slice through the winner. Stars: the chosen settings; crosses at
    the top: settings with a diverged or failed seed.
    """
    ax = _ax(ax)
    colors = _colors(list(dict.fromkeys(table.label)))
    finite = table.score[np.isfinite(table.score.astype(float))]
    top = float(finite.max()) if len(finite) else 1.0
    handles = []
    for label, g in table.groupby("label", sort=False):
        setting = chosen.get(label) or {}
        for other, value in setting.items():
            if other != param and other in g:
                g = g[g[other] == value]
        g = g.sort_values(param)
        ok = g[g.score.notna()]
        handles += ax.plot(ok[param], ok.score, marker="o", ms=3, lw=1.4, color=colors[label],
                           label=plain(label))
        bad = g[g.score.isna()]
        if len(bad):
            ax.scatter(bad[param], [top] * len(bad), marker="x", color=colors[label], s=30)
        if param in setting:
            best = ok[ok[param] == setting[param]]
            ax.scatter(best[param], best.score, marker="*", s=160, color=colors[label],
                       edgecolor="k", lw=0.6, zorder=3)
    values = table[param].dropna().astype(float)
    if len(values) and values.min() > 0 and values.max() / values.min() >= 10:
        ax.set_xscale("log")
        grid = sorted(values.unique())
        if len(grid) <= 12:  # label the grid points themselves, not log decades
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xticks(grid, [f"{v:.3g}" for v in grid], fontsize=8)
    ax.set_xlabel(plain(param))
    ax.set_ylabel(plain(f"final {metric} (tuning runs)"))
    ax.grid(alpha=0.3, which="both")
    _legend(ax, handles, fontsize=7, title="★ chosen\n× diverged/failed", title_fontsize=7,
            loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: lines stay visible
    return ax


def performance_profiles(profiles: pd.DataFrame, *, ax=None):
    """rho(tau) step curves, one per loss (``profiles``: label, tau, rho)."""
    ax = _ax(ax)
    colors = _colors(list(dict.fromkeys(profiles.label)))
    handles = []
    for label, g in profiles.groupby("label", sort=False):
        handles += ax.step(g.tau, g.rho, where="post", color=colors[label], label=plain(label),
                           lw=1.6)
    ax.set_xlabel("τ (steps-to-target ratio to the best loss on a workload)")
    ax.set_ylabel("ρ(τ): fraction of workloads within τ")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    _legend(ax, handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax
