"""Claims: parsing and validation (one line, exit 2), the tests on constructed score tables
(supported, contradicted, inconclusive; equivalence; unfinished runs counted against;
Holm across claims), the report's section and CSV, and `lossbench run --fail-on-claims`."""

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import lossbench_cli as run
from helpers import tiny_toml

from lossbench.analysis.scores import ScoreTable
from lossbench.analysis.stats import holm
from lossbench.report.claims import _verdict_text, claims_table, evaluate_claims
from lossbench.suite.claims import Claim, ClaimError, check_claim, parse_claim_text, parse_claims
from lossbench.suite.load import SuiteError, load_suite

LABELS = ["cross_entropy", "unlikelihood"]
GOOD = {"name": "UL lowers repetition", "a": "unlikelihood", "b": "cross_entropy",
        "metric": "seq_rep_4", "direction": "lower", "source": "Welleck et al. 2020"}


def test_a_valid_claim_parses():
    errors = []
    (claim,) = parse_claims([GOOD], "s.toml", LABELS, errors)
    assert errors == []
    assert claim == Claim("UL lowers repetition", "unlikelihood", "cross_entropy",
                          "final_seq_rep_4", "lower", 0.0, "Welleck et al. 2020")
    assert claim.statement() == "unlikelihood < cross_entropy on seq_rep_4"


@pytest.mark.parametrize("change,fragment", [
    ({"a": "unlikelyhood"}, "claims[0]: a: 'unlikelyhood' is not a label"),
    ({"b": "ce"}, "claims[0]: b: 'ce' is neither a label"),
    ({"metric": "seq_rep_5"}, "claims[0]: metric: 'seq_rep_5' is not a final metric"),
    ({"direction": "smaller"}, "claims[0]: direction: expected one of lower, higher, equal"),
    ({"margin": -1.0}, "claims[0]: margin: expected a number >= 0"),
    ({"direction": "equal"}, "claims[0]: margin: an 'equal' claim needs a margin > 0"),
    ({"colour": "red"}, "claims[0]: unknown key 'colour'"),
    ({"b": "unlikelihood"}, "a and b are the same label"),
])
def test_invalid_claims_are_named(change, fragment):
    errors = []
    assert parse_claims([{**GOOD, **change}], "s.toml", LABELS, errors) == ()
    assert len(errors) == 1 and errors[0].startswith("s.toml: claims[0]") and fragment in errors[0], errors


def test_constant_b_and_duplicate_names():
    errors = []
    (claim,) = parse_claims([{**GOOD, "b": 2.77, "direction": "equal", "margin": 0.1}],
                            "s.toml", LABELS, errors)
    assert claim.b == 2.77 and claim.b_is_constant and errors == []
    parse_claims([GOOD, GOOD], "s.toml", LABELS, errors)
    assert errors == ["s.toml: claims: name 'UL lowers repetition' is used twice"]


def test_claim_text():
    columns = ["final_seq_rep_4", "final_val_ce"]
    c = parse_claim_text("unlikelihood < cross_entropy on seq_rep_4", LABELS, columns)
    assert (c.a, c.b, c.metric, c.direction, c.margin) == (
        "unlikelihood", "cross_entropy", "final_seq_rep_4", "lower", 0.0)
    c = parse_claim_text("unlikelihood = cross_entropy on val_ce within 0.02", LABELS, columns)
    assert (c.direction, c.margin) == ("equal", 0.02)
    assert parse_claim_text("unlikelihood > 1.5 on val_ce by 0.1", LABELS, columns).b == 1.5
    for bad in ("unlikelihood < cross_entropy", "unlikelihood < nope on val_ce",
                "unlikelihood < cross_entropy on nope"):
        with pytest.raises(ClaimError, match="--claim"):
            parse_claim_text(bad, LABELS, columns)


SUITE = """
name = "tiny"
seeds = [0, 1]
losses = ["cross_entropy", "unlikelihood"]
[train]
steps = 5
warmup_steps = 1
"""


def test_suite_carries_and_validates_its_claims(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SUITE + textwrap.dedent("""
        [[claims]]
        a = "unlikelihood"
        b = "cross_entropy"
        metric = "wrep"
        direction = "lower"
        """))
    (claim,) = load_suite(path).claims
    assert claim.metric == "final_wrep" and claim.name == claim.statement()
    path.write_text(path.read_text().replace('"wrep"', '"wrap"'))
    with pytest.raises(SuiteError, match=r"claims\[0\]: metric: 'wrap'"):
        load_suite(path)


