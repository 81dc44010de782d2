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
    section: str = ""  # "" : the Results tables; "gradients": the Gradient behaviour section

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
    Metric("final_val_bpt", "val bits/token", "bits/token", True, "val CE / ln 2."),
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
           "The T in [e⁻⁶, e⁶] minimizing the val CE of logits / T; 'no fit (flat)' when the "
           "CE does not depend on T (constant scores).", "Guo et al., ICML 2017"),
    Metric("final_val_acc", "accuracy", "", False,
           "Fraction of targets equal to the argmax of the logits (not of rounded "
           "probabilities); a tie among k top logits counts 1/k when the target is among "
           "them."),
    Metric("final_ece", "ECE", "", True,
           "Expected calibration error: Σ_m |B_m|/n · |acc(B_m) − conf(B_m)| over 15 "
           "equal-width bins ((m−1)/M, m/M] of the max softmax probability (a confidence of "
           "exactly 1 in the last bin); correctness by the same 1/k tie rule as accuracy.",
           "Guo et al., ICML 2017, sec. 2"),
    Metric("final_excess_ce", "excess over floor", "nats/token", True,
           "Val CE minus the data's entropy rate (synthetic sources only): 0 is perfect."),
    Metric("final_rep", "rep/l", "", True,
           "Next-token repetition: fraction of top-1 predictions found among the l most recent "
           "tokens up to the one just read; l = eval.rep_context capped by the block size, or "
           "the full l from the val stream with eval.rep_stream (then only positions with l "
           "tokens before them count); a k-way tie weighs each class 1/k.",
           "Welleck et al., ICLR 2020 (rep/128)"),
    Metric("final_wrep", "wrep/l", "", True,
           "As rep/l, counting only predictions that are not the target.",
           "Welleck et al., ICLR 2020"),
    Metric("final_uniq", "uniq", "tokens", False,
           "Number of distinct tokens that are a top-1 prediction at some evaluated position "
           "(every class of a tie counts).", "Welleck et al., ICLR 2020"),
    Metric("final_seq_rep_4", "seq-rep-4", "", True,
           "Greedy continuations (eval.rep_continuation tokens) of fixed validation prefixes: "
           "1 − unique 4-grams / 4-grams, averaged over continuations.",
           "Welleck et al., ICLR 2020"),
    Metric("final_seq_rep_2", "seq-rep-2", "", True,
           "As seq-rep-4 with bigrams: 1 − unique 2-grams / 2-grams of each greedy "
           "continuation, averaged over continuations (Su et al.'s rep-2, whose pooled counts "
           "equal it here: every continuation has the same length).",
           "Welleck et al., ICLR 2020; Su et al., NeurIPS 2022"),
    Metric("final_seq_rep_3", "seq-rep-3", "", True,
           "As seq-rep-4 with trigrams (Su et al.'s rep-3).",
           "Welleck et al., ICLR 2020; Su et al., NeurIPS 2022"),
    Metric("final_diversity", "diversity", "", False,
           "(1 − seq-rep-2)(1 − seq-rep-3)(1 − seq-rep-4) of the same greedy continuations: 1 "
           "when no n-gram repeats, near 0 for a loop.",
           "Su et al., A Contrastive Framework for Neural Text Generation, NeurIPS 2022"),
    Metric("final_uniq_seq", "uniq-seq", "tokens", False,
           "Distinct tokens over all greedy continuations.", "Welleck et al., ICLR 2020"),
    Metric("final_unigram_entropy", "unigram entropy", "nats/token", None,
           "Entropy of the evaluated targets' frequencies: the CE of the best constant "
           "prediction, the yardstick of the degenerate flag."),
    Metric("final_mean_abs_log_z", "mean |log Z|", "nats", None,
           "Mean over evaluated positions of |logsumexp of the logits|: how far the logits "
           "are from being log-probabilities themselves (0: normalized). What z-loss "
           "penalizes; no direction is better in general.",
           "Chowdhery et al. (PaLM), JMLR 2023"),
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


