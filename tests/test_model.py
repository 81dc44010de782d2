"""Tests for lossbench.models.gpt: shapes, causality, seed-only init, determinism,
FLOPs accounting, parameter groups, greedy generation."""

import dataclasses
import math

import pytest
import torch

from lossbench.core.config import ModelConfig
from lossbench.models.gpt import GPTConfig, build_model, greedy_generate

# bias on: the tests below also cover the bias parameters (lossbench's runs default to off)
TINY = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=True)


def test_forward_shape_and_logits_only():
    model = build_model(TINY, seed=0)
    idx = torch.randint(0, TINY.vocab_size, (3, 5))
    logits = model(idx)
    assert isinstance(logits, torch.Tensor)
    assert logits.shape == (3, 5, TINY.vocab_size)
    assert logits.dtype == torch.float32


def test_forward_rejects_too_long_sequence():
    model = build_model(TINY, seed=0)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, TINY.block_size + 1, dtype=torch.long))


@pytest.mark.parametrize("field,value", [
    ("n_embd", 15),  # not divisible by n_head=2
    ("n_layer", 0),
    ("vocab_size", -1),
    ("dropout", 1.0),
    ("dropout", -0.1),
    ("dropout", float("nan")),
    ("n_head", True),  # a bool is not an int here
    ("block_size", 8.0),
])
def test_config_validation_names_field(field, value):
    kwargs = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        GPTConfig(**kwargs)


def test_gpt_config_is_the_model_config_plus_vocab():
    """One definition: GPTConfig has ModelConfig's fields and defaults (bias off), and
    GPTConfig.of copies every one of them."""
    model = ModelConfig(n_layer=3, n_head=2, n_embd=32, block_size=16, dropout=0.1,
                        bias=True, tie_weights=False)
    gpt = GPTConfig.of(model, 7)
    assert gpt == GPTConfig(vocab_size=7, **dataclasses.asdict(model))
    assert {k: v for k, v in dataclasses.asdict(gpt).items() if k != "vocab_size"} == \
        dataclasses.asdict(model)
    assert dataclasses.asdict(GPTConfig.of(ModelConfig(), 5)) == {**dataclasses.asdict(ModelConfig()),
                                                           "vocab_size": 5}
    assert GPTConfig(vocab_size=5).bias is False  # no second set of defaults
    with pytest.raises(TypeError, match="vocab_size"):
        GPTConfig()  # the corpus decides the vocabulary: no default


@pytest.mark.parametrize("t", [0, 3, 7])
def test_causality(t):
    model = build_model(TINY, seed=1).eval()
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, TINY.vocab_size, (2, TINY.block_size), generator=gen)
    changed = idx.clone()
    changed[:, t] = (changed[:, t] + 1) % TINY.vocab_size
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
    # the change must be visible from position t on, or the test proves nothing
    assert (a[:, t] - b[:, t]).abs().max() > 1e-4


def test_init_depends_on_seed_only():
    a = build_model(TINY, seed=123).state_dict()
    torch.rand(1000)  # consume the global RNG in between
    torch.manual_seed(999)
    b = build_model(TINY, seed=123).state_dict()
    c = build_model(TINY, seed=124).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["transformer.wte.weight"], c["transformer.wte.weight"])


def test_build_model_leaves_global_rng_untouched():
    state = torch.random.get_rng_state()
    build_model(TINY, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())


def test_nanogpt_init_statistics():
    cfg = GPTConfig(vocab_size=50, block_size=32, n_layer=3, n_head=4, n_embd=64, bias=True)
    model = build_model(cfg, seed=0)
    sd = model.state_dict()
    assert torch.all(sd["transformer.h.0.attn.c_attn.bias"] == 0)
    assert abs(sd["transformer.h.0.attn.c_attn.weight"].std().item() - 0.02) < 0.002
    proj_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    for name in ("transformer.h.1.attn.c_proj.weight", "transformer.h.2.mlp.c_proj.weight"):
        assert abs(sd[name].std().item() - proj_std) < 0.15 * proj_std
    assert torch.all(sd["transformer.ln_f.weight"] == 1)


def test_weight_tying():
    tied = build_model(TINY, seed=0)
    assert tied.lm_head.weight is tied.transformer.wte.weight
    untied = build_model(GPTConfig(**{**TINY.__dict__, "tie_weights": False}), seed=0)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    V, C = TINY.vocab_size, TINY.n_embd
    assert untied.num_params(non_embedding=False) == tied.num_params(non_embedding=False) + V * C
    # non-embedding count is blocks + ln_f + the V*C head either way
    assert untied.num_params() == tied.num_params()


def test_dropout_off_is_deterministic():
    model = build_model(GPTConfig(**{**TINY.__dict__, "dropout": 0.2}), seed=0)
    idx = torch.randint(0, TINY.vocab_size, (2, 8))
    model.eval()
    assert torch.equal(model(idx), model(idx))
    model.train()
    assert not torch.equal(model(idx), model(idx))  # dropout really is on in train mode
    no_drop = build_model(TINY, seed=0).train()
    assert torch.equal(no_drop(idx), no_drop(idx))


