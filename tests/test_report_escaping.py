"""Reports of results that other people wrote: labels, names and samples are shown as text,
never run as HTML, Markdown, spreadsheet formulas or mathtext, and a crafted suite name
cannot move the report folder."""

import csv
import io
import json
import re
import shutil
import warnings

import matplotlib
import pandas as pd
import pytest
from helpers import tiny_toml
from hypothesis import given
from hypothesis import strategies as st

from lossbench.core.escaping import (
    csv_safe_cell,
    csv_safe_frame,
    csv_text,
    csv_unescape_frame,
    html_text,
    md_block,
    md_inline,
    plain,
)
from lossbench.core.paths import UnsafePathError
from lossbench.report import plots
from lossbench.report.compare import build_comparison
from lossbench.report.document import png
from lossbench.report.render import build_report
from lossbench.store.tables import write_tables

SCRIPT = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://x")'
MATH = "cost $\\notacommand$"
LABELS = [SCRIPT, "**bold**", FORMULA, MATH, "a|b", "[click](http://evil.example)", "_{"]
SAMPLE = "<img src=x onerror=alert(2)>"
# text matplotlib would parse as mathtext (and raise on), or a legend would drop
CRASHERS = [MATH, "a$b", "\\x", "$$", "_{", "$x^{$", "\\$x$", "_hidden"]


