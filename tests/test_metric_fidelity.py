"""Every reported evaluation metric equals its published definition, on the tokens it claims.

Each metric of ``lossbench.train.evaluation.evaluate`` is recomputed here independently: with
torchmetrics (perplexity, accuracy, ECE), a direct scipy fit (the temperature), or plain
Python written from the paper (Welleck et al., ICLR 2020: rep/l, wrep/l, uniq, seq-rep-n,
uniq-seq; Guo et al., ICML 2017: ECE's bins), never by calling lossbench's helpers. First
on a trained tiny model, then on fixed logits that hit each edge case: the context
length of rep, cross-fitted calibration, flat scores, near and exact ties, non-finite
logits, ignored targets and ECE's bin edges.
"""

import dataclasses
import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp
from scipy.stats import entropy
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_calibration_error
from torchmetrics.functional.text import perplexity

import lossbench.train.loop as training
from lossbench.core.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from lossbench.data.batches import eval_starts
from lossbench.train.evaluation import (
    EvalSet,
    NonFiniteLogits,
    evaluate,
    expected_calibration_error,
    fit_temperature,
    full_split_ce,
    sequence_repetition,
)
from lossbench.train.loop import build_eval_set, cached_corpus, train_run

DATA = DataConfig(corpus="markov", markov_tokens=20_000, markov_vocab=8)
CONFIG = RunConfig(
    data=DATA, model=ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16),
    train=TrainConfig(steps=30, batch_size=8, warmup_steps=2, lr=3e-3),
    eval=EvalConfig(eval_every=30, val_windows=12, rep_prefixes=4, rep_prefix_len=4,
                    rep_continuation=10, samples=0, grad_stats=False, full_val_windows=0))


# ---- independent references -----------------------------------------------------------

def scipy_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """argmin_T mean CE(z / T): scipy's bounded search over log T, numpy CE."""
    z = logits.astype(np.float64)

    def ce(log_t):
        s = z / math.exp(log_t)
        return float(np.mean(logsumexp(s, axis=1) - s[np.arange(len(targets)), targets]))

    return math.exp(minimize_scalar(ce, bounds=(-6, 6), method="bounded",
                                    options={"xatol": 1e-10}).x)


def numpy_ce(logits: np.ndarray, targets: np.ndarray, t: float = 1.0) -> np.ndarray:
    s = logits.astype(np.float64) / t
    return logsumexp(s, axis=1) - s[np.arange(len(targets)), targets]


def cross_fit_reference(logits, y, keep) -> float:
    """Fit on even windows, score odd ones, and vice versa: mean CE over every kept token."""
    logits, y, keep = logits.numpy(), y.numpy(), keep.numpy()
    even = (np.arange(len(y)) % 2 == 0)[:, None] & keep
    odd = (np.arange(len(y)) % 2 == 1)[:, None] & keep
    total = 0.0
    for fit, score in ((even, odd), (odd, even)):
        t = scipy_temperature(logits[fit], y[fit])
        total += numpy_ce(logits[score], y[score], t).sum()
    return total / keep.sum()


def paper_rep(x, y, logits, l, keep=None, val=None, starts=None):
    """rep/l, wrep/l, uniq from Welleck et al. 2020, one position at a time. The top-1
    prediction is the set K of maximal logits, each weighted 1/|K|. With ``val`` and
    ``starts`` the context is the stream's l tokens ending at x_t, and positions without
    l of them are skipped; else the window's tokens x_{t-l+1..t}."""
    reps, wreps, predicted = [], [], set()
    for n, (xs, ys, rows) in enumerate(zip(x.tolist(), y.tolist(), logits.tolist())):
        for t, (target, row) in enumerate(zip(ys, rows)):
            if keep is not None and not keep[n][t]:
                continue
            tied = [c for c, v in enumerate(row) if v == max(row)]
            predicted.update(tied)
            if val is None:
                context = set(xs[max(0, t - l + 1):t + 1])
            else:
                j = int(starts[n]) + t  # x_t = val[j]
                if j - l + 1 < 0:
                    continue
                context = set(val[j - l + 1:j + 1].tolist())
            reps.append(sum(c in context for c in tied) / len(tied))
            wreps.append(sum(c in context and c != target for c in tied) / len(tied))
    return sum(reps) / len(reps), sum(wreps) / len(wreps), len(predicted)


