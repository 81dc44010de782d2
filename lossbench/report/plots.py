"""Report figures. Every function takes computed tables and an optional ``ax``; nothing
here computes a statistic that a table does not already hold (rliable style).

Labels, metric and parameter names are data: every string drawn goes through
``plain``, so ``$`` in a label is drawn as ``$`` and never parsed as mathtext. Tick
labels are plain numbers too (no ``2×10⁰``): a reviewer reads values off the axes.

The baseline, when named, is drawn last-on-top in black and dashed: a loss whose curve
coincides with it shows through the gaps instead of hiding it (or being hidden)."""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")  # files only: reports must render on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402

from lossbench.analysis.stats import ema  # noqa: E402
from lossbench.core.escaping import plain  # noqa: E402

BASELINE_STYLE = dict(color="k", lw=2.2, ls=(0, (5, 2.5)), zorder=10)
LINE_ZORDER = 3  # every other curve: below the baseline, above bands and grid
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]
LINESTYLES = ["-", "--", "-.", ":"]
XLABELS = {"step": "training step", "tokens": "training tokens",
           "train_s": "training time (s)"}
# outside the axes on the right: a legend inside covers some loss's curve sooner or later
OUTSIDE = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def _ax(ax, figsize=(7.6, 4.0)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, constrained_layout=True)
    return ax


def _legend(ax, handles, **kwargs):
    """A legend of exactly ``handles``, with their labels given explicitly: matplotlib's
    automatic legend drops every artist whose label starts with '_', so a loss labelled
    '_x' would silently be missing from the key. Placed outside the axes by default."""
    kwargs = {"fontsize": 7, **OUTSIDE, **kwargs}
    return ax.legend(handles, [h.get_label() for h in handles], **kwargs)


def _colors(labels, baseline=None):
    """Black for the baseline; the palette goes to the others, so none of them is black."""
    others = [label for label in labels if label != baseline]
    cmap = plt.get_cmap("tab10" if len(others) <= 10 else "tab20")
    colors = {label: cmap(i % cmap.N) for i, label in enumerate(others)}
    if baseline in labels:
        colors[baseline] = BASELINE_STYLE["color"]
    return colors


def _name(label, baseline=None) -> str:
    return plain(label) + (" (baseline)" if label == baseline else "")


def _line_style(label, baseline, colors, lw=1.6) -> dict:
    if label == baseline:
        return dict(BASELINE_STYLE)
    return dict(color=colors[label], lw=lw, zorder=LINE_ZORDER)


def _baseline_first(labels, baseline):
    return sorted(labels, key=lambda label: label != baseline)  # stable: others keep order


def _number(v, _pos=None) -> str:
    return f"{v:g}"


def _log_minor(lo, hi):
    """Label 2 and 5 between decades when few decades show, else nothing (crowded)."""
    few = math.log10(hi / lo) < 2.5

    def label(v, _pos=None):
        mantissa = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6)
        return f"{v:g}" if few and mantissa in (2.0, 5.0) else ""
    return label


