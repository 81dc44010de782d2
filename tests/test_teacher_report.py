"""The report's teacher reference (report/teacher.py): one row under the verdict, the gap of
each student to the teacher, and a dashed line in the convergence figure, all read from the
students' stored summaries."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from lossbench.report.teacher import (  # noqa: E402
    add_teacher_line,
    gap_section,
    teacher_info,
    verdict_row,
)


def _result(loss, val_ce, seed, teacher=True):
    summary = {"final_val_ce": val_ce}
    if teacher:
        summary.update(teacher_desc="4×128", teacher_val_ce=1.62, teacher_flops_per_token=999,
                       teacher_topk=0)
    return {"config": {"loss": loss, "label": "", "seed": seed}, "summary": summary}


RESULTS = [_result("kd", 1.70, 0), _result("kd", 1.80, 1),
           _result("cross_entropy", 1.90, 0, teacher=False)]


class _Doc:
    def __init__(self):
        self.texts, self.tables = [], []

    def text(self, t):
        self.texts.append(t)

    def table(self, header, rows):
        self.tables.append((header, rows))


def test_no_model_teacher_adds_nothing():
    doc = _Doc()
    info = teacher_info([_result("kd", 1.7, 0, teacher=False)])
    assert info is None and verdict_row(info, 5) == []
    gap_section(doc, info)
    assert not doc.texts and not doc.tables


def test_teacher_row_and_gaps_come_from_the_summaries():
    info = teacher_info(RESULTS)
    (row,) = verdict_row(info, 5)
    assert row[1] == "teacher: 4×128, val CE 1.62" and len(row) == 5
    doc = _Doc()
    gap_section(doc, info)
    (header, rows), = doc.tables
    assert rows == [["kd", "1.75", "+0.13"], ["cross_entropy", "1.9", "+0.28"]]
    assert "999 FLOPs/token" in doc.texts[0]


def test_the_convergence_figure_gets_a_dashed_teacher_line():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [2.0, 1.9], label="kd")
    ax.legend()
    add_teacher_line(ax, teacher_info(RESULTS))
    (line,) = [h for h in ax.get_lines() if h.get_linestyle() == "--"]
    assert list(line.get_ydata()) == [1.62, 1.62] and ax.get_ylim()[0] <= 1.62
    assert "teacher: 4×128, val CE 1.62" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)