@pytest.mark.slow
def test_bad_claim_exits_2_with_one_line_before_any_run(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SUITE + '[[claims]]\na = "focal"\nb = "cross_entropy"\nmetric = "val_ce"\n'
                            'direction = "lower"\n')
    proc = subprocess.run([sys.executable, "-m", "lossbench", "run", str(path), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "claims[0]: a: 'focal' is not a label" in lines[0], lines
    assert not (tmp_path / "out").exists()


def table(values: dict[str, list[float]], status: dict[str, list[str]] | None = None,
          metric="final_m") -> ScoreTable:
    """A score table of constructed per-seed values: label -> [value per seed]."""
    rows = []
    for label, vals in values.items():
        for seed, v in enumerate(vals):
            st = (status or {}).get(label, ["done"] * len(vals))[seed]
            rows.append({"run_id": f"{label}-{seed}", "label": label, "seed": seed,
                         "status": st, metric: v if st == "done" else math.nan})
    return ScoreTable(pd.DataFrame(rows), "b", math.nan, "none")


def claim(direction="lower", margin=0.0, b="b", metric="final_m"):
    return Claim("c", "a", b, metric, direction, margin)


BASE = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0]
NOISE = [0.01, -0.012, 0.008, -0.009, 0.011, -0.007]  # a's seed-to-seed noise around its shift


def shifted(delta):
    return [v + delta + n for v, n in zip(BASE, NOISE)]


def test_lower_supported_contradicted_inconclusive():
    scores = table({"a": shifted(-0.1), "b": BASE})
    (r,) = evaluate_claims([claim("lower")], scores)
    assert r.verdict == "supported" and r.p_holm < 0.05 and r.n_pairs == 6
    assert r.effect.mean == pytest.approx(-0.1 + np.mean(NOISE))
    assert r.effect.kind == "95% CI" and r.effect.low < r.effect.mean < r.effect.high
    (r,) = evaluate_claims([claim("higher")], scores)
    assert r.verdict == "contradicted" and r.p_holm < 0.05
    (r,) = evaluate_claims([claim("lower", margin=0.2)], scores)  # lower, but not by 0.2
    assert r.verdict == "contradicted"
    (r,) = evaluate_claims([claim("lower")], table({"a": shifted(-0.002), "b": BASE}))
    assert r.verdict == "inconclusive" and r.seeds_needed > 6


def test_equal_is_tost():
    (r,) = evaluate_claims([claim("equal", 0.05)], table({"a": shifted(0.0), "b": BASE}))
    assert r.verdict == "supported"
    (r,) = evaluate_claims([claim("equal", 0.05)], table({"a": shifted(0.3), "b": BASE}))
    assert r.verdict == "contradicted"
    # the mean difference is inside the margin, but 6 noisy seeds cannot show it
    (r,) = evaluate_claims([claim("equal", 0.006)], table({"a": shifted(0.0), "b": BASE}))
    assert r.verdict == "inconclusive"


def test_constant_b_compares_each_seed_with_it():
    (r,) = evaluate_claims([claim("equal", 0.05, b=2.0)],
                           table({"a": [2.0 + n for n in NOISE], "b": BASE}))
    assert r.verdict == "supported" and r.effect.mean == pytest.approx(np.mean(NOISE))


def test_unfinished_runs_count_against_the_claim():
    a, b = shifted(-0.1), BASE
    diverged = {"a": ["done", "diverged", "done", "done", "failed", "done"]}
    (r,) = evaluate_claims([claim("lower")], table({"a": a, "b": b}, diverged))
    assert r.n_pairs == 6 and r.against == 2 and r.verdict != "supported"
    seen = [v for i, v in enumerate(a) if i not in (1, 4)] + b
    penalty = max(seen) - min(seen)  # the range of the finished values (margin 0)
    assert r.differences[1] == pytest.approx(penalty)  # scored against the claim
    # the same runs with the two seeds dropped would have been supported
    kept = table({"a": [v for i, v in enumerate(a) if i not in (1, 4)],
                  "b": [v for i, v in enumerate(b) if i not in (1, 4)]})
    assert evaluate_claims([claim("lower")], kept)[0].verdict == "supported"
    # b's divergence does not help a claim either: the seed is scored against it
    (r,) = evaluate_claims([claim("lower")], table({"a": a, "b": b},
                                                   {"b": ["diverged"] + ["done"] * 5}))
    seen = a + b[1:]
    assert r.against == 1 and r.differences[0] == pytest.approx(max(seen) - min(seen))
    # for 'equal', outside the margin by the penalty
    (r,) = evaluate_claims([claim("equal", 0.05)], table(
        {"a": shifted(0.0), "b": BASE}, {"a": ["diverged"] + ["done"] * 5}))
    assert r.verdict != "supported" and abs(r.differences[0]) >= 0.05 + 0.1


def test_never_reached_target_is_the_highest_value():
    runs = table({"a": [100.0, 150.0, math.inf, 120.0, 110.0], "b": [300.0] * 5},
                 metric="steps_to_target")
    (r,) = evaluate_claims([claim("lower", metric="steps_to_target")], runs)
    assert r.differences[2] == 0.0 and r.against == 0  # inf -> 300, the highest seen
    # ... or at the run's last step (a lower bound) when the table has it
    runs = table({"b": [100.0, 150.0, math.inf, 120.0, 110.0], "a": [300.0] * 5},
                 metric="steps_to_target")
    runs.runs["steps"] = 1000
    (r,) = evaluate_claims([claim("lower", metric="steps_to_target")], runs)
    assert r.differences[2] == 300.0 - 1000.0 and r.differences[0] == 200.0


def test_no_spread_is_an_infinite_t():
    """Every seed the same (kl at step 150, CE never): t is infinite, p 0, the same rule
    as the Verdict's (analysis.inference)."""
    runs = table({"a": [150.0] * 5, "b": [math.inf] * 5}, metric="steps_to_target")
    runs.runs["steps"] = 600
    (r,) = evaluate_claims([claim("lower", metric="steps_to_target")], runs)
    assert r.differences == (-450.0,) * 5 and r.p == 0.0 and r.verdict == "supported"
    # exactly on the claim's boundary: nothing shown
    (r,) = evaluate_claims([claim("lower", margin=450.0, metric="steps_to_target")], runs)
    assert r.p == 1.0 and r.verdict == "inconclusive"


def test_holm_across_claims():
    scores = table({"a": shifted(-0.012), "b": BASE})
    single = evaluate_claims([claim("lower")], scores)[0]
    assert single.verdict == "supported" and 0.01 < single.p < 0.05  # alone, it passes
    many = evaluate_claims([claim("lower")] * 4, scores)
    assert [r.p_holm for r in many] == pytest.approx(holm([single.p] * 4))
    assert all(r.verdict == "inconclusive" for r in many)  # four of them: it does not


def test_claims_csv_has_every_number():
    results = evaluate_claims([claim("lower")], table({"a": shifted(-0.1), "b": BASE}))
    row = claims_table(results).iloc[0]
    assert row.verdict == "supported" and row.seeds_paired == 6 and row.metric == "m"
    assert row.p_holm == results[0].p_holm and row.difference_kind == "95% CI"


CLAIMS = """
[[claims]]
name = "<b>**mse**</b> ≈ =1+1\\u001b[2J"
a = "mse"
b = 100.0
metric = "val_ce"
direction = "equal"
margin = 1.0
source = '=HYPERLINK("x") [x](javascript:alert(1))'
"""


@pytest.mark.slow
def test_fail_on_claims_report_claim_and_escaping(tmp_path):
    suite = tmp_path / "c.toml"
    suite.write_text(tiny_toml("c", '["cross_entropy", "mse"]', seeds=(0, 1, 2),
                               extra=CLAIMS, train={"steps": 10}))
    out = tmp_path / "out"
    proc = run("run", suite, "--out", out, "--workers", "2", "--fail-on-claims")
    assert proc.returncode == 3, proc.stderr  # val CE is nowhere near 100: contradicted
    assert "claim contradicted" in proc.stderr
    assert "\x1b" not in proc.stderr and "=1+1\\x1b[2J" in proc.stderr  # no terminal escape
    assert run("run", suite, "--out", out, "--workers", "2").returncode == 0  # flag off: 0
    report = next((out / "reports").iterdir())
    md = (report / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## Claims") < md.index("## Results")
    assert "&lt;b&gt;\\*\\*mse\\*\\*&lt;/b&gt;" in md and "<b>**mse" not in md
    assert "\\[x\\](javascript" in md
    html = (report / "index.html").read_text()
    assert "&lt;b&gt;**mse**&lt;/b&gt;" in html and "<b>**mse" not in html
    csv = pd.read_csv(report / "claims.csv")
    assert csv.verdict.tolist() == ["contradicted"]
    assert csv.source[0].startswith("'=HYPERLINK")  # a spreadsheet would run it otherwise
    # --claim on the command line, tested beside the suite's; a bad one is exit 2, one line
    proc = run("report", out, "--out", tmp_path / "r2", "--claim", "mse > cross_entropy on val_ce")
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(tmp_path / "r2" / "claims.csv")) == 2
    proc = run("report", out, "--claim", "mse > nope on val_ce")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--claim" in proc.stderr and "Traceback" not in proc.stderr
    # an experiment record is a file anyone may have edited: its claims are checked again
    import json
    record = out / "suite.json"  # the latest experiment's record, which report reads
    meta = json.loads(record.read_text())
    meta["claims"][0]["margin"] = "wide"
    record.write_text(json.dumps(meta))
    proc = run("report", out, "--out", tmp_path / "r3")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "claims[0]: margin: expected a number" in proc.stderr


REPLICATE = sorted((Path(__file__).parent.parent / "suites" / "replicate").glob("*.toml"))


@pytest.mark.parametrize("path", REPLICATE, ids=lambda p: p.name)
def test_replication_suites_validate(path, tmp_path):
    overrides = []
    if 'corpus = "text"' in path.read_text():
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 100)
        overrides = [f'data.path="{corpus}"']
    suite = load_suite(path, overrides)
    assert len(suite.seeds) >= 5 and suite.claims
    assert all(c.source for c in suite.claims)