def set_y_scale(ax, values, *, log_ok: bool = True) -> str:
    """Log y only when the positive data spans a decade or more (max/min >= 10): over
    2.0-2.8 a log axis adds nothing but ``2×10⁰`` labels. Both scales get plain-number
    tick labels. Returns the scale set."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if log_ok and len(v) and v.min() > 0 and v.max() / v.min() >= 10:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(_number))
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(_log_minor(v.min(), v.max())))
        return "log"
    ax.set_yscale("linear")
    fmt = ticker.ScalarFormatter(useOffset=False, useMathText=False)
    fmt.set_scientific(False)  # no "1e-3" offset text in a corner, values on the ticks
    ax.yaxis.set_major_formatter(fmt)
    return "linear"


def _set_x_format(ax, x):
    if x == "tokens":  # 1.2M rather than 1200000 or 1.2e6 in a corner
        ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))


def seed_bands(curves: pd.DataFrame, runs: pd.DataFrame, metric: str, x: str = "step",
               smooth: float | None = None) -> pd.DataFrame:
    """Per label and x: mean, min and max over seeds of ``metric`` (optionally EMA-smoothed)."""
    data = curves[curves.metric == metric].merge(runs[["run_id", "label"]], on="run_id")
    if smooth:
        data = data.sort_values("step")
        data["value"] = data.groupby("run_id")["value"].transform(lambda v: ema(v.tolist(), smooth))
    return (data.groupby(["label", x]).value.agg(["mean", "min", "max"]).reset_index())


def convergence(bands: pd.DataFrame, *, x: str = "step",
                ylabel: str = "validation CE (nats/token)", xlabel: str | None = None,
                log_y: bool = True, floor: float | None = None, baseline: str | None = None,
                ax=None):
    """Seed mean with a min-max band per label. ``log_y``: a log axis is allowed (used only
    when the data spans a decade, see set_y_scale); False keeps it linear (cosines,
    rates). ``floor``: the entropy floor, drawn and named with its value."""
    ax = _ax(ax)
    labels = list(dict.fromkeys(bands.label))
    colors = _colors(labels, baseline)
    lines = {}
    for label in labels:
        g = bands[bands.label == label].sort_values(x)
        style = _line_style(label, baseline, colors)
        lines[label] = ax.plot(g[x], g["mean"], label=_name(label, baseline), **style)[0]
        ax.fill_between(g[x], g["min"], g["max"], color=colors[label],
                        alpha=0.1 if label == baseline else 0.15, lw=0, zorder=1)
    handles = [lines[label] for label in _baseline_first(labels, baseline)]
    values = [bands["min"], bands["max"]]
    if floor is not None and math.isfinite(floor):
        handles.append(ax.axhline(floor, color="0.35", ls=":", lw=1.2, zorder=2,
                                  label=f"entropy floor {floor:.3f} nats/token"))
        values.append([floor])
    set_y_scale(ax, np.concatenate([np.asarray(v, dtype=float) for v in values]),
                log_ok=log_y)
    _set_x_format(ax, x)
    ax.set_xlabel(plain(xlabel or XLABELS.get(x, x)))
    ax.set_ylabel(plain(ylabel))
    ax.grid(alpha=0.3, which="both")
    _legend(ax, handles, ncol=1 if len(handles) <= 16 else 2)
    return ax


def small_multiples(bands: pd.DataFrame, *, ylabel: str, ncols: int = 4, sharey: bool = False,
                    baseline: str | None = None, log_y: bool = True):
    """One panel per label. ``sharey``: one y axis for all panels, for a metric measured in
    the same units by every loss; leave it False for training losses (each loss has its
    own units, so their values are not comparable)."""
    labels = _baseline_first(list(dict.fromkeys(bands.label)), baseline)
    ncols = max(1, min(ncols, len(labels)))
    nrows = max(1, math.ceil(len(labels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows),
                             constrained_layout=True, squeeze=False, sharex=True,
                             sharey=sharey)
    colors = _colors(labels, baseline)
    for ax, label in zip(axes.flat, labels):
        g = bands[bands.label == label].sort_values("step")
        ax.plot(g.step, g["mean"], **_line_style(label, baseline, colors, lw=1.2))
        ax.fill_between(g.step, g["min"], g["max"], color=colors[label], alpha=0.2, lw=0)
        ax.set_title(_name(label, baseline), fontsize=9)
        ax.grid(alpha=0.3, which="both")
        if not sharey:
            set_y_scale(ax, pd.concat([g["min"], g["max"]]), log_ok=log_y)
    if sharey and labels:
        set_y_scale(axes.flat[0], pd.concat([bands["min"], bands["max"]]), log_ok=log_y)
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    fig.supxlabel("training step", fontsize=9)
    fig.supylabel(plain(ylabel), fontsize=9)
    return fig


def heatmap(matrix: pd.DataFrame, *, title: str, ax=None, fmt: str = "{:.2g}"):
    """Rows: labels, columns: groups (e.g. per-layer gradient norms)."""
    ax = _ax(ax, figsize=(1.1 * max(4, matrix.shape[1]) + 2, 0.45 * max(3, matrix.shape[0]) + 1))
    values = matrix.to_numpy(dtype=float)
    clipped = np.clip(values, 1e-12, None)
    logs = np.log10(clipped)
    # log colours (norms span decades) but a colour bar in the values themselves, not log10
    norm = matplotlib.colors.LogNorm(np.nanmin(clipped), np.nanmax(clipped))
    im = ax.imshow(clipped, aspect="auto", cmap="viridis", norm=norm)
    bright = logs > np.nanmin(logs) + 0.6 * (np.nanmax(logs) - np.nanmin(logs))  # yellow end
    ax.set_xticks(range(matrix.shape[1]), [plain(c) for c in matrix.columns], rotation=30,
                  ha="right", fontsize=8)
    ax.set_yticks(range(matrix.shape[0]), [plain(i) for i in matrix.index], fontsize=8)
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                color="k" if bright[i, j] else "w")
    ax.set_title(plain(title), fontsize=10)
    bar = ax.figure.colorbar(im, ax=ax, label="value (log colour scale)")
    bar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(_number))
    bar.ax.yaxis.set_minor_formatter(ticker.FuncFormatter(_log_minor(norm.vmin, norm.vmax)))
    return ax


def _no_data(ax, text="no data"):
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def reliability(table: pd.DataFrame, *, title: str, ax=None):
    """Reliability diagram from (bin_lower, bin_upper, count, confidence, accuracy) rows."""
    ax = _ax(ax, figsize=(3.0, 3.0))
    t = table[table["count"] > 0]
    width = (t.bin_upper - t.bin_lower).to_numpy()
    ax.bar(t.bin_lower, t.accuracy, width=width, align="edge", color="tab:blue", alpha=0.7,
           edgecolor="k", lw=0.3, label="accuracy in the bin")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    if not len(t):  # every bin empty (or no evaluation): say so instead of an empty frame
        _no_data(ax)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(plain(title), fontsize=9)
    return ax


def reliability_grid(tables: dict[str, pd.DataFrame], *, baseline: str | None = None,
                     ncols: int = 4):
    """Small multiples of reliability diagrams, one per label. Every panel measures the
    same thing on [0, 1] x [0, 1], so the axes are shared and labelled once."""
    labels = _baseline_first(list(tables), baseline)
    ncols = max(1, min(ncols, len(labels)))
    nrows = max(1, math.ceil(len(labels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols + 1.6, 2.6 * nrows),
                             constrained_layout=True, squeeze=False, sharex=True, sharey=True)
    for ax, label in zip(axes.flat, labels):
        reliability(tables[label], title=_name(label, baseline), ax=ax)
        ax.set_xlabel("")
        ax.set_ylabel("")
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    fig.supxlabel("confidence (top-1 probability)", fontsize=9)
    fig.supylabel("accuracy", fontsize=9)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right upper", fontsize=7)
    return fig


def grouped_bars(table: pd.DataFrame, columns: list[str], *, title: str,
                 names: dict[str, str] | None = None, ylabel: str | None = None, ax=None):
    """Bars of several metrics per label (with error bars from *_low/*_high when present).
    A metric no label has is left out; a missing value is marked "n/a" at its slot and a
    label without any value "no data", so an absent bar never reads as zero."""
    names = names or {}
    columns = [c for c in columns if c in table and table[c].notna().any()]
    ax = _ax(ax, figsize=(max(6.0, 0.9 * len(table)) + 1.6, 3.6))
    n = max(1, len(columns))
    width = 0.8 / n
    x = np.arange(len(table))
    has_any = table[columns].notna().any(axis=1).to_numpy()
    handles = []
    for i, col in enumerate(columns):
        y = table[col].to_numpy(dtype=float)
        err = None
        if f"{col}_low" in table and f"{col}_high" in table:
            low, high = table[f"{col}_low"].to_numpy(float), table[f"{col}_high"].to_numpy(float)
            err = np.nan_to_num(np.vstack([y - low, high - y]), nan=0.0).clip(min=0)
        pos = x + (i - (n - 1) / 2) * width
        ok = np.isfinite(y)  # no bar (and no error cap at 0) for a value the label lacks
        handles.append(ax.bar(pos[ok], y[ok], width, yerr=None if err is None else err[:, ok],
                              capsize=2, label=plain(names.get(col, col)),
                              color=plt.get_cmap("tab10")(i % 10)))
        for p in pos[~ok & has_any]:
            ax.text(p, 0, "n/a", ha="center", va="bottom", fontsize=6, rotation=90,
                    color="0.4")
    for xi in x[~has_any] if len(columns) else []:
        ax.text(xi, 0, "no data", ha="center", va="bottom", fontsize=7, color="0.4")
    if not len(columns):
        _no_data(ax)
    ax.set_xticks(x, [plain(label) for label in table.label], rotation=30, ha="right",
                  fontsize=8)
    ax.set_title(plain(title), fontsize=10)
    if ylabel:
        ax.set_ylabel(plain(ylabel))
    set_y_scale(ax, [], log_ok=False)  # plain tick labels
    if handles:
        _legend(ax, handles)
    ax.grid(alpha=0.3, axis="y")
    return ax


def sensitivity(table: pd.DataFrame, *, param: str, metric: str, chosen: dict[str, dict],
                baseline: str | None = None, ax=None):  # metric: its name, e.g. "val CE"
    """Selection metric vs one tuned hyperparameter per loss (DeepOBS style).

    ``table``: the tuning table (label, param, score, status, other tuned params);
    rows whose other tuned params differ from the chosen setting are left out, so
    each line is a slice through the winner. Stars: the chosen settings; crosses at
    the top: settings with a diverged or failed seed.
    """
    ax = _ax(ax)
    colors = _colors(list(dict.fromkeys(table.label)), baseline)
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
        style = _line_style(label, baseline, colors, lw=1.4)
        handles += ax.plot(ok[param], ok.score, marker="o", ms=3, label=_name(label, baseline),
                           **style)
        bad = g[g.score.isna()]
        if len(bad):
            ax.scatter(bad[param], [top] * len(bad), marker="x", color=colors[label], s=30)
        if param in setting:
            best = ok[ok[param] == setting[param]]
            ax.scatter(best[param], best.score, marker="*", s=160, color=colors[label],
                       edgecolor="k", lw=0.6, zorder=11)
    values = table[param].dropna().astype(float)
    if len(values) and values.min() > 0 and values.max() / values.min() >= 10:
        ax.set_xscale("log")
        grid = sorted(values.unique())
        if len(grid) <= 12:  # label the grid points themselves, not log decades
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xticks(grid, [f"{v:.3g}" for v in grid], fontsize=8)
    set_y_scale(ax, finite, log_ok=False)
    ax.set_xlabel(plain(param))
    ax.set_ylabel(plain(f"final {metric} (tuning runs)"))
    ax.grid(alpha=0.3, which="both")
    _legend(ax, handles, title="★ chosen\n× diverged/failed", title_fontsize=7)
    return ax


PROFILE_OFFSET = 0.02  # most a line is moved up or down in the drawing (rho units)
PROFILE_MARKS = 6  # staggered markers per line
PROFILE_NOTE = (f"Lines are drawn shifted vertically by up to ±{PROFILE_OFFSET:g} so that "
                f"coinciding profiles stay visible; the values are those in profiles.csv.")


def performance_profiles(profiles: pd.DataFrame, *, baseline: str | None = None,
                         bands: pd.DataFrame | None = None, ax=None):
    """rho(tau) step curves, one per loss (``profiles``: label, tau, rho), with a shaded
    bootstrap band per loss when ``bands`` (label, tau, rho_low, rho_high) is given.

    Profiles often coincide (two losses fastest on the same workloads), so each line gets
    its own marker and line style and is drawn shifted by a small vertical offset (at most
    ``PROFILE_OFFSET``). Only the drawing is shifted: the data are unchanged, and the
    figure says so (``PROFILE_NOTE``, also for the caption)."""
    ax = _ax(ax)
    labels = list(dict.fromkeys(profiles.label))
    colors = _colors(labels, baseline)
    n = len(labels)
    lines = {}
    lo, hi = float(profiles.tau.min()), float(profiles.tau.max())
    for i, label in enumerate(labels):
        g = profiles[profiles.label == label].sort_values("tau")
        offset = 0.0 if n < 2 else PROFILE_OFFSET * (2 * i / (n - 1) - 1)
        style = _line_style(label, baseline, colors)
        if label != baseline:
            style["ls"] = LINESTYLES[i % len(LINESTYLES)]
        marks = dict(marker=MARKERS[i % len(MARKERS)], ms=5, mfc="none", mew=1.1)
        lines[label] = ax.step(g.tau, g.rho + offset, where="post", label=_name(label, baseline),
                               **marks, **style)[0]
        if bands is not None:
            b = bands[bands.label == label].sort_values("tau")
            ax.fill_between(b.tau, b.rho_low + offset, b.rho_high + offset, step="post",
                            color=style["color"], alpha=0.12, lw=0, zorder=1)
        if n > 1 and hi > lo:  # extra markers, staggered per label along tau, so that even
            # lines that coincide everywhere show every label's marker somewhere
            taus = lo + (np.arange(PROFILE_MARKS) + (i + 0.5) / n) * (hi - lo) / PROFILE_MARKS
            at = np.searchsorted(g.tau.to_numpy(), taus, side="right") - 1
            ax.plot(taus, g.rho.to_numpy()[at] + offset, ls="none", color=style["color"],
                    zorder=style["zorder"], **marks)
    ax.set_xlabel("τ (steps-to-target ratio to the best loss on a workload)")
    ax.set_ylabel("ρ(τ): fraction of workloads within τ")
    ax.set_ylim(-0.05, 1.05)
    set_y_scale(ax, [], log_ok=False)
    ax.grid(alpha=0.3)
    _legend(ax, [lines[label] for label in _baseline_first(labels, baseline)])
    if n > 1:  # on the figure itself: the PNG travels without its caption
        ax.set_title("\n".join(textwrap.wrap(PROFILE_NOTE, 110)), fontsize=7, color="0.35",
                     loc="left")
    return ax
