"""Write a report: self-contained index.html, report.md with PNGs, and the CSV tables."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import platform
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from lossbench import __version__
from lossbench.checkpoint import atomic_write_bytes, atomic_write_text
from lossbench.report import plots
from lossbench.report.diagnostics import diagnose
from lossbench.report.tables import HEADLINE, baseline_comparisons, headline, rank_table
from lossbench.results import finished_results, load


def _fmt(v, digits=4) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}"
    return str(v)


def headline_rows(h) -> tuple[list[str], list[list[str]]]:
    cols = [(c, name) for c, name, _ in HEADLINE if c in h.table]
    header = ["loss", "runs"] + [name for _, name in cols]
    rows = []
    for _, r in h.table.iterrows():
        cells = [r.label, f"{r.runs}" + (f" ({r.diverged} diverged)" if r.diverged else "")
                 + (f" ({r.failed} failed)" if r.failed else "")]
        for c, _ in cols:
            text = _fmt(r[c])
            low, high = r.get(f"{c}_low"), r.get(f"{c}_high")
            if low is not None and not (isinstance(low, float) and math.isnan(low)):
                text += f" [{_fmt(low)}, {_fmt(high)}]"
            if h.best.get(c) == r.label:
                text = f"**{text}**"
            cells.append(text)
        rows.append(cells)
    return header, rows


def md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header, rows) -> str:
    def cell(c):
        c = html.escape(str(c))
        return f"<b>{c[2:-2]}</b>" if c.startswith("**") else c
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figures(summary, curves, results, h, floor):
    runs = summary[["run_id", "label"]]
    figs = {}
    val = plots.seed_bands(curves, runs, "val_ce")
    figs["convergence"] = ("Validation CE vs step (seed mean, min–max band)",
                           plots.convergence(val, floor=floor).figure)
    tokens = curves[curves.metric == "tokens"][["run_id", "step", "value"]].rename(
        columns={"value": "tokens"})
    val_tok = curves[curves.metric == "val_ce"].merge(tokens, on=["run_id", "step"], how="left")
    val_tok["tokens"] = val_tok.tokens.fillna(0.0)
    bands = (val_tok.merge(runs, on="run_id").groupby(["label", "tokens"]).value
             .agg(["mean", "min", "max"]).reset_index())
    figs["convergence_tokens"] = ("Validation CE vs training tokens",
                                  plots.convergence(bands, x="tokens", floor=floor).figure)
    wall = curves[curves.metric == "wall_s"].sort_values("step").copy()
    wall["train_s"] = wall.groupby("run_id").value.cumsum()  # training time, evals excluded
    val_wall = curves[curves.metric == "val_ce"].merge(
        wall[["run_id", "step", "train_s"]], on=["run_id", "step"], how="left")
    val_wall["train_s"] = val_wall.train_s.fillna(0.0).round(1)
    bands = (val_wall.merge(runs, on="run_id").groupby(["label", "train_s"]).value
             .agg(["mean", "min", "max"]).reset_index())
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
        order = sorted(matrix.columns, key=lambda g: (g != "embed", g == "head",
                                                      int(g[5:]) if g.startswith("block") else 0))
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


def _pooled_reliability(results) -> dict[str, pd.DataFrame]:
    pooled = {}
    for r in results:
        if r["status"] != "done" or not r["evals"] or "reliability" not in r["evals"][-1]:
            continue
        label = r["config"].get("label") or r["config"]["loss"]
        t = pd.DataFrame(r["evals"][-1]["reliability"],
                         columns=["bin_lower", "bin_upper", "count", "confidence", "accuracy"])
        t["hits"] = (t.accuracy.fillna(0) * t["count"])
        pooled[label] = t if label not in pooled else pooled[label].assign(
            count=pooled[label]["count"] + t["count"], hits=pooled[label].hits + t.hits)
    for t in pooled.values():
        t["accuracy"] = t.hits / t["count"].where(t["count"] > 0)
    return pooled


def _git_commit() -> str:
    """The commit of the lossbench checkout that made the report, if it is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return (out.stdout.strip() + (" (modified)" if dirty else "")) if out.returncode == 0 \
            else "not a git checkout"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def build_report(results_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Render the report of a results directory; returns the report folder."""
    results_dir = Path(results_dir)
    summary, curves = load(results_dir)
    suite = json.loads((results_dir / "suite.json").read_text())
    if "label" not in summary:
        summary["label"] = summary["loss"]
    out = Path(out_dir or f"reports/{suite['name']}-{dt.date.today().isoformat()}")
    out.mkdir(parents=True, exist_ok=True)
    results = finished_results(results_dir)
    baseline = suite.get("baseline", "cross_entropy")
    h = headline(summary, curves, baseline)
    comps, ranks = baseline_comparisons(summary, baseline), rank_table(summary)
    floor = None
    if "final_excess_ce" in summary and summary.final_excess_ce.notna().any():
        done = summary[summary.status == "done"]
        floor = float((done.final_val_ce - done.final_excess_ce).median())
    for name, table in (("headline", h.table), ("comparisons", comps), ("ranks", ranks)):
        atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))

    sections = []  # (title, markdown, html)
    hh, hr = headline_rows(h)
    intro = (f"Protocol: shared hyperparameters, not tuned. Baseline: {baseline}. Values are means "
             f"over seeds with 95% bootstrap intervals; best per column in bold. Steps to target: "
             f"first evaluation with val CE ≤ {_fmt(h.target)} (baseline × 1.05), ∞ if never.")
    sections.append(("Headline", intro + "\n\n" + md_table(hh, hr),
                     f"<p>{html.escape(intro)}</p>" + html_table(hh, hr)))
    ch = ["loss", "seeds paired", "Δ val CE vs baseline", "p", "p (Holm)", "test", "note"]
    cr = [[r.label, r.n_pairs, _fmt(r.mean_difference), _fmt(r.p_value, 3), _fmt(r.p_holm, 3),
           r.test, r.note] for r in comps.itertuples()]
    rr = [[r.label, _fmt(r.mean_rank, 3)] for r in ranks.itertuples()]
    stat_md = md_table(ch, cr) + "\n\nMean rank by final val CE (1 = best):\n\n" + \
        md_table(["loss", "mean rank"], rr)
    stat_html = html_table(ch, cr) + "<p>Mean rank by final val CE (1 = best):</p>" + \
        html_table(["loss", "mean rank"], rr)
    sections.append(("Statistics (paired by seed)", stat_md, stat_html))

    figs = _figures(summary, curves, results, h, floor)
    fig_md, fig_html = [], []
    for name, (caption, fig) in figs.items():
        data = _png(fig)
        atomic_write_bytes(out / f"{name}.png", data)
        fig_md.append(f"### {caption}\n\n![{caption}]({name}.png)")
        fig_html.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,"
                        f"{base64.b64encode(data).decode()}'><figcaption>{html.escape(caption)}"
                        f"</figcaption></figure>")
    sections.append(("Figures", "\n\n".join(fig_md), "".join(fig_html)))

    diag_rows = []
    for r in summary.itertuples():
        val = curves[(curves.run_id == r.run_id) & (curves.metric == "val_ce")]
        tr = curves[(curves.run_id == r.run_id) & (curves.metric == "train_ce")].sort_values("step")
        for note in diagnose(r.status, getattr(r, "diverged_step", math.nan), val, tr):
            diag_rows.append([r.label, r.seed, r.status, note])
    dh = ["loss", "seed", "status", "diagnosis"]
    sections.append(("Runs", md_table(dh, diag_rows), html_table(dh, diag_rows)))

    samples = [[r["config"].get("label") or r["config"]["loss"], s["prefix"], s["continuation"]]
               for r in results if r["status"] == "done" and r["config"]["seed"] == min(
                   x["config"]["seed"] for x in results)
               for s in (r["evals"][-1].get("samples", [])[:1] if r["evals"] else [])]
    sh = ["loss", "prefix", "greedy continuation"]
    sections.append(("Samples", md_table(sh, samples), html_table(sh, samples)))

    import torch
    env = [["suite", f"{suite['name']}: {suite.get('description', '')}"],
           ["python / torch", f"{platform.python_version()} / {torch.__version__}"],
           ["machine", f"{platform.machine()}, {platform.system()}"],
           ["lossbench", f"{__version__}, git {_git_commit()}"],
           ["runs", f"{len(summary)} ({', '.join(f'{k}: {v}' for k, v in summary.status.value_counts().items())})"],
           ["generated", dt.datetime.now().isoformat(timespec="seconds")]]
    sections.append(("Details", md_table(["", ""], env), html_table(["", ""], env)))

    title = f"lossbench report: {suite['name']}"
    md = f"# {title}\n\n" + "\n\n".join(f"## {t}\n\n{m}" for t, m, _ in sections) + "\n"
    atomic_write_text(out / "report.md", md)
    body = "".join(f"<h2>{html.escape(t)}</h2>{x}" for t, _, x in sections)
    atomic_write_text(out / "index.html", _HTML.format(title=html.escape(title), body=body))
    return out


_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}}table{{border-collapse:collapse;font-size:13px;margin:1em 0}}td,th{{border:1px solid
#ccc;padding:3px 7px;text-align:right;vertical-align:top}}td:first-child,th:first-child,td:last-child{{text-align:
left}}th{{background:#f3f3f3}}img{{max-width:100%}}figure{{margin:1.5em 0}}figcaption{{color:#555;
font-size:13px}}</style></head><body><h1>{title}</h1>{body}</body></html>"""
