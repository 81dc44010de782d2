"""The report's Gradient behaviour section on planted results: a difference planted on every
seed is stated with its interval and meaning, nothing else is; a diverged seed's averages
do not count; runs without gradient statistics say so; `lossbench losses --plot`."""

import json

import pandas as pd
import pytest
from helpers import FIXTURES, lossbench_cli

from lossbench.cli.main import main
from lossbench.core.escaping import csv_text
from lossbench.report import gradients
from lossbench.report.document import Document
from lossbench.report.evidence import gather
from lossbench.report.render import build_report

SEEDS = range(7)  # focal's ratio exactly 2 on all 7 seeds: no spread, an infinite t (p = 0)
QUANTITIES = ("grad_noise_scale", "grad_snr", "grad_cos_ce", "sharpness", "sharpness_eos",
              "update_ratio")


def base_values(seed: int) -> dict[str, float]:
    return {"grad_noise_scale": 1000.0 + 37 * seed, "grad_snr": 0.5 + 0.01 * seed,
            "grad_cos_ce": 1.0, "sharpness": 2000.0 + 11 * seed,
            "sharpness_eos": 0.02 + 0.001 * seed, "update_ratio": 1e-3 + 1e-5 * seed}


def write_results(out, *, planted=True, gradients=True):
    """cross_entropy, focal (noise scale x2 on every seed; everything else x1 +- jitter)
    and kl (its seed 6 diverged, with a planted average that must not count)."""
    summary, curves = [], []
    for label in ("cross_entropy", "focal", "kl"):
        for seed in SEEDS:
            run_id = f"{label}-s{seed}"
            values = base_values(seed)
            jitter = 1 + 0.01 * (-1) ** seed  # no consistent direction: not significant
            values = {k: v * jitter for k, v in values.items()}
            if label == "focal" and planted:
                values["grad_noise_scale"] = 2 * base_values(seed)["grad_noise_scale"]
            if label == "cross_entropy":
                values = base_values(seed)
            status = "diverged" if (label == "kl" and seed == 6) else "done"
            if status == "diverged":
                values["grad_noise_scale"] = 1e9
            row = {"run_id": run_id, "loss": label, "label": label, "seed": seed,
                   "status": status, "final_val_ce": 2.0 + 0.01 * seed,
                   "diverged_step": 80 if status == "diverged" else float("nan"),
                   "hp_gamma": 2.0 if label == "focal" else float("nan")}
            if gradients:
                row.update({f"avg_{k}": v for k, v in values.items()})
                row.update({f"final_{k}": v for k, v in values.items()})
            summary.append(row)
            curves += [{"run_id": run_id, "step": s, "metric": "val_ce", "value": 3.0 - s / 100}
                       for s in (0, 50, 100)]
            if gradients:
                curves += [{"run_id": run_id, "step": s, "metric": k, "value": v}
                           for s in (50, 100) for k, v in values.items()]
                curves += [{"run_id": run_id, "step": s, "metric": m, "value": v}
                           for s in (50, 100) for m, v in (("grad_vmap", 1.0 if label != "kl"
                                                             else 0.0),
                                                            ("grad_examples", 16.0),
                                                            ("grad_micro_batch", 1.0))]
    out.mkdir(parents=True)
    (out / "summary.csv").write_text(csv_text(pd.DataFrame(summary)))
    (out / "curves.csv").write_text(csv_text(pd.DataFrame(curves)))
    (out / "suite.json").write_text(json.dumps(
        {"name": "planted", "baseline": "cross_entropy", "seeds": list(SEEDS),
         "run_ids": [r["run_id"] for r in summary]}))
    return out


def section(md: str) -> str:
    return md.split("## Gradient behaviour")[1].split("\n## ")[0]


def section_alone(out, folder) -> str:
    """The section rendered on its own (the rest of a report draws a dozen figures)."""
    doc = Document("t", folder)
    gradients.section(doc, gather(out))
    return section((doc.write() / "report.md").read_text())


@pytest.mark.slow
def test_a_planted_difference_is_stated_with_its_interval_and_meaning(tmp_path):
    out = write_results(tmp_path / "res")
    report = build_report(out, tmp_path / "report")
    md = (report / "report.md").read_text()
    text = section(md)
    sentences = [line for line in text.splitlines() if line.startswith("- ")]
    assert sentences == [
        "- focal: gradient noise scale 2× cross_entropy's \\[2×, 2×\\] (95% CI, n=7), Holm p = "
        "0: tolerates \\~2× larger batches before a larger batch stops paying (critical "
        "batch size)."], sentences
    # the tables: values with intervals at the end and averaged, and the paired ratios
    assert text.count("| loss | gradient noise scale (tokens) | gradient SNR |") == 2
    assert "| focal | 2,222 \\[" in text  # 2 x (1000 + 37 x 3)
    assert "| focal | 2× \\[2×, 2×\\] (95% CI, n=7); p (Holm) 0 |" in text
    # kl's diverged seed (planted 1e9) is not averaged in: 6 seeds, means of ~1,092, at the
    # end and averaged over the run alike
    kl = [line for line in text.splitlines() if line.startswith("| kl | ")]
    assert [line[:11] for line in kl[:2]] == ["| kl | 1,09", "| kl | 1,09"], kl
    assert "could not trace kl" in text
    # its own section, not the Results tables; the glossary defines the quantities
    results = md.split("## Results")[1].split("## Statistics")[0]
    assert "noise scale" not in results
    glossary = md.split("## Glossary")[1]
    assert "McCandlish et al." in glossary and "Cohen et al." in glossary
    for png in ("gradient_behaviour.png", "logit_gradients.png"):
        assert (report / png).exists()


def test_the_planted_difference_alone_is_significant(tmp_path):
    text = section_alone(write_results(tmp_path / "res"), tmp_path / "report")
    sentences = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(sentences) == 1 and sentences[0].startswith("- focal: gradient noise scale 2×")


def test_no_difference_no_sentence(tmp_path):
    out = write_results(tmp_path / "res", planted=False)
    text = section_alone(out, tmp_path / "report")
    assert not [line for line in text.splitlines() if line.startswith("- ")]
    assert "No quantity differs significantly from cross_entropy" in text


def test_runs_without_gradient_statistics_say_so(tmp_path):
    out = write_results(tmp_path / "res", gradients=False)
    report = tmp_path / "report"
    text = section_alone(out, report)
    assert text.lstrip().startswith("Not measured: these runs were trained with \\[eval\\] "
                                    "grad_stats = false")
    assert not (report / "gradient_behaviour.png").exists()
    assert (report / "logit_gradients.png").exists()  # the loss functions need no runs


def test_losses_plot_draws_every_registered_loss(tmp_path, capsys):
    png = tmp_path / "profiles.png"
    main(["losses", "--plot", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["losses", "--plot", str(tmp_path / "profiles.txt")])
    assert info.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [
        f"lossbench: error: --plot: {tmp_path / 'profiles.txt'}: expected a .png file name"]


@pytest.mark.slow
def test_losses_plot_with_a_plugin_in_a_fresh_process(tmp_path):
    """A plugin's losses get panels too; one that raises on the family gets a note, and the
    plot is still drawn."""
    png = tmp_path / "profiles.png"
    proc = lossbench_cli("losses", "--plot", png, "--plugin", FIXTURES / "sweep_plugin.py")
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in proc.stderr
