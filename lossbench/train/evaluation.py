"""Evaluation on fixed validation tokens, independent of the training loss.

Every run, whatever its loss, is measured with the same yardsticks on the same tokens, each
as published. Notation: at an evaluated position, z (V,) are the logits, y the target,
p = softmax(z), K = {c : z_c = max z} the top-1 set and k = |K| (ties are exact with bf16
logits: each tied class weighs 1/k, the expectation of a random tie-break). A target equal
to ``ignore_index`` leaves its position out of every metric, the temperature fit included.

    val_ce              mean -log p_y (nats/token); val_ppl = e^val_ce, val_bpt = val_ce / ln 2
    val_acc             mean [y in K] / k
    ece                 Guo et al. (ICML 2017): M bins ((m-1)/M, m/M] of max_c p_c
    temperature         argmin_T val_ce(z / T), T in [e^-6, e^6]; NaN, temperature_flat = 1,
                        when val_ce(z / T) does not depend on T (constant scores)
    val_ce_calibrated   val_ce(z / T) on the same tokens, T cross-fitted on interleaved
                        windows; calibration_gain = val_ce - val_ce_calibrated
    rep, wrep, uniq     Welleck et al. (ICLR 2020) rep/l, wrep/l, uniq: top-1 predictions found
                        among the l most recent tokens (rep_context = the effective l)
    seq_rep_4, uniq_seq the same paper's metrics of greedy continuations; seq_rep_2, seq_rep_3
                        the same with bigrams and trigrams
    diversity           Su et al. (NeurIPS 2022): prod_{n=2..4} (1 - rep-n) of the same
                        continuations
    unigram_entropy     entropy of the targets' frequencies: the CE of the best constant model
    mean_max_prob, mean_entropy, mean_abs_log_z   mean max_c p_c, H(p), |logsumexp z|

Margin and square losses' logits are not log-probabilities, hence the calibrated CE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lossbench.models.gpt import greedy_generate, mixed_precision

LOG_T_BOUNDS = (-6.0, 6.0)  # the temperature search: T in [e^-6, e^6]
FLAT_TOL = 1e-9  # nats: a CE that varies less than this over the whole search is flat


class NonFiniteLogits(ArithmeticError):
    """The model emitted NaN or infinite logits: the run has diverged (a result)."""


@dataclass(frozen=True)
class EvalSet:
    """The fixed evaluation tokens: the same for every run of a corpus."""

    x: torch.Tensor  # (N, T) inputs
    y: torch.Tensor  # (N, T) next tokens
    prefixes: torch.Tensor  # (P, L) prompts for greedy continuations
    history: torch.Tensor | None = None  # (N, H) the H val tokens before each window, -1
    #   before the split's start: the context of rep/wrep over the stream (rep_stream)


def top1_ties(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-1 set of each position: (..., V) -> tied (..., V) bool, k (...) its size.

    The argmax of the logits, not of rounded probabilities (two logits one ulp apart can
    round to the same fp32 probability). Exact ties are common with bf16 logits, so
    every metric of the top-1 prediction weights each of the k tied classes by 1/k: the
    expectation under a uniformly random tie-break."""
    tied = logits == logits.amax(dim=-1, keepdim=True)
    return tied, tied.sum(-1)


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15):
    """ECE with M equal-width confidence bins (Guo et al., ICML 2017, sec. 2).

        ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|,  B_m: confidence in ((m-1)/M, m/M]

    Bins are closed on the right as published (a confidence of exactly 1.0 is in the last
    bin, one on an edge m/M in the bin below it; torchmetrics instead bins [m/M, (m+1)/M)
    and gives 1.0 a bin of its own). ``correct`` may be fractional (a tie: 1/k).

    Returns (ece, table) where table rows are (bin_lower, bin_upper, count,
    mean confidence, accuracy) for the reliability diagram; empty bins have NaNs.
    """
    confidence, correct = confidence.double().flatten(), correct.double().flatten()
    edges = torch.arange(1, bins, dtype=torch.float64) / bins  # the M - 1 inner edges
    idx = torch.bucketize(confidence, edges, right=False)  # edges[i-1] < c <= edges[i]
    count = torch.bincount(idx, minlength=bins).double()
    conf_sum = torch.bincount(idx, weights=confidence, minlength=bins)
    acc_sum = torch.bincount(idx, weights=correct, minlength=bins)
    ece = ((conf_sum - acc_sum).abs().sum() / confidence.numel()).item()
    table = [(b / bins, (b + 1) / bins, int(count[b]),
              (conf_sum[b] / count[b]).item() if count[b] else math.nan,
              (acc_sum[b] / count[b]).item() if count[b] else math.nan) for b in range(bins)]
    return ece, table