def paper_seq_rep(continuations, n=4):
    """seq-rep-n averaged over continuations that hold an n-gram; uniq-seq."""
    reps = []
    for row in continuations:
        grams = [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]
        if grams:
            reps.append(1 - len(Counter(grams)) / len(grams))
    return (sum(reps) / len(reps) if reps else math.nan,
            len({tok for row in continuations for tok in row}))


def guo_ece(confidence, correct, bins):
    """ECE with bins I_m = ((m-1)/M, m/M] (Guo et al. 2017, sec. 2); 0 joins the first."""
    n, total = len(confidence), 0.0
    for m in range(1, bins + 1):
        members = [i for i, c in enumerate(confidence)
                   if (m - 1) / bins < c <= m / bins or (m == 1 and c == 0)]
        if members:
            total += abs(sum(correct[i] for i in members) - sum(confidence[i] for i in members))
    return total / n


# ---- a trained tiny model -------------------------------------------------------------

@pytest.fixture(scope="module")
def trained():
    result = train_run(CONFIG)
    assert result.status == "done"
    eval_set = build_eval_set(cached_corpus(DATA), 16, CONFIG.eval)
    model = result.model.eval()
    with torch.no_grad():
        logits = model(eval_set.x)  # (N, T, V)
    return model, eval_set, logits


def test_every_metric_matches_an_independent_implementation_on_a_trained_model(trained):
    model, es, logits = trained
    N, T, V = logits.shape
    flat, y = logits.flatten(0, 1), es.y.flatten()
    probs = flat.double().softmax(-1)
    conf = probs.max(-1).values
    # preconditions of comparing with torchmetrics: no tie, no confidence on a bin edge
    assert ((flat == flat.max(-1, keepdim=True).values).sum(-1) == 1).all()
    assert ((conf * 15 - (conf * 15).round()).abs() > 1e-6).all()

    m = evaluate(model, es, ece_bins=15, entropy_rate=1.25, rep_continuation=10, rep_context=5)
    ce = torch.log(perplexity(logits.double(), es.y)).item()
    assert m["val_ce"] == pytest.approx(ce, rel=1e-9)
    assert m["val_ppl"] == pytest.approx(math.exp(ce), rel=1e-9)
    assert m["val_bpt"] == pytest.approx(ce / math.log(2), rel=1e-9)
    assert m["excess_ce"] == pytest.approx(ce - 1.25, rel=1e-9)
    acc = multiclass_accuracy(flat, y, num_classes=V, average="micro").item()
    assert m["val_acc"] == pytest.approx(acc, abs=1e-6)  # torchmetrics counts in fp32
    ece = multiclass_calibration_error(probs, y, num_classes=V, n_bins=15, norm="l1").item()
    assert m["ece"] == pytest.approx(ece, abs=1e-6)  # torchmetrics bins in fp32

    t = scipy_temperature(flat.numpy(), y.numpy())
    assert m["temperature"] == pytest.approx(t, rel=1e-6) and m["temperature_flat"] == 0.0
    calibrated = cross_fit_reference(logits, es.y, torch.ones_like(es.y, dtype=torch.bool))
    assert m["val_ce_calibrated"] == pytest.approx(calibrated, rel=1e-9)
    # a difference of two values each checked to rel 1e-9: its error is up to the sum of theirs
    assert m["calibration_gain"] == pytest.approx(ce - calibrated, abs=1e-9 * (ce + calibrated))

    rep, wrep, uniq = paper_rep(es.x, es.y, logits, 5)
    assert (m["rep"], m["wrep"], m["uniq"], m["rep_context"]) == pytest.approx(
        (rep, wrep, uniq, 5), abs=1e-12)
    whole = evaluate(model, es, rep_continuation=10)  # default l = 128 > T: the window
    assert whole["rep_context"] == T
    assert whole["rep"] == pytest.approx(paper_rep(es.x, es.y, logits, T)[0], abs=1e-12)

    idx = es.prefixes  # greedy decoding without the model's key/value cache
    with torch.no_grad():
        for _ in range(10):
            idx = torch.cat([idx, model(idx[:, -16:])[:, -1].argmax(-1, keepdim=True)], 1)
    seq_rep, uniq_seq = paper_seq_rep(idx[:, es.prefixes.shape[1]:].tolist())
    assert (m["seq_rep_4"], m["uniq_seq"]) == pytest.approx((seq_rep, uniq_seq), abs=1e-12)

    assert m["unigram_entropy"] == pytest.approx(entropy(np.bincount(y.numpy())), rel=1e-9)
    dist = torch.distributions.Categorical(logits=flat.double())
    assert m["mean_entropy"] == pytest.approx(dist.entropy().mean().item(), rel=1e-9)
    assert m["mean_max_prob"] == pytest.approx(conf.mean().item(), rel=1e-9)
    log_z = logsumexp(flat.double().numpy(), axis=1)
    assert m["mean_abs_log_z"] == pytest.approx(np.abs(log_z).mean(), rel=1e-9)


