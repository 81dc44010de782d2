"""Train one small GPT with one loss: the unit every comparison is made of.

Two runs that differ only in the loss see the same initial weights (seeded by
the run seed alone), the same batches in the same order (drawn from (seed,
step)), the same dropout masks (the global RNG is re-seeded from (seed, step)
before every forward) and the same evaluation tokens. The loss consumes no
randomness and decides nothing else.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from lossbench.train.checkpoint import (RejectedCheckpoint, load_checkpoint, reject_checkpoint,
                                  save_checkpoint, save_weights)
from lossbench.core.config import RunConfig, TrainConfig
from lossbench.data.batches import eval_starts, get_batch, step_seed, train_batch_starts
from lossbench.data.corpora import Corpus, DataConfig, load_corpus
from lossbench.data.teachers import build_teacher
from lossbench.data.tokens import read_windows
from lossbench.train.evaluation import EvalSet, NonFiniteLogits, evaluate, full_split_ce
from lossbench.train.gradients import GradientProbe
from lossbench.losses import get_loss, mean_over_tokens
from lossbench import models
from lossbench.models.gpt import build_model, greedy_generate, mixed_precision
from lossbench.train.observers import Fanout, Observer, RunStart
from lossbench.core.schema import STEP_FIELDS



class Diverged(Exception):
    """A non-finite loss or gradient: the run stops, and that is a result."""


class Interrupted(Exception):
    """``should_stop`` asked the run to stop: it saved a checkpoint (when it has a checkpoint
    folder) and resumes from there next time. Not a result."""

    def __init__(self, step: int):
        super().__init__(f"stopped after step {step}")
        self.step = step


@dataclass
class RunResult:
    config: RunConfig
    status: str = "running"  # "done" | "diverged"
    diverged_step: int | None = None
    steps: dict[str, list] = field(default_factory=lambda: {k: [] for k in STEP_FIELDS})
    evals: list[dict[str, Any]] = field(default_factory=list)
    train_time_s: float = 0.0  # optimizer steps only
    eval_time_s: float = 0.0  # evaluations and gradient probes
    flops_per_token: int = 0
    model: torch.nn.Module | None = field(default=None, repr=False)  # trained (not serialized)
    hparams: dict[str, Any] = field(default_factory=dict)  # effective: defaults + overrides
    notes: list[str] = field(default_factory=list)  # e.g. a checkpoint that was refused

    def summary(self) -> dict[str, Any]:
        tokens = self.steps["tokens"][-1] if self.steps["tokens"] else 0
        last_eval = {k: v for k, v in (self.evals[-1] if self.evals else {}).items()
                     if isinstance(v, (int, float))}
        n = len(self.steps["step"])
        return {
            "run_id": self.config.run_id(), "loss": self.config.loss, "seed": self.config.seed,
            "status": self.status, "diverged_step": self.diverged_step, "steps": n,
            "final_train_loss": self.steps["train_loss"][-1] if n else math.nan,
            "final_train_ce": self.steps["train_ce"][-1] if n else math.nan,
            "wall_s": self.train_time_s + self.eval_time_s, "train_s": self.train_time_s,
            "eval_s": self.eval_time_s, "tokens": tokens,
            "tokens_per_s": tokens / self.train_time_s if self.train_time_s else math.nan,
            "flops_per_token": self.flops_per_token,
            "clip_rate": sum(self.steps["clipped"]) / n if n else math.nan,
            "notes": "; ".join(self.notes),
            **{f"hp_{k}": v for k, v in self.hparams.items()},
            **{f"final_{k}": v for k, v in last_eval.items() if k != "step"},
        }


def lr_at(step: int, cfg: TrainConfig) -> float:
    """nanoGPT's schedule: linear warmup, then cosine decay to min_lr, then flat."""
    decay = cfg.decay_steps or cfg.steps
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if step > decay:
        return cfg.min_lr
    ratio = (step - cfg.warmup_steps) / max(1, decay - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (nanoGPT): not on biases or norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=True)


@lru_cache(maxsize=4)
def cached_corpus(data: DataConfig) -> Corpus:
    """A corpus is a pure function of its config: load it once per process."""
    return load_corpus(data)


@lru_cache(maxsize=4)
def _cached_teacher(data: DataConfig):
    return build_teacher(data, cached_corpus(data))


