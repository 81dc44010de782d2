"""Write a report: self-contained index.html, report.md with PNGs, and the CSV tables."""

from __future__ import annotations

import datetime as dt
import math
import platform
import subprocess
from pathlib import Path

import pandas as pd

from lossbench import __version__
from lossbench.report import plots
from lossbench.report.figures import build_figures
from lossbench.report.diagnostics import diagnose
from lossbench.paths import contained, safe_name
from lossbench.report.document import Bold, Document, fmt
from lossbench.report.tables import HEADLINE, baseline_comparisons, headline, rank_table
from lossbench.results import finished_results, label_of, load, suite_meta
from lossbench.tuning import TuneSpec, metric_name, protocol_of, tuning_table


def headline_rows(h) -> tuple[list[str], list[list[str]]]:
    cols = [(c, name) for c, name, _ in HEADLINE if c in h.table]
    header = ["loss", "runs"] + [name for _, name in cols]
    rows = []
    for _, r in h.table.iterrows():
        cells = [r.label, f"{r.runs}" + (f" ({r.diverged} diverged)" if r.diverged else "")
                 + (f" ({r.failed} failed)" if r.failed else "")]
        for c, _ in cols:
            text = fmt(r[c])
            low, high = r.get(f"{c}_low"), r.get(f"{c}_high")
            if low is not None and not (isinstance(low, float) and math.isnan(low)):
                text += f" [{fmt(low)}, {fmt(high)}]"
            if h.best.get(c) == r.label:
                text = Bold(text)
            cells.append(text)
        rows.append(cells)
    return header, rows


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


def _tuning(doc: Document, meta: dict, all_summary: pd.DataFrame) -> None:
    """Chosen settings, grid-edge warnings and the sensitivity plot of a tuned suite."""
    spec = TuneSpec.from_dict(meta["tune"])
    table = tuning_table(meta["tuning_runs"], all_summary, spec)
    doc.csv("tuning", table.drop(columns="setting"))
    choices = meta.get("choices", {})
    doc.section("Tuning")
    doc.text(f"Protocol: {spec.describe()}. Every loss gets the same grid and budget; a setting "
             f"with a diverged or failed seed is not eligible; ties go to the earlier grid point.")
    rows = []
    for label, c in choices.items():
        n = int((table.label == label).sum())
        chosen = ", ".join(f"{k} = {fmt(v)}" for k, v in c["setting"].items()) \
            if c["setting"] else "none (no eligible setting)"
        bad = int((table[table.label == label].status != "done").sum())
        rows.append([label, chosen, fmt(c["score"]), f"{n}" + (f" ({bad} not eligible)" if bad
                                                                else "")])
    doc.table(["loss", "chosen", f"tuning {metric_name(spec.metric)}", "settings tried"], rows)
    doc.bullets([note for c in choices.values() for note in c["notes"]])
    for param in spec.params:
        if param in table and table[param].notna().any():
            ax = plots.sensitivity(table, param=param, metric=metric_name(spec.metric),
                                   chosen={k: v["setting"] for k, v in choices.items()})
            doc.figure(f"sensitivity_{param}", f"Sensitivity: final {metric_name(spec.metric)} "
                       f"of the tuning runs vs {param} (other tuned values at each loss's choice)",
                       ax.figure)


def _config_rows(results: list[dict]) -> list[list[str]]:
    """The sections every final run shares, and which keys vary between runs."""
    rows = []
    for section in ("data", "model", "train", "eval", "finetune"):
        dicts = [r["config"][section] for r in results if section in r["config"]]
        if not dicts:
            continue
        parts = []
        for key in dicts[0]:
            values = list(dict.fromkeys(str(d.get(key)) for d in dicts))
            parts.append(f"{key}={values[0]}" if len(values) == 1
                         else f"{key}∈{{{', '.join(values[:6])}{', …' if len(values) > 6 else ''}}}")
        rows.append([section, ", ".join(parts)])
    return rows


def default_out(root: str | Path, name: str) -> Path:
    """``root/<name>-<date>``, refused (UnsafePathError) unless it stays inside ``root``:
    ``name`` comes from a results directory, and ``root/<name>-<date>`` may already exist
    as a symlink leading elsewhere."""
    out = Path(root) / f"{safe_name(name, what='report name')}-{dt.date.today().isoformat()}"
    return contained(root, out, what="report folder")