def test_full_split_ce_matches_torchmetrics(trained):
    model, _, _ = trained
    val = cached_corpus(DATA).val
    n = (len(val) - 1) // 16
    x, y = val[:n * 16].view(n, 16), val[1:n * 16 + 1].view(n, 16)
    with torch.no_grad():
        expected = torch.log(perplexity(model(x).double(), y)).item()
    ce, tokens = full_split_ce(model, val, 16, max_windows=10_000)
    assert tokens == n * 16 and ce == pytest.approx(expected, rel=1e-6)


# ---- fixed logits ---------------------------------------------------------------------

class Table(torch.nn.Module):
    """A bigram "model": the logits after token a are table[a] (V, V), set by the test.
    It decodes greedily like any non-GPT architecture (a block size, no cache)."""

    def __init__(self, table, block_size=64):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32))
        self.block_size = block_size

    def forward(self, idx, cache=None):
        return self.table[idx]


def eval_set(x, y):
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    return EvalSet(x, y, x[:, :2].clone())


def test_rep_counts_only_the_l_most_recent_context_tokens():
    """A window (T = 8) longer than l = 3. The model always predicts 0; token 0
    is only the window's first input, so it is in the context of x_0..x_2 alone."""
    table = torch.full((4, 4), -1.0)
    table[:, 0] = 1.0
    x = [[0, 1, 2, 3, 1, 2, 3, 1]]
    y = [[1, 2, 3, 1, 2, 3, 1, 2]]
    m = evaluate(Table(table), eval_set(x, y), rep_context=3, rep_continuation=4)
    assert m["rep_context"] == 3
    assert m["rep"] == pytest.approx(3 / 8) and m["wrep"] == pytest.approx(3 / 8)
    logits = table[torch.tensor(x)]
    assert (m["rep"], m["wrep"], m["uniq"]) == pytest.approx(
        paper_rep(torch.tensor(x), torch.tensor(y), logits, 3))
    capped = evaluate(Table(table), eval_set(x, y), rep_context=128, rep_continuation=4)
    assert capped["rep_context"] == 8 and capped["rep"] == 1.0  # l = min(l, T): the window


def test_rep_over_the_stream_gives_every_position_l_tokens():
    """With rep_stream, l may exceed the block size; the context of x_t runs
    back into the val tokens before its window, and positions with fewer than l tokens
    before them (the split's first l - 1) are left out."""
    gen = torch.Generator().manual_seed(0)
    val = torch.randint(0, 6, (200,), generator=gen)
    table = torch.randn(6, 6, generator=gen)
    cfg = EvalConfig(val_windows=10, rep_context=20, rep_stream=True)
    es = build_eval_set(SimpleNamespace(val=val), 8, cfg)
    assert es.history.shape == (10, 19)
    m = evaluate(Table(table, 8), es, rep_context=20, rep_stream=True, rep_continuation=4)
    starts = eval_starts(len(val), 8, 10)
    rep, wrep, _ = paper_rep(es.x, es.y, table[es.x], 20, val=val, starts=starts)
    assert m["rep_context"] == 20 and m["rep_stream"] == 1.0
    assert (m["rep"], m["wrep"]) == pytest.approx((rep, wrep), abs=1e-12)
    window = evaluate(Table(table, 8), es, rep_context=20, rep_continuation=4)
    assert window["rep_context"] == 8 and window["rep"] != m["rep"]


def test_rep_context_is_a_checked_eval_setting():
    assert EvalConfig().rep_context == 128 and EvalConfig().rep_stream is False
    with pytest.raises(ValueError, match="rep_context"):
        EvalConfig(rep_context=0)


