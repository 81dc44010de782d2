"""`lossbench report` end to end on a tiny sweep that has failed and diverged runs."""

import re
import subprocess
import sys

import pytest

from helpers import FIXTURES, tiny_suite, tiny_toml


@pytest.mark.slow
def test_report_renders_with_failed_and_diverged_runs(tmp_path):
    suite = tiny_suite(tmp_path, extra_losses='"fixture_raises", "fixture_nan"')
    out, report = tmp_path / "out", tmp_path / "report"
    run = subprocess.run([sys.executable, "-m", "lossbench", "run", str(suite), "--out", str(out),
                          "--workers", "2", "--plugin", str(FIXTURES / "sweep_plugin.py"),
                          "--no-report"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    proc = subprocess.run([sys.executable, "-m", "lossbench", "report", str(out), "--out",
                           str(report)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("index.html", "report.md", "headline.csv", "comparisons.csv", "ranks.csv",
                 "convergence.png", "train_loss.png"):
        assert (report / name).exists(), name
    html = (report / "index.html").read_text()
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert len(re.findall(r"src='data:image/png;base64,", html)) == len(pngs) >= 5
    md = (report / "report.md").read_text()
    assert all(f"]({p})" in md for p in pngs)
    assert "diverged at step" in md and "failed: see traceback.txt" in md
    assert "shared hyperparameters, not tuned" in md
    assert "fixture_nan | 2 (2 diverged)" in md and "fixture_raises | 2 (2 failed)" in md
    # the verdict comes first, and runs that did not finish are ranked after those that did
    assert md.index("## Verdict") < md.index("## Results") < md.index("## Figures")
    verdict = md.split("## Verdict")[1].split("## Results")[0]
    order = [line.split(" | ")[1] for line in verdict.splitlines() if re.match(r"\| \d+ \|", line)]
    assert order[-2:] in (["fixture_nan", "fixture_raises"], ["fixture_raises", "fixture_nan"])
    assert "diverged on 2 of 2 seeds" in verdict and "failed on 2 of 2 seeds" in verdict
    assert "## Glossary" in md and "Welleck et al., ICLR 2020" in md

    def report(*args):
        return subprocess.run([sys.executable, "-m", "lossbench", "report", str(out), "--out",
                               str(tmp_path / "latex"), *args], capture_output=True, text=True,
                              timeout=300)
    latex = report("--format", "latex", "--metric", "val_ce", "--only", "mse")
    assert latex.returncode == 0, latex.stderr
    assert latex.stdout == (tmp_path / "latex" / "tables.tex").read_text()
    assert r"\toprule" in latex.stdout and r"\bottomrule" in latex.stdout
    rows = [line for line in latex.stdout.splitlines() if line.endswith(r"\\")]
    assert {r.split(" & ")[0] for r in rows} == {"loss", "mse", r"cross\_entropy"}  # + baseline
    claimed = report("--format", "latex", "--claim", "mse = cross_entropy on val_ce within 0.5")
    assert claimed.returncode == 0, claimed.stderr
    (claim,) = [line for line in claimed.stdout.splitlines() if "approx" in line]
    stated = r"mse $\approx$ cross\_entropy on val\_ce within $\pm$0.5"
    assert claim.startswith(f"{stated} & {stated} & "), claim  # unnamed: named by its statement
    assert "-claims}" in claimed.stdout and "-claims}" not in latex.stdout
    for bad, named in ((["--metric", "nope"], "--metric: nope"), (["--only", "ghost"], "--only: "),
                       (["--only", ","], "--only: ")):
        proc = report(*bad)
        assert proc.returncode == 2 and proc.stderr.startswith(f"lossbench: error: {named}")
        assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_report_of_a_non_results_dir_is_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lossbench", "report", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("lossbench: error: DIR:")


@pytest.mark.slow
def test_a_sweep_whose_every_run_failed_still_gets_a_report(tmp_path):
    suite = tmp_path / "allfail.toml"
    suite.write_text('baseline = "fixture_raises"\n'
                     + tiny_toml("allfail", '["fixture_raises"]', seeds=(0,)))
    proc = subprocess.run([sys.executable, "-m", "lossbench", "run", str(suite), "--out",
                           str(tmp_path / "out"), "--workers", "1", "--plugin",
                           str(FIXTURES / "sweep_plugin.py")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (report,) = (tmp_path / "out" / "reports").iterdir()
    assert "| 1 | fixture_raises | – | the baseline |" in (report / "report.md").read_text()