def _craft(out, labels):
    """Make ``out`` a crafted results directory: copies of the mse runs carrying ``labels``
    (final val CEs lowered by 1 + i/10: their differences to the baseline are negative,
    and with 5 seeds the first label's 95% CI is apart from the next one's: bold), a
    sample with markup and one with a lone surrogate (JSON allows "\\ud800"), a per-layer
    metric name with mathtext, a description with a script."""
    meta = json.loads((out / "suite.json").read_text())
    sources = [d for d in sorted((out / "runs").iterdir()) if d.name.startswith("mse-")]
    for i, label in enumerate(labels):
        for src in sources:
            run_id = f"crafted{i}-{src.name}"
            shutil.copytree(src, out / "runs" / run_id)
            path = out / "runs" / run_id / "result.json"
            r = json.loads(path.read_text())
            r["config"]["label"] = label
            r["summary"]["run_id"] = run_id
            for key in ("final_val_ce", "final_val_ce_full", "final_val_ce_calibrated"):
                r["summary"][key] -= 1 + i / 10  # apart from each other and from the rest
            r["evals"][-1]["samples"][0]["continuation"] = SAMPLE
            r["evals"][-1]["samples"][1]["continuation"] = "lone \ud800 surrogate"
            r["evals"][-1]["grad_norm_$\\bad$"] = 0.5
            path.write_text(json.dumps(r))
            meta["run_ids"].append(run_id)
    meta["description"] = "<script>alert(3)</script>"
    (out / "suite.json").write_text(json.dumps(meta))  # JSON writes "\ud800" escaped
    write_tables(out)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """(results dir, report dir) of a tiny sweep whose results were then crafted."""
    from lossbench.suite.load import load_suite
    from lossbench.sweep.sweep import run_suite

    root = tmp_path_factory.mktemp("crafted")
    suite = root / "esc.toml"
    suite.write_text(tiny_toml("esc", '["cross_entropy", "mse"]', seeds=range(5)))
    out = root / "out"
    run_suite(load_suite(suite), out, workers=1, show_progress=False)
    _craft(out, LABELS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs are no failure here
        report = build_report(out, root / "report")
    return out, report


def test_crafted_labels_are_text_in_index_html(crafted):
    _, report = crafted
    page = (report / "index.html").read_text()
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<td class='t'>**bold**</td>" in page and "<b>bold</b>" not in page
    assert "<b>" in page  # the best value of a column is still bold
    assert "lone \ufffd surrogate" in page


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_crafted_labels_are_text_in_report_md(crafted):
    _, report = crafted
    md = (report / "report.md").read_text()
    assert "<script" not in md and "<img" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "| \\*\\*bold\\*\\* |" in md and "| a\\|b |" in md
    assert "\\[click\\](http://evil.example)" in md
    assert not re.search(r"(?<!\\)\]\(http", md)  # no link: every ] before ( is escaped
    assert "cost \\$\\\\notacommand\\$" in md
    assert re.search(r"\*\*[^*|]+\*\*", md)  # bold best values, asked for by the report
    results = md.split("## Results")[1].split("## ")[0].split("Other metrics")[0]
    rows = [line for line in results.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 1 + 1 + len(LABELS)  # header, rule, cross_entropy, mse, crafted
    assert len({_unescaped_pipes(line) for line in rows}) == 1  # no label adds a column


def _csv_cells(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_formula_labels_are_quoted_in_report_csvs_and_numbers_untouched(crafted):
    _, report = crafted
    for name in ("headline", "comparisons", "ranks"):
        cells = [c for row in _csv_cells(report / f"{name}.csv") for c in row]
        assert "'" + FORMULA in cells and FORMULA not in cells, name
        assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")], name
        table = csv_unescape_frame(pd.read_csv(report / f"{name}.csv"))
        assert set(LABELS) <= set(table.label), name
    comps = pd.read_csv(report / "comparisons.csv")
    assert comps.mean_difference.dtype == float
    assert (comps.set_index("label").loc[["'" + FORMULA, SCRIPT], "mean_difference"] < 0).all()
    rows = _csv_cells(report / "comparisons.csv")
    column = rows[0].index("mean_difference")
    assert any(row[column].startswith("-0.") or row[column].startswith("-1")
               for row in rows[1:])  # written as a number: no quote in front


def test_crafted_results_still_draw_every_figure(crafted):
    _, report = crafted
    for name in ("convergence", "train_loss", "grad_norm", "layer_heatmap", "reliability",
                 "repetition"):
        assert (report / f"{name}.png").stat().st_size > 1000, name


@pytest.fixture
def evil_named(crafted, tmp_path, monkeypatch):
    """A copy of the crafted results whose suite.json name climbs out of the report folder;
    the working directory is a fresh folder under tmp_path."""
    out = tmp_path / "evil"
    shutil.copytree(crafted[0], out)
    meta = json.loads((out / "suite.json").read_text())
    (out / "suite.json").write_text(json.dumps({**meta, "name": "../../evil"}))
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    return out


def _files(root):
    return sorted(str(p) for p in root.rglob("*"))


@pytest.mark.parametrize("out_dir", [None, "given"])
def test_suite_name_that_climbs_out_is_refused_and_nothing_written(evil_named, tmp_path,
                                                                   out_dir):
    before = _files(tmp_path)
    with pytest.raises(UnsafePathError, match="suite.json name"):
        build_report(evil_named, out_dir and tmp_path / out_dir)
    assert _files(tmp_path) == before


def test_compare_refuses_a_suite_name_that_is_not_a_plain_name(evil_named, crafted, tmp_path):
    before = _files(tmp_path)
    with pytest.raises(UnsafePathError, match="suite.json name"):
        build_comparison([crafted[0], evil_named])
    assert _files(tmp_path) == before


def test_default_report_folder_must_stay_inside_reports(tmp_path):
    from lossbench.report.render import default_out

    (tmp_path / "reports").mkdir()
    assert default_out(tmp_path / "reports", "tiny").parent == tmp_path / "reports"
    (tmp_path / "elsewhere").mkdir()
    planted = default_out(tmp_path / "reports", "planted")
    planted.symlink_to(tmp_path / "elsewhere")  # a folder planted to lead out of reports/
    with pytest.raises(UnsafePathError):
        default_out(tmp_path / "reports", "planted")
    with pytest.raises(UnsafePathError):
        default_out(tmp_path / "reports", "../x")


def test_bold_is_asked_for_by_type_never_read_from_the_text():
    from lossbench.report.document import Bold, html_table, md_table

    rows = [["**label**", Bold("1.5"), "a|b"]]
    page = html_table(["loss", "<i>x</i>", "y"], rows)
    assert "<td class='t'>**label**</td><td><b>1.5</b></td><td class='t'>a|b</td>" in page
    assert "<th>&lt;i&gt;x&lt;/i&gt;</th>" in page
    assert md_table(["loss", "x", "y"], rows).splitlines()[-1] == \
        "| \\*\\*label\\*\\* | **1.5** | a\\|b |"


def test_figure_and_csv_names_must_be_plain_names(tmp_path):
    from lossbench.report.document import Document

    doc = Document("t", tmp_path / "doc")
    doc.section("s")
    with pytest.raises(UnsafePathError):
        doc.csv("../escaped", pd.DataFrame({"a": [1]}))
    fig = matplotlib.figure.Figure()
    with pytest.raises(UnsafePathError):
        doc.figure("../escaped", "caption", fig)
    assert not (tmp_path / "escaped.csv").exists() and not (tmp_path / "escaped.png").exists()


@pytest.mark.parametrize("text, expected", [
    (SCRIPT, "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("**bold**", "\\*\\*bold\\*\\*"),
    ("`code`", "\\`code\\`"),
    ("![img](http://x/y.png)", "!\\[img\\](http://x/y.png)"),
    ("a|b", "a\\|b"),
    ("~~gone~~ $x$ # not a heading", "\\~\\~gone\\~\\~ \\$x\\$ \\# not a heading"),
    ("back\\slash &amp;", "back\\\\slash &amp;amp;"),
    ("cross_entropy _x_ a__b", "cross_entropy \\_x\\_ a\\_\\_b"),
    ("two\nlines\r\n  spaced", "two lines spaced"),
])
def test_md_inline(text, expected):
    assert md_inline(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("- item", "\\- item"), ("+ item", "\\+ item"), ("12. item", "12\\. item"),
    ("3) item", "3\\) item"), ("# heading", "\\# heading"), ("> quote", "&gt; quote"),
    ("---", "\\---"), ("plain - text 1. here", "plain - text 1. here"),
])
def test_md_block_escapes_what_would_start_a_block(text, expected):
    assert md_block(text) == expected


# every figure of the report per label (~1.5 s each): two in the fast lane, all in the full suite
@pytest.mark.parametrize("label", [
    pytest.param(label, marks=() if label in (MATH, "$x^{$") else pytest.mark.slow)
    for label in CRASHERS])
def test_labels_are_drawn_as_plain_text(label):
    """Each figure draws (no mathtext error), and shows the label character for character."""
    labels = [label, "cross_entropy"]
    bands = pd.DataFrame([{"label": lb, "step": s, "mean": 1.0 + s, "min": 1.0, "max": 2.0 + s}
                          for lb in labels for s in range(3)])
    ax = plots.convergence(bands)
    shown = [t._preprocess_math(t.get_text()) for t in ax.get_legend().get_texts()]
    assert shown == [(lb, False) for lb in labels]
    matrix = pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], index=labels, columns=["embed", label])
    rel = pd.DataFrame({"bin_lower": [0.0, 0.5], "bin_upper": [0.5, 1.0], "count": [3, 4],
                        "confidence": [0.3, 0.7], "accuracy": [0.2, 0.8]})
    tuning = pd.DataFrame([{"label": lb, "lr": v, "score": 1.0 + v, "status": "done"}
                           for lb in labels for v in (1e-3, 1e-2)])
    profiles = pd.DataFrame([{"label": lb, "tau": t, "rho": 0.5} for lb in labels
                             for t in (1.0, 4.0)])
    keyed = [ax, plots.sensitivity(tuning, param="lr", metric="val CE",
                                   chosen={lb: {"lr": 1e-2} for lb in labels}),
             plots.performance_profiles(profiles)]
    for keyed_ax in keyed:  # one legend entry per label: '_hidden' is not dropped
        assert len(keyed_ax.get_legend().get_texts()) == len(labels)
    figures = [*(a.figure for a in keyed), plots.small_multiples(bands, ylabel=label),
               plots.heatmap(matrix, title=label).figure,
               plots.reliability(rel, title=label).figure,
               plots.grouped_bars(pd.DataFrame({"label": labels, "final_rep": [0.1, 0.2]}),
                                  ["final_rep"], title=label).figure]
    for fig in figures:
        assert png(fig)[:4] == b"\x89PNG"


@given(st.text())
def test_plain_is_undone_exactly_by_matplotlib(text):
    shown, math = matplotlib.text.Text()._preprocess_math(plain(text))
    assert (shown, math) == (text, False)


CELLS = st.one_of(st.text(), st.text(alphabet="'=+-@\t\r x1"), st.integers(), st.none(),
                  st.floats(allow_nan=False))


@given(st.lists(st.tuples(CELLS, st.floats(allow_nan=False)), min_size=1),
       st.text(alphabet="'=+-@ab", min_size=1))
def test_csv_escape_round_trips_and_leaves_no_formula(rows, name):
    frame = pd.DataFrame({name: pd.Series([a for a, _ in rows], dtype=object),
                          "number": [b for _, b in rows]})
    safe = csv_safe_frame(frame)
    assert csv_unescape_frame(safe).equals(frame)
    assert safe["number"].equals(frame["number"])  # negative numbers stay numbers
    for cell in [*safe.iloc[:, 0], *safe.columns]:
        if isinstance(cell, str) and cell:
            assert cell[0] not in "=+-@\t\r"


@given(st.lists(st.tuples(st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
                          st.floats(allow_nan=False)), min_size=1))
def test_csv_text_round_trips_through_a_csv_file(rows):
    """What csv_text writes reads back as written (text columns read as text), a lone
    '\\r' in a label included."""
    frame = pd.DataFrame({"label": [a for a, _ in rows], "number": [b for _, b in rows]})
    back = pd.read_csv(io.StringIO(csv_text(frame)), dtype={"label": str},
                       keep_default_na=False)
    assert csv_unescape_frame(back).label.tolist() == frame.label.tolist()
    assert back.number.tolist() == frame.number.tolist()


@given(st.text())
def test_md_inline_leaves_no_markup(text):
    out = md_inline(text)
    assert not set("<>\n\r\t") & set(out)
    for match in re.finditer(r"\\*[`*\[\]|~$#]", out):  # each preceded by an odd run of \
        assert (len(match.group()) - 1) % 2 == 1, (text, out)


def test_lone_surrogates_become_replacement_characters():
    assert md_inline("a\ud800b") == html_text("a\ud800b") == "a\ufffdb"
    assert plain("\udfff$") == "\ufffd\\$"


def test_csv_safe_cell_examples():
    assert csv_safe_cell("=1+1") == "'=1+1" and csv_safe_cell("-2") == "'-2"
    assert csv_safe_cell("'=1") == "''=1" and csv_safe_cell("'plain") == "'plain"
    assert csv_safe_cell(-2.5) == -2.5 and csv_safe_cell("a=b") == "a=b"
