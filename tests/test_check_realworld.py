"""`lossbench check` on losses in their real-world shapes (tests/fixtures/real_losses/):
each defect is found by the properties that should find it, and no correct
implementation fails anything (no false alarms).

The fixtures are ours: the first set written in the style of public repositories
(nn.Module classes, mean- and sum-reduced scalars, (N, V) inputs, log-probabilities,
in-vocabulary padding ids, teacher logits); the second (PUBLIC_*) rewritten after named public
code, each file giving its source, version, licence and the ground truth with its evidence
(criterion objects over dicts, losses without targets, in-place updates, Fenchel-Young
einsums, sequence-level penalties, constructor arguments that must equal V). Each route is
the command line a user would type; ``--like`` routes check an implementation against a
built-in loss. Searches are derandomized ("ci") and do not shrink, so verdicts are stable.
"""

from pathlib import Path

import pytest

from lossbench.checks import diagnose, resolve_targets, run_property
from lossbench.checks.runner import ordered_properties

REAL = Path(__file__).parent / "fixtures" / "real_losses"
EXAMPLES = 20

MEAN, SUM = {"reduction": "mean"}, {"reduction": "sum"}
FLAT = {"flat": True}
FAIRSEQ = {"log_probs": True, "ignore_index": 1, "reduction": "sum", "fixed": {"epsilon": 0.1}}
Z_LIKE = {"like": "z_loss", "hparam_names": {"coefficient": "z_loss_weight"}}
KD = {"flat": True, "reduction": "mean", "teacher": "logits"}
KD_LIKE = {**KD, "like": "kl", "fixed": {"smoothing": 0.1}}  # kl's smoothing: unused with a teacher

# The second set (docs/check.md, "How well it works"): rewritten after public code.
TWINKLE = {"targets": "inputs", "targets_key": "labels", "logits_key": "logits",
           "ignore_index": -100}
KD_T = {"flat": True, "reduction": "mean", "teacher": "logits:logits_teacher"}
SPARSEMAX = {"flat": True, "ignore_index": 1}
TRL = {"reduction": "mean", "teacher": "logits:teacher_logits"}  # TRL's "batchmean": per token
DISTILLM = {"reduction": "mean", "teacher": "logits:teacher_logits"}  # mean over kept tokens
PUBLIC_CORRECT = [
    ("kd_no_targets.py:kl_div_loss", {**KD_T, "fixed": {"temperature": 4.0}}),
    ("kd_no_targets.py:kl_div_loss",
     {**KD_T, "like": "kl", "fixed": {"temperature": 1.0, "smoothing": 0.1}}),
    ("kd_no_targets.py:kl_div_loss", {**KD_T, "like": "kd", "fixed": {"smoothing": 0.1}}),
    ("trl_gkd.py:generalized_jsd_loss", {**TRL, "fixed": {"temperature": 1.0}}),
    ("distillm_skew.py:skewed_reverse_kl",
     {**DISTILLM, "like": "skew_reverse_kl", "hparam_names": {"alpha": "lam"},
      "fixed": {"smoothing": 0.1}}),
    ("trl_gkd.py:generalized_jsd_loss",
     {**TRL, "like": "generalized_jsd", "fixed": {"temperature": 1.0, "smoothing": 0.1}}),
    ("twinkle.py:CrossEntropyLoss", {**TWINKLE, **MEAN}),
    ("twinkle.py:CrossEntropyLoss", {**TWINKLE, **MEAN, "like": "cross_entropy"}),
    ("axolotl_chunked.py:chunked_fix_cross_entropy", {**MEAN, "ignore_index": -100}),
    ("axolotl_chunked.py:chunked_fix_cross_entropy",
     {**MEAN, "ignore_index": -100, "like": "cross_entropy"}),
    ("parlai_repetition.py:repetition_ul_loss", {**SUM, "non_causal": True}),
    ("apl.py:NormalizedCrossEntropy", {**FLAT, **MEAN, "vocab_arg": "num_classes"}),
]
PUBLIC_BUGGY = [
    # float32 logits overwritten with the softmax (in-place subtraction and exp)
    ("megatron_ce.py:vocab_parallel_cross_entropy", {}, {"inputs_unchanged"}, set()),
    ("megatron_ce.py:vocab_parallel_cross_entropy", {"like": "cross_entropy"},
     {"inputs_unchanged"}, set()),
    # the backward stores the gradient into the caller's logits
    ("twinkle.py:ChunkedCrossEntropyLoss", {**TWINKLE, **FLAT, "fixed": {"chunk_size": 2}},
     {"inputs_unchanged"}, set()),
    # correct math, but under CUDA autocast its einsum runs in bf16 and the Fenchel-Young sum
    # cancels terms of the size of the logits: a measured loss of precision, with its op
    ("sparsemax.py:FYSparsemaxLoss", {**SPARSEMAX, **MEAN}, {"bf16_autocast"}, set()),
    # a hand-written backward that ignores grad_output: padding gets gradient
    ("sparsemax.py:SparsemaxLoss", {**SPARSEMAX, **SUM, "fixed": {"reduction": "sum"}},
     {"ignored_tokens_inert", "gradient_matches_finite_differences"}, {"token_local"}),
]
# Routes that stop before any property, with one line naming the cause and the option.
DIAGNOSED = [
    # an (N, V) loss checked without --flat: its prefixes are not its per-token values
    ("label_smoothing.py:LabelSmoothingCrossEntropy", MEAN, "pass --flat"),
    # the function's ignore_index is not used: -1 raises, -100 runs
    ("axolotl_chunked.py:chunked_fix_cross_entropy", MEAN, "--ignore-index K (K = -100 runs)"),
    # an ignore id is honoured only when >= 0
    ("sparsemax.py:FYSparsemaxLoss", {**FLAT, **MEAN}, "--ignore-index K (K = 0 runs)"),
    # a repeated n-gram is flagged on all its tokens: not causal
    ("parlai_repetition.py:repetition_ul_loss", SUM, "pass --non-causal"),
]

