"""A run's stored record is re-validated where it is read back: a checkpoint whose step count
its curves do not show, or whose evaluation records have another shape, is set aside and the
run retrains (it ended as `done` with 11 of 30 steps; poisoned evaluation records made every
rerun raise). The rule (lossbench.train.result.record_problems / result_problems) is pure, so
the results store can apply it to a finished run's result.json too."""

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from lossbench.core.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from lossbench.losses import load_plugin
from lossbench.core.schema import CHECKPOINT
from lossbench.train.loop import Interrupted, train_run
from lossbench.train.result import record_problems, result_problems

FIXTURES = Path(__file__).parent / "fixtures"

CONFIG = RunConfig(
    data=DataConfig(markov_vocab=8, markov_tokens=6000),
    model=ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16),
    train=TrainConfig(steps=30, batch_size=4, warmup_steps=2, checkpoint_every=5),
    eval=EvalConfig(eval_every=5, val_windows=8, rep_prefixes=2, rep_prefix_len=4,
                    rep_continuation=8, full_val_windows=8))


@pytest.fixture(scope="module")
def finished():
    """A finished run of CONFIG (its steps and evals as a result.json holds them)."""
    return train_run(CONFIG)


def stopped_at(folder, step: int) -> dict:
    """Train CONFIG in ``folder`` until ``step`` updates (a checkpoint there); its state."""
    polls = iter(range(1, CONFIG.total_steps))  # should_stop is polled after every update
    with pytest.raises(Interrupted):
        train_run(CONFIG, checkpoint_dir=folder, should_stop=lambda: next(polls) >= step)
    return torch.load(folder / CHECKPOINT, weights_only=True)


# ---- attacks on a record: each makes it not a run's record after `done` updates ----------

def _inflate(steps, evals):  # the case: next_step says more than the curves show
    return steps, evals, +18  # 11 -> 29 updates: inside (0, 30), so only the curves tell


def _drop_last_step(steps, evals):
    return {k: v[:-1] for k, v in steps.items()}, evals, 0


def _renumber(steps, evals):
    return {**steps, "step": [s + 1 for s in steps["step"]]}, evals, 0


def _missing_field(steps, evals):
    return {k: v for k, v in steps.items() if k != "grad_norm"}, evals, 0


def _string_loss(steps, evals):
    return {**steps, "train_loss": ["0.5"] * len(steps["train_loss"])}, evals, 0


def _poison_value(steps, evals):  # the case: a poisoned evaluation record
    evals = copy.deepcopy(evals)
    evals[-1]["val_ce"] = "poison"
    return steps, evals, 0


def _eval_not_a_record(steps, evals):
    return steps, [*evals[:-1], 7], 0


def _eval_dropped(steps, evals):
    return steps, evals[:1] + evals[2:], 0


def _eval_off_schedule(steps, evals):
    evals = copy.deepcopy(evals)
    evals[1]["step"] += 1
    return steps, evals, 0


def _eval_extra(steps, evals):
    return steps, [*evals, {**evals[-1]}], 0


def _reliability_rows(steps, evals):
    evals = copy.deepcopy(evals)
    evals[-1]["reliability"] = [[0.0, 1.0]]
    return steps, evals, 0


def _sample_not_text(steps, evals):
    evals = copy.deepcopy(evals)
    evals[-1]["samples"] = [{"prefix": 1, "continuation": None}]
    return steps, evals, 0


def _nested_value(steps, evals):
    evals = copy.deepcopy(evals)
    evals[0]["ece"] = {"deep": [1.0]}
    return steps, evals, 0


def _bool_step(steps, evals):
    evals = copy.deepcopy(evals)
    evals[0]["step"] = False
    return steps, evals, 0


ATTACKS = [_inflate, _drop_last_step, _renumber, _missing_field, _string_loss, _poison_value,
           _eval_not_a_record, _eval_dropped, _eval_off_schedule, _eval_extra,
           _reliability_rows, _sample_not_text, _nested_value, _bool_step]


