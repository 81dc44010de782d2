"""Scale ladders, the pure parts: the shape rule, the data budget, the power-law fit and its
bootstrap intervals, Kendall's tau between sizes, and crossovers of fitted curves."""

import math

import numpy as np
import pytest

from lossbench.analysis.fits import (
    PARAMS,
    PowerLaw,
    crossings,
    crossovers,
    fit_ladder,
    fit_power_law,
    rank_agreement,
    ranks,
)
from lossbench.core.config import ModelConfig, TrainConfig
from lossbench.models.gpt import GPT, GPTConfig
from lossbench.suite.scale import budget_steps, count_params, parse_scale

MODEL = ModelConfig(block_size=64)
TRAIN = TrainConfig(steps=300, batch_size=16, warmup_steps=10)
LADDER = [5e4, 1.2e5, 3e5, 7e5, 1.6e6, 2.5e7]


def ladder(table, vocab=65, model=MODEL, train=TRAIN):
    errors = []
    spec = parse_scale(table, "s.toml", errors, model=model, train=train, vocab=vocab)
    return spec, errors


def test_shape_rule_meets_every_requested_count_within_10_percent():
    spec, errors = ladder({"params": LADDER, "head_size": 8, "aspect": 32})
    assert not errors
    for size, wanted in zip(spec.sizes, sorted(LADDER)):
        assert size.requested == wanted
        assert abs(size.n_params / wanted - 1) <= 0.10, size
        assert size.n_embd == 8 * size.n_head  # fixed head size
    # depth and width grow together
    assert [s.n_layer for s in spec.sizes] == sorted(s.n_layer for s in spec.sizes)
    assert [s.n_embd for s in spec.sizes] == sorted(s.n_embd for s in spec.sizes)
    assert spec.sizes[-1].n_layer > spec.sizes[0].n_layer


def test_parameter_count_is_the_models_own():
    spec, _ = ladder({"params": [3e5]}, vocab=50)
    s = spec.sizes[0]
    cfg = ModelConfig(n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd, block_size=64)
    assert s.n_params == GPT(GPTConfig.of(cfg, 50)).num_params(non_embedding=True)
    untied = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, tie_weights=False)
    assert count_params(untied, 50) == GPT(GPTConfig.of(untied, 50)).num_params(non_embedding=True)


def test_shape_rule_refuses_a_count_it_cannot_meet():
    _, errors = ladder({"params": [300]})
    assert len(errors) == 1 and "within 10%" in errors[0] and errors[0].startswith("s.toml")


@pytest.mark.parametrize("table, problem", [
    ({"params": [5e4], "steps": 10, "tokens_per_param": 20}, "not both"),
    ({"params": [5e4], "sizes": [{"n_layer": 1, "n_embd": 32}]}, "either"),
    ({"params": [-1.0]}, "positive numbers"),
    ({"sizes": [{"n_layer": 1, "n_embd": 30, "n_head": 4}]}, "divisible"),
    ({"params": [5e4], "typo": 1}, "unknown key 'typo'"),
    ({"params": [5e4], "steps": 5}, "warmup_steps"),
])
def test_bad_scale_sections_are_one_line_each(table, problem):
    _, errors = ladder(table)
    assert len(errors) == 1 and problem in errors[0], errors


def test_a_ladder_needs_the_built_in_gpt():
    other = ModelConfig(block_size=64, arch="python:somewhere:factory")
    _, errors = ladder({"params": [5e4]}, model=other)
    assert len(errors) == 1 and "built-in GPT" in errors[0]


def test_budget_rule_tokens_per_param_gives_each_size_its_own_steps():
    spec, errors = ladder({"params": [5e4, 3e5], "tokens_per_param": 20})
    assert not errors
    per_step = TRAIN.batch_size * TRAIN.grad_accum * MODEL.block_size
    for s in spec.sizes:  # the fewest steps that see 20 tokens per parameter
        assert s.steps * per_step >= 20 * s.n_params > (s.steps - 1) * per_step
    assert spec.sizes[1].steps > spec.sizes[0].steps
    assert "20 training tokens per parameter" in spec.budget
    accum = TrainConfig(batch_size=4, grad_accum=3)
    assert budget_steps(1000, accum, 10, tokens_per_param=1.25) == 11  # 1250 / 120 = 10.4


def test_budget_rule_fixed_steps():
    fixed, _ = ladder({"params": [5e4, 3e5], "steps": 77})
    assert [s.steps for s in fixed.sizes] == [77, 77]
    default, _ = ladder({"sizes": [{"n_layer": 1, "n_embd": 32}, {"n_layer": 2, "n_embd": 48}]})
    assert [s.steps for s in default.sizes] == [TRAIN.steps] * 2
    assert [s.n_head for s in default.sizes] == [4, 6]  # n_embd / head_size (8)