def build_eval_set(corpus: Corpus, block_size: int, cfg) -> EvalSet:
    """Fixed val windows and fixed prompts: no seed, identical for every run of the corpus.
    With ``rep_stream``, also the rep_context - 1 val tokens before each window (-1 before
    the split's start), so rep/wrep can see a context longer than the window."""
    starts = eval_starts(len(corpus.val), block_size, cfg.val_windows)
    x, y = get_batch(corpus.val, starts, block_size)
    n_prefix = min(cfg.rep_prefixes, x.shape[0])
    history = None
    if cfg.rep_stream:
        at = starts[:, None] - (cfg.rep_context - 1) + torch.arange(cfg.rep_context - 1)  # (N, H)
        history = torch.where(at >= 0, corpus.val[at.clamp(min=0)].long(), -1)
    return EvalSet(x, y, x[:n_prefix, :min(cfg.rep_prefix_len, block_size)].clone(), history)


class _Run:
    """The state of one run between steps (so the loop below reads top to bottom)."""

    def __init__(self, config: RunConfig):
        self.cfg = config
        self.spec = get_loss(config.loss)
        errors = self.spec.validate_hparams(config.hparams)
        if errors:
            raise ValueError("; ".join(errors))
        self.corpus = cached_corpus(config.data)
        needs_teacher = "teacher_probs" in self.spec.extra_inputs or \
            "teacher_probs" in get_loss(config.finetune.loss).extra_inputs
        self.teacher = _cached_teacher(config.data) if needs_teacher else None
        m = config.model
        self.device = config.device
        # any arch: initial weights from the seed alone (or init_from's, for every seed)
        self.model = (build_model(m.to_gpt(self.corpus.vocab_size), config.seed)
                      if m.arch == "gpt" and not m.init_from
                      else models.build(m, self.corpus.vocab_size, config.seed)).to(self.device)
        self.optimizer = make_optimizer(self.model, config.train)
        self.eval_set = build_eval_set(self.corpus, m.block_size, config.eval)
        # a memory-mapped token folder stays on the host: batches are gathered there
        self.train_data = self.corpus.train.to(self.device) \
            if self.corpus.train.dtype == torch.long else self.corpus.train
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.probe = GradientProbe(self.model)
        self.tokens = 0
        self.observer: Observer = Observer()  # train_run sets the caller's observers

    def batch(self, step: int, micro: int):
        t = self.cfg.train
        index = step * t.grad_accum + micro  # batch order is a function of (seed, index) only
        starts = train_batch_starts(len(self.corpus.train), self.cfg.model.block_size,
                                    t.batch_size, self.cfg.seed, index)
        if self.corpus.train_file is not None:  # a token file: positioned reads, no map
            x, y = read_windows(*self.corpus.train_file, starts, self.cfg.model.block_size)
        else:
            x, y = get_batch(self.train_data, starts, self.cfg.model.block_size)
        x, y = x.to(self.device), y.to(self.device)
        extras = {}
        if self.teacher is not None:
            extras["teacher_probs"] = self.teacher.probs(self.corpus.train, starts,
                                                         self.cfg.model.block_size).to(self.device)
        return x, y, extras

    def forward(self, x):
        with mixed_precision(self.device):
            return self.model(x)  # (B, T, V)


def _loss_of(spec, hparams, logits, y, extras):
    extras = {k: v for k, v in extras.items() if k in spec.extra_inputs}
    return mean_over_tokens(spec.fn(logits, y, **hparams, **extras), y)


def _training_loss(run: "_Run", x, y, extras):
    """The run's own loss on a corpus batch: (loss, logits, targets)."""
    logits = run.forward(x)
    return _loss_of(run.spec, run.cfg.hparams, logits, y, extras), logits, y


def _sequence_unlikelihood_loss(run: "_Run", x, y, extras):
    """Welleck's sequence-level phase: decode greedily from a prefix of the batch,
    then penalize the repeated n-grams of the model's own continuation."""
    ft = run.cfg.finetune
    prefix = x[:, :ft.prefix_len]
    continuation = greedy_generate(run.model, prefix, ft.continuation_len)  # no RNG, eval mode
    seq = torch.cat([prefix, continuation], dim=1)[:, -(run.cfg.model.block_size + 1):]
    inputs, targets = seq[:, :-1], seq[:, 1:].clone()
    targets[:, :prefix.shape[1] - 1] = -100  # only the continuation is judged
    logits = run.forward(inputs)
    return _loss_of(get_loss(ft.loss), dict(ft.hparams), logits, targets, {}), logits, targets