def test_num_params_and_flops_hand_computed():
    # V=5, T=4, L=1, H=1, C=4, biases, tied
    cfg = GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4, bias=True)
    model = build_model(cfg, seed=0)
    block = 8 + (4 * 12 + 12) + (16 + 4) + 8 + (4 * 16 + 16) + (16 * 4 + 4)  # = 244
    n = block + 8 + 5 * 4  # + ln_f + tied head (V*C)
    assert n == 272
    assert model.num_params(non_embedding=True) == 272
    assert model.num_params(non_embedding=False) == 272 + 4 * 4  # + wpe
    assert model.flops_per_token() == 6 * 272 + 12 * 1 * 1 * 4 * 4  # = 1824
    assert model.flops_per_token() == 1824


def test_param_groups_partition_parameters():
    for tie in (True, False):
        cfg = GPTConfig(**{**TINY.__dict__, "tie_weights": tie})
        model = build_model(cfg, seed=0)
        groups = model.param_groups_for_norms()
        assert list(groups) == ["embed", "block0", "block1", "head"]
        seen = [id(p) for ps in groups.values() for p in ps]
        all_params = {id(p) for p in model.parameters()}
        assert len(seen) == len(set(seen)), "a parameter is in two groups"
        assert set(seen) == all_params
        head_ids = {id(p) for p in groups["head"]}
        assert (id(model.lm_head.weight) in head_ids) == (not tie)


def test_greedy_generate_deterministic_no_rng_restores_mode():
    model = build_model(GPTConfig(**{**TINY.__dict__, "dropout": 0.3}), seed=0)
    model.train()
    prefix = torch.randint(0, TINY.vocab_size, (2, 3), generator=torch.Generator().manual_seed(1))
    state = torch.random.get_rng_state()
    out1 = greedy_generate(model, prefix, n_new=12)  # longer than block_size: crops context
    assert torch.equal(state, torch.random.get_rng_state())
    assert model.training  # mode restored
    out2 = greedy_generate(model, prefix, n_new=12)
    assert out1.shape == (2, 12) and out1.dtype == torch.long
    assert torch.equal(out1, out2)
    # first token is the arg-max of the eval-mode logits at the last prefix position
    model.eval()
    with torch.no_grad():
        expected = model(prefix)[:, -1].argmax(-1)
    assert torch.equal(out1[:, 0], expected)
    greedy_generate(model, prefix, n_new=1)
    assert not model.training  # eval mode is restored as eval


def test_greedy_generate_matches_manual_cropped_loop():
    model = build_model(TINY, seed=3)
    prefix = torch.randint(0, TINY.vocab_size, (1, 6), generator=torch.Generator().manual_seed(2))
    out = greedy_generate(model, prefix, n_new=5)
    idx = prefix.clone()
    with torch.no_grad():
        for _ in range(5):
            nxt = model.eval()(idx[:, -TINY.block_size:])[:, -1].argmax(-1, keepdim=True)
            idx = torch.cat([idx, nxt], 1)
    assert torch.equal(out, idx[:, 6:])


def test_backward_reaches_every_parameter():
    model = build_model(TINY, seed=0)
    idx = torch.randint(0, TINY.vocab_size, (2, 8))
    model(idx).logsumexp(-1).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_decoding_matches_full_recomputation(seed):
    """The key/value cache path (prefix + continuation fit the context) gives the same
    logits as a forward over the whole sequence, hence the same greedy tokens."""
    cfg = GPTConfig(**{**TINY.__dict__, "block_size": 24})
    model = build_model(cfg, seed=seed).eval()
    prefix = torch.randint(0, cfg.vocab_size, (3, 5), generator=torch.Generator().manual_seed(seed))
    out = greedy_generate(model, prefix, n_new=19)  # 5 + 19 = block_size: cached path
    idx = prefix.clone()
    with torch.no_grad():
        for _ in range(19):
            nxt = model(idx)[:, -1].argmax(-1, keepdim=True)
            idx = torch.cat([idx, nxt], 1)
        assert torch.equal(out, idx[:, 5:])
        cache = [[None, None] for _ in model.transformer.h]
        step_logits = [model(idx[:, :5], cache)[:, -1]]
        step_logits += [model(idx[:, t:t + 1], cache)[:, -1] for t in range(5, 23)]
        full = model(idx[:, :23])[:, 4:]
    torch.testing.assert_close(torch.stack(step_logits, 1), full, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        model(idx[:, :1], cache)  # the cache already holds 23 of 24 positions: 24 fits
    with pytest.raises(ValueError, match="block_size"):
        model(idx[:, :1], cache)  # a 25th does not