def build_report(results_dir: str | Path, out_dir: str | Path | None = None,
                 problems: list[str] | None = None) -> Path:
    """Render the report of a results directory; returns the report folder. Runs left out
    (a malformed result.json, an unsafe folder) are named in the report and appended to
    ``problems``."""
    problems = [] if problems is None else problems
    results_dir = Path(results_dir)
    meta = suite_meta(results_dir)
    name = safe_name(meta.get("name"), what="suite.json name")
    all_summary, _ = load(results_dir)
    summary, curves = load(results_dir, final_only=True)
    keep = set(summary.run_id)
    results = [r for r in finished_results(results_dir, problems)
               if r["summary"].get("run_id") in keep]
    doc = Document(f"lossbench report: {name}", out_dir or default_out("reports", name))
    baseline = meta.get("baseline", "cross_entropy")
    h = headline(summary, curves, baseline, meta.get("target_val_ce"))
    comps, ranks = baseline_comparisons(summary, baseline), rank_table(summary)
    floor = None
    if "final_excess_ce" in summary and summary.final_excess_ce.notna().any():
        done = summary[summary.status == "done"]
        floor = float((done.final_val_ce - done.final_excess_ce).median())
    for name, table in (("headline", h.table), ("comparisons", comps), ("ranks", ranks)):
        doc.csv(name, table)

    doc.section("Headline")
    protocol = protocol_of(meta) + (" (see Tuning)" if "tune" in meta else "")
    how = ("a val CE the suite names" if meta.get("target_val_ce") is not None
           else "baseline × 1.05")
    doc.text(f"Protocol: {protocol}. Baseline: {baseline}. Values are means over seeds with 95% "
             f"bootstrap intervals; best per column in bold. Steps to target: first evaluation "
             f"with val CE ≤ {fmt(h.target)} ({how}), ∞ if any seed never gets there.")
    doc.table(*headline_rows(h))

    doc.section("Statistics (paired by seed)")
    doc.table(["loss", "seeds paired", "Δ val CE vs baseline", "p", "p (Holm)", "test", "note"],
              [[r.label, r.n_pairs, fmt(r.mean_difference), fmt(r.p_value, 3),
                fmt(r.p_holm, 3), r.test, r.note] for r in comps.itertuples()])
    doc.text("Mean rank by final val CE (1 = best):")
    doc.table(["loss", "mean rank"], [[r.label, fmt(r.mean_rank, 3)] for r in ranks.itertuples()])

    if "tune" in meta:
        _tuning(doc, meta, all_summary)

    doc.section("Figures")
    for name, (caption, fig) in build_figures(summary, curves, results, h, floor).items():
        doc.figure(name, caption, fig)

    diag_rows = []
    for r in summary.itertuples():
        val = curves[(curves.run_id == r.run_id) & (curves.metric == "val_ce")]
        tr = curves[(curves.run_id == r.run_id) & (curves.metric == "train_ce")].sort_values("step")
        for note in diagnose(r.status, getattr(r, "diverged_step", math.nan), val, tr):
            diag_rows.append([r.label, r.seed, r.status, note])
    doc.section("Runs")
    doc.table(["loss", "seed", "status", "diagnosis"], diag_rows)
    if problems:
        doc.text("Left out of this report:")
        doc.bullets(problems)

    _samples(doc, results)

    import torch
    counts = ", ".join(f"{k}: {v}" for k, v in summary.status.value_counts().items())
    env = [["suite", f"{name}: {meta.get('description', '')}"],
           ["python / torch", f"{platform.python_version()} / {torch.__version__}"],
           ["machine", f"{platform.machine()}, {platform.system()}"],
           ["device", ", ".join(sorted({r["config"].get("device", "cpu") for r in results}))],
           ["lossbench", f"{__version__}, git {_git_commit()}"],
           ["runs", f"{len(summary)} ({counts})"
            + (f"; plus {len(meta['tuning_runs'])} tuning runs" if "tune" in meta else "")],
           ["generated", dt.datetime.now().isoformat(timespec="seconds")]]
    doc.section("Details")
    doc.table(["", ""], env + _config_rows(results))
    return doc.write()


def _samples(doc: Document, results: list[dict], n_prefixes: int = 2) -> None:
    """Greedy continuations of the same val prefixes, one row per loss (lowest seed)."""
    done = [r for r in results if r["status"] == "done" and r["evals"]]
    if not done:
        return
    seed = min(r["config"]["seed"] for r in done)
    per_label = {label_of(r["config"]): r["evals"][-1].get("samples", [])
                 for r in done if r["config"]["seed"] == seed}
    doc.section("Samples")
    doc.text(f"Greedy continuations after the last evaluation (seed {seed}); every loss continues "
             f"the same validation prefix. ↵ marks a newline.")
    for i in range(n_prefixes):
        rows = [[label, s[i]["continuation"].replace("\n", "↵")]
                for label, s in per_label.items() if len(s) > i]
        if not rows:
            break
        prefix = next(s[i]["prefix"] for s in per_label.values() if len(s) > i)
        doc.text(f"Prefix {i + 1}: {prefix.replace(chr(10), '↵')}")
        doc.table(["loss", "greedy continuation"], rows)
