"""One optimizer step of a run: the loss on its batches (or the sequence-level phase's on the
model's own continuations), the CE of the same logits as the shared yardstick, clipping,
and the update. Dropout is seeded from (seed, step) before the first forward."""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from lossbench.data.batches import step_seed
from lossbench.losses import get_loss, mean_over_tokens
from lossbench.losses.contract import output_problem
from lossbench.models.gpt import greedy_generate
from lossbench.train.result import Diverged, RunResult
from lossbench.train.state import RunState


def _loss_of(spec, hparams, logits, y, extras):
    extras = {k: v for k, v in extras.items() if k in spec.extra_inputs}
    per_token = spec.fn(logits, y, **hparams, **extras)  # (B, T)
    if (problem := output_problem(spec.name, per_token, y)) is not None:
        raise ValueError(problem)  # a scalar would broadcast through the mean: refuse it
    return mean_over_tokens(per_token, y)


def training_loss(run: RunState, x, y, extras):
    """The run's own loss on a corpus batch: (loss, logits, targets). A loss that declares
    ``needs_hidden`` gets the last hidden states (B, T, C) of the same forward pass."""
    if run.spec.needs_hidden:
        logits, hidden = run.forward_with_hidden(x)
        extras = {**extras, "hidden_states": hidden}
    else:
        logits = run.forward(x)
    return _loss_of(run.spec, run.cfg.hparams, logits, y, extras), logits, y


def sequence_unlikelihood_loss(run: RunState, x, y, extras):
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


def optimizer_step(run: RunState, step: int, lr: float, *, probe: bool,
                    compute: Callable = training_loss) -> dict[str, float]:
    """One update (with gradient accumulation). Raises Diverged on a non-finite value."""
    cfg = run.cfg.train
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    _seed_dropout(step_seed(run.cfg.seed, step, stream=1), run.device)  # (seed, step) only
    total_loss = total_ce = 0.0
    for micro in range(cfg.grad_accum):
        x, y, extras = run.batch(step, micro)
        run.observer.on_batch(step, micro, x, y)  # nothing in between draws random numbers
        if probe and micro == 0 and compute is training_loss:
            # noise and sharpness on this batch, at the weights before the update (a forked
            # RNG, no .grad, no weight written: the step below is the same without it)
            run.probe.measure_batch(step, lr, x, y, extras,
                                    partial(_loss_of, run.spec, run.cfg.hparams))
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
    if probe:
        run.probe.before_update()
    run.optimizer.step()
    if probe:
        run.probe.after_update()  # ||delta theta|| / ||theta|| of this update
    run.optimizer.zero_grad(set_to_none=True)
    return {"train_loss": total_loss, "train_ce": total_ce, "grad_norm": grad_norm,
            "clipped": bool(grad_norm > clip), "lr": lr}


def book_step_time(result: RunResult, run: RunState, t0: float) -> float:
    """Add the step started at ``t0`` to the clocks; the CE-gradient probe's share is
    instrumentation, not training. Returns the step's training seconds."""
    probe_s = run.probe.pop_seconds()
    elapsed = time.perf_counter() - t0 - probe_s
    result.train_time_s += elapsed
    result.eval_time_s += probe_s
    return elapsed
