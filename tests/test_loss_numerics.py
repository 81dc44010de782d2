"""Hand-checkable values for the losses and their numerical helpers."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lossbench.losses import get_loss, mean_over_tokens
from lossbench.losses._common import log1m_softmax_at
from lossbench.losses.repetition import (
    _unlikelihood,
    previous_token_candidates,
    repeated_ngram_mask,
    seen_token_mask,
)


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
    assert seen_token_mask(safe, keep, 3)[0].tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0]]


def _unlikelihood_case(B, T, V, seed=0):
    """float64 logits and targets with repeats (few distinct ids), ignored positions and a
    near-one probability (the exact log(1 - p) path) on a candidate."""
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(B, T, V, dtype=torch.float64, generator=gen)
    targets = torch.randint(0, 4, (B, T), generator=gen)
    targets[0, :5] = torch.tensor([1, -100, 2, 3, 1])  # C_3 = {1, 2}; the 1 at t = 4 is the target
    targets[1, 2], targets[-1, -1] = -100, -100
    logits[0, 3, 1] = 30.0  # p > 1 - 1e-10 on the candidate 1: 1 - p would cancel
    logits[0, 4, 1] = 30.0  # ... and on the target at t = 4, which is no candidate
    logits[1, 2] *= 1e3  # extreme logits at an ignored position change nothing
    return logits, targets


@pytest.mark.parametrize("shape", [(2, 12, 5), (3, 8, 8), (2, 6, 9), (2, 5, 11), (2, 40, 4)],
                         ids=["V<T", "V=T", "V>T", "V>1.5T", "V<<T"])
def test_unlikelihood_dense_and_gathered_paths_agree(shape):
    """The vocabulary-mask path (chosen when V < 1.5 T) and the gathered-ids path are one
    definition: both match the loop reference, values and gradients, on both sides. With
    ignore_index=0, the in-vocabulary id 0 must be nobody's candidate either."""
    logits, targets = _unlikelihood_case(*shape)
    assert logits[0, 3].softmax(-1)[1] > 1 - 1e-10
    weights = torch.linspace(0.5, 1.5, shape[1], dtype=torch.float64)  # uneven upstream gradient
    spec = get_loss("unlikelihood")
    paths = {"dense": partial(_unlikelihood, dense=True),
             "gathered": partial(_unlikelihood, dense=False),
             "default": spec.fn, "reference": spec.reference_impl}
    for ignore_index in (-100, 0):  # with 0, the -100s and every 0 are ignored
        targets = torch.where(targets == -100, ignore_index, targets)
        results = {}
        for name, fn in paths.items():
            z = logits.clone().requires_grad_(True)
            out = fn(z, targets, ignore_index=ignore_index, alpha=0.7)
            results[name] = (out, *torch.autograd.grad((out * weights).sum(), z))
        ref, ref_grad = results.pop("reference")
        ignored = targets == ignore_index
        for name, (out, grad) in results.items():
            torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12, msg=name)
            torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12, msg=name)
            assert (out[ignored] == 0).all() and (grad[ignored] == 0).all(), name


@pytest.mark.parametrize("T,V,form", [(8, 5, "seen_token_mask"), (8, 11, "seen_token_mask"),
                                      (8, 12, "previous_token_candidates"),
                                      (4, 9, "previous_token_candidates")])
def test_unlikelihood_picks_the_cheaper_candidate_form(T, V, form, monkeypatch):
    """B T V mask entries or B T T gathered ids: the mask below V = 1.5 T (the measured
    break-even, a gathered entry costing ~1.5 mask entries), the ids above."""
    from lossbench.losses import repetition
    used = []
    for name in ("seen_token_mask", "previous_token_candidates"):
        original = getattr(repetition, name)
        monkeypatch.setattr(repetition, name,
                            lambda *a, _f=original, _n=name, **k: used.append(_n) or _f(*a, **k))
    get_loss("unlikelihood")(torch.zeros(1, T, V), torch.zeros(1, T, dtype=torch.long))
    assert used == [form]


def test_unlikelihood_paths_finite_and_equal_at_fp32_extremes():
    gen = torch.Generator().manual_seed(3)
    for B, T, V in [(2, 9, 4), (2, 4, 9)]:
        logits = 1e4 * torch.randn(B, T, V, generator=gen)
        targets = torch.randint(0, 3, (B, T), generator=gen)
        results = []
        for dense in (True, False):
            z = logits.clone().requires_grad_(True)
            out = _unlikelihood(z, targets, dense=dense)
            results.append((out, *torch.autograd.grad(out.sum(), z)))
        for out, grad in results:
            assert torch.isfinite(out).all() and torch.isfinite(grad).all()
        torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5)


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


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.integers(1, 9), st.data())
def test_mean_over_tokens_is_the_mean_over_kept_tokens(batch, time, data):
    """The one reduction every loss shares (the per-loss check once restated it per loss)."""
    per_token = torch.tensor(data.draw(st.lists(
        st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=batch * time,
        max_size=batch * time))).reshape(batch, time)
    keep = torch.tensor(data.draw(st.lists(st.booleans(), min_size=batch * time,
                                           max_size=batch * time))).reshape(batch, time)
    targets = torch.where(keep, 1, -100)
    per_token = torch.where(keep, per_token, 0.0)  # a loss's contract: 0 where ignored
    reduced = mean_over_tokens(per_token, targets)
    expected = per_token[keep].double().mean() if keep.any() else torch.zeros((), dtype=torch.double)
    assert reduced.shape == () and reduced.dtype == per_token.dtype
    assert reduced.double().item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-3)


def test_hparam_validation_messages():
    spec = get_loss("focal")
    assert spec.validate_hparams({"gamma": 2.0}) == []
    assert "outside its range" in spec.validate_hparams({"gamma": 9.0})[0]
    assert "no hyperparameter 'alpha'" in spec.validate_hparams({"alpha": 1.0})[0]
    assert "must be an integer" in get_loss("sequence_unlikelihood").validate_hparams({"ngram": 2.5})[0]