def test_replication_suites_exist():
    assert {p.stem for p in REPLICATE} >= {"shakespeare", "markov", "overfit"}


def test_rounding_noise_is_no_spread():
    """Differences equal up to their last bits are 'every seed the same', not a t of 1e15:
    on the claim's own boundary (lower by 0.1) rounding must not decide the claim."""
    d = [-0.1, -0.1000000000000001, -0.09999999999999998, -0.1, -0.1]
    runs = table({"a": [1.0 + x for x in d], "b": [1.0] * 5})
    (r,) = evaluate_claims([claim("lower", margin=0.1)], runs)
    assert r.p == 1.0 and r.verdict == "inconclusive"
    assert _verdict_text(r).startswith("inconclusive")


def test_seeds_needed_is_unknown_at_the_margin_and_named_when_no_value():
    # mean difference exactly at the margin: no effect to detect, not "2 seeds"
    (r,) = evaluate_claims([claim("lower")], table({"a": [1.5, 0.5, 1.25, 0.75], "b": [1.0] * 4}))
    assert r.verdict == "inconclusive" and r.seeds_needed == 0
    # a finished run without the metric: no test, and the row says why
    (r,) = evaluate_claims([claim("lower")], table({"a": [0.5, 0.6, math.nan, 0.55, 0.52],
                                                    "b": [1.0, 1.1, 1.05, 0.98, 1.02]}))
    assert math.isnan(r.p) and r.verdict == "inconclusive" and "have no m" in r.note
    (r,) = evaluate_claims([claim("lower")], table({"a": [math.nan] * 3, "b": [math.nan] * 3}))
    assert r.verdict == "inconclusive" and "no seed has a finite m" in r.note


