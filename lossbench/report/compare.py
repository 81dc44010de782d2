"""`lossbench compare DIR [DIR ...]`: performance profiles of the losses across suites.
Each size of a scale ladder (a suite with [scale]) is a workload of its own."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lossbench.analysis.profiles import (
    TAU_MAX,
    ProfileBootstrap,
    bootstrap_profiles,
    identical_profiles,
    label_times,
    profile,
    profile_score,
    rank_across_workloads,
    ratios,
)
from lossbench.analysis.scores import build_scale_scores, build_scores
from lossbench.analysis.stats import MIN_SEEDS_FOR_CI
from lossbench.core.paths import safe_name
from lossbench.report import plots
from lossbench.report.document import Document, fmt
from lossbench.report.protocol import NOT_TUNED, protocol_of
from lossbench.report.render import default_out
from lossbench.report.tables import comparisons
from lossbench.report.verdict import WORD_TEXT, signed
from lossbench.store.experiments import suite_meta
from lossbench.store.tables import load


def _suite_name(d: Path) -> str:
    name = suite_meta(d).get("name")
    return d.name if name is None else safe_name(name, what=f"{d}/suite.json name")


def _workload_names(dirs: list[Path]) -> list[str]:
    """Each directory's suite name (its folder's name when suite.json has none); a name
    suite.json gives must be a plain name, as `lossbench report` requires."""
    names = [_suite_name(d) for d in dirs]
    return [f"{n} ({d.name})" if names.count(n) > 1 else n for n, d in zip(names, dirs)]


def _scored(names: list[str], dirs: list[Path]):
    """(workload, directory, meta, summary, score table) per workload: a directory, or
    each size of a scale ladder ("<suite> @ <size>"), scored by `lossbench report`'s rules
    (same target rule, same steps-to-target; a ladder's sizes each by their own target)."""
    for name, d in zip(names, dirs):
        meta = suite_meta(d)
        summary, curves = load(d, final_only=True)
        baseline = meta.get("baseline", "cross_entropy")
        if not meta.get("scale"):
            yield name, d, meta, summary, build_scores(summary, curves, baseline,
                                                       meta.get("target_val_ce"))
            continue
        ladder = build_scale_scores(summary, curves, baseline, meta.get("target_val_ce"),
                                    meta["scale"])
        for size in ladder.sizes:
            table = ladder.at_size(size)
            yield (f"{name} @ {size}", d, meta,
                   summary[summary.run_id.isin(set(table.runs.run_id))], table)


@dataclass
class _Gathered:
    """What each workload contributes: steps to target and final val CE (label x workload),
    per-seed steps, the report's paired verdicts, and the workloads' own rows."""

    steps: pd.DataFrame
    finals: pd.DataFrame
    per_seed: pd.DataFrame
    paired: list[pd.DataFrame]
    workloads: list[dict]
    baselines: set[str]


def build_comparison(results_dirs: list[str | Path], out_dir: str | Path | None = None) -> Path:
    """Write the cross-suite report (HTML, Markdown, CSV); returns its folder."""
    dirs = [Path(d) for d in results_dirs]
    names = _workload_names(dirs)  # refuses a crafted suite name before anything is written
    doc = Document("lossbench comparison across suites",
                   out_dir or default_out("reports", "compare"))
    g = _gather(names, dirs)
    ratio = ratios(g.steps)
    prof = profile(ratio)
    boot = bootstrap_profiles(g.per_seed, list(g.steps.index), list(g.steps.columns))
    rank = rank_across_workloads(g.finals)
    scores = _scores(ratio, boot, g.steps.shape[1])
    for name, table in (("workloads", pd.DataFrame(g.workloads)),
                        ("steps_to_target", g.steps.rename_axis("label").reset_index()),
                        ("ratios", ratio.rename_axis("label").reset_index()),
                        ("profiles", prof), ("profile_bands", boot.profiles),
                        ("bootstrap_strata", boot.strata), ("scores", scores),
                        ("ranks", rank.ranks.rename_axis("label").reset_index())):
        doc.csv(name, table)
    _workloads_section(doc, g)
    _profiles_section(doc, g, ratio, prof, boot, scores)
    _against_baseline(doc, g.paired)
    _ranks_section(doc, rank)
    return doc.write()


def _gather(names: list[str], dirs: list[Path]) -> _Gathered:
    steps, finals, workloads, per_seed, paired = {}, {}, [], [], []
    baselines: set[str] = set()
    for name, d, meta, summary, table in _scored(names, dirs):
        baselines.add(meta.get("baseline", "cross_entropy"))
        times = label_times(table).set_index("label")
        steps[name], finals[name] = times.steps_to_target, times.final_val_ce
        per_seed.append(table.runs[["label", "seed", "steps_to_target"]].assign(workload=name))
        if "final_val_ce" in table.runs:  # the report's verdict on this workload
            paired.append(comparisons(table, "final_val_ce", margin=_margin(meta))
                          .assign(workload=name, baseline=table.baseline))
        workloads.append({"workload": name, "results": str(d), "runs": len(summary),
                          "losses": len(times), "target_val_ce": table.target,
                          "target_from": table.target_rule, "protocol": protocol_of(meta)})
    return _Gathered(pd.DataFrame(steps), pd.DataFrame(finals),  # label x workload
                     pd.concat(per_seed, ignore_index=True), paired, workloads, baselines)


def _scores(ratio: pd.DataFrame, boot, n_workloads: int) -> pd.DataFrame:
    """Each loss's profile score (the point: profile_score's), its bootstrap interval and
    the workloads it reaches, best first."""
    solved = (ratio < float("inf")).sum(axis=1)
    return (boot.scores.set_index("label").assign(score=profile_score(ratio))
            .assign(interval=boot.interval, workloads_reached=solved, workloads=n_workloads)
            .rename_axis("label").reset_index()
            .sort_values("score", ascending=False, kind="stable").reset_index(drop=True))


def _workloads_section(doc: Document, g: _Gathered) -> None:
    workloads = g.workloads
    doc.section("Workloads")
    doc.text("Each results directory is a workload (each size of a scale ladder is one: "
             "\"<suite> @ <size>\"). Only its final runs count (not tuning runs). "
             "A loss missing from a workload counts as never reaching its target there. The "
             "target is the suite's target_val_ce, else the baseline's mean final val CE × "
             "1.05 when every baseline seed finished (the rule of `lossbench report`).")
    doc.table(["workload", "results", "runs", "losses", "target val CE", "target from", "protocol"],
              [[w["workload"], w["results"], w["runs"], w["losses"], fmt(w["target_val_ce"]),
                w["target_from"], w["protocol"]] for w in workloads])
    untargeted = [w["workload"] for w in workloads if math.isnan(w["target_val_ce"])]
    if untargeted:
        doc.text(f"Note: {', '.join(untargeted)} has no target, so no loss reaches it there "
                 f"(every ratio is ∞ on it).")
    trivial = [w for w in g.steps.columns if (g.steps[w] == 0).any()]
    if trivial:
        doc.text(f"Note: on {', '.join(trivial)} the target holds at step 0 (the shared "
                 f"initialization), so steps-to-target cannot separate the losses there.")
    if len({w["protocol"] == NOT_TUNED for w in workloads}) > 1:
        doc.text("Warning: some workloads were tuned per loss and some were not; their "
                 "comparisons answer different questions.")


def _profiles_section(doc: Document, g: _Gathered, ratio: pd.DataFrame, prof: pd.DataFrame,
                      boot, scores: pd.DataFrame) -> None:
    doc.section("Performance profiles")
    doc.text(f"ρ(τ): the fraction of workloads on which a loss reaches the target within τ times "
             f"the steps of the fastest loss there (AlgoPerf). Score: area under ρ over "
             f"[1, {TAU_MAX:g}], normalized (1 = fastest everywhere, 0 = never within "
             f"{TAU_MAX:g}×). Steps to target: seed mean, ∞ if any seed never reaches the "
             f"target, diverges or fails.")
    doc.text(_interval_text(boot))
    baseline = next(iter(g.baselines)) if len(g.baselines) == 1 else None
    ax = plots.performance_profiles(prof, bands=boot.profiles, baseline=baseline)
    doc.figure("profiles", f"Performance profiles over steps-to-target (shaded: "
               f"{boot.interval} of ρ). {plots.PROFILE_NOTE}", ax.figure)
    same = identical_profiles(prof)
    if same:  # coinciding lines hide each other on the plot: name them together
        doc.text("Losses whose profiles are identical (their lines coincide on the plot):")
        doc.table(["identical profiles"], [[", ".join(group)] for group in same])
    else:
        doc.text("No two losses have identical profiles.")
    doc.table(["loss", "score", f"score {boot.interval}", "workloads reached"],
              [[r.label, fmt(r.score, 3), f"[{fmt(r.score_low, 3)}, {fmt(r.score_high, 3)}]",
                f"{r.workloads_reached}/{r.workloads}"] for r in scores.itertuples()])
    doc.text("Steps to target per workload (ratio to the fastest in brackets):")
    doc.table(["loss", *g.steps.columns],
              [[label, *(f"{fmt(g.steps.loc[label, w])} ({fmt(ratio.loc[label, w], 3)})"
                         for w in g.steps.columns)] for label in scores.label])


def _ranks_section(doc: Document, rank) -> None:
    doc.section("Ranks by final val CE")
    doc.text("Rank of each loss on each workload by mean final val CE (1 = best; ties averaged; "
             "a loss with a diverged, failed or missing seed ranks last: the mean of its "
             f"surviving seeds would flatter it). {rank.note}"
             + (f": statistic {rank.statistic:.3g}, p = {rank.p_value:.3g}."
                if rank.p_value == rank.p_value else "."))
    doc.table(["loss", *rank.ranks.columns],
              [[label, *(fmt(v, 3) for v in row)] for label, row in rank.ranks.iterrows()])


def _margin(meta: dict) -> float | None:
    from lossbench.report.evidence import report_margin

    return report_margin(meta)


def _against_baseline(doc: Document, paired: list[pd.DataFrame]) -> None:
    """Each workload's verdict on final val CE, by `lossbench report`'s one procedure (the
    family: that workload's comparisons; its report adds the suite's claims to it)."""
    doc.section("Against the baseline on each workload")
    doc.text("Final val CE, each loss against its workload's baseline seed by seed, by the "
             "procedure of `lossbench report` (paired t-test, Holm over the workload's "
             "comparisons, better/worse only beyond the margin; docs/statistics.md). A "
             "report with suite claims puts them in the same family, so its p can be larger.")
    rows = [[c.workload, c.label, c.baseline, c.n_pairs, signed(c.mean_difference),
             fmt(c.p_holm, 3), WORD_TEXT.get(c.word, c.word)]
            for table in paired for c in table.itertuples()]
    doc.table(["workload", "loss", "baseline", "seeds paired", "Δ val CE", "p (Holm)",
               "verdict"], rows)


def _interval_text(boot: ProfileBootstrap) -> str:
    text = (f"Intervals: {boot.interval} of the score, from a stratified bootstrap "
            f"({boot.n_resamples} resamples; the seeds of each loss on each workload are "
            f"redrawn with replacement, workloads fixed; a redrawn mean is ∞ when a drawn seed "
            f"is). profile_bands.csv holds the same band for ρ(τ).")
    if boot.interval != "95% CI":
        text += (f" Some loss has only {boot.min_seeds} seed(s) on a workload: fewer than "
                 f"{MIN_SEEDS_FOR_CI} seeds give a range of what the seeds allow, not a 95% "
                 f"confidence interval.")
    return text
