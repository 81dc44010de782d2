"""Train one small GPT with one loss: the unit every comparison is made of.

Two runs that differ only in the loss see the same initial weights (seeded by
the run seed alone), the same batches in the same order (drawn from (seed,
step)), the same dropout masks (the global RNG is re-seeded from (seed, step)
before every forward) and the same evaluation tokens. The loss consumes no
randomness and decides nothing else.

The pieces: :mod:`lossbench.train.state` (what a run holds, and its checkpoint),
:mod:`lossbench.train.step` (one update), :mod:`lossbench.train.evaluation` (the
yardsticks), :mod:`lossbench.train.result` (what a run returns).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from lossbench import models
from lossbench.core.config import RunConfig
from lossbench.core.schema import STEP_FIELDS
from lossbench.data.batches import step_seed
from lossbench.train.checkpoint import RejectedCheckpoint, save_weights
from lossbench.train.evaluation import NonFiniteLogits, evaluate, full_split_ce
from lossbench.models.teacher import ModelTeacher
from lossbench.train.observers import Fanout, Observer, RunStart
from lossbench.train.result import (
    Diverged,
    teacher_record,
    Interrupted,
    RunResult,
    is_eval_step,
    result_problems,
)
from lossbench.train.state import (
    RunState,
    build_eval_set,
    cached_corpus,
    lr_at,
    make_optimizer,
    restore_state,
    save_state,
)
from lossbench.train.step import (
    book_step_time,
    optimizer_step,
    sequence_unlikelihood_loss,
    training_loss,
)

__all__ = ["Diverged", "Interrupted", "RunResult", "RunState", "build_eval_set",
           "cached_corpus", "lr_at", "make_optimizer", "train_run"]


def train_run(config: RunConfig, *, checkpoint_dir: str | Path | None = None,
              observers: Iterable[Observer] = (),
              should_stop: Callable[[], bool] | None = None) -> RunResult:
    """Train one run from ``config``; resume from ``checkpoint_dir`` if it holds a checkpoint.

    Returns per-step records and per-eval metrics. A non-finite loss or gradient, or
    non-finite logits at an evaluation, ends the run with status ``diverged`` (a result,
    not an exception) at that step: ``diverged_step`` = the number of completed updates.
    ``observers`` (lossbench.train.observers) see the run's batches, steps and evaluations as
    they happen. ``should_stop`` is polled after every step; when it returns True the run
    saves a checkpoint and raises :class:`Interrupted`. ``checkpoint_dir`` is created when
    missing, here only: one deleted while the run trains stays deleted (its next write fails).
    """
    if checkpoint_dir:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.train.threads)
    fanout = Fanout(observers)
    try:
        result = _train(config, Path(checkpoint_dir) if checkpoint_dir else None, fanout,
                        should_stop)
    except BaseException:
        with contextlib.suppress(Exception):
            fanout.on_close()  # the run's own error is the one to report
        raise
    finally:
        torch.set_num_threads(threads)
    fanout.on_close()
    return result


class _Loop:
    """The steps of one run, from its first (or resumed) update to its end, each a method:
    start, evaluate, step, checkpoint, finish."""

    def __init__(self, config: RunConfig, ckpt_dir: Path | None, observer: Observer,
                 should_stop: Callable[[], bool] | None):
        self.config, self.ckpt_dir, self.should_stop = config, ckpt_dir, should_stop
        self.total = config.total_steps
        self.run, self.result, self.start = self._start()
        self.run.observer = self.observer = observer

    def _fresh(self) -> tuple[RunState, RunResult]:
        # a top-k teacher's cache lives beside the results folder's runs/ (lossbench.models.teacher)
        cache = self.ckpt_dir.parent.parent / "teacher_cache" \
            if self.ckpt_dir is not None and self.ckpt_dir.parent.name == "runs" else None
        run = RunState(self.config, teacher_cache=cache)
        result = RunResult(self.config, flops_per_token=run.model.flops_per_token(),
                           n_params=sum(p.numel() for p in run.model.parameters()),
                           hparams={**run.spec.defaults(), **self.config.hparams})
        if isinstance(run.teacher, ModelTeacher):  # its forward is part of every step's cost
            result.teacher = teacher_record(run.teacher, run.eval_set)
            result.flops_per_token += result.teacher["teacher_flops_per_token"]
        if models.flops_note(run.model):  # the report's MFU is then an estimate: say so
            result.notes.append(models.flops_note(run.model))
        return run, result

    def _start(self) -> tuple[RunState, RunResult, int]:
        """A fresh run, or the checkpoint's; a checkpoint that is not usable is set aside
        (renamed, kept for inspection) and the run starts over, saying so in its notes."""
        run, result = self._fresh()
        if self.ckpt_dir is None:
            return run, result, 0
        try:
            return run, result, restore_state(run, result, self.ckpt_dir)
        except RejectedCheckpoint as exc:
            print(f"lossbench: warning: {exc}", file=sys.stderr)
            run, result = self._fresh()
            result.notes.append(str(exc))
            return run, result, 0

    def is_eval_step(self, done: int) -> bool:
        return is_eval_step(self.config, done)  # the schedule a stored record is checked by

    def evaluate(self, step: int) -> bool:
        """Evaluate after ``step`` updates; False when the model's logits are not finite."""
        run, result, ev = self.run, self.result, self.config.eval
        t0 = time.perf_counter()
        try:
            metrics = evaluate(run.model, run.eval_set, device=run.device,
                               ece_bins=ev.ece_bins, entropy_rate=run.corpus.entropy_rate,
                               rep_continuation=ev.rep_continuation,
                               decode=run.corpus.tokenizer.decode, samples=ev.samples,
                               rep_context=ev.rep_context, rep_stream=ev.rep_stream)
        except NonFiniteLogits:
            result.eval_time_s += time.perf_counter() - t0
            return False
        metrics.update(run.probe.pop_stats())
        result.notes += [n for n in run.probe.notes if n not in result.notes]
        if step == self.total and ev.full_val_windows:
            metrics["val_ce_full"], metrics["val_full_tokens"] = full_split_ce(
                run.model, run.corpus.val, self.config.model.block_size,
                max_windows=ev.full_val_windows, device=run.device)
        n = len(result.steps["clipped"])
        metrics["clip_rate"] = sum(result.steps["clipped"]) / n if n else 0.0
        result.evals.append({"step": step, **metrics})
        result.eval_time_s += time.perf_counter() - t0
        self.observer.on_eval(step, result.evals[-1])
        return True

    def update(self, step: int) -> dict[str, Any]:
        """Update ``step`` (0-based): a training step, or one of the fine-tuning phase's
        (an MLE update with probability mle_mix, drawn from (seed, step)). Raises Diverged."""
        cfg, ft = self.config.train, self.config.finetune
        # gradient stats of the update that ends at an eval step, reported with that eval
        probe = self.config.eval.grad_stats and self.is_eval_step(step + 1)
        if step < cfg.steps:
            return optimizer_step(self.run, step, lr_at(step, cfg), probe=probe)
        mle = torch.rand((), generator=torch.Generator().manual_seed(
            step_seed(self.config.seed, step, stream=2))).item() < ft.mle_mix
        return optimizer_step(self.run, step, ft.lr, probe=probe,
                              compute=training_loss if mle else sequence_unlikelihood_loss)

    def checkpoint(self, done: int, stop: bool) -> None:
        every = self.config.train.checkpoint_every
        if self.ckpt_dir is not None and done < self.total and (
                stop or (every and done % every == 0)):
            save_state(self.run, self.result, self.ckpt_dir, done)

    def finish(self, status: str, diverged_step: int | None = None) -> RunResult:
        result = self.result
        result.status, result.diverged_step, result.model = status, diverged_step, self.run.model
        if problems := result_problems(self.config, status, diverged_step, result.steps,
                                       result.evals):  # never a `done` that its curves deny
            raise RuntimeError(f"the run's record is inconsistent: {'; '.join(problems)}")
        if self.ckpt_dir is not None and self.config.train.save_weights and status == "done":
            save_weights(self.ckpt_dir, self.run.model.state_dict())  # for init_from
        self.observer.on_end(result)
        return result

    def __call__(self) -> RunResult:
        self.observer.on_start(RunStart(self.config, self.run.model, self.run.eval_set,
                                        self.start, self.total))
        if self.start == 0 and not self.evaluate(0):
            return self.finish("diverged", 0)  # non-finite logits before any update
        for step in range(self.start, self.total):
            t0 = time.perf_counter()
            try:
                record = self.update(step)
            except Diverged:
                book_step_time(self.result, self.run, t0)
                return self.finish("diverged", step)
            record.update(step=step + 1, tokens=self.run.tokens,
                          wall_s=book_step_time(self.result, self.run, t0))
            for k in STEP_FIELDS:
                self.result.steps[k].append(record[k])
            self.observer.on_step(record)
            done = step + 1
            if self.is_eval_step(done) and not self.evaluate(done):
                return self.finish("diverged", done)  # finite updates, NaN/inf logits now
            stop = done < self.total and self.should_stop is not None and self.should_stop()
            self.checkpoint(done, stop)
            if stop:
                raise Interrupted(done)
        return self.finish("done")


def _train(config: RunConfig, ckpt_dir: Path | None, observer: Observer,
           should_stop=None) -> RunResult:
    return _Loop(config, ckpt_dir, observer, should_stop)()