def test_an_error_naming_untrusted_labels_stays_one_line():
    """Labels and metric columns read from a results folder may hold line breaks: the error
    that lists them must still be one line."""
    labels = ["cross\nentropy", "unlikelihood"]
    claim, errors = check_claim({**GOOD, "a": "cross", "b": "unlikelihood"}, "w", labels,
                                ["final_seq\rrep", "final_val_ce"])
    assert claim is None and errors
    assert all("\n" not in e and "\r" not in e for e in errors), errors
    assert "cross\\nentropy" in errors[0]


def test_seeds_needed_counts_only_the_claims_holm_tests():
    """A claim with no test is not in Holm's family, so it does not raise the seeds another
    claim needs: the count is the power calculation at alpha / 1, not alpha / 2."""
    from lossbench.analysis.power import seeds_for

    runs = table({"a": shifted(-0.004), "b": BASE})
    r, untestable = evaluate_claims([claim("lower"), claim("lower", metric="final_none")], runs)
    assert math.isnan(untestable.p) and r.p_holm == r.p
    d = np.asarray(r.differences)
    assert r.verdict == "inconclusive"
    assert r.seeds_needed == seeds_for(d.mean(), d.std(ddof=1), 0.0, level=0.05)
    assert r.seeds_needed < seeds_for(d.mean(), d.std(ddof=1), 0.0, level=0.025)


def test_holm_step_down_by_hand():
    """Two claims with different p's, adjusted by hand (not by the function under test):
    the smaller p is doubled, the larger kept but never below the first (monotone)."""
    strong, weak = claim("lower"), Claim("w", "a", "b", "final_m", "lower", 0.095)
    r1, r2 = evaluate_claims([strong, weak], table({"a": shifted(-0.1), "b": BASE}))
    assert r1.p < r2.p < 0.5
    assert r1.p_holm == pytest.approx(2 * r1.p)
    assert r2.p_holm == pytest.approx(max(2 * r1.p, r2.p))