def _seed_dropout(seed: int, device: str) -> None:
    """Seed the generator dropout draws from on ``device``. Not ``torch.manual_seed``: on a
    machine with CUDA uninitialized, it also queues a lazy CUDA seeding with a formatted
    stack trace on every step, a cost measurable against a small char-level step."""
    torch.default_generator.manual_seed(seed)
    if device.startswith("cuda"):
        with torch.cuda.device(torch.device(device)):
            torch.cuda.manual_seed(seed)
    elif device == "mps":
        torch.mps.manual_seed(seed)


def _optimizer_step(run: "_Run", step: int, lr: float, *, probe: bool,
                    compute: Callable = _training_loss) -> dict[str, float]:
    """One update (with gradient accumulation). Raises Diverged on a non-finite value."""
    cfg = run.cfg.train
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    _seed_dropout(step_seed(run.cfg.seed, step, stream=1), run.device)  # (seed, step) only
    total_loss = total_ce = 0.0
    for micro in range(cfg.grad_accum):
        x, y, extras = run.batch(step, micro)
        run.observer.on_batch(step, micro, x, y)  # nothing in between draws random numbers
        loss, logits, y = compute(run, x, y, extras)
        # the shared yardstick: CE of the same logits (no extra forward, no RNG); it needs a
        # graph only when the probe differentiates it
        with torch.set_grad_enabled(probe):
            ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)
        if probe:
            run.probe.add_reference(ce / cfg.grad_accum)  # the CE gradient of the same batch
        (loss / cfg.grad_accum).backward()
        total_loss += loss.item() / cfg.grad_accum
        total_ce += ce.item() / cfg.grad_accum
        run.tokens += y.numel()
    if probe:
        run.probe.measure()  # before clipping: the loss's own gradient
    clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, clip).item()
    if not (math.isfinite(total_loss) and math.isfinite(grad_norm)):
        run.optimizer.zero_grad(set_to_none=True)
        raise Diverged(f"non-finite {'loss' if not math.isfinite(total_loss) else 'gradient'}")
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"train_loss": total_loss, "train_ce": total_ce, "grad_norm": grad_norm,
            "clipped": bool(grad_norm > clip), "lr": lr}


def _book_step_time(result: RunResult, run: _Run, t0: float) -> float:
    """Add the step started at ``t0`` to the clocks; the CE-gradient probe's share is
    instrumentation, not training. Returns the step's training seconds."""
    probe_s = run.probe.pop_seconds()
    elapsed = time.perf_counter() - t0 - probe_s
    result.train_time_s += elapsed
    result.eval_time_s += probe_s
    return elapsed


def train_run(config: RunConfig, *, checkpoint_dir: str | Path | None = None,
              observers: Iterable[Observer] = (),
              should_stop: Callable[[], bool] | None = None) -> RunResult:
    """Train one run from ``config``; resume from ``checkpoint_dir`` if it holds a checkpoint.

    Returns per-step records and per-eval metrics. A non-finite loss or gradient, or
    non-finite logits at an evaluation, ends the run with status ``diverged`` (a result,
    not an exception) at that step: ``diverged_step`` = the number of completed updates.
    ``observers`` (lossbench.train.observers) see the run's batches, steps and evaluations as
    they happen. ``should_stop`` is polled after every step; when it returns True the run
    saves a checkpoint and raises :class:`Interrupted`.
    """
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


def _resume(run: _Run, result: RunResult, ckpt_dir: Path) -> int:
    """Load the folder's checkpoint into ``run`` and ``result``; returns the next step.
    Raises RejectedCheckpoint (the file renamed aside) when it is not a usable one."""
    state = load_checkpoint(ckpt_dir)
    if state is None:
        return 0
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.tokens = int(state["tokens"])
        result.steps, result.evals = state["steps"], state["evals"]
        result.train_time_s = float(state["train_time_s"])
        result.eval_time_s = float(state["eval_time_s"])
        result.notes = [str(n) for n in state.get("notes", [])]
        if set(result.steps) != set(STEP_FIELDS) or not isinstance(result.evals, list) or not \
                0 < state["next_step"] < run.cfg.train.steps + run.cfg.finetune.steps:
            raise ValueError("inconsistent with this run's config")
    except Exception as exc:  # a checkpoint of another shape, or tampered with
        raise reject_checkpoint(ckpt_dir, f"{type(exc).__name__}: {exc}"[:200]) from None
    return state["next_step"]


