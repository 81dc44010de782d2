"""Identical runs: same init, same batches, same dropout masks, same eval tokens; only the loss differs."""

import dataclasses
import math
import time

import pytest
import torch
from helpers import TINY, TINY_DATA, Recorder, kill_at, records_text, same_weights, tiny

from lossbench.core.config import FinetuneConfig, TrainConfig
from lossbench.losses import register_loss, unregister_loss
from lossbench.train.loop import build_eval_set, cached_corpus, lr_at, train_run


def test_train_run_returns_step_and_eval_records():
    result = train_run(tiny())
    assert result.status == "done"
    assert result.steps["step"] == list(range(1, 13))
    assert [e["step"] for e in result.evals] == [0, 4, 8, 12]
    final = result.evals[-1]
    for key in ("val_ce", "val_ppl", "val_bpt", "val_acc", "ece", "val_ce_calibrated",
                "temperature", "mean_abs_log_z", "mean_max_prob", "mean_entropy", "rep", "wrep",
                "uniq", "seq_rep_4", "uniq_seq", "excess_ce", "grad_norm_block0", "grad_cos_ce"):
        assert key in final and math.isfinite(final[key]), key
    assert final["val_ppl"] == pytest.approx(math.exp(final["val_ce"]))
    # CE trained against CE: the probe's cosine is 1 by construction
    assert result.evals[1]["grad_cos_ce"] == pytest.approx(1.0, abs=1e-6)
    assert final["excess_ce"] == pytest.approx(final["val_ce"] - cached_corpus(TINY_DATA).entropy_rate)
    summary = result.summary()
    assert summary["final_val_ce"] == final["val_ce"] and summary["steps"] == 12


def test_gradient_probe_time_counts_as_instrumentation(monkeypatch):
    """The probe's extra CE-gradient pass is booked to eval_time_s, not to the training step.
    A settable clock marks it: each probe moves the clock 1000 s on (no tiny step takes that
    long, however loaded the machine), so no real time is asserted."""
    original, real_clock = torch.autograd.grad, time.perf_counter  # only the probe calls grad
    skipped = [0.0]

    def slow_grad(*args, **kwargs):
        skipped[0] += 1000.0
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", slow_grad)
    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + skipped[0])
    result = train_run(tiny())
    probed = [s for s in result.steps["step"] if s % 4 == 0]  # updates ending at an eval
    assert len(probed) == 3 and result.eval_time_s >= 3000
    assert all(result.steps["wall_s"][s - 1] < 1000 for s in probed)
    assert result.train_time_s == pytest.approx(sum(result.steps["wall_s"]))


def test_runs_with_different_losses_see_identical_weights_batches_and_masks():
    dropout_model = dataclasses.replace(TINY.model, dropout=0.2)
    ce, mse = Recorder(), Recorder()
    a = train_run(tiny(loss="cross_entropy", model=dropout_model), observers=[ce])
    b = train_run(tiny(loss="mse", model=dropout_model), observers=[mse])
    assert all(torch.equal(ce.init[k], mse.init[k]) for k in ce.init)
    assert torch.equal(ce.eval_x, mse.eval_x)
    assert len(ce.batches) == 12 and all(torch.equal(x, y) for (x, _), (y, _) in
                                         zip(ce.batches, mse.batches))
    assert len(ce.rng) == 12 and all(torch.equal(x, y) for x, y in zip(ce.rng, mse.rng))
    assert ce.batches[0][0].shape == (4, 16) and not torch.equal(ce.batches[0][0], ce.batches[1][0])
    # ... and the losses did train differently
    assert a.steps["train_loss"] != b.steps["train_loss"]


def test_observers_see_every_record_and_change_nothing():
    config = tiny(model=dataclasses.replace(TINY.model, dropout=0.1))
    seen = Recorder()
    watched, plain = train_run(config, observers=[seen]), train_run(config)
    assert records_text(watched) == records_text(plain) and same_weights(watched.model, plain.model)
    assert [r["train_loss"] for r in seen.steps] == plain.steps["train_loss"]
    assert [r["step"] for r in seen.steps] == plain.steps["step"]
    assert seen.evals == [e["step"] for e in plain.evals]