def _shifted(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z - max_c z in fp64 (n, V) and its target entries (n,): CE is shift-invariant, and
    with z <= 0, exp(beta z) cannot overflow at any beta."""
    z = logits.double()
    z = z - z.amax(-1, keepdim=True)
    return z, z.gather(1, targets.unsqueeze(1)).squeeze(1)


def _ce_slopes(z: torch.Tensor, z_y: torch.Tensor, beta: float) -> tuple[float, float, float]:
    """f(beta) = mean CE(beta z), f' = mean(E_p[z] - z_y) and f'' = mean Var_p[z] >= 0,
    p = softmax(beta z): f is convex in beta = 1/T. One exp over (n, V)."""
    e = torch.exp(beta * z)  # (n, V)
    s0 = e.sum(1)
    mean_z = e.mul_(z).sum(1) / s0  # E_p[z]
    mean_z2 = e.mul_(z).sum(1) / s0  # E_p[z^2]
    return ((s0.log() - beta * z_y).mean().item(), (mean_z - z_y).mean().item(),
            (mean_z2 - mean_z**2).clamp(min=0).mean().item())


def _fit_beta(z: torch.Tensor, z_y: torch.Tensor, start: float = 1.0) -> float:
    """argmin of the convex f(beta) on [e^-6, e^6] by safeguarded Newton (a bisection in
    log beta where a step would leave the bracket); NaN when f is flat on the range."""
    lo, hi = math.exp(LOG_T_BOUNDS[0]), math.exp(LOG_T_BOUNDS[1])
    f_lo, g_lo, _ = _ce_slopes(z, z_y, lo)
    f_hi, g_hi, _ = _ce_slopes(z, z_y, hi)
    if g_lo >= 0:  # f' is non-decreasing: the minimum is at an end, or inside
        beta, f = lo, f_lo
    elif g_hi <= 0:
        beta, f = hi, f_hi
    else:
        a, b, beta = lo, hi, min(max(start, lo), hi)
        for _ in range(100):
            f, g, h = _ce_slopes(z, z_y, beta)
            if h > 0 and abs(g / h) <= 1e-10 * beta:  # converged (and g is at its noise)
                break
            a, b = (a, beta) if g > 0 else (beta, b)
            new = beta - g / h if h > 0 else math.nan
            beta = new if a < new < b else math.sqrt(a * b)
    # convex: its largest value on the range is at an end, so this bounds the variation
    return math.nan if max(f_lo, f_hi) - f < FLAT_TOL else beta


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, *,
                    ignore_index: int = -100) -> float:
    """argmin_T CE(logits / T, targets) over T in [e^-6, e^6]; logits (n, V), targets (n,),
    positions whose target is ``ignore_index`` left out (the rule of every metric).

    NaN when no temperature fits: CE(T) varies by less than FLAT_TOL over the whole range
    (constant scores, where a search stops anywhere, e.g. at the bound e^6). Newton's
    method on the convex CE(1/T) converges in a few passes over the logits (a bounded
    scalar search takes ~30).
    """
    keep = targets != ignore_index
    return 1.0 / _fit_beta(*_shifted(logits[keep], targets[keep]))


def cross_fitted_ce(logits: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor,
                    start: float = 1.0) -> float:
    """Temperature-calibrated CE on every evaluated token, each scored with a temperature
    fitted on other windows: fit on the even windows, score the odd ones, and vice versa.

    logits (N, T, V), targets and keep (N, T); ``start`` a first guess of the temperature.
    Interleaved, not first half / second half: both folds sample the whole val text, so
    the fit is not tested under a shift, and the result covers val_ce's tokens (their
    difference is the calibration gain alone). A fold whose fit is flat has learnt
    nothing and scores the other with T = 1. NaN with fewer than two windows holding
    evaluated tokens.
    """
    fold = (torch.arange(logits.shape[0]) % 2).unsqueeze(1)  # (N, 1)
    total = 0.0
    for f in (0, 1):
        fit, score = keep & (fold == f), keep & (fold != f)
        if not fit.any() or not score.any():
            return math.nan
        beta = _fit_beta(*_shifted(logits[fit], targets[fit]), start=1.0 / start)
        z, z_y = _shifted(logits[score], targets[score])
        beta = 1.0 if math.isnan(beta) else beta
        total += (torch.logsumexp(beta * z, 1) - beta * z_y).sum().item()
    return total / int(keep.sum())


def next_token_repetition(x: torch.Tensor, y: torch.Tensor, tied: torch.Tensor, *,
                          context: int = 128, history: torch.Tensor | None = None,
                          keep: torch.Tensor | None = None) -> dict[str, float]:
    """Welleck et al. (ICLR 2020) next-token metrics rep/l, wrep/l and uniq.

    x, y (N, T) inputs and targets; tied (N, T, V) the top-1 set (``top1_ties``); keep
    (N, T) the evaluated positions. The context of the prediction of y_t is the l =
    ``context`` most recent tokens x_{t-l+1..t}:

        rep  = mean_t (1/k_t) sum_{c in K_t} [c in context_t]
        wrep = mean_t (1/k_t) sum_{c in K_t} [c in context_t and c != y_t]
        uniq = |union_t K_t|  (every tied class is a top-1 prediction)

    Without ``history`` the context is the window so far (at most T tokens: effective
    l = min(l, T)), as in the paper's code, where it is cut at the sample's start. With
    ``history`` (N, >= l-1), the val tokens before each window (-1 before the split's
    start), every position gets its full l tokens and only such positions count in rep
    and wrep: the paper's rep/l whatever the block size. Returns rep, wrep, uniq and
    rep_context, the effective l.
    """
    N, T, V = tied.shape
    keep = torch.ones_like(y, dtype=torch.bool) if keep is None else keep
    k = tied.sum(-1).double()  # (N, T)
    if history is None:
        l = min(context, T)
        history = torch.full((N, l - 1), -1, dtype=x.dtype)
        counted = keep
    else:
        l = context
        if history.shape[1] < l - 1:
            raise ValueError(f"rep over the stream needs {l - 1} tokens before each window, "
                             f"the eval set holds {history.shape[1]}")
        history = history[:, history.shape[1] - (l - 1):]
        # full context: no slot of position t lies before the split (t + 1 + H_valid >= l)
        counted = keep & ((history >= 0).sum(1, keepdim=True) + torch.arange(T) + 1 >= l)
    seq = torch.cat([history, x], dim=1)  # (N, l - 1 + T)
    seq = torch.where((seq >= 0) & (seq < V), seq, V)  # not a token (before the split): class V
    safe_y = torch.where(keep, y, 0).unsqueeze(-1)  # (N, T, 1): gather-safe targets
    rep = torch.zeros(N, T, dtype=torch.float64)
    wrep = torch.zeros(N, T, dtype=torch.float64)
    step = max(1, 2**24 // (T * max(l, V + 1)))  # windows per chunk: bounded memory
    for i in range(0, N, step):
        ctx = seq[i:i + step].unfold(1, l, 1)  # (n, T, l): position t sees seq[t : t + l]
        seen = torch.zeros(ctx.shape[0], T, V + 1, dtype=torch.bool).scatter_(2, ctx, True)
        hit = tied[i:i + step] & seen[..., :V]  # (n, T, V): tied classes found in context
        rep[i:i + step] = hit.sum(-1).double()
        wrep[i:i + step] = rep[i:i + step] - hit.gather(2, safe_y[i:i + step]).squeeze(-1).double()
    n = int(counted.sum())
    return {"rep": (rep / k)[counted].sum().item() / n if n else math.nan,
            "wrep": (wrep / k)[counted].sum().item() / n if n else math.nan,
            "uniq": float(tied[keep].any(0).sum()),
            "rep_context": float(l)}


def sequence_repetition(continuations: torch.Tensor, n: int = 4) -> dict[str, float]:
    """Welleck et al.'s continuation metrics: seq-rep-n = mean over continuations of
    1 - |unique n-grams| / |n-grams| (a continuation shorter than n has none and is left
    out; NaN when all are); uniq-seq = distinct tokens over all continuations."""
    reps = []
    for row in continuations.tolist():
        grams = [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]
        if grams:
            reps.append(1.0 - len(set(grams)) / len(grams))
    return {f"seq_rep_{n}": sum(reps) / len(reps) if reps else math.nan,
            "uniq_seq": float(continuations.unique().numel())}


def continuation_diversity(continuations: torch.Tensor) -> dict[str, float]:
    """seq-rep-2 and seq-rep-3 of the continuations (P, L) beside seq-rep-4, and Su et al.'s
    (NeurIPS 2022) diversity = prod_{n=2..4} (1 - rep-n), its rep-n read from these.

    Su et al. pool the n-gram counts over all texts (1 - sum unique / sum total) where seq-rep-n
    averages each continuation's ratio; every continuation here has the same length L, so each
    has L - n + 1 n-grams and the two are equal. (Their script also leaves out each text's
    last n-gram, an off-by-one we do not copy: tests/test_metric_fidelity.py.) NaN when the
    continuations are shorter than 4 tokens.
    """
    reps = {n: sequence_repetition(continuations, n)[f"seq_rep_{n}"] for n in (2, 3, 4)}
    return {"seq_rep_2": reps[2], "seq_rep_3": reps[3],
            "diversity": (1 - reps[2]) * (1 - reps[3]) * (1 - reps[4])}


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
    x = val[:n * block_size].long().view(n, block_size)  # (n, T)
    y = val[1:n * block_size + 1].long().view(n, block_size)  # (n, T)
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


def token_metrics(logits: torch.Tensor, targets: torch.Tensor, ece_bins: int = 15) -> dict:
    """The per-token metrics of logits (n, V) and targets (n,) (all evaluated), in fp64."""
    logp = logits.to(torch.float64, copy=True)  # (n, V): log-probabilities once log Z is off
    tied, k = top1_ties(logp)
    correct = tied.gather(1, targets.unsqueeze(1)).squeeze(1) / k  # 1/k for a k-way tie
    del tied
    log_z = torch.logsumexp(logp, dim=-1)  # (n,)
    logp.sub_(log_z.unsqueeze(-1))
    prob = logp.exp()
    ce = -logp.gather(1, targets.unsqueeze(1)).squeeze(1).mean().item()
    confidence = prob.amax(dim=-1)  # max_c p_c: the same for every tied class
    ece, reliability = expected_calibration_error(confidence, correct, ece_bins)
    freq = torch.bincount(targets, minlength=logits.shape[1]).double() / targets.numel()
    return {"val_ce": ce, "val_ppl": math.exp(min(ce, 700.0)), "val_bpt": ce / math.log(2),
            "val_acc": correct.double().mean().item(), "ece": ece,
            "mean_abs_log_z": log_z.abs().mean().item(),
            "mean_max_prob": confidence.mean().item(),
            "mean_entropy": -(prob * logp).sum(-1).mean().item(),
            "unigram_entropy": -(freq * freq.log()).nan_to_num(0.0).sum().item(),
            "reliability": reliability}


@torch.no_grad()
def evaluate(model, eval_set: EvalSet, *, device: str = "cpu", ece_bins: int = 15,
             entropy_rate: float | None = None, rep_continuation: int = 48,
             decode=None, samples: int = 3, chunk: int = 32, rep_context: int = 128,
             rep_stream: bool = False, ignore_index: int = -100) -> dict:
    """All evaluation metrics of ``model`` on ``eval_set`` (module docstring).

    ``rep_context`` is l of rep/wrep; ``rep_stream`` takes each position's l context
    tokens from the val stream (``eval_set.history``) instead of its window. Positions
    whose target is ``ignore_index`` count in no metric.

    Returns a flat dict of floats plus ``reliability`` (table) and ``samples`` (decoded
    prefix/continuation pairs). Flags are floats too: temperature_flat and rep_stream are
    1.0 or 0.0. With a single window, calibrated CE and its gain are NaN (nothing to
    cross-fit on). Raises NonFiniteLogits when any logit is NaN or infinite.
    """
    if rep_stream and eval_set.history is None:
        raise ValueError("rep_stream needs the eval set's history (build_eval_set with "
                         "rep_stream = true)")
    was_training = model.training
    model.eval()
    try:
        parts = []
        for i in range(0, eval_set.x.shape[0], chunk):
            xb = eval_set.x[i:i + chunk].to(device)
            with mixed_precision(device):
                parts.append(model(xb).float().cpu())
        logits = torch.cat(parts)  # (N, T, V)
        if not torch.isfinite(logits).all():  # before anything else: ECE would raise on NaN
            raise NonFiniteLogits(f"{int((~torch.isfinite(logits)).sum())} non-finite logits")
        continuations = greedy_generate(model, eval_set.prefixes.to(device), rep_continuation).cpu()
    finally:
        model.train(was_training)

    keep = eval_set.y != ignore_index  # (N, T)
    if not keep.any():
        raise ValueError(f"every target of the eval set is ignore_index ({ignore_index})")
    targets = eval_set.y[keep]
    metrics = token_metrics(logits[keep], targets, ece_bins)
    val_ce = metrics["val_ce"]

    temperature = fit_temperature(logits[keep], targets)
    flat = math.isnan(temperature)
    # flat: no temperature changes the CE, so calibration cannot gain anything
    calibrated = val_ce if flat else cross_fitted_ce(logits, eval_set.y, keep, temperature)
    metrics.update({
        "val_ce_calibrated": calibrated, "calibration_gain": val_ce - calibrated,
        "temperature": temperature, "temperature_flat": float(flat),
        **next_token_repetition(eval_set.x, eval_set.y, top1_ties(logits)[0],
                                context=rep_context, keep=keep,
                                history=eval_set.history if rep_stream else None),
        "rep_stream": float(rep_stream),
        **sequence_repetition(continuations, 4),
        **continuation_diversity(continuations),
    })
    if entropy_rate is not None:
        metrics["excess_ce"] = val_ce - entropy_rate
    metrics["reliability"] = metrics.pop("reliability")  # the table after the numbers
    if decode is not None:
        metrics["samples"] = [{"prefix": decode(p.tolist()), "continuation": decode(c.tolist())}
                              for p, c in zip(eval_set.prefixes[:samples], continuations[:samples])]
    return metrics
