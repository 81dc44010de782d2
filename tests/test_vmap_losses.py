"""Every registered loss takes the gradient-noise probe's vmap path (one vmap(grad) pass,
not a loop of backward passes: the cost issue 28 bounds), and that path gives the loop's
per-example gradients: on a tiny GPT up to rounding, and exactly on an embedding-table
"model" whose logits are large enough to take the losses' near-one branches."""

import warnings
from functools import partial

import pytest
import torch
from torch.func import functional_call, grad, vmap

from lossbench.losses import list_losses, mean_over_tokens
from lossbench.losses._common import _NEAR_ONE
from lossbench.models.gpt import GPTConfig, build_model
from lossbench.train.noise import ExampleGradients
from lossbench.train.step import _loss_of

V, T, N = 7, 6, 5
# Losses whose per-example gradients still need the loop (none today); each with its reason.
LOOP_ONLY: dict[str, str] = {}


def _batch():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (N, T), generator=gen)
    y = torch.randint(0, V, (N, T), generator=gen)
    x[:, 2:], y[:, 2:] = x[:, :-2].clone(), y[:, :-2].clone()  # repeats: unlikelihood's candidates
    y[0, 1] = -100
    teacher = torch.rand(N, T, V, generator=gen).softmax(-1)
    return x, y, {"teacher_probs": teacher}


def _gpt():
    model = build_model(GPTConfig(vocab_size=V, n_layer=1, n_head=2, n_embd=8, block_size=T), 0)
    params = {k: p.detach() for k, p in model.named_parameters()}
    return params, lambda p, x: functional_call(model, p, (x,))


def _table():
    """logits = W[x]: the per-example gradient is the loss's own logit gradient, and W's
    scale puts most positions above the near-one threshold."""
    w = torch.randn(V, V, generator=torch.Generator().manual_seed(1)) * 30
    return {"w": w}, lambda p, x: p["w"][x]


def _moments(spec, params, forward, use_vmap):
    hparams = {k: h.default for k, h in spec.hparams.items()}
    loss_of = partial(_loss_of, spec, hparams)
    x, y, extras = _batch()
    examples = ExampleGradients()
    examples.use_vmap = use_vmap
    with warnings.catch_warnings():  # vmap's "batching rule not implemented" fallbacks
        warnings.simplefilter("ignore", UserWarning)
        m = examples.moments(lambda p, xb, yb, e: loss_of(forward(p, xb), yb, e), params, x, y,
                             extras)
    return m, examples.why_not


def test_the_table_model_reaches_the_near_one_branches():
    params, forward = _table()
    x, _, _ = _batch()
    assert (forward(params, x).softmax(-1).amax(-1) > _NEAR_ONE).float().mean() > 0.5


@pytest.mark.parametrize("model", ["gpt", "table"])
@pytest.mark.parametrize("name", [s.name for s in list_losses()])
def test_every_registered_loss_takes_the_vmap_path(name, model):
    spec = next(s for s in list_losses() if s.name == name)
    if spec.needs_hidden:
        pytest.skip("the probe does not measure a loss that needs hidden states (a run note)")
    params, forward = _gpt() if model == "gpt" else _table()
    vmapped, why_not = _moments(spec, params, forward, use_vmap=True)
    if name in LOOP_ONLY:
        assert not vmapped.vmap and why_not, f"{name} vmaps now: take it off LOOP_ONLY"
        return
    assert vmapped.vmap and why_not == "", why_not
    looped, _ = _moments(spec, params, forward, use_vmap=False)
    assert (vmapped.k, vmapped.b) == (looped.k, looped.b) == (N, 1)
    rtol, atol = (1e-5, 1e-9) if model == "gpt" else (1e-6, 0.0)
    for n in params:
        assert torch.isfinite(vmapped.s1[n]).all()
        torch.testing.assert_close(vmapped.s1[n], looped.s1[n], rtol=rtol, atol=atol)
        torch.testing.assert_close(vmapped.s2[n], looped.s2[n], rtol=rtol, atol=atol ** 2)


@pytest.mark.parametrize("name", [s.name for s in list_losses()])
def test_vmap_over_logits_with_shared_targets_equals_one_call_each(name):
    """A vmapped dimension that the targets lack (in_dim None: broadcast into the folded
    batch), B = 2 rows per call, and grad alone: the same gradients as plain autograd."""
    spec = next(s for s in list_losses() if s.name == name)
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 2, T, V, generator=gen) * 8  # (n, B, T, V)
    y = torch.randint(0, V, (2, T), generator=gen)
    y[:, 3:] = y[:, :T - 3]
    extras = {"teacher_probs": torch.rand(2, T, V, generator=gen).softmax(-1),
              "hidden_states": torch.randn(2, T, 4, generator=gen)}
    extras = {k: v for k, v in extras.items() if k in spec.extra_inputs}

    def loss(z):
        return mean_over_tokens(spec.fn(z, y, **extras), y)

    expected = []
    for z in logits:
        z = z.clone().requires_grad_(True)
        expected.append(torch.autograd.grad(loss(z), z)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert torch.equal(grad(loss)(logits[0]), expected[0])
        torch.testing.assert_close(vmap(grad(loss))(logits), torch.stack(expected),
                                   rtol=1e-6, atol=0.0)
