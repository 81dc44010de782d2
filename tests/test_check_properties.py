"""The properties' own behaviour on minimal losses: no false alarms from precision
(float32 gradcheck, CPU bf16, a loss without a graph), diagnoses that say what is
wrong, and per-token values recovered from reduced losses."""

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from lossbench.checks import (
    PROPERTIES,
    LossCase,
    diagnose,
    resolve_targets,
    run_property,
    seeded_tensors,
)
from lossbench.checks.autocast import cuda_op_lists, emulated
from lossbench.checks.base import eps_of, slack
from lossbench.checks.claimed import _reduction_hint
from lossbench.checks.runner import _telling, ordered_properties
from lossbench.checks.strategies import loss_cases, plan_for, shape_plan

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
    with emulated():
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


# --------------------------------------------------------------------------- autocast policy


def test_cuda_policy_lists_are_torchs_own_for_the_installed_version():
    lists = cuda_op_lists()
    assert torch.__version__ in lists.source
    assert {"einsum", "matmul", "bmm", "linear"} <= lists.lower
    assert {"exp", "log_softmax", "sum", "nll_loss"} <= lists.fp32
    assert {"scatter_add", "index_put", "dot"} <= lists.promote


def test_cuda_policy_casts_down_and_promotes_as_well_as_up():
    """Only casting up handed a bf16 einsum a float32 operand: "expected scalar type Float
    but found BFloat16", an error CUDA autocast never raises."""
    x = torch.randn(2, 3).bfloat16()
    p = x.float().softmax(-1)  # float32, as an op on the float32 list leaves it
    with emulated():
        assert torch.einsum("ij,ij->i", p, x).dtype == torch.bfloat16
        assert (p @ p.T).dtype == torch.bfloat16
        index = torch.zeros(2, 3, dtype=torch.long)
        assert torch.zeros(2, 3).bfloat16().scatter_add(0, index, p).dtype == torch.float32
        with torch.autocast("cpu", enabled=False):  # code that turns autocast off: as CUDA
            assert torch.einsum("ij,ij->i", p, p).dtype == torch.float32


def test_bf16_of_a_fenchel_young_einsum_is_a_measured_error_with_its_op():
    """It raised "expected scalar type Float but found BFloat16" at the einsum: the emulation
    upcast p* but not the einsum, which CUDA runs in bf16."""
    spec = spec_of("sparsemax.py:FYSparsemaxLoss", flat=True, reduction="mean", ignore_index=1)
    result = check(spec, "bf16_autocast", n=40)
    verdict = result.message or result.warning
    assert not result.error and "expected scalar type" not in verdict, verdict
    assert "relative error" in verdict and "einsum at sparsemax.py:" in verdict, verdict


# --------------------------------------------------------------------------- chunked code

CHUNKED = (
    "import torch.nn.functional as F\n\n"
    "def chunked_ce(logits, targets, chunk_len={chunk}):\n"
    "    # the pattern of a chunked mean that sums per-chunk means (written for this test)\n"
    "    logits, targets = logits.flatten(0, 1), targets.flatten()\n"
    "    n = (len(targets) + chunk_len - 1) // chunk_len\n"
    "    loss = 0.0\n"
    "    for x, y in zip(logits.chunk(n), targets.chunk(n)):\n"
    "        loss = loss + F.cross_entropy(x, y)\n"
    "    return loss\n")


def _chunked(tmp_path, chunk):
    path = tmp_path / f"chunked_{chunk}.py"
    path.write_text(CHUNKED.format(chunk=chunk))
    (spec,) = resolve_targets(f"{path}:chunked_ce", reduction="mean")
    return spec


def test_chunked_mean_is_found_on_inputs_longer_than_its_chunks(tmp_path):
    """chunk_len=32 and at most 18 positions per drawn batch: this passed everything."""
    result = run_property(_chunked(tmp_path, 32), "row_independent", profile="ci",
                          max_examples=40)
    assert not result.passed
    assert "seeded_tensors(" in result.counterexample  # a long case, rebuilt from its seed
    case = eval(result.counterexample, {"torch": torch, "LossCase": LossCase,
                                        "seeded_tensors": seeded_tensors})
    assert case.targets.numel() > 32


def test_chunk_hint_probes_shapes_around_a_stated_chunk_size(tmp_path):
    spec = _chunked(tmp_path, 300)  # beyond the default long shapes (2 x 65 positions)
    assert check(spec, "row_independent", n=20).passed
    hinted = replace(spec, chunk=300)
    assert not check(hinted, "row_independent", n=20).passed
    assert plan_for("dev", 300).times == (299, 301, 601)


def test_thorough_profile_reaches_long_sequences_and_large_vocabularies():
    plan = plan_for("thorough")
    assert min(plan.times) >= 256 and min(plan.vocabs) >= 4096
    spec = spec_of("idioms.py:fp32_cross_entropy")
    seen = []

    @settings(max_examples=12, database=None, deadline=None, derandomize=True)
    @given(case=loss_cases(spec))
    def draw(case):
        seen.append(case.logits.shape)

    with shape_plan(plan):
        draw()
    assert any(T >= 256 for _, T, _ in seen) and any(V >= 4096 for _, _, V in seen)