# (target, options, properties that must fail, properties that may also fail). A correct
# implementation has both empty: any failure is a false alarm. "May" lists the knock-on
# failures of the same defect (a NaN loss also has a NaN gradient under bf16).
CORRECT = [
    ("focal.py:FocalLoss", MEAN),
    ("focal.py:FocalLoss", {**MEAN, "like": "focal"}),
    ("label_smoothing.py:LabelSmoothingCrossEntropy", {**FLAT, **MEAN}),
    ("label_smoothing.py:LabelSmoothingCrossEntropy",
     {**FLAT, **MEAN, "like": "label_smoothing", "fixed": {"smoothing": 0.2}}),
    ("label_smoothing.py:label_smoothed_nll_loss", FAIRSEQ),
    ("unlikelihood.py:token_unlikelihood", {}),
    ("unlikelihood.py:token_unlikelihood", {"like": "unlikelihood"}),
    ("zloss.py:cross_entropy_with_z_loss_fixed", {**FLAT, **MEAN}),
    ("zloss.py:cross_entropy_with_z_loss_fixed", {**FLAT, **MEAN, **Z_LIKE}),
    ("distill.py:kd_loss_batchmean", KD),
    ("distill.py:kd_loss_batchmean", KD_LIKE),
    ("hf.py:causal_lm_loss", MEAN),
    ("hf.py:causal_lm_loss", {**MEAN, "like": "cross_entropy"}),
    ("idioms.py:fp32_cross_entropy", {}),
    ("idioms.py:fp32_cross_entropy", {"like": "cross_entropy"}),
    ("idioms.py:autocast_reliant_ce", {}),
    ("idioms.py:ce_zero_if_all_ignored", {}),
]
BUGGY = [
    # eps added to every class: invisible without a reference
    ("focal.py:focal_loss_eps", FLAT, set(), set()),
    ("focal.py:focal_loss_eps", {**FLAT, "like": "focal"},
     {"matches_reference", "neutral_hparams_give_cross_entropy"},
     {"finite_at_extremes", "ignored_tokens_inert", "bf16_autocast", "nonnegative"}),
    # NaN gradient for gamma < 1: the default gamma = 2 hides it; --like draws gamma
    ("focal.py:focal_loss_pow", FLAT, set(), set()),
    ("focal.py:focal_loss_pow", {**FLAT, "like": "focal"},
     {"finite_at_extremes"}, {"bf16_autocast", "ignored_tokens_inert"}),
    # smoothing term not masked at padding id 1
    ("label_smoothing.py:label_smoothed_nll_loss_v0", FAIRSEQ,
     {"output_contract", "ignored_tokens_inert"}, {"reduction"}),
    # unlikelihood candidates leak across the flattened batch
    ("unlikelihood.py:candidate_penalty_ce",
     {"flat": True, "log_probs": True, "ignore_index": 1, **SUM},
     {"row_independent"}, {"batch_permutation_equivariant", "reduction"}),
    # z-term divided by all rows, CE by the kept ones
    ("zloss.py:cross_entropy_with_z_loss", {**FLAT, **MEAN},
     {"output_contract", "reduction"}, {"row_independent", "token_local"}),
    ("zloss.py:cross_entropy_with_z_loss", {**FLAT, **MEAN, **Z_LIKE},
     {"output_contract", "reduction", "matches_reference"},
     {"row_independent", "token_local", "nonnegative"}),
    # KL divided by the number of classes: a plausible loss on its own, wrong against kl
    ("distill.py:kd_loss", KD, set(), set()),
    ("distill.py:kd_loss", KD_LIKE, {"reduction", "matches_reference"}, set()),
    # poly term not masked at ignored positions
    ("poly.py:poly1_cross_entropy", FLAT, {"output_contract", "ignored_tokens_inert"}, set()),
    ("poly.py:poly1_cross_entropy", {**FLAT, "like": "poly1"},
     {"output_contract", "ignored_tokens_inert", "matches_reference"},
     {"minimal_at_perfect_prediction", "nonnegative"}),
    # fused backward missing the chain rule's factor 2.4
    ("idioms.py:scaled_ce_wrong_backward", {}, {"gradient_matches_finite_differences"}, set()),
]


