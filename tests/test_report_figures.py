"""Report figures a reviewer can read as evidence: the baseline is never hidden, legends
cover no data, axes read in plain numbers and words, and no figure repeats another."""


import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from lossbench.report import plots
from lossbench.report.figures import build_figures

BLACK = (0.0, 0.0, 0.0, 1.0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")  # pyplot keeps every figure the plots open


def _bands(labels, lo, hi, steps=5):
    """Seed bands falling from ``hi`` to ``lo``; every label the same curve (coinciding)."""
    ys = np.geomspace(hi, lo, steps)
    return pd.DataFrame([{"label": lb, "step": 10 * s, "mean": y, "min": y, "max": y}
                         for lb in labels for s, y in enumerate(ys)])


def _run_data(tokens_per_step, steps=(0, 10, 20, 30)):
    """(summary, curves) of one run per label, ``tokens_per_step``: {label: tokens}."""
    summary = pd.DataFrame({"run_id": [f"{lb}-0" for lb in tokens_per_step],
                            "label": list(tokens_per_step)})
    rows = []
    for (label, tps), run_id in zip(tokens_per_step.items(), summary.run_id):
        for s in steps:
            rows.append((run_id, s, "val_ce", 2.8 - s / 50))
            if s:
                rows += [(run_id, s, "tokens", tps * s), (run_id, s, "wall_s", 0.1),
                         (run_id, s, "train_loss", 1.0 + 1 / s), (run_id, s, "grad_norm", 0.5)]
    return summary, pd.DataFrame(rows, columns=["run_id", "step", "metric", "value"])


def _outside(ax, legend):
    ax.figure.canvas.draw()
    box, frame = legend.get_window_extent(), ax.get_window_extent()
    return box.x0 >= frame.x1 and box.x1 <= ax.figure.bbox.x1  # right of the axes, in the PNG


def _tick_texts(ax):
    ax.figure.canvas.draw()
    ticks = ax.yaxis.get_majorticklabels() + ax.yaxis.get_minorticklabels()
    return [t.get_text() for t in ticks if t.get_text()]


def test_baseline_is_drawn_on_top_in_black_and_dashed():
    bands = _bands(["z_loss", "cross_entropy", "kl"], 2.0, 2.8)  # all three coincide
    ax = plots.convergence(bands, baseline="cross_entropy")
    base = next(line for line in ax.get_lines() if line.get_label().startswith("cross_entropy"))
    others = [a for a in ax.get_children() if a is not base and hasattr(a, "get_zorder")]
    assert base.get_zorder() > max(a.get_zorder() for a in others)
    assert matplotlib.colors.to_rgba(base.get_color()) == BLACK
    assert base.get_linestyle() == "--"  # a coinciding curve shows through the gaps
    assert "baseline" in base.get_label()
    assert ax.get_legend().get_texts()[0].get_text().startswith("cross_entropy")
    fig = plots.small_multiples(bands, ylabel="loss", baseline="cross_entropy")
    assert matplotlib.colors.to_rgba(fig.axes[0].get_lines()[0].get_color()) == BLACK


def test_legends_lie_outside_the_axes():
    bands = _bands(["a", "b", "c"], 2.0, 2.8)
    ax = plots.convergence(bands, floor=1.5)
    assert _outside(ax, ax.get_legend())
    table = pd.DataFrame({"label": ["a", "b"], "final_rep": [0.1, 0.2]})
    ax = plots.grouped_bars(table, ["final_rep"], title="repetition")
    assert _outside(ax, ax.get_legend())
    profiles = pd.DataFrame({"label": ["a", "a", "b", "b"], "tau": [1.0, 4.0] * 2,
                             "rho": [0.5, 1.0] * 2})
    ax = plots.performance_profiles(profiles)
    assert _outside(ax, ax.get_legend())


def test_linear_y_within_a_decade_log_beyond_with_plain_tick_labels():
    narrow = plots.convergence(_bands(["a", "b"], 2.0, 2.8))
    assert narrow.get_yscale() == "linear"
    wide = plots.convergence(_bands(["a", "b"], 0.1, 5.0), ylabel="gradient norm")
    assert wide.get_yscale() == "log"
    for ax in (narrow, wide):
        texts = _tick_texts(ax)
        assert texts and not [t for t in texts if "$" in t or "10^" in t], texts
    assert plots.convergence(_bands(["a"], 0.1, 5.0), log_y=False).get_yscale() == "linear"


def test_entropy_floor_is_named_with_its_value():
    ax = plots.convergence(_bands(["a", "b"], 2.0, 2.8), floor=1.234)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("entropy floor" in t and "1.234" in t for t in texts), texts
    assert ax.get_ylim()[0] <= 1.234  # the floor is inside the axes, not off the bottom


def test_axis_labels_are_words_with_units():
    summary, curves = _run_data({"cross_entropy": 1024, "kl": 1024})
    h = pd.DataFrame({"label": ["cross_entropy", "kl"]})
    figs = build_figures(summary, curves, [], h, 1.5)
    step_ax = figs["convergence"][1].axes[0]
    assert step_ax.get_xlabel() == "training step"
    assert step_ax.get_ylabel() == "validation CE (nats/token)"
    assert figs["convergence_wall"][1].axes[0].get_xlabel() == "training time (s)"
    assert figs["grad_norm"][1].axes[0].get_ylabel() == "gradient norm (before clipping)"


def test_tokens_plot_only_when_tokens_per_step_differ():
    h = pd.DataFrame({"label": ["a", "b"]})
    fixed = build_figures(*_run_data({"a": 1024, "b": 1024}), [], h, None)
    assert "convergence_tokens" not in fixed and "convergence" in fixed
    varied = build_figures(*_run_data({"a": 1024, "b": 2048}), [], h, None, baseline="a")
    assert "convergence_tokens" in varied
    ax = varied["convergence_tokens"][1].axes[0]
    assert ax.get_xlabel() == "training tokens"
    base = next(line for line in ax.get_lines() if line.get_label().startswith("a"))
    assert base.get_xdata()[-1] == 1024 * 30  # x is the run's own token count


def test_training_loss_panels_are_not_shared_and_the_caption_says_so():
    summary, curves = _run_data({"a": 1024, "b": 1024})
    h = pd.DataFrame({"label": ["a", "b"]})
    caption, fig = build_figures(summary, curves, [], h, None)["train_loss"]
    assert "not shared" in caption
    a, b = fig.axes[:2]
    assert not a.get_shared_y_axes().joined(a, b)
    shared = plots.small_multiples(_bands(["a", "b"], 2.0, 2.8), ylabel="x", sharey=True)
    assert shared.axes[0].get_shared_y_axes().joined(shared.axes[0], shared.axes[1])


def test_identical_performance_profiles_are_told_apart_and_data_kept():
    profiles = pd.DataFrame({"label": ["a", "a", "b", "b"], "tau": [1.0, 4.0] * 2,
                             "rho": [0.5, 1.0] * 2})
    before = profiles.copy()
    ax = plots.performance_profiles(profiles)
    first, second = [line for line in ax.get_lines() if line.get_label() in ("a", "b")]
    assert (first.get_marker(), first.get_linestyle()) != (second.get_marker(),
                                                          second.get_linestyle())
    assert first.get_marker() != second.get_marker()
    offset = np.abs(np.asarray(first.get_ydata()) - np.asarray(second.get_ydata()))
    assert 0 < offset.max() <= 2 * plots.PROFILE_OFFSET + 1e-9 # shifted apart, only a little
    pd.testing.assert_frame_equal(profiles, before)  # the drawing moved, not the data
    assert "shifted" in ax.get_title(loc="left")  # the PNG itself says so


def test_repetition_bars_leave_out_missing_metrics_and_mark_missing_labels():
    table = pd.DataFrame({"label": ["a", "b", "c"], "final_seq_rep_4": [0.2, np.nan, 0.3],
                          "final_seq_rep_4_low": [0.1, np.nan, 0.2],
                          "final_seq_rep_4_high": [0.3, np.nan, 0.4],
                          "final_rep": [0.5, np.nan, np.nan],
                          "final_wrep": [np.nan, np.nan, np.nan]})
    summary, curves = _run_data({"a": 1024, "b": 1024, "c": 1024})
    _, fig = build_figures(summary, curves, [], table, None)["repetition"]  # table itself
    ax = fig.axes[0]
    keys = [t.get_text() for t in ax.get_legend().get_texts()]
    assert keys == ["seq-rep-4", "rep"]  # wrep: no label has it
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("no data") == 1  # b
    assert texts.count("n/a") == 1  # c lacks rep
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 3 and all(np.isfinite(heights))  # no zero-height stand-ins


def _reliability_result(label, counts):
    rows = [[i / 4, (i + 1) / 4, c, (i + 0.5) / 4, 0.5 if c else None]
            for i, c in enumerate(counts)]
    return {"status": "done", "config": {"loss": label},
            "evals": [{"step": 30, "reliability": rows}]}


def test_reliability_small_multiples_share_axes_and_survive_a_label_without_data():
    summary, curves = _run_data({"a": 1024, "b": 1024})
    results = [_reliability_result("a", [3, 5, 0, 1]), _reliability_result("b", [0, 0, 0, 0])]
    caption, fig = build_figures(summary, curves, results,
                                 pd.DataFrame({"label": ["a", "b"]}),
                                 None, baseline="a")["reliability"]
    a, b = fig.axes[:2]
    assert a.get_shared_y_axes().joined(a, b) and a.get_shared_x_axes().joined(a, b)
    assert a.get_title() == "a (baseline)"
    assert [t.get_text() for t in b.texts] == ["no data"]
    fig.canvas.draw()


@pytest.mark.parametrize("values", [[1.0], [2.0, 2.0], [0.0, 1.0]])
def test_degenerate_data_still_draws(values):
    ax = plots.convergence(pd.DataFrame({"label": "a", "step": range(len(values)),
                                         "mean": values, "min": values, "max": values}))
    ax.figure.canvas.draw()
    assert ax.get_yscale() == "linear"
    matrix = pd.DataFrame([values], index=["a"])
    plots.heatmap(matrix, title="t").figure.canvas.draw()
