"""`lossbench compare DIR [DIR ...]`: performance profiles of the losses across suites."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lossbench.paths import safe_name
from lossbench.report import plots
from lossbench.report.document import Document, fmt
from lossbench.report.profiles import (TAU_MAX, profile, profile_score, rank_across_workloads,
                                       ratios, workload_times)
from lossbench.report.render import default_out
from lossbench.results import load, suite_meta
from lossbench.tuning import NOT_TUNED, protocol_of


def _suite_name(d: Path) -> str:
    name = suite_meta(d).get("name")
    return d.name if name is None else safe_name(name, what=f"{d}/suite.json name")


def _workload_names(dirs: list[Path]) -> list[str]:
    """Each directory's suite name (its folder's name when suite.json has none); a name
    suite.json gives must be a plain name, as `lossbench report` requires."""
    names = [_suite_name(d) for d in dirs]
    return [f"{n} ({d.name})" if names.count(n) > 1 else n for n, d in zip(names, dirs)]


def build_comparison(results_dirs: list[str | Path], out_dir: str | Path | None = None) -> Path:
    """Write the cross-suite report (HTML, Markdown, CSV); returns its folder."""
    dirs = [Path(d) for d in results_dirs]
    names = _workload_names(dirs)
    doc = Document("lossbench comparison across suites",
                   out_dir or default_out("reports", "compare"))
    steps, finals, workloads = {}, {}, []
    for name, d in zip(names, dirs):
        meta = suite_meta(d)
        summary, curves = load(d, final_only=True)
        times, target = workload_times(summary, curves, meta.get("target_val_ce"))
        steps[name] = times.set_index("label").steps_to_target
        finals[name] = times.set_index("label").final_val_ce
        protocol = protocol_of(meta)
        workloads.append({"workload": name, "results": str(d), "runs": len(summary),
                          "losses": len(times), "target_val_ce": target,
                          "target_from": "suite" if meta.get("target_val_ce") is not None
                          else "best loss x 1.05", "protocol": protocol})
    steps_t, finals_t = pd.DataFrame(steps), pd.DataFrame(finals)  # label x workload
    ratio = ratios(steps_t)
    prof, score = profile(ratio), profile_score(ratio)
    rank = rank_across_workloads(finals_t)
    solved = (ratio < float("inf")).sum(axis=1)
    scores = (pd.DataFrame({"label": score.index, "score": score.values,
                            "workloads_reached": solved.reindex(score.index).values,
                            "workloads": steps_t.shape[1]})
              .sort_values("score", ascending=False).reset_index(drop=True))

    doc.csv("workloads", pd.DataFrame(workloads))
    doc.csv("steps_to_target", steps_t.rename_axis("label").reset_index())
    doc.csv("ratios", ratio.rename_axis("label").reset_index())
    doc.csv("profiles", prof)
    doc.csv("scores", scores)
    doc.csv("ranks", rank.ranks.rename_axis("label").reset_index())

    doc.section("Workloads")
    doc.text("Each results directory is a workload. Only its final runs count (not tuning runs). "
             "A loss missing from a workload counts as never reaching its target there.")
    doc.table(["workload", "results", "runs", "losses", "target val CE", "target from", "protocol"],
              [[w["workload"], w["results"], w["runs"], w["losses"], fmt(w["target_val_ce"]),
                w["target_from"], w["protocol"]] for w in workloads])
    trivial = [w for w in steps_t.columns if (steps_t[w] == 0).any()]
    if trivial:
        doc.text(f"Note: on {', '.join(trivial)} the target holds at step 0 (the shared "
                 f"initialization), so steps-to-target cannot separate the losses there.")
    protocols = {w["protocol"] == NOT_TUNED for w in workloads}
    if len(protocols) > 1:
        doc.text("Warning: some workloads were tuned per loss and some were not; their "
                 "comparisons answer different questions.")

    doc.section("Performance profiles")
    doc.text(f"ρ(τ): the fraction of workloads on which a loss reaches the target within τ times "
             f"the steps of the fastest loss there (AlgoPerf). Score: area under ρ over "
             f"[1, {TAU_MAX:g}], normalized (1 = fastest everywhere, 0 = never within "
             f"{TAU_MAX:g}×). Steps to target: seed mean, ∞ if any seed misses.")
    ax = plots.performance_profiles(prof)
    doc.figure("profiles", "Performance profiles over steps-to-target", ax.figure)
    doc.table(["loss", "score", "workloads reached"],
              [[r.label, fmt(r.score, 3), f"{r.workloads_reached}/{r.workloads}"]
               for r in scores.itertuples()])
    doc.text("Steps to target per workload (ratio to the fastest in brackets):")
    doc.table(["loss", *steps_t.columns],
              [[label, *(f"{fmt(steps_t.loc[label, w])} ({fmt(ratio.loc[label, w], 3)})"
                         for w in steps_t.columns)] for label in scores.label])

    doc.section("Ranks by final val CE")
    doc.text("Rank of each loss on each workload by mean final val CE (1 = best; ties averaged; "
             f"diverged, failed or missing last). {rank.note}"
             + (f": statistic {rank.statistic:.3g}, p = {rank.p_value:.3g}."
                if rank.p_value == rank.p_value else "."))
    doc.table(["loss", *rank.ranks.columns],
              [[label, *(fmt(v, 3) for v in row)] for label, row in rank.ranks.iterrows()])
    return doc.write()
