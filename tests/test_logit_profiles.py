"""The logit-gradient profile of every registered loss (lossbench.losses.profile): the batched
profile against one autograd call per point (registry-driven: a plugin is checked too), and
against closed forms of the built-in losses' gradients."""

import math

import pytest
import torch

from lossbench.losses import HParam, get_loss, list_losses, register_loss, unregister_loss
from lossbench.losses.profile import family, grid, logit_gradients, profile, teacher, unsupported

V = 6


def profiled_losses():
    return [s for s in list_losses() if unsupported(s) is None]


def assert_profile_matches_autograd(spec):
    p_y = grid(9)
    batched = logit_gradients(spec, p_y, spec.defaults(), vocab=V, teacher_mass=0.4)
    logits, targets = family(p_y, V)
    extras = {"teacher_probs": teacher(len(p_y), V, 0.4)} \
        if "teacher_probs" in spec.extra_inputs else {}
    if "hidden_states" in spec.extra_inputs:  # simctg: other hidden states than the profile's
        extras["hidden_states"] = torch.randn(len(p_y), 2, 3, dtype=torch.float64,
                                              generator=torch.Generator().manual_seed(0))
    for i in range(len(p_y)):
        row = logits[i:i + 1].clone().requires_grad_(True)  # (1, 2, V): one point alone
        loss = spec.fn(row, targets[i:i + 1], **spec.defaults(),
                       **{k: v[i:i + 1] for k, v in extras.items()})[0, 1]
        (g,) = torch.autograd.grad(loss, row)
        torch.testing.assert_close(batched[i], g[0, 1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("spec", profiled_losses(), ids=lambda s: s.name)
def test_batched_profile_equals_autograd_point_by_point(spec):
    assert_profile_matches_autograd(spec)


def test_a_plugin_gets_its_profile_and_a_row_coupled_one_is_caught():
    """A loss registered at run time (as --plugin does) is profiled like a built-in; one
    that couples the rows of a batch (breaking the row independence every loss is checked
    for) would get a wrong batched profile, and the comparison says so."""
    @register_loss("test_tempered_ce", description="CE at temperature 2", reference="test",
                   hparams={"t": HParam(2.0, 0.5, 4.0)})
    def tempered(logits, targets, *, ignore_index=-100, t=2.0):
        return get_loss("cross_entropy").fn(logits / t, targets, ignore_index=ignore_index)

    @register_loss("test_row_coupled", description="CE scaled by the batch", reference="test")
    def coupled(logits, targets, *, ignore_index=-100):
        ce = get_loss("cross_entropy").fn(logits, targets, ignore_index=ignore_index)
        return ce * ce.mean()  # every row's value depends on the others

    try:
        assert_profile_matches_autograd(get_loss("test_tempered_ce"))
        assert profile(get_loss("test_tempered_ce")).hparams == {"t": 2.0}
        with pytest.raises(AssertionError):
            assert_profile_matches_autograd(get_loss("test_row_coupled"))
    finally:
        unregister_loss("test_tempered_ce")
        unregister_loss("test_row_coupled")


def test_every_builtin_loss_has_a_profile_or_a_reason():
    reasons = {s.name: unsupported(s) for s in list_losses() if s.origin.startswith("lossbench")}
    assert reasons["sequence_unlikelihood"].startswith("a fine-tuning loss")
    assert all(r is None for name, r in reasons.items() if name != "sequence_unlikelihood")
    with pytest.raises(ValueError, match="sequence_unlikelihood: a fine-tuning loss"):
        profile(get_loss("sequence_unlikelihood"))


def _softmax_rows(p_y):
    logits, _ = family(p_y, V)
    z = logits[:, 1]  # (N, V)
    return z, z.softmax(-1)


def _onehot(n, c=0):
    e = torch.zeros(n, V, dtype=torch.float64)
    e[:, c] = 1.0
    return e


def _focal(z, p, gamma=2.0):
    py = p[:, :1]
    dl_dpy = gamma * (1 - py) ** (gamma - 1) * py.log() - (1 - py) ** gamma / py
    return py * (_onehot(len(p)) - p) * dl_dpy


def _mse(z, p):
    r = p - _onehot(len(p))
    return 2 * p * (r - (r * p).sum(-1, keepdim=True))


def _hinge(z, p, margin=1.0, power=1):
    slack = (margin + z[:, 1] - z[:, 0]).clamp_min(0)  # class 1 is the largest other logit
    g = torch.zeros_like(z)
    g[:, 0], g[:, 1] = -1.0, 1.0
    return g * (slack > 0)[:, None] * (power * slack ** (power - 1))[:, None]


def _entropy_grad(p):
    h = -(p * p.log()).sum(-1, keepdim=True)
    return -p * (p.log() + h)  # dH/dz


def _teacher_row(n, mass=0.4):
    return teacher(n, V, mass)[:, 1]


CLOSED_FORMS = {
    "cross_entropy": lambda z, p: p - _onehot(len(p)),
    "label_smoothing": lambda z, p: p - (0.9 * _onehot(len(p)) + 0.1 / V),
    "focal": _focal,
    "poly1": lambda z, p: p - _onehot(len(p)) - p[:, :1] * (_onehot(len(p)) - p),
    "z_loss": lambda z, p: p - _onehot(len(p)) + 2e-4 * torch.logsumexp(z, -1, True) * p,
    "confidence_penalty": lambda z, p: p - _onehot(len(p)) - 0.1 * _entropy_grad(p),
    "mse": _mse,
    "mse_logits": lambda z, p: 2 / V * (z - _onehot(len(p))),  # k = m = 1
    "hinge": _hinge,
    "squared_hinge": lambda z, p: _hinge(z, p, power=2),
    "kl": lambda z, p: p - _teacher_row(len(p)),
    "reverse_kl": lambda z, p: p * (p.log() - _teacher_row(len(p)).log()
                                    - (p * (p.log() - _teacher_row(len(p)).log())).sum(-1, True)),
    # CE + alpha * -log(1 - p_1): class 1 is the repeated candidate
    "unlikelihood": lambda z, p: p - _onehot(len(p)) + p[:, 1:2] * (_onehot(len(p), 1) - p)
    / (1 - p[:, 1:2]),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_profile_equals_the_closed_form_gradient(name):
    spec = get_loss(name)
    p_y = grid(15)
    z, p = _softmax_rows(p_y)
    expected = CLOSED_FORMS[name](z, p)
    got = logit_gradients(spec, p_y, spec.defaults(), vocab=V, teacher_mass=0.4)
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-10)
    prof = profile(spec, vocab=V, teacher_mass=0.4, points=15)
    assert prof.pull == pytest.approx((-expected[:, 0]).tolist(), rel=1e-7, abs=1e-10)
    assert prof.push == pytest.approx(expected[:, 1:].sum(1).tolist(), rel=1e-7, abs=1e-10)
    assert prof.repeated == pytest.approx(expected[:, 1].tolist(), rel=1e-7, abs=1e-10)


def test_the_family_is_centred_logits_of_the_stated_probabilities():
    p_y = grid(5)
    logits, targets = family(p_y, V)
    assert torch.allclose(logits.mean(-1), torch.zeros(5, 2, dtype=torch.float64), atol=1e-12)
    torch.testing.assert_close(logits[:, 1].softmax(-1)[:, 0], p_y)
    assert targets[0].tolist() == [1, 0]  # class 1 comes first: the repeated candidate
    # the normalizer is not 1, so z-loss's own term shows in its profile
    ce, z = (profile(get_loss(n), vocab=V, points=5) for n in ("cross_entropy", "z_loss"))
    assert all(a != b for a, b in zip(ce.push, z.push))


def test_what_the_profiles_say():
    """The reading the report gives: CE never stops pulling, focal stops on confident
    tokens, hinge stops at the margin, unlikelihood pushes the repeated candidate down
    harder than CE, kl pulls the target only up to the teacher's mass."""
    ce, focal, hinge, ul, kl = (profile(get_loss(n), vocab=V, teacher_mass=0.4)
                                for n in ("cross_entropy", "focal", "hinge", "unlikelihood",
                                          "kl"))
    last = len(ce.p_y) - 1
    assert ce.pull[last] == pytest.approx(1 - ce.p_y[last])
    assert focal.pull[last] < 1e-6 < ce.pull[last]
    assert hinge.pull[0] == 1.0 and hinge.pull[last] == 0.0
    assert all(u > c for u, c in zip(ul.repeated, ce.repeated))
    assert all((k > 0) == (py < 0.4) for k, py in zip(kl.pull, kl.p_y) if abs(py - 0.4) > 1e-3)
    assert math.isclose(sum(ce.push) - sum(ce.pull), 0.0, abs_tol=1e-9)  # shift invariance
