"""The distillation divergences (losses/distill.py, losses/mixture.py): their stated limits and
special cases, Hinton's tau^2 gradient, and agreement with public implementations (rewritten
in tests/fixtures/real_losses/: TRL's generalized JSD, DistiLLM's skew KLs and TVD). Values
against the papers' equations are the registry's ``matches_reference`` property
(tests/test_loss_properties.py)."""

from pathlib import Path

import pytest
import torch
from helpers import load_module

from lossbench.losses import get_loss, mean_over_tokens

REAL = Path(__file__).parent / "fixtures" / "real_losses"


def _fixture(name):
    return load_module(REAL / f"{name}.py", f"real_{name}")


def _case(seed=0, B=2, T=5, V=7, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(B, T, V, generator=g, dtype=dtype)
    teacher_logits = 2 * torch.randn(B, T, V, generator=g, dtype=dtype)
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[0, 1] = -100
    return logits, teacher_logits, targets


def _loss(name, logits, targets, teacher_logits, **hp):
    return get_loss(name)(logits, targets, teacher_probs=teacher_logits.softmax(-1), **hp)


@pytest.mark.parametrize("seed", range(3))
def test_generalized_jsd_ends_and_scaled_limits_are_the_kls(seed):
    z, zt, y = _case(seed)
    kl, rkl = _loss("kl", z, y, zt), _loss("reverse_kl", z, y, zt)
    torch.testing.assert_close(_loss("generalized_jsd", z, y, zt, beta=0.0), kl)
    torch.testing.assert_close(_loss("generalized_jsd", z, y, zt, beta=1.0), rkl)
    # JSD(beta) / beta -> KL(t || p), JSD / (1 - beta) -> KL(p || t), the error O(eps)
    errors = []
    for eps in (1e-4, 1e-5, 1e-7):
        near0 = _loss("generalized_jsd", z, y, zt, beta=eps) / eps
        near1 = _loss("generalized_jsd", z, y, zt, beta=1 - eps) / eps
        errors.append(max(((near0 - kl) / kl.clamp_min(1e-12)).abs().max(),
                          ((near1 - rkl) / rkl.clamp_min(1e-12)).abs().max()))
    assert errors[1] < 0.2 * errors[0] and errors[2] < 1e-3, errors
    mid = _loss("generalized_jsd", z, y, zt, beta=0.5)
    assert (mid <= torch.log(torch.tensor(2.0, dtype=mid.dtype)) + 1e-12).all()


@pytest.mark.parametrize("seed", range(3))
def test_special_cases_are_the_plain_losses(seed):
    z, zt, y = _case(seed)
    torch.testing.assert_close(_loss("kd", z, y, zt, temperature=1.0), _loss("kl", z, y, zt))
    torch.testing.assert_close(_loss("skew_kl", z, y, zt, alpha=0.0), _loss("kl", z, y, zt))
    torch.testing.assert_close(_loss("skew_reverse_kl", z, y, zt, alpha=0.0),
                               _loss("reverse_kl", z, y, zt))
    torch.testing.assert_close(_loss("ce_kd", z, y, zt, alpha=0.0, temperature=3.0),
                               _loss("kd", z, y, zt, temperature=3.0))
    torch.testing.assert_close(_loss("ce_kd", z, y, zt, alpha=1.0),
                               get_loss("cross_entropy")(z, y))


@pytest.mark.parametrize("tau", [1.0, 2.0, 8.0])
def test_kd_gradient_is_tau_times_the_tempered_residual(tau):
    """d/dz tau^2 KL(t_tau || softmax(z / tau)) = tau (p_tau - t_tau): the tau^2 factor keeps
    the gradient's scale at large tau (Hinton et al. 2015, section 2)."""
    z, zt, y = _case(3)
    z.requires_grad_(True)
    get_loss("kd")(z, y, teacher_probs=zt.softmax(-1), temperature=tau).sum().backward()
    expected = tau * ((z.detach() / tau).softmax(-1) - (zt / tau).softmax(-1))
    expected[y == -100] = 0
    torch.testing.assert_close(z.grad, expected)


def test_skew_losses_are_bounded_by_log_one_over_alpha():
    z = torch.tensor([[[-40.0, 40.0, 0.0]]], dtype=torch.float64)
    t = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64)
    y = torch.tensor([[0]])
    for alpha in (0.1, 0.3):
        bound = torch.log(torch.tensor(1 / alpha, dtype=torch.float64))
        assert get_loss("skew_kl")(z, y, teacher_probs=t, alpha=alpha) <= bound + 1e-9
        assert get_loss("skew_reverse_kl")(z, y, teacher_probs=t, alpha=alpha) <= bound + 1e-9
    assert get_loss("kl")(z, y, teacher_probs=t) > 70  # the unskewed KL is not


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_generalized_jsd_equals_trls(beta):
    z, zt, y = _case(4)
    trl = _fixture("trl_gkd").generalized_jsd_loss(z, zt, labels=y, beta=beta)
    ours = mean_over_tokens(_loss("generalized_jsd", z, y, zt, beta=beta), y)
    torch.testing.assert_close(ours, trl)


def test_skew_kls_and_tvd_equal_distillms():
    distillm = _fixture("distillm_skew")
    z, zt, y = _case(5, dtype=torch.float32)
    t = zt.softmax(-1)
    entropy_term = mean_over_tokens(torch.xlogy(t, t).sum(-1), y)  # DistiLLM drops sum t log t
    for alpha in (0.1, 0.5):
        ours = mean_over_tokens(_loss("skew_kl", z, y, zt, alpha=alpha), y)
        theirs = distillm.skewed_forward_kl(z, zt, y, lam=alpha) + entropy_term
        torch.testing.assert_close(ours, theirs)
        ours = mean_over_tokens(_loss("skew_reverse_kl", z, y, zt, alpha=alpha), y)
        torch.testing.assert_close(ours, distillm.skewed_reverse_kl(z, zt, y, lam=alpha))
    torch.testing.assert_close(mean_over_tokens(_loss("tvd", z, y, zt), y),
                               distillm.tv_distance(z, zt, y))


def test_a_truncated_teacher_is_handled_by_every_divergence():
    """A top-k teacher has exact zeros: every divergence stays finite, with finite gradients."""
    z, zt, y = _case(6)
    t = zt.softmax(-1)
    top = t.topk(3, dim=-1)
    t = torch.zeros_like(t).scatter(-1, top.indices, top.values)
    t = t / t.sum(-1, keepdim=True)
    for name in ("kl", "kd", "ce_kd", "generalized_jsd", "skew_kl", "skew_reverse_kl", "tvd"):
        x = z.clone().requires_grad_(True)
        out = get_loss(name)(x, y, teacher_probs=t)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(x.grad).all(), name
