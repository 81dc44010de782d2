"""Hand-checkable values for the losses and their numerical helpers."""

import math

import pytest
import torch
import torch.nn.functional as F

from lossbench.losses import get_loss, mean_over_tokens
from lossbench.losses._common import log1m_softmax_at
from lossbench.losses.repetition import previous_token_candidates, repeated_ngram_mask


def test_cross_entropy_of_uniform_logits_is_log_vocab():
    out = get_loss("cross_entropy")(torch.zeros(2, 3, 7), torch.zeros(2, 3, dtype=torch.long))
    assert torch.allclose(out, torch.full((2, 3), math.log(7)))


def test_log1m_softmax_exact_when_p_rounds_to_one():
    logits = torch.tensor([[[1e4, 0.0, 0.0]]])  # p_0 == 1.0 in fp32
    out = log1m_softmax_at(logits, torch.tensor([[0]]))
    assert out.item() == pytest.approx(math.log(2) - 1e4, rel=1e-6)
    # and the cheap branch: p = 1/3
    out = log1m_softmax_at(torch.zeros(1, 1, 3), torch.tensor([[1]]))
    assert out.item() == pytest.approx(math.log(2 / 3), rel=1e-6)


def test_focal_gradient_is_finite_below_gamma_one_at_certainty():
    logits = torch.tensor([[[1e4, 0.0]]], requires_grad=True)
    get_loss("focal")(logits, torch.tensor([[0]]), gamma=0.5).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_unlikelihood_hand_example():
    # row: targets 0, 1, 0, 2 ; uniform p over V=3 (p = 1/3 everywhere)
    logits = torch.zeros(1, 4, 3)
    targets = torch.tensor([[0, 1, 0, 2]])
    out = get_loss("unlikelihood")(logits, targets, alpha=1.0)
    pen = -math.log(2 / 3)
    # C_0 = {}, C_1 = {0}, C_2 = {1} (0 is the target), C_3 = {0, 1}
    expected = torch.tensor([[0, 1, 1, 2]]) * pen + math.log(3)
    assert torch.allclose(out, expected.float(), atol=1e-6)


def test_unlikelihood_candidates_skip_ignored_tokens():
    safe = torch.tensor([[2, 0, 1]])
    keep = torch.tensor([[False, True, True]])
    ids, valid = previous_token_candidates(safe, keep, 3)
    cands = {t: sorted(int(ids[0, t, s]) for s in range(3) if valid[0, t, s]) for t in range(3)}
    assert cands == {0: [], 1: [], 2: [0]}  # token 2 at position 0 is ignored


@pytest.mark.parametrize("vocab", [5, 10 ** 6])  # exact int64 codes, and the pairwise fallback
def test_repeated_ngram_mask(vocab):
    targets = torch.tensor([[1, 2, 3, 1, 2, 3, 4], [1, 1, 1, 1, 2, 2, 2]])
    keep = torch.ones_like(targets, dtype=torch.bool)
    got = repeated_ngram_mask(targets, keep, 3, vocab)
    assert got.tolist() == [[False, False, False, True, True, True, False],
                            [False, True, True, True, False, False, False]]
    keep[0, 4] = False  # the repeat "1 2 3" now touches an ignored token
    assert not repeated_ngram_mask(targets, keep, 3, vocab)[0].any()


def test_kl_without_teacher_is_label_smoothing_up_to_a_constant_and_not_ce():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 5, 6, dtype=torch.float64), torch.randint(0, 6, (2, 5))
    kl = get_loss("kl")(logits, targets, smoothing=0.1)
    ls = get_loss("label_smoothing")(logits, targets, smoothing=0.1)
    ce = get_loss("cross_entropy")(logits, targets)
    diff = kl - ls
    assert torch.allclose(diff, diff.flatten()[0].expand_as(diff))  # -H(smoothed target)
    assert not torch.allclose(kl, ce)


def test_kl_with_teacher_uses_it():
    torch.manual_seed(1)
    logits, targets = torch.randn(1, 4, 5, dtype=torch.float64), torch.randint(0, 5, (1, 4))
    teacher = torch.randn(1, 4, 5, dtype=torch.float64).softmax(-1)
    expected = (teacher * (teacher.log() - F.log_softmax(logits, -1))).sum(-1)
    assert torch.allclose(get_loss("kl")(logits, targets, teacher_probs=teacher), expected)
    with pytest.raises(ValueError, match="teacher_probs"):
        get_loss("kl")(logits, targets, teacher_probs=teacher[..., :3])


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "confidence_penalty"])
def test_fused_losses_match_reference_beyond_one_row_block(name):
    """The property tests use a few elements; these shapes cross the fused functions' row
    blocks (2**18 elements), with ignored tokens and exact zeros in kl's teacher."""
    from lossbench.losses._fused import _BLOCK_ELEMENTS
    torch.manual_seed(2)
    B, T, V = 5, 37, 4099  # rows don't divide the block evenly
    assert B * T * V > 2 * _BLOCK_ELEMENTS
    logits = (3 * torch.randn(B, T, V, dtype=torch.float64)).requires_grad_(True)
    targets = torch.randint(0, V, (B, T))
    targets[0, :5] = -100
    teacher = torch.rand(B, T, V, dtype=torch.float64) ** 4
    if name == "kl":  # 0 log 0 = 0; reverse KL is infinite there (lossbench clamps log t)
        teacher[teacher < 0.01] = 0.0  # most classes impossible under the teacher
    teacher /= teacher.sum(-1, keepdim=True)
    spec = get_loss(name)
    extras = {"teacher_probs": teacher} if "teacher_probs" in spec.extra_inputs else {}
    for fn in (spec.fn, spec.reference_impl):
        out = fn(logits, targets, **extras)
        (grad,) = torch.autograd.grad((out * torch.linspace(0, 1, T)).sum(), logits)
        if fn is spec.fn:
            ours, ours_grad = out, grad
    torch.testing.assert_close(ours, out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours_grad, grad, rtol=1e-10, atol=1e-10)


def test_mse_logits_no_cancellation_when_target_logit_dominates():
    logits = torch.tensor([[[1e4, 1.0, 2.0]]])
    out = get_loss("mse_logits")(logits, torch.tensor([[0]]), k=1.0, m=1e4)
    assert out.item() == pytest.approx(5.0 / 3.0, rel=1e-6)


def test_mean_over_tokens_ignores_padding_and_survives_all_padding():
    per_token = torch.tensor([[1.0, 3.0, 0.0]])
    targets = torch.tensor([[4, 2, -100]])
    assert mean_over_tokens(per_token, targets).item() == 2.0
    assert mean_over_tokens(torch.zeros(1, 2), torch.full((1, 2), -100)).item() == 0.0


def test_hparam_validation_messages():
    spec = get_loss("focal")
    assert spec.validate_hparams({"gamma": 2.0}) == []
    assert "outside its range" in spec.validate_hparams({"gamma": 9.0})[0]
    assert "no hyperparameter 'alpha'" in spec.validate_hparams({"alpha": 1.0})[0]
    assert "must be an integer" in get_loss("sequence_unlikelihood").validate_hparams({"ngram": 2.5})[0]
