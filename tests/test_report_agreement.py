"""Issue 26's contradictions, reproduced on hand-made results directories and resolved:
the verdict, the bold marks, the Statistics table, the Claims, LaTeX, the terminal summary
and --fail-on-claims all state the one procedure's answer (analysis.inference)."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lossbench.cli.report import contradicted_claims, print_suite_summary
from lossbench.core.escaping import csv_text
from lossbench.report import sections
from lossbench.report.claims import section as claims_section
from lossbench.report.document import Document
from lossbench.report.evidence import gather
from lossbench.report.latex import latex_tables

STEPS = [0, 100, 200, 300, 400, 500]


def write_results(out, finals: dict[str, list[float]], *, status=None, claims=(),
                  curve=None, extra=None, train=None):
    """summary.csv, curves.csv and suite.json of hand-made runs: label -> per-seed final
    val CE (``status``: label -> per-seed status; ``curve(v)``: the val CE curve)."""
    curve = curve or (lambda v: [4.0, 3.2, 2.8, 2.6, 2.4, v])
    summary, curves = [], []
    for label, values in finals.items():
        for seed, v in enumerate(values):
            st = (status or {}).get(label, ["done"] * len(values))[seed]
            run_id = f"{label}-s{seed}"
            row = {"run_id": run_id, "loss": label, "label": label, "seed": seed,
                   "status": st, "final_val_ce": v, "wall_s": 10.0,
                   "diverged_step": 300 if st == "diverged" else math.nan,
                   **((extra or {}).get(label, {}))}
            summary.append(row)
            values_curve = curve(v)
            curves += [{"run_id": run_id, "step": s, "metric": "val_ce", "value": c}
                       for s, c in zip(STEPS, values_curve)]
            curves += [{"run_id": run_id, "step": s, "metric": "train_ce", "value": c}
                       for s, c in zip(range(0, 600, 20),
                                       (train or (lambda v: np.linspace(4.0, v, 30)))(v))]
    out.mkdir(parents=True)
    (out / "summary.csv").write_text(csv_text(pd.DataFrame(summary)))
    (out / "curves.csv").write_text(csv_text(pd.DataFrame(curves)))
    (out / "suite.json").write_text(json.dumps(
        {"name": "agree", "baseline": "cross_entropy", "claims": list(claims),
         "run_ids": [r["run_id"] for r in summary]}))
    return out


def rendered(ev, folder) -> str:
    doc = Document("t", folder)
    sections.verdict(doc, ev)
    claims_section(doc, ev.claims)
    sections.results(doc, ev)
    sections.statistics(doc, ev)
    return (doc.write() / "report.md").read_text()


def verdict_of(md: str, label: str) -> str:
    table = md.split("## Verdict")[1].split("\n## ")[0]
    return next(line for line in table.splitlines() if f"| {label} |" in line)


def terminal(ev) -> str:
    runner = CliRunner()
    import click

    @click.command()
    def show():
        print_suite_summary(ev)
    return runner.invoke(show).output


def tex_p(p: float) -> str:
    from lossbench.report.document import fmt
    from lossbench.report.latex import tex

    return tex(fmt(p, 3))


def kl_claim(metric="val_ce"):
    return {"name": "kl lowers val CE", "a": "kl", "b": "cross_entropy", "metric": metric,
            "direction": "lower", "margin": 0.0}


def test_kl_on_6_of_6_seeds_verdict_bold_claim_latex_and_terminal_agree(tmp_path):
    rng = np.random.default_rng(26)
    base = list(2.68 + rng.normal(0, 0.02, 6))
    finals = {"cross_entropy": base,
              "kl": [v - 0.058 + e for v, e in zip(base, rng.normal(0, 0.004, 6))],
              "focal": [v + e for v, e in zip(base, rng.normal(0, 0.02, 6))],
              "mse": [v + 0.1 + e for v, e in zip(base, rng.normal(0, 0.02, 6))]}
    ev = gather(write_results(tmp_path / "r", finals, claims=[kl_claim()]))
    md = rendered(ev, tmp_path / "doc")
    kl = ev.comparisons.set_index("label").loc["kl"]
    (claim,) = ev.claims
    assert kl.word == "better" and claim.verdict == "supported"
    assert claim.p_holm == pytest.approx(kl.p_holm)  # one test, one family, one p
    p = f"{kl.p_holm:.2g}"
    assert f"Holm p = {p}" in verdict_of(md, "kl") and "better: val CE lower" in verdict_of(md, "kl")
    assert ev.marks["final_val_ce"] == {"kl"}
    assert re.search(r"\| kl \| 6 \| \*\*", md)  # bold in the Results table
    tex = latex_tables(ev)
    assert r"\textbf{" in next(line for line in tex.splitlines() if line.startswith("kl &"))
    stats = next(t for t in tex.split(r"\begin{table}") if "-statistics}" in t)
    stats_row = next(line for line in stats.splitlines() if line.startswith("kl &"))
    assert f" & {tex_p(kl.p_holm)} & better & " in stats_row
    claim_row = next(line for line in tex.splitlines() if line.startswith("kl lowers"))
    assert f" & {tex_p(claim.p_holm)} & supported" in claim_row
    out = terminal(ev)
    assert re.search(r"kl .* better \(Δ [−-]0\.0\d+, Holm p " + re.escape(f"{kl.p_holm:.2g}"), out)
    assert "supported" in out
    # a claim given at report time is a family of its own: the verdict's p does not move
    ev2 = gather(tmp_path / "r", claims=["focal < cross_entropy on val_ce"])
    assert ev2.comparisons.p_holm.tolist() == pytest.approx(ev.comparisons.p_holm.tolist())
    assert [r.family for r in ev2.claims] == ["report", "report time"]
    assert ev2.claims[1].stated == "at report time"


def test_three_seeds_same_words_everywhere_and_two_seeds_are_untested(tmp_path):
    base = [2.7, 2.68, 2.71]
    finals = {"cross_entropy": base, "kl": [v - 0.495 + e for v, e in
                                            zip(base, (0.001, -0.002, 0.0015))]}
    ev = gather(write_results(tmp_path / "r3", finals, claims=[kl_claim()]))
    md = rendered(ev, tmp_path / "d3")
    kl = ev.comparisons.set_index("label").loc["kl"]
    assert kl.word == "better" and ev.claims[0].verdict == "supported"
    assert verdict_of(md, "kl").split(" | ")[3].startswith("better:")
    assert " better " in latex_tables(ev) and "better (Δ" in terminal(ev)
    # two seeds: untested in every statement, and --fail-on-claims has nothing to fail on
    two = {k: v[:2] for k, v in finals.items()}
    ev = gather(write_results(tmp_path / "r2", two, claims=[
        {**kl_claim(), "direction": "higher"}]))  # would be "contradicted" if tested
    md = rendered(ev, tmp_path / "d2")
    assert ev.comparisons.word.tolist() == ["untested"]
    assert "untested: 2 seeds" in verdict_of(md, "kl")
    assert ev.claims[0].verdict == "untested" and contradicted_claims(ev) == []
    assert "untested: 2 seeds" in latex_tables(ev) and "untested" in terminal(ev)


def test_a_diverged_seed_never_yields_better(tmp_path):
    base = [2.7 + 0.01 * s for s in range(8)]
    finals = {"cross_entropy": base, "kl": [v - 0.1 for v in base],
              "focal": [v + 0.001 * (-1) ** s for s, v in enumerate(base)]}
    ev = gather(write_results(tmp_path / "r", finals,
                              status={"kl": ["done"] * 7 + ["diverged"]}))
    kl = ev.comparisons.set_index("label").loc["kl"]
    assert kl.n_pairs == 8 and kl.penalized == 1 and kl.word != "better"
    assert kl.p_better == pytest.approx(7 / 8) and kl.p_better_low < 7 / 8  # paired, not 1 [1, 1]
    assert "kl" not in ev.marks["final_val_ce"]
    md = rendered(ev, tmp_path / "d")
    assert "scored worst-case" in verdict_of(md, "kl")
    # dropped instead, the 7 survivors would have read "better"
    ev = gather(write_results(tmp_path / "r7", {k: v[:7] for k, v in finals.items()}))
    assert ev.comparisons.set_index("label").loc["kl", "word"] == "better"


def test_identical_to_baseline_and_negligible_differences(tmp_path):
    base = [2.7, 2.68, 2.71, 2.69, 2.72]
    finals = {"cross_entropy": base, "wired_wrong": list(base),
              "z_loss": [v + 3.7e-6 * (1 + 0.1 * s) for s, v in enumerate(base)]}
    ev = gather(write_results(tmp_path / "r", finals))
    md = rendered(ev, tmp_path / "d")
    row = verdict_of(md, "wired_wrong")
    assert "identical to cross_entropy on every seed" in row
    assert "does the loss reach the model?" in row.split(" | ")[4]
    z = ev.comparisons.set_index("label").loc["z_loss"]
    assert z.word in ("equivalent", "below margin") and "seeds would resolve" not in verdict_of(
        md, "z_loss")


def test_flags_carry_the_runs_diagnoses(tmp_path):
    flat = lambda v: [v + 0.004, v + 0.003, v + 0.002, v + 0.001, v + 0.0005, v]  # noqa: E731
    finals = {"cross_entropy": [2.68, 2.69, 2.7], "kl": [2.6, 2.61, 2.62]}
    ev = gather(write_results(tmp_path / "r", finals, curve=flat,
                              train=lambda v: np.linspace(v + 0.05, v, 30)))
    md = rendered(ev, tmp_path / "d")
    flags = verdict_of(md, "cross_entropy").split(" | ")[4]
    assert "plateau on 3 of 3 seeds" in flags and "underfitting on 3 of 3 seeds" in flags


def test_temperature_at_its_bound_is_no_fit(tmp_path):
    finals = {"cross_entropy": [2.7, 2.68, 2.71], "hinge": [2.77, 2.77, 2.77]}
    extra = {"hinge": {"final_temperature": math.exp(6)},
             "cross_entropy": {"final_temperature": 1.02}}
    ev = gather(write_results(tmp_path / "r", finals, extra=extra))
    row = ev.table.set_index("label").loc["hinge"]
    assert row.temperature_bound == 3 and math.isnan(row.final_temperature)
    assert sections._cell(row._replace(label="hinge") if hasattr(row, "_replace") else
                          next(r for r in ev.table.itertuples() if r.label == "hinge"),
                          "final_temperature", set()) == "no fit (at bound)"


def _result(label, loss, teacher="ngram", arch="gpt", **model):
    return {"config": {"loss": loss, "label": label, "data": {"teacher": teacher,
                                                               "ngram_order": 3},
                       "model": {"arch": arch, "n_layer": 4, "n_embd": 128, "n_head": 4,
                                 **model}},
            "summary": {"label": label}}


def test_a_loss_with_a_teacher_is_flagged_with_what_it_uses():
    from lossbench.report.evidence import informed_losses
    from lossbench.report.verdict import flags

    results = [_result("cross_entropy", "cross_entropy"), _result("kl", "kl"),
               _result("oracle_kl", "kl", teacher="oracle"),
               _result("kl_smoothed", "kl", teacher="smoothed")]
    informed = informed_losses(results, "cross_entropy")
    assert set(informed) == {"kl", "oracle_kl"}  # the smoothed one-hot is no teacher
    assert "3-gram teacher fitted on the training split" in informed["kl"]
    assert "oracle" in informed["oracle_kl"]
    row = pd.Series({"diverged": 0, "failed": 0, "degenerate": 0, "not_converged": 0,
                     "runs": 3, "done": 3, "plateau": 0, "underfitting": 0})
    assert flags(row, informed["kl"])[0].startswith("uses information the baseline lacks: a 3-gram")


def test_the_protocol_names_the_model_that_ran(tmp_path):
    finals = {"cross_entropy": [2.7, 2.68, 2.71], "kl": [2.6, 2.61, 2.62]}
    out = write_results(tmp_path / "r", finals, extra={
        k: {"params_total": 123456} for k in finals})
    ev = gather(out)
    custom = _result("cross_entropy", "cross_entropy", arch="python:mypkg.models:tiny_rnn",
                     model_kwargs={"hidden": 64})["config"]
    text = sections.model_text(ev, custom)
    assert text == "model: custom factory mypkg.models:tiny_rnn(hidden=64), 123,456 parameters"
    assert "4 layers" not in text  # not the default GPT's shape
    hf = _result("cross_entropy", "cross_entropy", arch="hf",
                 hf_config={"model_type": "llama", "hidden_size": 64})["config"]
    assert sections.model_text(ev, hf).startswith("model: transformers llama from hf_config")
    gpt = _result("cross_entropy", "cross_entropy")["config"]
    assert sections.model_text(ev, gpt).startswith("model: GPT, 4 layers × 128 wide")


def test_claims_remember_when_they_were_stated(tmp_path):
    from lossbench.store.experiments import stamp_claims

    first = stamp_claims([kl_claim()], [], "t0", results_exist=False)
    assert first[0]["stated_at"] == "t0" and first[0]["after_results"] is False
    # rerun unchanged: the stamp is kept; edited or added once results exist: after them
    edited = {**kl_claim(), "margin": 0.01}
    again = stamp_claims([kl_claim(), edited], first, "t1", results_exist=True)
    assert again[0] == first[0]
    assert again[1]["stated_at"] == "t1" and again[1]["after_results"] is True
    finals = {"cross_entropy": [2.7, 2.68, 2.71], "kl": [2.6, 2.61, 2.62]}
    ev = gather(write_results(tmp_path / "r", finals, claims=again))
    assert [r.stated for r in ev.claims] == ["before the results", "stated after the results"]
    md = rendered(ev, tmp_path / "d")
    assert "1 stated before the results, 1 stated after the results" in md


def test_an_experiment_rerun_with_an_edited_claim_marks_it_after_the_results(tmp_path):
    from lossbench.store.experiments import open_experiment

    meta = {"name": "s", "baseline": "cross_entropy", "claims": [kl_claim()]}
    first = open_experiment(tmp_path, meta, ["run-a"])
    assert first["claims"][0]["after_results"] is False
    (tmp_path / "runs" / "run-a").mkdir(parents=True)
    (tmp_path / "runs" / "run-a" / "DONE").write_text("")
    edited = {**meta, "claims": [kl_claim(), {**kl_claim(), "name": "added later"}]}
    again = open_experiment(tmp_path, edited, ["run-a"])
    assert again["id"] == first["id"]  # the same experiment, reused
    assert again["claims"][0] == first["claims"][0]
    assert again["claims"][1]["after_results"] is True


def test_compare_states_the_same_verdict_as_the_report(tmp_path):
    import warnings

    from lossbench.report.compare import build_comparison

    base = [2.7, 2.68, 2.71, 2.69]
    a = write_results(tmp_path / "a", {"cross_entropy": base,
                                       "kl": [v - 0.1 + 0.001 * s for s, v in enumerate(base)]})
    b = write_results(tmp_path / "b", {"cross_entropy": base,
                                       "kl": [v + 0.02 * (-1) ** s for s, v in enumerate(base)]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md = (build_comparison([a, b], tmp_path / "cmp") / "report.md").read_text()
    section = md.split("## Against the baseline on each workload")[1].split("\n## ")[0]
    for folder, name in ((a, "agree (a)"), (b, "agree (b)")):
        kl = gather(folder).comparisons.set_index("label").loc["kl"]
        row = next(line for line in section.splitlines() if line.startswith(f"| {name} | kl"))
        assert row.rstrip(" |").endswith(WORDS[kl.word]) and fmt_p(kl.p_holm) in row


def fmt_p(p):
    from lossbench.report.document import fmt

    return fmt(p, 3)


from lossbench.report.verdict import WORD_TEXT as WORDS  # noqa: E402


def test_report_margin_is_a_suite_key_and_sets_the_words(tmp_path):
    from helpers import tiny_toml

    from lossbench.suite.load import SuiteError, load_suite

    path = tmp_path / "m.toml"
    path.write_text(tiny_toml("m", '["cross_entropy", "kl"]') + "\n[report]\nmargin = 0.1\n")
    assert load_suite(path).report.margin == 0.1
    path.write_text(tiny_toml("m", '["cross_entropy", "kl"]') + "\n[report]\nmargin = -1\n"
                    "colour = 1\n")
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert any("[report] margin" in e for e in err.value.errors)
    assert any("[report] unknown key 'colour'" in e for e in err.value.errors)
    base = [2.7, 2.68, 2.71, 2.69, 2.72]
    finals = {"cross_entropy": base, "kl": [v - 0.058 + 0.001 * s for s, v in enumerate(base)]}
    out = write_results(tmp_path / "r", finals)
    assert gather(out).comparisons.word.tolist() == ["better"]  # default margin 0.005
    meta = json.loads((out / "suite.json").read_text())
    (out / "suite.json").write_text(json.dumps({**meta, "report": {"margin": 0.1}}))
    (c,) = gather(out).comparisons.itertuples()
    assert c.word == "equivalent" and c.margin == 0.1  # within ±0.1: TOST shows it
