"""Unlikelihood training against repetition (Welleck et al., ICLR 2020).

Token level: at every step push down the probability of tokens that already
occurred in the same row. Sequence level: after generating a continuation,
push down the tokens that form repeated n-grams in it; the generation lives
with training (a fine-tuning phase), the loss lives here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import finish, log1m_softmax, log1m_softmax_at, prepare
from .likelihood import _ce_reference, _token_ce
from .registry import HParam, register_loss

_WELLECK = ("Welleck et al., Neural Text Generation with Unlikelihood Training, ICLR 2020")


def previous_token_candidates(safe: torch.Tensor, keep: torch.Tensor, vocab_size: int):
    """C_t = {y_s : s < t, s kept} minus {y_t}, as a (B, T, V) bool mask, without a loop over t.

    For each row, the first position where token v occurs (T if never) is
    found with one scatter; v is a candidate at t iff that position is < t.
    """
    B, T = safe.shape
    pos = torch.arange(T, device=safe.device).expand(B, T)
    first = torch.full((B, vocab_size), T, dtype=torch.long, device=safe.device)
    first = first.scatter_reduce(1, safe, torch.where(keep, pos, T), reduce="amin")  # (B, V)
    seen_before = first.unsqueeze(1) < pos.unsqueeze(-1)  # (B, T, V)
    return seen_before & ~F.one_hot(safe, vocab_size).bool()


def _unlikelihood_reference(logits, targets, *, ignore_index=-100, alpha=1.0):
    ce = _ce_reference(logits, targets, ignore_index=ignore_index)
    p = logits.softmax(-1)
    out = torch.zeros_like(ce)
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            y = int(targets[b, t])
            if y == ignore_index:
                continue
            seen = {int(c) for c in targets[b, :t] if int(c) != ignore_index} - {y}
            penalty = sum((-torch.log(1 - p[b, t, c]) for c in seen), torch.zeros(()))
            out[b, t] = ce[b, t] + alpha * penalty
    return out


@register_loss(
    "unlikelihood",
    description="Token-level unlikelihood: CE + alpha * sum over previous tokens c of -log(1-p_c).",
    reference=_WELLECK,
    hparams={"alpha": HParam(1.0, 0.0, 10.0, "weight of the unlikelihood term", neutral=0.0)},
    properties=("nonnegative", "shift_invariant", "minimal_at_perfect_prediction"),
    reference_impl=_unlikelihood_reference,
)
def unlikelihood(logits, targets, *, ignore_index=-100, alpha=1.0):
    """L_t = -log p_{y_t} + alpha * sum_{c in C_t} -log(1 - p_c),
    C_t = {y_s : s < t} minus {y_t} (earlier tokens of the same row, ignored ones excluded).

    log(1 - p_c) is computed without cancellation for every class (see
    ``log1m_softmax``), so a confident wrong repeat costs a large finite amount.
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    nll, _ = _token_ce(logits, safe)
    candidates = previous_token_candidates(safe, keep, logits.shape[-1])  # (B, T, V)
    penalty = -torch.where(candidates, log1m_softmax(logits), 0.0).sum(dim=-1)
    return finish(nll + alpha * penalty, keep)


def repeated_ngram_mask(targets: torch.Tensor, keep: torch.Tensor, n: int) -> torch.Tensor:
    """(B, T) bool: token t belongs to an n-gram that already occurred earlier in its row.

    N-grams touching an ignored position never match. Compares all pairs of
    n-gram windows at once, (B, T-n+1, T-n+1), which is small at LM block sizes.
    """
    B, T = targets.shape
    mask = torch.zeros(B, T, dtype=torch.bool, device=targets.device)
    if T < n:
        return mask
    grams = targets.unfold(1, n, 1)  # (B, W, n), W = T - n + 1
    valid = keep.unfold(1, n, 1).all(dim=-1)  # (B, W)
    same = (grams.unsqueeze(2) == grams.unsqueeze(1)).all(dim=-1)  # (B, W, W)
    same &= valid.unsqueeze(2) & valid.unsqueeze(1)
    W = grams.shape[1]
    earlier = torch.ones(W, W, dtype=torch.bool, device=targets.device).tril(-1)
    repeat_starts = (same & earlier).any(dim=-1)  # (B, W): window i repeats some j < i
    for k in range(n):  # mark the n tokens of each repeated window (loop over n, not T)
        mask[:, k:k + W] |= repeat_starts
    return mask


def _sequence_unlikelihood_reference(logits, targets, *, ignore_index=-100, ngram=4):
    n = int(ngram)
    p = logits.softmax(-1)
    out = torch.zeros(targets.shape, dtype=logits.dtype)
    for b in range(targets.shape[0]):
        row = [int(c) for c in targets[b]]
        flagged = set()
        for i in range(len(row) - n + 1):
            gram = row[i:i + n]
            if ignore_index in gram:
                continue
            if any(row[j:j + n] == gram for j in range(i)):
                flagged.update(range(i, i + n))
        for t in flagged:
            if row[t] != ignore_index:
                out[b, t] = -torch.log(1 - p[b, t, row[t]])
    return out


@register_loss(
    "sequence_unlikelihood",
    description="Sequence-level unlikelihood: -log(1-p_y) on tokens of repeated n-grams "
                "in a generated continuation (fine-tuning phase).",
    reference=_WELLECK,
    hparams={"ngram": HParam(4, 1, 16, "n of the repeated n-grams", integer=True)},
    properties=("nonnegative", "shift_invariant"),
    reference_impl=_sequence_unlikelihood_reference,
    finetune_only=True,
)
def sequence_unlikelihood(logits, targets, *, ignore_index=-100, ngram=4):
    """L_t = -log(1 - p_{y_t}) if y_t is part of a repeated n-gram of the row, else 0.

    ``targets`` is the model's own greedy continuation: the phase decodes a
    continuation from a prefix, feeds it back, and penalizes the repeats.
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    repeats = repeated_ngram_mask(targets, keep, int(ngram))
    penalty = -log1m_softmax_at(logits, safe)
    return finish(torch.where(repeats, penalty, 0.0), keep)