def test_calibrated_ce_is_cross_fitted_on_val_ce_tokens():
    """The first and second halves of the windows differ (a shift): fitting on one half and
    scoring the other would mix calibration with a token difference."""
    gen = torch.Generator().manual_seed(1)
    table = 3 * torch.randn(5, 5, generator=gen)
    x = torch.randint(0, 5, (8, 12), generator=gen)
    x[4:] = x[4:] % 2  # later windows: another distribution
    y = torch.randint(0, 5, (8, 12), generator=gen)
    m = evaluate(Table(table), eval_set(x, y), rep_continuation=4)
    keep = torch.ones_like(y, dtype=torch.bool)
    calibrated = cross_fit_reference(table[x], y, keep)
    assert m["val_ce_calibrated"] == pytest.approx(calibrated, rel=1e-9)
    assert m["calibration_gain"] == pytest.approx(m["val_ce"] - calibrated, abs=1e-8)
    assert "val_ce_uncalibrated_half" not in m


def test_flat_scores_fit_no_temperature():
    """Constant scores make CE(T) flat: a search would stop anywhere (at the bound e^6)."""
    m = evaluate(Table(torch.zeros(4, 4)), eval_set([[0, 1, 2, 3]] * 2, [[1, 2, 3, 0]] * 2),
                 rep_continuation=4)
    assert math.isnan(m["temperature"]) and m["temperature_flat"] == 1.0
    assert m["val_ce"] == pytest.approx(math.log(4))
    assert m["val_ce_calibrated"] == m["val_ce"] and m["calibration_gain"] == 0.0
    assert math.isnan(fit_temperature(torch.full((5, 3), 7.0), torch.tensor([0, 1, 2, 0, 1])))


def test_accuracy_is_the_argmax_of_the_logits_and_a_tie_of_k_counts_1_over_k():
    """Logits 0.1 and the next float32 round to the same probability, so the
    argmax of the probabilities picked class 0; and an exact tie of 2 is half correct,
    for accuracy, ECE and rep alike."""
    a = np.float32(0.1)
    b = float(np.nextafter(a, np.float32(1)))
    table = torch.tensor([[float(a), b, -5.0],  # after token 0: class 1 wins by one ulp
                          [2.0, 2.0, -5.0],  # after token 1: a tie of 0 and 1
                          [-5.0, -5.0, 3.0]])
    x, y = [[0, 1], [1, 2]], [[1, 0], [1, 2]]
    m = evaluate(Table(table), eval_set(x, y), rep_continuation=4)
    assert m["val_acc"] == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    conf = table.double().softmax(-1).max(-1).values[torch.tensor(x).flatten()]
    assert m["ece"] == pytest.approx(guo_ece(conf.tolist(), [1, 0.5, 0.5, 1], 15), abs=1e-12)
    # the context is the window so far: at x = [1], half the tie {0, 1} repeats a token
    assert (m["rep"], m["wrep"], m["uniq"]) == pytest.approx(
        paper_rep(torch.tensor(x), torch.tensor(y), table[torch.tensor(x)], 2))
    assert (m["rep"], m["wrep"], m["uniq"]) == pytest.approx(((0 + 1 + .5 + 1) / 4,
                                                              (0 + .5 + 0 + 0) / 4, 3))


def test_non_finite_logits_are_detected_by_evaluate():
    table = torch.zeros(3, 3)
    table[1, 2] = math.nan
    with pytest.raises(NonFiniteLogits):
        evaluate(Table(table), eval_set([[0, 1]], [[1, 2]]), rep_continuation=4)


def test_non_finite_logits_at_an_eval_step_end_the_run_diverged_there(monkeypatch):
    """Finite updates, then weights that give NaN logits at the step-8 eval:
    the run is ``diverged`` at step 8, not ``failed`` by a metric raising on NaN."""
    original = training.optimizer_step

    def poisoned(run, step, lr, **kwargs):
        record = original(run, step, lr, **kwargs)
        if step == 7:  # the update that ends at the step-8 evaluation
            with torch.no_grad():
                for p in run.model.parameters():
                    p.fill_(math.inf)
        return record

    monkeypatch.setattr(training, "optimizer_step", poisoned)
    config = dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, steps=12),
                                 eval=dataclasses.replace(CONFIG.eval, eval_every=4))
    result = train_run(config)
    assert result.status == "diverged" and result.diverged_step == 8
    assert len(result.steps["step"]) == 8 and [e["step"] for e in result.evals] == [0, 4]
    assert result.summary()["status"] == "diverged"


