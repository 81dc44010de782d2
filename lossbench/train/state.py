"""The state of one run between steps: its model, optimizer, data, teacher and evaluation set,
built from the config alone, and saved to / restored from a checkpoint by one pair of
functions (:func:`save_state`, :func:`restore_state`), so the checkpoint's layout is
written in one place.

Two runs that differ only in the loss build the same state: the initial weights come from
the run seed alone, batches from (seed, step), the evaluation windows from the corpus.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch

from lossbench import models
from lossbench.core.config import DataConfig, RunConfig, TrainConfig
from lossbench.data.batches import eval_starts, get_batch, train_batch_starts
from lossbench.data.corpora import Corpus, load_corpus
from lossbench.data.teachers import build_teacher
from lossbench.data.tokens import read_windows
from lossbench.losses import get_loss
from lossbench.losses.identity import loss_identity
from lossbench.models.gpt import GPTConfig, build_model, mixed_precision
from lossbench.models.teacher import ModelTeacher
from lossbench.train.checkpoint import load_checkpoint, reject_checkpoint, save_checkpoint
from lossbench.train.evaluation import EvalSet
from lossbench.train.gradients import GradientProbe, level_of
from lossbench.train.observers import Observer
from lossbench.train.result import RunResult, record_problems


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


def check_loss_sources(config: RunConfig) -> None:
    """Refuse to train a loss whose code is not the code the run's id was computed for (a
    plugin file edited since the suite was resolved, another version of its package on this
    worker): its result would be filed under the other code's id. Unresolved configs
    (loss_source None) are not checked."""
    for what, name, recorded in (("loss", config.loss, config.loss_source),
                                 ("[finetune] loss", config.finetune.loss,
                                  config.finetune.loss_source)):
        if recorded is not None and (here := loss_identity(get_loss(name))) != recorded:
            raise ValueError(f"{what} {name!r}: its definition here ({here}) is not the one "
                             f"this run was resolved with ({recorded}): the plugin changed "
                             f"since (or differs on this worker); rerun the command")


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


class RunState:
    """The state of one run between steps (so the loop below reads top to bottom)."""

    def __init__(self, config: RunConfig, teacher_cache: Path | None = None):
        self.cfg = config
        self.spec = get_loss(config.loss)
        errors = self.spec.validate_hparams(config.hparams)
        if errors:
            raise ValueError("; ".join(errors))
        check_loss_sources(config)
        self.corpus = cached_corpus(config.data)
        needs_teacher = "teacher_probs" in self.spec.extra_inputs or \
            "teacher_probs" in get_loss(config.finetune.loss).extra_inputs
        self.teacher = None
        if needs_teacher and config.data.teacher == "model":  # before the student: no RNG used
            self.teacher = ModelTeacher(config, self.corpus.vocab_size, config.device,
                                        teacher_cache)
        elif needs_teacher:
            self.teacher = _cached_teacher(config.data)
        m = config.model
        self.device = config.device
        # any arch: initial weights from the seed alone (or init_from's, for every seed)
        self.model = (build_model(GPTConfig.of(m, self.corpus.vocab_size), config.seed)
                      if m.arch == "gpt" and not m.init_from
                      else models.build(m, self.corpus.vocab_size, config.seed)).to(self.device)
        self.optimizer = make_optimizer(self.model, config.train)
        self.eval_set = build_eval_set(self.corpus, m.block_size, config.eval)
        # a memory-mapped token folder stays on the host: batches are gathered there
        self.train_data = self.corpus.train.to(self.device) \
            if self.corpus.train.dtype == torch.long else self.corpus.train
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.probe = GradientProbe(self.model, self.optimizer, seed=config.seed,
                                   level=level_of(config.eval.grad_stats), device=self.device,
                                   beta1=config.train.beta1, hidden=self.spec.needs_hidden)
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
        if isinstance(self.teacher, ModelTeacher):  # (B, T, V), computed from the inputs
            extras["teacher_probs"] = self.teacher.probs(x, index)
        elif self.teacher is not None:
            extras["teacher_probs"] = self.teacher.probs(self.corpus.train, starts,
                                                         self.cfg.model.block_size).to(self.device)
        return x, y, extras

    def forward(self, x):
        with mixed_precision(self.device):
            return self.model(x)  # (B, T, V)

    def forward_with_hidden(self, x):
        """(logits (B, T, V), last hidden states (B, T, C)) of one forward pass: only for a
        loss that declares ``needs_hidden`` (every other loss's step calls ``forward``)."""
        with mixed_precision(self.device):
            return self.model.forward_with_hidden(x)


def save_state(run: RunState, result: RunResult, folder: Path, next_step: int) -> None:
    """Checkpoint ``run`` and ``result`` after ``next_step`` updates (:func:`restore_state`
    reads exactly this)."""
    save_checkpoint(folder, {
        "next_step": next_step, "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(), "tokens": run.tokens,
        "steps": result.steps, "evals": result.evals,
        "train_time_s": result.train_time_s, "eval_time_s": result.eval_time_s,
        "notes": result.notes})


def restore_state(run: RunState, result: RunResult, ckpt_dir: Path) -> int:
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
        if not 0 < state["next_step"] < run.cfg.total_steps:
            raise ValueError(f"next_step {state['next_step']} is outside this run's "
                             f"(0, {run.cfg.total_steps})")
        # the record must be this run's after next_step updates: a step count its curves do
        # not show, or evaluation records of another shape, would end as a `done` run
        if problems := record_problems(run.cfg, result.steps, result.evals, state["next_step"]):
            raise ValueError("; ".join(problems))
    except Exception as exc:  # a checkpoint of another shape, or tampered with
        raise reject_checkpoint(ckpt_dir, f"{type(exc).__name__}: {exc}"[:200]) from None
    return state["next_step"]