def test_eval_tokens_are_fixed_per_corpus():
    corpus = cached_corpus(TINY_DATA)
    e1, e2 = build_eval_set(corpus, 16, TINY.eval), build_eval_set(corpus, 16, TINY.eval)
    assert torch.equal(e1.x, e2.x) and torch.equal(e1.y, e2.y) and torch.equal(e1.prefixes, e2.prefixes)


def test_deterministic_rerun_is_identical():
    a, b = train_run(tiny(seed=3)), train_run(tiny(seed=3))
    assert records_text(a) == records_text(b)
    assert same_weights(a.model, b.model)
    c = train_run(tiny(seed=4))
    assert c.steps["train_loss"] != a.steps["train_loss"]


@pytest.mark.parametrize("loss", ["cross_entropy", "kl"])
def test_kill_and_resume_equals_uninterrupted(tmp_path, loss):
    config = tiny(loss=loss, model=dataclasses.replace(TINY.model, dropout=0.1))
    reference = train_run(config)
    kill_at(config, tmp_path, 10)
    assert (tmp_path / "checkpoint.pt").exists()  # saved at step 8
    resumed = train_run(config, checkpoint_dir=tmp_path)
    assert records_text(resumed) == records_text(reference)
    assert same_weights(resumed.model, reference.model)


def test_non_finite_loss_is_a_diverged_result():
    @register_loss("test_nan_after_update", description="NaN once the weights moved",
                   reference="test")
    def nan_loss(logits, targets, *, ignore_index=-100):
        ce = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets,
                                               reduction="none")
        return ce * torch.where(logits.abs().max() > 0.05, math.nan, 1.0)

    try:
        result = train_run(tiny(loss="test_nan_after_update", train=dataclasses.replace(
            TINY.train, lr=0.05)))
    finally:
        unregister_loss("test_nan_after_update")
    assert result.status == "diverged" and result.diverged_step is not None
    assert len(result.steps["step"]) == result.diverged_step
    assert result.summary()["status"] == "diverged"


@pytest.mark.parametrize("teacher", ["ngram", "oracle", "smoothed"])
def test_distillation_runs_with_each_teacher(teacher):
    result = train_run(tiny(loss="reverse_kl", data=dataclasses.replace(TINY_DATA, teacher=teacher),
                            train=dataclasses.replace(TINY.train, steps=4)))
    assert result.status == "done" and math.isfinite(result.evals[-1]["val_ce"])


def test_sequence_unlikelihood_finetune_phase():
    config = tiny(finetune=FinetuneConfig(steps=6, prefix_len=4, continuation_len=12))
    result = train_run(config)
    assert result.status == "done"
    assert result.steps["step"][-1] == 18
    assert result.evals[-1]["step"] == 18 and result.evals[-2]["step"] == 16
    assert all(lr == config.finetune.lr for lr in result.steps["lr"][12:])


def test_lr_schedule_matches_nanogpt():
    cfg = TrainConfig(steps=2000, lr=1e-3, min_lr=1e-4, warmup_steps=100)
    assert lr_at(0, cfg) == pytest.approx(1e-3 / 101)
    assert lr_at(100, cfg) == pytest.approx(1e-3)
    assert lr_at(1050, cfg) == pytest.approx(5.5e-4)
    assert lr_at(2000, cfg) == pytest.approx(1e-4)


def test_thread_count_is_restored():
    before = torch.get_num_threads()
    train_run(tiny(train=dataclasses.replace(TINY.train, steps=1, threads=1)))
    assert torch.get_num_threads() == before


def test_final_eval_scores_the_whole_val_split():
    result = train_run(tiny())
    assert all("val_ce_full" not in e for e in result.evals[:-1])  # once, at the end
    final = result.evals[-1]
    val = cached_corpus(TINY_DATA).val  # 2,000 tokens: 124 windows of 16
    n = (len(val) - 1) // 16
    x, y = val[:n * 16].view(n, 16), val[1:n * 16 + 1].view(n, 16)
    with torch.no_grad():
        logits = result.model.eval()(x)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
    assert final["val_full_tokens"] == n * 16 > 8 * 16
    assert final["val_ce_full"] == pytest.approx(expected, rel=1e-6)
    assert result.summary()["final_val_ce_full"] == final["val_ce_full"]
    capped = train_run(tiny(eval=dataclasses.replace(TINY.eval, full_val_windows=3)))
    assert capped.evals[-1]["val_full_tokens"] == 3 * 16