def test_a_run_of_its_own_is_consistent(finished):
    assert finished.status == "done"
    assert result_problems(CONFIG, "done", None, finished.steps, finished.evals) == []
    done = 11
    partial = {k: v[:done] for k, v in finished.steps.items()}
    evals = [e for e in finished.evals if e["step"] <= done]
    assert record_problems(CONFIG, partial, evals, done) == []


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda f: f.__name__.strip("_"))
def test_every_attack_on_a_record_is_named(finished, attack):
    done = 11
    partial = {k: v[:done] for k, v in finished.steps.items()}
    evals = [e for e in finished.evals if e["step"] <= done]
    steps, evals, extra = attack(partial, evals)
    problems = record_problems(CONFIG, steps, evals, done + extra)
    assert problems and all(isinstance(p, str) and "\n" not in p for p in problems)
    # the same attack on the finished record
    steps, evals, extra = attack(finished.steps, finished.evals)
    if extra == 0:
        assert result_problems(CONFIG, "done", None, steps, evals)


def test_a_done_result_with_fewer_steps_than_its_config_is_not_done(finished):
    steps = {k: v[:11] for k, v in finished.steps.items()}
    evals = [e for e in finished.evals if e["step"] <= 11]
    assert "30 updates, but [11] records" in result_problems(CONFIG, "done", None, steps,
                                                             evals)[0]


def test_diverged_results_are_checked_at_their_diverged_step(tmp_path):
    load_plugin(str(FIXTURES / "sweep_plugin.py"))
    config = dataclasses.replace(CONFIG, loss="fixture_nan")
    result = train_run(config)
    assert result.status == "diverged"
    assert result_problems(config, "diverged", result.diverged_step, result.steps,
                           result.evals) == []
    assert result_problems(config, "diverged", result.diverged_step + 3, result.steps,
                           result.evals)
    assert result_problems(config, "diverged", 30, result.steps, result.evals)
    assert result_problems(config, "diverged", "3", result.steps, result.evals)


@pytest.mark.parametrize("attack", [_inflate, _poison_value, _eval_off_schedule],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_tampered_checkpoint_is_set_aside_and_the_run_retrains(tmp_path, attack, finished,
                                                                 capsys):
    state = stopped_at(tmp_path, 11)
    assert state["next_step"] == 11
    state["steps"], state["evals"], extra = attack(state["steps"], state["evals"])
    state["next_step"] += extra  # inflated: "step 30 written at step 11"
    torch.save(state, tmp_path / CHECKPOINT)
    result = train_run(CONFIG, checkpoint_dir=tmp_path)
    assert result.status == "done"
    assert result.steps["step"] == list(range(1, 31))  # all 30, not 11 (+ 1 resumed)
    assert any("did not load safely" in n for n in result.notes)
    assert list(tmp_path.glob(f"{CHECKPOINT}.rejected-*"))
    # retrained from step 0: the same numbers as a run that was never interrupted
    assert result.evals[-1]["val_ce"] == finished.evals[-1]["val_ce"]
    assert "did not load safely" in capsys.readouterr().err


def test_an_untampered_checkpoint_still_resumes(tmp_path, finished):
    stopped_at(tmp_path, 11)
    result = train_run(CONFIG, checkpoint_dir=tmp_path)
    assert not result.notes and not list(tmp_path.glob(f"{CHECKPOINT}.rejected-*"))
    assert result.evals[-1]["val_ce"] == finished.evals[-1]["val_ce"]
    assert math.isfinite(result.evals[-1]["val_ce"])


def test_a_stored_result_is_checked_as_the_store_reads_it(finished):
    """result.json as write_result stores it (JSON: tuples become lists, NaN stays NaN)."""
    import json

    from lossbench.train.result import stored_result_problems

    record = json.loads(json.dumps({"config": CONFIG.to_dict(), "status": "done",
                                    "summary": finished.summary(), "steps": finished.steps,
                                    "evals": finished.evals}))
    assert stored_result_problems(record) == []
    for attack in ATTACKS:
        steps, evals, extra = attack(record["steps"], record["evals"])
        if extra == 0:
            assert stored_result_problems({**record, "steps": steps, "evals": evals}), attack
    assert stored_result_problems({**record, "summary": {**record["summary"], "steps": 30.5}})
    assert stored_result_problems({**record, "config": {"loss": 3, "train": []}})
    config = {**record["config"], "train": {**record["config"]["train"], "steps": 40}}
    assert "40 updates" in stored_result_problems({**record, "config": config})[0]