TRUTH = PowerLaw(E=1.5, A=40.0, alpha=0.35)
N = np.geomspace(5e4, 2e6, 6)


def test_fit_recovers_a_noiseless_law():
    law, bound = fit_power_law(N, TRUTH(N))
    assert not bound
    assert law.E == pytest.approx(TRUTH.E, rel=1e-3)
    assert law.A == pytest.approx(TRUTH.A, rel=1e-2)
    assert law.alpha == pytest.approx(TRUTH.alpha, rel=1e-3)


@pytest.mark.slow
def test_fit_intervals_cover_the_truth_in_most_replicates():
    """Twenty synthetic ladders (8 seeds, noise sd 0.01 nats): the point estimates land near
    the truth and each parameter's bootstrap interval covers it in most of them."""
    rng = np.random.default_rng(0)
    covered = {p: 0 for p in PARAMS}
    alphas = []
    for r in range(20):
        values = TRUTH(N)[:, None] + rng.normal(0, 0.01, (len(N), 8))
        fit = fit_ladder(N, {"ce": values}, n_boot=200, seed=r)["ce"]
        alphas.append(fit.law.alpha)
        for p in PARAMS:
            covered[p] += fit.low[p] <= getattr(TRUTH, p) <= fit.high[p]
        assert fit.kind == "95% CI"
    assert abs(np.median(alphas) - TRUTH.alpha) < 0.03
    assert all(c >= 15 for c in covered.values()), covered


def test_fit_is_refused_with_fewer_than_four_sizes():
    values = TRUTH(N[:3])[:, None] + np.zeros((3, 3))
    fit = fit_ladder(N[:3], {"ce": values}, n_boot=10)["ce"]
    assert fit.law is None and "at least 4" in fit.refused
    diverged = TRUTH(N[:4])[:, None] + np.zeros((4, 3))
    diverged[2, 1] = np.nan  # a diverged seed leaves its size out of the fit
    fit = fit_ladder(N[:4], {"ce": diverged}, n_boot=10)["ce"]
    assert fit.law is None and fit.sizes_used == 3
    few = fit_ladder(N[:4], {"ce": TRUTH(N[:4])[:, None] + np.zeros((4, 3))}, n_boot=10)["ce"]
    assert few.law is not None and "rough" in few.kind  # 3 seeds: not a 95% CI


def test_kendall_tau_on_constructed_rankings():
    means = {"small": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0},
             "same": {"a": 1.1, "b": 2.1, "c": 3.1, "d": 4.1},
             "reversed": {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0},
             "one_swap": {"a": 2.0, "b": 1.0, "c": 3.0, "d": 4.0},
             "diverged": {"a": math.nan, "b": 2.0, "c": 3.0, "d": 4.0}}
    assert rank_agreement(means, "small", "same").tau == pytest.approx(1.0)
    assert rank_agreement(means, "small", "reversed").tau == pytest.approx(-1.0)
    swap = rank_agreement(means, "small", "one_swap")
    assert swap.tau == pytest.approx(4 / 6)  # 5 concordant pairs, 1 discordant of 6
    assert swap.p_value == pytest.approx(1 / 3)  # exact, two-sided: 2 x 4 of 24 orders
    assert rank_agreement(means, "small", "same").min_p == pytest.approx(2 / 24)
    assert ranks(means["diverged"]) == {"a": 4.0, "b": 1.0, "c": 2.0, "d": 3.0}
    assert rank_agreement(means, "small", "diverged").tau == pytest.approx(0.0)


def crossing_of(f, g):
    """E_f + A_f N^-a = E_g + A_g N^-a  =>  N = ((A_f - A_g) / (E_g - E_f))^(1/a)."""
    return ((f.A - g.A) / (g.E - f.E)) ** (1 / f.alpha)


def test_crossings_of_constructed_curves():
    f = PowerLaw(1.5, 40.0, 0.35)
    g = PowerLaw(1.6, 25.0, 0.35)  # lower at small N, higher asymptote
    (c,) = crossings(f, g, 1e3, 1e9)
    assert c == pytest.approx(crossing_of(f, g), rel=1e-6)
    assert crossings(f, PowerLaw(1.4, 30.0, 0.35), 1e3, 1e9) == []  # always below


@pytest.mark.parametrize("g, inside", [(PowerLaw(1.6, 25.0, 0.35), True),
                                       (PowerLaw(1.51, 36.4, 0.35), False)])