# --------------------------------------------------------------------------- diagnoses


def test_reduction_hint_tries_all_positions_before_the_number_of_classes():
    """A mean over all 4 positions (2 ignored) is off by 2 = V: it read "divided by the
    number of classes V = 2?"."""
    case = LossCase(torch.zeros(1, 4, 2), torch.tensor([[0, 1, -100, -100]]))
    hint = _reduction_hint(2.0, case)
    assert hint.index("by all 4 positions, not the 2 kept ones") < hint.index("V = 2"), hint


def test_reference_mismatch_comes_before_reduction_and_the_reduction_says_so(tmp_path):
    path = tmp_path / "scaled.py"
    path.write_text("import torch.nn.functional as F\n\n"
                    "def scaled_ce(logits, targets, *, ignore_index=-100):\n"
                    "    return 1.08 * F.cross_entropy(logits.transpose(1, 2), targets,\n"
                    "                                  ignore_index=ignore_index)\n")
    (spec,) = resolve_targets(f"{path}:scaled_ce", reduction="mean", like="cross_entropy")
    order = ordered_properties(spec)
    assert order.index("matches_reference") < order.index("reduction")
    assert order[0] == "inputs_unchanged"
    result = check(spec, "reduction", n=10)
    assert not result.passed
    assert "per-token values differ from the reference's too" in result.message


def test_gradient_at_an_ignored_position_is_shown_against_the_kept_ones(tmp_path):
    """A shrunk counterexample printed a gradient of -9.8e-11 at an ignored position, which
    read as rounding: the violation is now printed relative to the gradient at kept
    positions."""
    path = tmp_path / "penalty.py"
    path.write_text("import torch\nimport torch.nn.functional as F\n\n"
                    "def ce_with_penalty(logits, targets, *, ignore_index=-100):\n"
                    "    ce = F.cross_entropy(logits.transpose(1, 2), targets,\n"
                    "                         ignore_index=ignore_index, reduction='none')\n"
                    "    spread = torch.logsumexp(logits, -1) - logits.mean(-1)\n"
                    "    return ce + 1e-3 * spread  # the penalty is not masked\n")
    (spec,) = resolve_targets(f"{path}:ce_with_penalty")
    case = LossCase(torch.tensor([[[2.0, 0.0], [0.0, 3.0]]], dtype=torch.float64),
                    torch.tensor([[0, -100]]), aux={"noise": torch.zeros(1, 2, 2).double()})
    with pytest.raises(AssertionError) as failure:
        PROPERTIES["ignored_tokens_inert"].check(spec, case)
    ratio = float(re.search(r"is ([\d.e+-]+) of the largest gradient at a kept position",
                            str(failure.value)).group(1))
    assert 1e-4 < ratio < 1e-2, failure.value
    assert not run_property(spec, "ignored_tokens_inert", profile="ci", max_examples=40).passed


def test_counterexample_keeps_the_size_of_the_violation_that_shrinking_lost():
    small, big, tiny = (LossCase(torch.zeros(1, n, 2), torch.zeros(1, n, dtype=torch.long))
                        for n in (2, 5, 1))
    failing = [(1e-3, big), (6e-4, small), (1e-9, tiny)]  # tiny: the shrunk one, last
    assert _telling(failing, tiny) is small  # the smallest with at least half the largest
    assert _telling([(1e-3, big), (6e-4, tiny)], tiny) is tiny  # shrinking kept it


def test_tolerance_ignores_nan_values_instead_of_collapsing():
    spec = spec_of("idioms.py:fp32_cross_entropy")
    case = LossCase(torch.zeros(1, 2, 3, dtype=torch.float64), torch.tensor([[0, 1]]))
    tol = slack(spec, case, torch.tensor([float("nan"), 1e3]))
    assert not math.isnan(tol) and tol >= 64 * torch.finfo(torch.float32).eps * 1e3
    path = REAL / "idioms.py"
    # shift_invariant on large fp32 values beside a NaN: roundoff, not a failure
    (nan_spec,) = resolve_targets(f"{path}:fp32_cross_entropy", like="cross_entropy")
    nan_spec = replace(nan_spec, fn=lambda x, y, **kw: torch.where(
        y == 0, float("nan"), spec.fn(x, y, **kw)))
    g = torch.Generator().manual_seed(0)
    big = LossCase(1e3 * torch.randn(1, 3, 4, generator=g, dtype=torch.float64),
                   torch.tensor([[0, 1, 2]]),
                   aux={"shift": torch.full((1, 3, 1), 77.7, dtype=torch.float64)})
    PROPERTIES["shift_invariant"].check(nan_spec, big)
