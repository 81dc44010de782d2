"""Every metric a report shows, defined once: its column in the score table, its header,
unit, which direction is better, what it is and where it comes from. Tables, bold marks,
the verdict and the glossary all read this list."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    column: str  # in the score table (summary.csv's final_* columns, or computed there)
    header: str  # short, for table headers
    unit: str  # "" when dimensionless
    lower_is_better: bool | None  # None: no better direction (a fitted temperature)
    definition: str
    reference: str = ""
    machine: bool = False  # a property of the machine, not the loss: never marked best

    def heading(self) -> str:
        return f"{self.header} ({self.unit})" if self.unit else self.header

    @property
    def direction(self) -> str:
        return {True: "lower", False: "higher", None: "neither"}[self.lower_is_better]


METRICS: tuple[Metric, ...] = (
    Metric("final_val_ce_full", "whole-split val CE", "nats/token", True,
           "Cross-entropy of the model's softmax on every consecutive block of the validation "
           "split (up to eval.full_val_windows windows), once at the end: the number to "
           "compare with other codebases."),
    Metric("final_val_ce", "val CE", "nats/token", True,
           "Cross-entropy on the fixed evaluation windows every evaluation uses (the curves "
           "and steps to target read it)."),
    Metric("final_val_ppl", "perplexity", "", True, "exp(val CE)."),
    Metric("final_val_ce_calibrated", "calibrated CE", "nats/token", True,
           "Val CE after dividing the logits by one temperature fitted by maximum "
           "likelihood, cross-fitted on interleaved windows (fit on even windows, score odd, "
           "and the reverse), so it covers the same tokens as val CE. Puts losses whose "
           "logits are not log-probabilities (margin, square) on the same scale.",
           "Guo et al., ICML 2017"),
    Metric("final_calibration_gain", "calibration gain", "nats/token", None,
           "Val CE minus calibrated CE on the same tokens: how much of the loss's CE is "
           "miscalibration that one temperature removes."),
    Metric("final_temperature", "temperature", "", None,
           "The fitted temperature; blank when the CE is flat in it (no temperature fits)."),
    Metric("final_val_acc", "accuracy", "", False,
           "Fraction of tokens whose top-1 logit is the target; a tie among k top logits "
           "counts 1/k."),
    Metric("final_ece", "ECE", "", True,
           "Expected calibration error of the top-1 probability, 15 equal-width bins, a "
           "confidence of exactly 1 in the last bin.", "Guo et al., ICML 2017"),
    Metric("final_excess_ce", "excess over floor", "nats/token", True,
           "Val CE minus the data's entropy rate (synthetic sources only): 0 is perfect."),
    Metric("final_rep", "rep", "", True,
           "Next-token repetition: fraction of top-1 predictions that occur among the previous "
           "l context tokens (l = eval.rep_context, capped by the block size).",
           "Welleck et al., ICLR 2020"),
    Metric("final_wrep", "wrep", "", True,
           "Wrong repetition: fraction of top-1 predictions that occur among the previous l "
           "tokens and are not the target.", "Welleck et al., ICLR 2020"),
    Metric("final_uniq", "uniq", "tokens", False,
           "Number of distinct top-1 next-token predictions on the evaluation windows.",
           "Welleck et al., ICLR 2020"),
    Metric("final_seq_rep_4", "seq-rep-4", "", True,
           "Greedy continuations of fixed validation prefixes: 1 − unique 4-grams / 4-grams, "
           "averaged over continuations.", "Welleck et al., ICLR 2020"),
    Metric("final_uniq_seq", "uniq-seq", "tokens", False,
           "Distinct tokens over all greedy continuations.", "Welleck et al., ICLR 2020"),
    Metric("steps_to_target", "steps to target", "steps", True,
           "First evaluated step whose val CE is at or below the target; ∞ when any seed "
           "never gets there, diverges or fails.", "AlgoPerf (Dahl et al., 2023)"),
    Metric("val_ce_auc", "mean val CE over training", "nats/token", True,
           "Area under the val CE curve divided by the steps it spans: rewards fast and "
           "final progress together."),
    Metric("tokens_per_s", "tokens/s", "tokens/s", False,
           "Training throughput on the machine that ran it (evaluations excluded); depends on "
           "the machine and its load, so it is never marked best.", machine=True),
)

BY_COLUMN = {m.column: m for m in METRICS}

# Shown in the first table: the question's answer. The rest go to a second table.
PRIMARY_COLUMNS = ("final_val_ce_full", "final_val_ce", "final_val_ce_calibrated",
                   "steps_to_target")


def metric(column: str) -> Metric:
    """The metric of a column; a column with no entry (a plugin's metric) gets a plain one,
    lower taken as better for names that read as a loss or error."""
    if column in BY_COLUMN:
        return BY_COLUMN[column]
    name = column.removeprefix("final_")
    lower = any(w in name for w in ("loss", "ce", "err", "rep"))
    return Metric(column, name.replace("_", " "), "", lower, "Reported by the run as is.")


def default_primary(columns) -> str:
    """Whole-split val CE when the runs have it, else the evaluation windows' val CE."""
    return "final_val_ce_full" if "final_val_ce_full" in columns else "final_val_ce"