def _gradient_metrics() -> tuple[Metric, ...]:
    """The gradient-behaviour quantities (lossbench.train.gradients), each at the final
    evaluation (final_*) and averaged over the run's probed evaluations (avg_*). None has a
    better direction: each says something about training (the batch size a loss tolerates,
    its distance from instability), not which loss is better."""
    quantities = (
        ("grad_noise_scale", "gradient noise scale", "tokens",
         "B_simple = tr(Σ)/|G|² of the loss's per-example gradients on a training batch, in "
         "tokens: the critical batch size below which a larger batch buys a nearly "
         "proportional speed-up, above which little. Averaged as mean tr(Σ) / mean |G|².",
         "McCandlish et al., An Empirical Model of Large-Batch Training, 2018"),
        ("grad_snr", "gradient SNR", "",
         "Mean over parameters of (E g)² / Var g over the examples of a training batch (GSNR): "
         "how much of each coordinate's gradient is signal rather than example-to-example "
         "noise.", "Liu et al., ICLR 2020; Cockpit (Schneider et al., NeurIPS 2021)"),
        ("grad_cos_ce", "cosine with CE gradient", "",
         "Cosine between the loss's gradient and the cross-entropy gradient of the same batch "
         "and weights: 1 when the loss moves the weights where CE would.", ""),
        ("sharpness", "Adam sharpness", "",
         "Largest eigenvalue of P⁻¹H, the Hessian of the training loss on a batch "
         "preconditioned by Adam's second moments (Lanczos on Hessian-vector products): "
         "invariant to the loss's scale.",
         "Cohen et al., Adaptive Gradient Methods at the Edge of Stability, 2022"),
        ("sharpness_eos", "Adam sharpness / threshold", "",
         "Adam sharpness divided by its stability threshold (2 + 2β₁)/((1 − β₁) lr) (38/lr for "
         "β₁ = 0.9): near 1 the run trains at the edge of stability, above it updates "
         "oscillate along the sharpest direction.", "Cohen et al., ICLR 2021 and 2022"),
        ("hessian_max_eig", "Hessian λ_max", "",
         "Largest eigenvalue of the unpreconditioned Hessian of the training loss on a batch "
         "(grad_stats = \"full\"); compare with 2/lr under SGD. Scales with the loss.",
         "Cohen et al., Gradient Descent on Neural Networks Typically Occurs at the Edge of "
         "Stability, ICLR 2021"),
        ("update_ratio", "update / weight", "",
         "‖Δθ‖/‖θ‖ of one optimizer step (all parameters; per layer in the curves): ~1e-3 "
         "is the usual rule of thumb, much larger is unstable, much smaller slow.", ""),
    )
    out = []
    for key, header, unit, definition, reference in quantities:
        out.append(Metric(f"final_{key}", f"{header}, end", unit, None,
                          definition + " At the final evaluation.", reference,
                          section="gradients"))
        out.append(Metric(f"avg_{key}", f"{header}, mean", unit, None,
                          definition + " Mean over the run's probed evaluations.", reference,
                          section="gradients"))
    return tuple(out)


METRICS = METRICS + _gradient_metrics()
BY_COLUMN = {m.column: m for m in METRICS}

# Shown in the first table: the question's answer. The rest go to a second table.
PRIMARY_COLUMNS = ("final_val_ce_full", "final_val_ce", "final_val_ce_calibrated",
                   "steps_to_target")


def metric(column: str) -> Metric:
    """The metric of a column; a column with no entry (a plugin's metric) gets a plain one
    with no better direction: a name says nothing reliable about it (``val_bpt`` reads as
    higher-is-better to any word list), so it is shown, never ranked or marked best."""
    if column in BY_COLUMN:
        return BY_COLUMN[column]
    name = column.removeprefix("final_")
    return Metric(column, name.replace("_", " "), "", None,
                  "Reported by the run as is; no better direction is declared for it.")


def tunable() -> dict[str, bool]:
    """Evaluation metrics a [tune] table may select on, name -> lower is better: every
    per-run final metric of the catalogue with a direction that is not a machine figure."""
    return {m.column.removeprefix("final_"): m.lower_is_better for m in METRICS
            if m.column.startswith("final_") and m.lower_is_better is not None
            and not m.machine}


def default_primary(columns) -> str:
    """Whole-split val CE when the runs have it, else the evaluation windows' val CE."""
    return "final_val_ce_full" if "final_val_ce_full" in columns else "final_val_ce"