def test_crossover_interval_and_extrapolation(g, inside):
    f = PowerLaw(1.5, 40.0, 0.35)
    truth = crossing_of(f, g)
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 0.003, (len(N), 8))  # paired: shared by both losses
    fits = fit_ladder(N, {"f": f(N)[:, None] + seed_effect + rng.normal(0, 0.002, (len(N), 8)),
                          "g": g(N)[:, None] + seed_effect + rng.normal(0, 0.002, (len(N), 8))},
                      n_boot=200)
    (c,) = crossovers(fits, N.min(), N.max())
    assert (c.a, c.b) == ("f", "g") and c.better_above == "f"
    assert c.extrapolated is (not inside)
    assert c.low <= truth <= c.high
    # beyond the measured sizes the fits extrapolate: the estimate is looser, its interval too
    assert abs(math.log(c.n / truth)) < math.log(1.5 if inside else 4.0)
    assert c.share > 0.5


def test_report_refuses_the_exponent_below_four_sizes(tmp_path):
    from lossbench.report.document import Document
    from lossbench.report.scale import _fits

    three = fit_ladder(N[:3], {"ce": TRUTH(N[:3])[:, None] + np.zeros((3, 3))}, n_boot=10)
    doc = Document("t", tmp_path)
    doc.section("Scale")
    _fits(doc, three, n_sizes=3, n_seeds=3)
    text = (doc.write() / "report.md").read_text()
    assert "No exponent is reported: 3 sizes were measured" in text and "| ce |" not in text


def _scale_text(tmp_path, draw) -> str:
    from lossbench.report.document import Document

    doc = Document("t", tmp_path)
    doc.section("Scale")
    draw(doc)
    return (doc.write() / "report.md").read_text()


@pytest.mark.parametrize("at_large, verb", [
    ({"a": 1.1, "b": 2.1, "c": 3.1, "d": 4.1}, "predicts"),
    ({"a": 2.0, "b": 1.0, "c": 3.0, "d": 4.0}, "partly predicts"),
    ({"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}, "does not predict"),
])
def test_the_agreement_sentence_says_what_tau_shows(tmp_path, at_large, verb):
    """'predicts' only for the same order: a reversed ranking (τ = −1) must not read as one
    that predicts the other."""
    from lossbench.report.scale import _agreement

    means = {"small": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}, "large": at_large}
    text = _scale_text(tmp_path, lambda doc: _agreement(doc, means, ["small", "large"]))
    assert f"The ranking at small params {verb} the ranking at large: τ = " in text
    tied = {"small": {"a": 1.0, "b": 1.0}, "large": {"a": 1.0, "b": 2.0}}
    text = _scale_text(tmp_path, lambda doc: _agreement(doc, tied, ["small", "large"]))
    assert "cannot be compared" in text and "predict" not in text


def test_no_crossover_sentence_without_two_fitted_curves(tmp_path):
    """Three sizes: no curve is fitted, so 'no two fitted curves cross' would state a
    finding about curves that do not exist."""
    from lossbench.report.scale import _crossovers

    three = fit_ladder(N[:3], {"ce": TRUTH(N[:3])[:, None] + np.zeros((3, 3)),
                               "ls": TRUTH(N[:3])[:, None] + 0.1 + np.zeros((3, 3))}, n_boot=10)
    text = _scale_text(tmp_path, lambda doc: _crossovers(doc, [], three))
    assert "No two fitted curves cross" not in text and "no loss has a fitted curve" in text


def test_far_requests_name_the_truly_closest_shape_and_big_counts_read_as_G():
    _, errors = ladder({"params": [1e40]})
    assert len(errors) == 1 and "closest: 96 layers x 1024 wide" in errors[0], errors
    from lossbench.suite.scale import size_label
    assert [size_label(n) for n in (856, 53_500, 1.55e6, 2.5e9)] == ["856", "53.5k", "1.55M",
                                                                     "2.5G"]


def test_explicit_sizes_bad_shapes_are_one_line(monkeypatch):
    _, errors = ladder({"sizes": [{"n_layer": 2, "n_embd": 60}]})
    assert len(errors) == 1 and "not a multiple of head_size (8): give n_head" in errors[0]
    _, errors = ladder({"sizes": [{"n_layer": 10 ** 7, "n_embd": 64}]})  # would hang counting
    assert len(errors) == 1 and "at most 96 layers" in errors[0]


def test_the_models_own_count_is_checked_against_the_request(monkeypatch):
    """The shape search counts with a polynomial read off six models; the ladder's count is
    the model's own, and it too must be within 10% of the request."""
    import lossbench.suite.scale as L

    real = L._count_polynomial
    monkeypatch.setattr(L, "_count_polynomial",
                        lambda model, vocab: (lambda n_l, c: 0.5 * real(model, vocab)(n_l, c)))
    _, errors = ladder({"params": [3e5]})
    assert len(errors) == 1 and "not 3e+05 within 10%" in errors[0], errors
