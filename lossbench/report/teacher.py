"""A model teacher in the report: its own val CE as a reference (a line in the convergence
figure, a row under the verdict table: "teacher: 4×128, val CE 1.62") and each student's gap
to it. Everything comes from the students' stored summaries (``teacher_*`` columns, written
by lossbench.train.result.teacher_record), so a report needs nothing but the results folder.

The teacher's val CE is on the same fixed validation windows as every run's ``final_val_ce``
(not the whole split): the gap compares like with like.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lossbench.report.document import fmt
from lossbench.report.plots import _legend
from lossbench.store.runs import label_of


@dataclass(frozen=True)
class TeacherInfo:
    desc: str  # "4×128"
    val_ce: float  # on the validation windows
    flops_per_token: int  # its forward pass, counted in the students' flops_per_token
    topk: int  # 0: the full distribution
    students: dict[str, float]  # label -> mean final val CE over its seeds


def teacher_info(results: list[dict]) -> TeacherInfo | None:
    """The model teacher of an experiment's runs, or None when no run distilled from one."""
    distilled = [r for r in results if isinstance(r.get("summary"), dict)
                 and isinstance(r["summary"].get("teacher_val_ce"), (int, float))]
    if not distilled:
        return None
    first = distilled[0]["summary"]
    values: dict[str, list[float]] = {}
    for r in results:
        v = (r.get("summary") or {}).get("final_val_ce")
        if isinstance(v, (int, float)) and math.isfinite(v) and isinstance(r.get("config"), dict):
            values.setdefault(label_of(r["config"]), []).append(float(v))
    return TeacherInfo(desc=str(first.get("teacher_desc", "model")),
                       val_ce=float(first["teacher_val_ce"]),
                       flops_per_token=int(first.get("teacher_flops_per_token") or 0),
                       topk=int(first.get("teacher_topk") or 0),
                       students={k: sum(v) / len(v) for k, v in values.items()})


def teacher_line(info: TeacherInfo) -> str:
    """'teacher: 4×128, val CE 1.62' (and its top-k truncation, when cached)."""
    top = f", top-{info.topk} cache" if info.topk else ""
    return f"teacher: {info.desc}, val CE {info.val_ce:.3g}{top}"


def verdict_row(info: TeacherInfo | None, width: int) -> list[list[str]]:
    """The teacher as a reference row of the verdict table (no rank: it is not a contender)."""
    if info is None:
        return []
    row = ["–", teacher_line(info), f"val CE {fmt(info.val_ce)}",
           "reference: the model distilled from, not trained in this suite's comparison"]
    return [(row + [""] * width)[:width]]


def gap_section(doc, info: TeacherInfo | None) -> None:
    """Student vs teacher: each label's mean final val CE and its gap to the teacher."""
    if info is None:
        return
    rows = [[label, fmt(v), f"{v - info.val_ce:+.3g}"]
            for label, v in sorted(info.students.items(), key=lambda kv: kv[1])]
    doc.text(f"Student vs teacher ({teacher_line(info)}; its forward pass, "
             f"{info.flops_per_token:,} FLOPs/token, is counted in each distilled run's FLOPs "
             f"and wall time). Gap = student val CE − teacher val CE on the same validation "
             f"windows; a negative gap is a student better than its teacher.")
    doc.table(["loss", "val CE (windows), mean", "gap to teacher"], rows)


def add_teacher_line(ax, info: TeacherInfo | None) -> None:
    """The teacher's val CE as a dashed reference line in a convergence plot."""
    if info is None or not math.isfinite(info.val_ce):
        return
    line = ax.axhline(info.val_ce, color="0.2", ls="--", lw=1.0, zorder=2,
                      label=teacher_line(info))
    low, high = ax.get_ylim()
    if info.val_ce < low or info.val_ce > high:
        ax.set_ylim(min(low, 0.97 * info.val_ce), max(high, 1.03 * info.val_ce))
    legend = ax.get_legend()
    _legend(ax, [*(legend.legend_handles if legend is not None else []), line])