def _train(config: RunConfig, ckpt_dir: Path | None, observer: Observer,
           should_stop=None) -> RunResult:
    def fresh() -> tuple[_Run, RunResult]:
        run = _Run(config)
        result = RunResult(config, flops_per_token=run.model.flops_per_token(),
                           hparams={**run.spec.defaults(), **config.hparams})
        if models.flops_note(run.model):  # the report's MFU is then an estimate: say so
            result.notes.append(models.flops_note(run.model))
        return run, result

    run, result = fresh()
    start = 0
    if ckpt_dir is not None:
        try:
            start = _resume(run, result, ckpt_dir)
        except RejectedCheckpoint as exc:  # start over; the file is kept for inspection
            print(f"lossbench: warning: {exc}", file=sys.stderr)
            run, result = fresh()
            result.notes.append(str(exc))
    cfg, ft = config.train, config.finetune
    total = cfg.steps + ft.steps
    run.observer = observer
    observer.on_start(RunStart(config, run.model, run.eval_set, start, total))
    eval_every = max(1, config.eval.eval_every)

    def do_eval(step: int) -> bool:
        """Evaluate after ``step`` updates; False when the model's logits are not finite."""
        t0 = time.perf_counter()
        try:
            metrics = evaluate(run.model, run.eval_set, device=run.device,
                               ece_bins=config.eval.ece_bins, entropy_rate=run.corpus.entropy_rate,
                               rep_continuation=config.eval.rep_continuation,
                               decode=run.corpus.tokenizer.decode, samples=config.eval.samples,
                               rep_context=config.eval.rep_context,
                               rep_stream=config.eval.rep_stream)
        except NonFiniteLogits:
            result.eval_time_s += time.perf_counter() - t0
            return False
        metrics.update(run.probe.pop_stats())
        if step == total and config.eval.full_val_windows:
            metrics["val_ce_full"], metrics["val_full_tokens"] = full_split_ce(
                run.model, run.corpus.val, config.model.block_size,
                max_windows=config.eval.full_val_windows, device=run.device)
        n = len(result.steps["clipped"])
        metrics["clip_rate"] = sum(result.steps["clipped"]) / n if n else 0.0
        result.evals.append({"step": step, **metrics})
        result.eval_time_s += time.perf_counter() - t0
        observer.on_eval(step, result.evals[-1])
        return True

    def finish(status: str, diverged_step: int | None = None) -> RunResult:
        result.status, result.diverged_step, result.model = status, diverged_step, run.model
        if ckpt_dir is not None and cfg.save_weights and status == "done":  # for init_from
            save_weights(ckpt_dir, run.model.state_dict())
        observer.on_end(result)
        return result

    def is_eval_step(done: int) -> bool:
        return done % eval_every == 0 or done == cfg.steps or done == total

    if start == 0 and not do_eval(0):
        return finish("diverged", 0)  # non-finite logits before any update
    for step in range(start, total):
        in_finetune = step >= cfg.steps
        # gradient stats of the update that ends at an eval step, reported with that eval
        probe = config.eval.grad_stats and is_eval_step(step + 1)
        t0 = time.perf_counter()
        try:
            if in_finetune:
                mle = torch.rand((), generator=torch.Generator().manual_seed(
                    step_seed(config.seed, step, stream=2))).item() < ft.mle_mix
                rec = _optimizer_step(run, step, ft.lr, probe=probe,
                                      compute=_training_loss if mle else _sequence_unlikelihood_loss)
            else:
                rec = _optimizer_step(run, step, lr_at(step, cfg), probe=probe)
        except Diverged:
            _book_step_time(result, run, t0)
            return finish("diverged", step)
        elapsed = _book_step_time(result, run, t0)
        rec.update(step=step + 1, tokens=run.tokens, wall_s=elapsed)
        for k in STEP_FIELDS:
            result.steps[k].append(rec[k])
        observer.on_step(rec)
        done = step + 1
        if is_eval_step(done) and not do_eval(done):
            return finish("diverged", done)  # finite updates, but the weights now give NaN/inf logits
        stop = done < total and should_stop is not None and should_stop()
        if ckpt_dir is not None and done < total and (
                stop or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)):
            save_checkpoint(ckpt_dir, {
                "next_step": done, "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(), "tokens": run.tokens,
                "steps": result.steps, "evals": result.evals,
                "train_time_s": result.train_time_s, "eval_time_s": result.eval_time_s,
                "notes": result.notes})
        if stop:
            raise Interrupted(done)
    return finish("done")
