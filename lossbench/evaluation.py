"""Evaluation on fixed validation tokens, independent of the training loss.

Every run, whatever its loss, is measured with the same yardsticks on the same
tokens: cross-entropy (nats/token), perplexity, bits per token, accuracy,
calibration (ECE and a temperature-calibrated CE, so margin and square losses,
whose logits are not log-probabilities, are compared fairly), logit statistics
and repetition (Welleck et al., ICLR 2020).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from lossbench.model import greedy_generate, mixed_precision


@dataclass(frozen=True)
class EvalSet:
    """The fixed evaluation tokens: the same for every run of a corpus."""

    x: torch.Tensor  # (N, T) inputs
    y: torch.Tensor  # (N, T) next tokens
    prefixes: torch.Tensor  # (P, L) prompts for greedy continuations


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15):
    """ECE with equal-width confidence bins (Guo et al., ICML 2017).

    Returns (ece, table) where table rows are (bin_lower, bin_upper, count,
    mean confidence, accuracy) for the reliability diagram; empty bins have NaNs.
    """
    confidence, correct = confidence.double().flatten(), correct.double().flatten()
    idx = torch.clamp((confidence * bins).long(), max=bins - 1)  # (n,)
    count = torch.bincount(idx, minlength=bins).double()
    conf_sum = torch.bincount(idx, weights=confidence, minlength=bins)
    acc_sum = torch.bincount(idx, weights=correct, minlength=bins)
    ece = ((conf_sum - acc_sum).abs().sum() / confidence.numel()).item()
    table = [(b / bins, (b + 1) / bins, int(count[b]),
              (conf_sum[b] / count[b]).item() if count[b] else math.nan,
              (acc_sum[b] / count[b]).item() if count[b] else math.nan) for b in range(bins)]
    return ece, table


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature minimizing CE of logits / T on these tokens (1-D bounded search
    over log T with scipy); logits (n, V), targets (n,)."""
    logits = logits.double()

    def ce(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), targets).item()

    return math.exp(minimize_scalar(ce, bounds=(-6.0, 6.0), method="bounded",
                                    options={"xatol": 1e-5}).x)


def next_token_repetition(x: torch.Tensor, y: torch.Tensor, pred: torch.Tensor) -> dict[str, float]:
    """Welleck's next-token metrics over the val windows (context = the window so far).

    rep: fraction of top-1 predictions that occur in the previous tokens;
    wrep: fraction that do and are wrong; uniq: number of distinct predictions.
    """
    N, T = x.shape
    V = int(max(x.max(), pred.max())) + 1
    pos = torch.arange(T).expand(N, T)
    first = torch.full((N, V), T, dtype=torch.long).scatter_reduce(1, x, pos, reduce="amin")
    in_context = first.gather(1, pred) <= pos  # (N, T): predicted token seen at <= t
    return {"rep": in_context.double().mean().item(),
            "wrep": (in_context & (pred != y)).double().mean().item(),
            "uniq": float(pred.unique().numel())}


def sequence_repetition(continuations: torch.Tensor, n: int = 4) -> dict[str, float]:
    """seq-rep-n: mean over continuations of 1 - unique n-grams / n-grams; uniq-seq:
    distinct tokens over all continuations."""
    reps = []
    for row in continuations.tolist():
        grams = [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]
        if grams:
            reps.append(1.0 - len(set(grams)) / len(grams))
    return {f"seq_rep_{n}": sum(reps) / len(reps) if reps else math.nan,
            "uniq_seq": float(continuations.unique().numel())}


@torch.no_grad()
def full_split_ce(model, val: torch.Tensor, block_size: int, *, max_windows: int,
                  device: str = "cpu", chunk: int = 64) -> tuple[float, int]:
    """Val CE over the split's consecutive non-overlapping windows (the whole split when it
    has at most ``max_windows`` of them): the number to compare with other codebases.

    The fixed ``val_windows`` sample that every evaluation uses is small, so it is cheap
    to track over training but sits a little off the whole-split value (on
    tinyshakespeare, 256 windows read 0.012 high for every model we measured); this
    pass, run once at the end, removes that sampling error. Returns (CE, tokens).
    """
    n = min((len(val) - 1) // block_size, max_windows)
    if n < 1:
        return math.nan, 0
    x = val[:n * block_size].view(n, block_size)  # (n, T)
    y = val[1:n * block_size + 1].view(n, block_size)  # (n, T)
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for i in range(0, n, chunk):
            with mixed_precision(device):
                logits = model(x[i:i + chunk].to(device)).float()  # (b, T, V)
            total += F.cross_entropy(logits.flatten(0, 1), y[i:i + chunk].to(device).flatten(),
                                     reduction="sum").item()
    finally:
        model.train(was_training)
    return total / (n * block_size), n * block_size


@torch.no_grad()
def evaluate(model, eval_set: EvalSet, *, device: str = "cpu", ece_bins: int = 15,
             entropy_rate: float | None = None, rep_continuation: int = 48,
             decode=None, samples: int = 3, chunk: int = 32) -> dict:
    """All evaluation metrics of ``model`` on ``eval_set``.

    Returns a flat dict of floats plus ``reliability`` (table) and ``samples``
    (decoded prefix/continuation pairs).
    """
    was_training = model.training
    model.eval()
    try:
        parts = []
        for i in range(0, eval_set.x.shape[0], chunk):
            xb = eval_set.x[i:i + chunk].to(device)
            with mixed_precision(device):
                parts.append(model(xb).float().cpu())
        logits = torch.cat(parts)  # (N, T, V)
        continuations = greedy_generate(model, eval_set.prefixes.to(device), rep_continuation).cpu()
    finally:
        model.train(was_training)

    N, T, V = logits.shape
    flat, targets = logits.reshape(-1, V), eval_set.y.reshape(-1)
    log_z = torch.logsumexp(flat, dim=-1)
    logp = flat - log_z.unsqueeze(-1)
    ce_tok = -logp.gather(1, targets.unsqueeze(1)).squeeze(1)
    prob = logp.exp()
    max_prob, pred = prob.max(dim=-1)
    correct = pred == targets
    val_ce = ce_tok.mean().item()
    ece, reliability = expected_calibration_error(max_prob, correct, ece_bins)

    # one temperature fitted on the first half of the windows, reported on the second
    half = (N // 2) * T
    temperature = fit_temperature(flat[:half], targets[:half])
    calibrated = F.cross_entropy(flat[half:].double() / temperature, targets[half:]).item()

    metrics = {
        "val_ce": val_ce,
        "val_ppl": math.exp(min(val_ce, 700.0)),
        "val_bpt": val_ce / math.log(2),
        "val_acc": correct.double().mean().item(),
        "ece": ece,
        "val_ce_calibrated": calibrated,
        "val_ce_uncalibrated_half": ce_tok[half:].mean().item(),
        "temperature": temperature,
        "mean_abs_log_z": log_z.abs().mean().item(),
        "mean_max_prob": max_prob.mean().item(),
        "mean_entropy": -(prob * logp).nan_to_num(0.0).sum(-1).mean().item(),
        **next_token_repetition(eval_set.x, eval_set.y, pred.reshape(N, T)),
        **sequence_repetition(continuations, 4),
    }
    if entropy_rate is not None:
        metrics["excess_ce"] = val_ce - entropy_rate
    metrics["reliability"] = reliability
    if decode is not None:
        metrics["samples"] = [{"prefix": decode(p.tolist()), "continuation": decode(c.tolist())}
                              for p, c in zip(eval_set.prefixes[:samples], continuations[:samples])]
    return metrics