def _failures(target, options):
    (spec,) = resolve_targets(str(REAL / target), **options)
    assert diagnose(spec) is None
    results = [run_property(spec, p, profile="ci", max_examples=EXAMPLES, shrink=False)
               for p in ordered_properties(spec)]
    return {r.prop: r.message for r in results if not r.passed}


def _id(target, options):
    return target.split(":")[1] + "".join(f"-{k}" for k in options if k != "fixed")


# The fast lane (-m "not slow") checks one correct implementation, one defect the plain
# route finds and one only --like finds; every route runs in the full suite (CI).
FAST = {"ce_zero_if_all_ignored", "scaled_ce_wrong_backward", "focal_loss_eps-flat-like"}


def _cases(cases):
    return [pytest.param(*c, id=_id(*c[:2]),
                         marks=() if _id(*c[:2]) in FAST else pytest.mark.slow) for c in cases]


@pytest.mark.parametrize("target,options", _cases(CORRECT + PUBLIC_CORRECT))
def test_correct_implementation_passes_everything(target, options):
    assert _failures(target, options) == {}


@pytest.mark.parametrize("target,options,must,may", _cases(BUGGY + PUBLIC_BUGGY))
def test_defect_is_found_by_the_right_properties(target, options, must, may):
    failed = _failures(target, options)
    assert must <= set(failed), failed
    assert set(failed) <= must | may, failed


@pytest.mark.parametrize("target,options,fragment", DIAGNOSED,
                         ids=[_id(*c[:2]) for c in DIAGNOSED])
def test_route_that_cannot_run_stops_with_the_cause_and_the_option(target, options, fragment):
    (spec,) = resolve_targets(str(REAL / target), **options)
    diagnosis = diagnose(spec)
    assert diagnosis is not None and fragment in diagnosis.message, diagnosis


def test_like_with_an_unsupported_hyperparameter_end_stops_with_one_diagnosis():
    (spec,) = resolve_targets(str(REAL / "label_smoothing.py:LabelSmoothingCrossEntropy"),
                              **FLAT, **MEAN, like="label_smoothing")
    diagnosis = diagnose(spec)
    assert "smoothing=1" in diagnosis.message and "--set smoothing=VALUE" in diagnosis.message
    assert "--range smoothing=LO:HI" in diagnosis.message
    assert "assert smoothing < 1.0" in diagnosis.detail  # the user's own frame


def test_range_narrows_a_like_hyperparameter_to_what_the_implementation_accepts():
    """timm's assert smoothing < 1.0 is a precondition: --range keeps the draw inside it."""
    options = {**FLAT, **MEAN, "like": "label_smoothing", "ranges": {"smoothing": (0.0, 0.9)}}
    (spec,) = resolve_targets(str(REAL / "label_smoothing.py:LabelSmoothingCrossEntropy"),
                              **options)
    assert (spec.hparams["smoothing"].low, spec.hparams["smoothing"].high) == (0.0, 0.9)
    assert _failures("label_smoothing.py:LabelSmoothingCrossEntropy", options) == {}
