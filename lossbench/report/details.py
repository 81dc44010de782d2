"""The report's later sections: tuning, runs, samples and the details of the machine and
the configuration, laid out from an Evidence (report.evidence)."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from pathlib import Path

import pandas as pd

from lossbench import __version__
from lossbench.analysis.diagnostics import diagnose
from lossbench.report import plots
from lossbench.report.document import Document, fmt
from lossbench.report.evidence import Evidence
from lossbench.report.protocol import describe_tuning, metric_name
from lossbench.store.runs import label_of
from lossbench.suite.tuning import TuneSpec, tuning_table


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


def tuning(doc: Document, meta: dict, all_runs: pd.DataFrame) -> None:
    """Chosen settings, grid-edge warnings and the sensitivity plot of a tuned suite."""
    spec = TuneSpec.from_dict(meta["tune"])
    table = tuning_table(meta["tuning_runs"], all_runs, spec)
    doc.csv("tuning", table.drop(columns="setting"))
    choices = meta.get("choices", {})
    doc.section("Tuning")
    doc.text(f"Protocol: {describe_tuning(spec)}. Every loss gets the same grid and budget; a setting "
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


def runs(doc: Document, ev: Evidence, problems: list[str]) -> None:
    """Each run's status and the plain-language diagnosis of its curves."""
    rows = []
    curves = ev.curves
    for r in ev.scores.runs.itertuples():
        val = curves[(curves.run_id == r.run_id) & (curves.metric == "val_ce")]
        tr = curves[(curves.run_id == r.run_id) & (curves.metric == "train_ce")].sort_values("step")
        for note in diagnose(r.status, r.diverged_step, val, tr):
            rows.append([r.label, r.seed, r.status, note])
    doc.section("Runs")
    doc.table(["loss", "seed", "status", "diagnosis"], rows)
    if problems:
        doc.text("Left out of this report:")
        doc.bullets(problems)


def details(doc: Document, ev: Evidence) -> None:
    import torch  # only for its version: keeps `import lossbench.report` light

    meta, results = ev.meta, ev.results
    counts = ", ".join(f"{k}: {v}" for k, v in ev.scores.runs.status.value_counts().items())
    env = [["suite", f"{ev.name}: {meta.get('description', '')}"],
           ["python / torch", f"{platform.python_version()} / {torch.__version__}"],
           ["machine", f"{platform.machine()}, {platform.system()}"],
           ["device", ", ".join(sorted({r["config"].get("device", "cpu") for r in results}))],
           ["lossbench", f"{__version__}, git {_git_commit()}"],
           ["runs", f"{len(ev.scores.runs)} ({counts})"
            + (f"; plus {len(meta['tuning_runs'])} tuning runs" if "tune" in meta else "")],
           ["generated", dt.datetime.now().isoformat(timespec="seconds")]]
    doc.section("Details")
    doc.table(["", ""], env + _config_rows(results))


def samples(doc: Document, results: list[dict], n_prefixes: int = 2) -> None:
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