def test_ignored_targets_count_in_no_metric():
    """Targets equal to ignore_index are left out of every metric, the
    temperature fit included (gathering at -100 would raise)."""
    gen = torch.Generator().manual_seed(2)
    table = 2 * torch.randn(5, 5, generator=gen)
    x = torch.randint(0, 5, (6, 10), generator=gen)
    y = torch.randint(0, 5, (6, 10), generator=gen)
    y[:, ::3] = -100
    y[2, 4] = -100
    keep = y != -100
    m = evaluate(Table(table), eval_set(x, y), rep_continuation=4)
    logits = table[x]
    flat, kept_y = logits[keep], y[keep]
    assert m["val_ce"] == pytest.approx(
        math.log(perplexity(logits.double(), y, ignore_index=-100).item()), rel=1e-9)
    assert m["val_acc"] == pytest.approx(multiclass_accuracy(
        logits.flatten(0, 1), y.flatten(), num_classes=5, average="micro",
        ignore_index=-100).item(), abs=1e-6)  # torchmetrics counts in fp32
    assert m["ece"] == pytest.approx(multiclass_calibration_error(
        flat.double().softmax(-1), kept_y, num_classes=5, n_bins=15).item(), abs=1e-6)
    t = scipy_temperature(flat.numpy(), kept_y.numpy())
    assert m["temperature"] == pytest.approx(t, rel=1e-6)
    assert fit_temperature(logits.flatten(0, 1), y.flatten()) == pytest.approx(t, rel=1e-6)
    assert m["val_ce_calibrated"] == pytest.approx(cross_fit_reference(logits, y, keep), rel=1e-9)
    assert (m["rep"], m["wrep"], m["uniq"]) == pytest.approx(
        paper_rep(x, y, logits, 10, keep=keep.tolist()), abs=1e-12)
    assert m["unigram_entropy"] == pytest.approx(entropy(np.bincount(kept_y.numpy())), rel=1e-9)


def test_ece_bins_are_closed_on_the_right_as_published():
    """Guo et al.'s bins are ((m-1)/M, m/M]: a confidence of 1.0 joins the last
    bin (torchmetrics gives it a bin of its own) and one on an edge the bin below."""
    conf = [0.25, 0.5, 0.5, 0.75, 1.0, 1.0, 0.6, 0.3]
    correct = [1, 0, 0, 1, 1, 0, 1, 1]
    ece, table = expected_calibration_error(torch.tensor(conf, dtype=torch.float64),
                                            torch.tensor(correct), bins=4)
    assert [row[2] for row in table] == [1, 3, 2, 2]
    assert ece == pytest.approx(guo_ece(conf, correct, 4), abs=1e-12)
    # off the edges the binning is torchmetrics': compare on random confidences
    gen = torch.Generator().manual_seed(3)
    probs = (3 * torch.randn(500, 6, generator=gen)).double().softmax(-1)
    target = torch.randint(0, 6, (500,), generator=gen)
    ours, _ = expected_calibration_error(probs.max(-1).values, probs.argmax(-1) == target, 15)
    theirs = multiclass_calibration_error(probs, target, num_classes=6, n_bins=15).item()
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_unigram_entropy_is_the_ce_of_the_best_constant_predictor():
    y = [[0, 0, 1, 2], [0, 1, 1, 3]]
    m = evaluate(Table(torch.randn(4, 4)), eval_set([[0, 1, 2, 3]] * 2, y), rep_continuation=4)
    assert m["unigram_entropy"] == pytest.approx(entropy([3, 3, 1, 1]), rel=1e-12)
    freq = torch.tensor([3, 3, 1, 1]) / 8.0  # a constant model of these frequencies
    const = evaluate(Table(freq.log().expand(4, 4)), eval_set([[0, 1, 2, 3]] * 2, y),
                     rep_continuation=4)
    assert const["val_ce"] == pytest.approx(m["unigram_entropy"], rel=1e-6)


def test_sequence_repetition_matches_the_paper():
    conts = torch.tensor([[1, 2, 3, 4, 1, 2, 3, 4, 1], [5] * 9, list(range(9))])
    m = sequence_repetition(conts, 4)
    assert (m["seq_rep_4"], m["uniq_seq"]) == pytest.approx(paper_seq_rep(conts.tolist()))
    assert m["seq_rep_4"] == pytest.approx((1 - 4 / 6 + 1 - 1 / 6 + 0) / 3)
    short = sequence_repetition(torch.tensor([[1, 2, 3], [4, 5, 6]]), 4)  # shorter than n
    assert math.isnan(short["seq_rep_4"]) and short["uniq_seq"] == 6
