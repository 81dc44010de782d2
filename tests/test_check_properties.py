"""The properties' own behaviour on minimal losses: no false alarms from precision
(float32 gradcheck, CPU bf16, a loss without a graph), diagnoses that say what is
wrong, and per-token values recovered from reduced losses."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lossbench.checks import PROPERTIES, LossCase, diagnose, resolve_targets, run_property
from lossbench.checks.base import eps_of
from lossbench.checks.numerics import CudaAutocastPolicy

REAL = Path(__file__).parent / "fixtures" / "real_losses"


def spec_of(target, **options):
    (spec,) = resolve_targets(str(REAL / target), **options)
    return spec


def check(spec, prop, n=30):
    return run_property(spec, prop, profile="ci", max_examples=n)


def test_gradcheck_passes_a_correct_loss_that_computes_in_fp32():
    """logits.float() makes float64 finite differences disagree by roundoff (the old
    float64-only check failed it: "Jacobian mismatch for output 0 ...")."""
    spec = spec_of("idioms.py:fp32_cross_entropy")
    case = LossCase(torch.zeros(1, 1, 2, dtype=torch.float64), torch.tensor([[0]]))
    assert eps_of(spec, case) == torch.finfo(torch.float32).eps  # the narrowing is seen
    result = check(spec, "gradient_matches_finite_differences")
    assert result.passed, result.message


def test_gradcheck_names_the_worst_entry_and_how_far_off_it_is():
    result = check(spec_of("idioms.py:scaled_ce_wrong_backward"),
                   "gradient_matches_finite_differences")
    assert not result.passed
    assert re.search(r"d loss\[\d+, \d+\] / d logits\[\d+, \d+, \d+\]: autograd -?[\d.]+, "
                     r"central differences -?[\d.]+, 0\.41\dx", result.message), result.message
    assert "computes in float32" in result.message


def test_bf16_passes_a_loss_that_returns_constant_zeros_when_all_ignored():
    """No graph when every position is ignored (the old check called autograd.grad on
    it: "element 0 of tensors does not require grad")."""
    spec = spec_of("idioms.py:ce_zero_if_all_ignored")
    case = LossCase(torch.randn(2, 3, 5), torch.full((2, 3), -100))
    PROPERTIES["bf16_autocast"].check(spec, case)
    assert check(spec, "bf16_autocast").passed


def test_bf16_on_cpu_follows_cuda_autocast_policy():
    """log_softmax of bf16 logits runs in fp32 under CUDA autocast; the old check used
    CPU autocast, which keeps it in bf16, and failed this correct loss."""
    result = check(spec_of("idioms.py:autocast_reliant_ce"), "bf16_autocast")
    assert result.passed and not result.warning, result.message


def test_cuda_policy_emulation_casts_what_cuda_autocast_casts():
    x = torch.randn(2, 3).bfloat16()
    with CudaAutocastPolicy():
        for out in (x.log_softmax(-1), F.softmax(x, -1), torch.logsumexp(x, -1), x.exp(),
                    x ** 2, x.sum(), F.cross_entropy(x, torch.tensor([0, 1]))):
            assert out.dtype == torch.float32
        assert (x + x).dtype == torch.bfloat16  # not on the float32 list
        assert F.softmax(x, -1, dtype=torch.bfloat16).dtype == torch.bfloat16  # explicit dtype


@pytest.fixture(scope="module")
def bf16_losses(tmp_path_factory):
    path = tmp_path_factory.mktemp("bf16") / "bf16_losses.py"
    path.write_text(
        "import torch\nimport torch.nn.functional as F\n\n"
        "def ce(logits, targets, ignore_index):\n"
        "    return F.cross_entropy(logits.float().transpose(1, 2), targets,\n"
        "                           ignore_index=ignore_index, reduction='none')\n\n"
        "def rounded_ce(logits, targets, *, ignore_index=-100):\n"
        "    return ce(logits, targets, ignore_index).to(logits.dtype)  # bf16 result\n\n"
        "def bf16_only_bug(logits, targets, *, ignore_index=-100):\n"
        "    out = ce(logits, targets, ignore_index)\n"
        "    return out * 1.1 if logits.dtype == torch.bfloat16 else out\n")
    return path


def test_bf16_small_error_warns_and_large_error_fails(bf16_losses):
    (rounded,) = resolve_targets(f"{bf16_losses}:rounded_ce")
    result = check(rounded, "bf16_autocast")
    assert result.passed and result.status == "warn"
    assert "part of the loss computes in bf16" in result.warning
    (wrong,) = resolve_targets(f"{bf16_losses}:bf16_only_bug")
    result = check(wrong, "bf16_autocast")
    assert not result.passed and "more than 0.016" in result.message


@pytest.mark.parametrize("target,options,per_token", [
    ("hf.py:causal_lm_loss", {"reduction": "mean"},
     lambda x, y, i: F.cross_entropy(x.transpose(1, 2), y, ignore_index=i, reduction="none")),
    ("label_smoothing.py:label_smoothed_nll_loss",
     {"log_probs": True, "ignore_index": 1, "reduction": "sum", "fixed": {"epsilon": 0.0}},
     lambda x, y, i: F.cross_entropy(x.transpose(1, 2), y, ignore_index=i, reduction="none")),
    ("unlikelihood.py:candidate_penalty_ce",  # one row: nothing leaks, UL is causal
     {"flat": True, "log_probs": True, "ignore_index": 1, "reduction": "sum"},
     lambda x, y, i: spec_of("unlikelihood.py:token_unlikelihood")(x, y, ignore_index=i)),
])
def test_reduced_loss_per_token_values_are_recovered(target, options, per_token):
    spec = spec_of(target, **options)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        logits = 3 * torch.randn(1, 6, 5, generator=g, dtype=torch.float64)
        targets = torch.randint(0, 5, (1, 6), generator=g)
        i = options.get("ignore_index", -100)
        targets[0, 2] = i
        got = spec.fn(logits, targets, ignore_index=i)
        torch.testing.assert_close(got.double(), per_token(logits, targets, i), rtol=1e-5,
                                   atol=1e-5)


def test_plain_function_gets_generic_properties_and_says_what_it_cannot_ignore():
    spec = spec_of("label_smoothing.py:LabelSmoothingCrossEntropy", flat=True, reduction="mean")
    assert "ignored_tokens_inert" not in spec.properties and "reduction" in spec.properties
    assert "nonnegative" not in spec.properties
    assert any("takes no ignore_index" in note for note in spec.notes)
    like = spec_of("focal.py:FocalLoss", reduction="mean", like="focal")
    assert {"matches_reference", "nonnegative", "shift_invariant"} <= like.properties


def test_diagnosis_suggests_flat_for_an_n_by_v_loss():
    diagnosis = diagnose(spec_of("focal.py:focal_loss_eps"))
    assert diagnosis.message.endswith("it runs on (N, V) logits and (N,) targets: pass --flat")
    assert "focal.py\", line" in diagnosis.detail


def test_flattened_batch_leak_breaks_row_independence_only_across_rows():
    leak = spec_of("unlikelihood.py:candidate_penalty_ce", flat=True, log_probs=True,
                   ignore_index=1, reduction="sum")
    logits = torch.zeros(2, 2, 4, dtype=torch.float64)
    one_row = LossCase(logits[:1], torch.tensor([[2, 3]]), ignore_index=1)
    PROPERTIES["row_independent"].check(leak, LossCase(logits, torch.tensor([[2, 3], [1, 1]]),
                                                       ignore_index=1))  # pad row: no leak
    with pytest.raises(AssertionError, match="depends on the other rows"):
        PROPERTIES["row_independent"].check(
            leak, LossCase(logits, torch.tensor([[2, 3], [0, 0]]), ignore_index=1))
    assert leak.fn(one_row.logits, one_row.targets, ignore_index=1).shape == (1, 2)
