"""A tiny scale ladder end to end: `lossbench run` trains every size x loss x seed as an
ordinary run, the report gains a Scale section (the other sections read the largest size),
and `lossbench compare` takes the ladder's sizes as workloads."""

import json

import helpers
import pandas as pd
import pytest
from helpers import lossbench_cli as lossbench

from lossbench.suite.load import load_suite

SIZES = ('[scale]\nsizes = [{ n_layer = 1, n_embd = 8 }, { n_layer = 1, n_embd = 16 }, '
         '{ n_layer = 2, n_embd = 16 }, { n_layer = 2, n_embd = 24 }]\n')
TUNE = '[tune]\nsteps = 4\nseeds = [0]\n[tune.grid]\nlr = [1e-4, 3e-3]\n'


def write_suite(folder, extra=SIZES, **overrides):
    return helpers.write_suite(folder, "ladder", '["cross_entropy", "label_smoothing"]',
                               seeds=(0, 1), train={"steps": 8, "warmup_steps": 1},
                               eval={"eval_every": 4, "full_val_windows": 8}, extra=extra,
                               **overrides)


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ladder")
    out = folder / "out"
    proc = lossbench("run", write_suite(folder, SIZES + TUNE), "--out", out, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    (folder / "run.stdout").write_text(proc.stdout)
    return out


def test_every_size_loss_and_seed_is_an_ordinary_run(tmp_path):
    suite = load_suite(write_suite(tmp_path))
    assert len(suite.runs) == 4 * 2 * 2 and len({r.run_id() for r in suite.runs}) == 16
    shapes = sorted({(r.model.n_layer, r.model.n_embd, r.model.n_head) for r in suite.runs})
    assert shapes == [(1, 8, 1), (1, 16, 2), (2, 16, 2), (2, 24, 3)]
    # the contenders (what [tune] tunes) are at the smallest size
    assert {(c.model.n_layer, c.model.n_embd) for c in suite.entries} == {(1, 8)}
    # only the model's shape differs between sizes: same seeds, data, schedule
    base = {(r.loss, r.seed, r.data, r.train, r.eval) for r in suite.runs}
    assert len(base) == 2 * 2


@pytest.mark.slow
def test_report_has_a_scale_section(ladder):
    meta = json.loads((ladder / "suite.json").read_text())
    report = next((ladder / "reports").iterdir())
    md = (report / "report.md").read_text()
    scale_md = md.split("## Scale", 1)[1].split("\n## ", 1)[0]
    for size in meta["scale"]["sizes"]:
        assert f"| {size['label']} | {size['n_layer']} |" in scale_md
    first, last = meta["scale"]["sizes"][0]["label"], meta["scale"]["sizes"][-1]["label"]
    # the verb follows τ ('predicts' only for the same order); tied losses: no τ at all
    import re
    said = re.search(rf"The ranking at {re.escape(first)} params (predicts|partly predicts|does "
                     rf"not predict) the ranking at {re.escape(last)}: τ = (\S+) ", scale_md)
    if said:
        assert (said[1] == "predicts") == (said[2] == "1"), said[0]
    else:
        assert f"The rankings at {first} and {last} params cannot be compared" in scale_md
    assert "τ = " in scale_md and "Paired tests at each size" in scale_md
    assert "Fitted L(N) = E + A·N^(−α)" in scale_md and "rough" in scale_md  # 2 seeds
    assert (report / "scale.png").stat().st_size > 0
    table = pd.read_csv(report / "scale.csv")
    assert len(table) == 4 * 2 and set(table["rank"]) <= {1.0, 1.5, 2.0}
    assert (table.groupby("size").train_flops.first().sort_values().index.tolist()
            == table.sort_values("n_params")["size"].unique().tolist())
    # the sentence names every size whose ranks differ from the smallest size's
    rank = table.pivot(index="label", columns="size", values="rank")
    moved = [s["label"] for s in meta["scale"]["sizes"][1:]
             if not rank[s["label"]].equals(rank[first])]
    where = scale_md.split("Where the ranking does not hold", 1)[1].split("\n", 1)[0]
    assert [s for s in rank.columns if f"at {s}:" in where] == sorted(moved, key=list(
        rank.columns).index) and (("nowhere" in where) == (not moved))
    fits = pd.read_csv(report / "scale_fits.csv")
    assert set(fits.label) == {"cross_entropy", "label_smoothing"}
    # every other section reads the largest size only: 2 seeds per loss, not 8
    headline = pd.read_csv(report / "headline.csv")
    assert set(headline.runs) == {2}
    assert f"every section but Scale reports its largest size, {last}" in md


@pytest.mark.slow
def test_tuned_at_the_smallest_size_and_run_at_every_size(ladder):
    meta = json.loads((ladder / "suite.json").read_text())
    tuning = [json.loads((ladder / "runs" / t["run_id"] / "config.json").read_text())
              for t in meta["tuning_runs"]]
    assert {(c["model"]["n_layer"], c["model"]["n_embd"]) for c in tuning} == {(1, 8)}
    chosen = {label: c["setting"]["lr"] for label, c in meta["choices"].items()}
    finals = [json.loads((ladder / "runs" / r / "config.json").read_text())
              for r in meta["run_ids"]]
    assert len(finals) == 16 and set(meta["scale"]["runs"]) == set(meta["run_ids"])
    for c in finals:  # each loss's choice, at every size
        assert c["train"]["lr"] == chosen[c["label"] or c["loss"]]
    md = (next((ladder / "reports").iterdir()) / "report.md").read_text()
    assert "tune\\] chose each loss's setting at the smallest size" in md  # [ ] escaped


@pytest.mark.slow
def test_compare_takes_each_size_as_a_workload(ladder, tmp_path):
    proc = lossbench("compare", ladder, "--out", tmp_path / "cmp")
    assert proc.returncode == 0, proc.stderr
    workloads = pd.read_csv(tmp_path / "cmp" / "workloads.csv")
    assert workloads.workload.str.startswith("ladder @ ").sum() == 4
    assert set(workloads.runs) == {4}  # 2 losses x 2 seeds at each size


@pytest.mark.slow
def test_a_bad_scale_section_is_one_line_and_exit_2(tmp_path):
    path = write_suite(tmp_path,
                       extra="[scale]\nparams = [10.0]\nsteps = 5\ntokens_per_param = 2\n")
    proc = lossbench("run", path, "--out", tmp_path / "out")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "[scale] steps and tokens_per_param" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_status_and_the_run_summary_name_the_size(ladder):
    meta = json.loads((ladder / "suite.json").read_text())
    proc = lossbench("status", ladder)
    assert proc.returncode == 0, proc.stderr
    header, *rows = [line.split() for line in proc.stdout.splitlines()
                     if line.split()[:1] in (["size"], *[[s["label"]] for s in meta["scale"]["sizes"]])]
    assert header[:3] == ["size", "loss", "seed"]
    labels = [s["label"] for s in meta["scale"]["sizes"]]
    assert sorted(r[0] for r in rows) == sorted(labels * 2 * 2)  # each size: 2 losses x 2 seeds
    summary = (ladder.parent / "run.stdout").read_text()
    assert f"at the largest size of the scale ladder, {labels[-1]}" in summary
