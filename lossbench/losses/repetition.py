"""Unlikelihood training against repetition (Welleck et al., ICLR 2020).

Token level: at every step push down the probability of tokens that already
occurred in the same row. Sequence level: after generating a continuation,
push down the tokens that form repeated n-grams in it; the generation lives
with training (a fine-tuning phase), the loss lives here.
"""

from __future__ import annotations

import math

import torch

from ._common import finish, log1m_softmax_at, prepare
from .likelihood import _ce_reference, _token_ce
from .registry import HParam, register_loss

_WELLECK = ("Welleck et al., Neural Text Generation with Unlikelihood Training, ICLR 2020")


def previous_token_candidates(safe: torch.Tensor, keep: torch.Tensor, vocab_size: int):
    """C_t = {y_s : s < t, s kept} minus {y_t}, as ids (B, T, T) with a validity mask (B, T, T).

    Entry [b, t, s] is y_s; it is a valid candidate for position t when s < t, s is
    the first kept occurrence of y_s in the row (so each token counts once) and
    y_s != y_t. At most T candidates per position: O(B T^2), not O(B T V), and no loop.
    """
    B, T = safe.shape
    pos = torch.arange(T, device=safe.device)
    first = torch.full((B, vocab_size), T, dtype=torch.long, device=safe.device)
    first = first.scatter_reduce(1, safe, torch.where(keep, pos, T), reduce="amin")  # (B, V)
    is_first = keep & (first.gather(1, safe) == pos)  # (B, T)
    ids = safe.unsqueeze(1).expand(B, T, T)  # (B, T, T): ids[b, t, s] = y_s
    earlier = pos.unsqueeze(1) > pos.unsqueeze(0)  # (T, T): s < t
    valid = earlier & is_first.unsqueeze(1) & (ids != safe.unsqueeze(-1))
    return ids, valid


def _reference_log1m(row: torch.Tensor, c: int) -> torch.Tensor:
    """log(1 - softmax(row)[c]) for the references, as logsumexp of the other logits minus
    logsumexp of all: 1 - p cancels to ~1e-6 relative error in fp64 once p is within 1e-10
    of 1, which would make a correct loss miss its reference."""
    others = torch.cat((row[:c], row[c + 1:]))
    return torch.logsumexp(others, 0) - torch.logsumexp(row, 0)


def _unlikelihood_reference(logits, targets, *, ignore_index=-100, alpha=1.0):
    ce = _ce_reference(logits, targets, ignore_index=ignore_index)
    out = torch.zeros_like(ce)
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            y = int(targets[b, t])
            if y == ignore_index:
                continue
            seen = {int(c) for c in targets[b, :t] if int(c) != ignore_index} - {y}
            penalty = sum((-_reference_log1m(logits[b, t], c) for c in seen), torch.zeros(()))
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

    Candidates are gathered (at most T per position) instead of masking all V
    classes, and log(1 - p_c) is computed without cancellation (see
    ``log1m_softmax_at``), so a confident wrong repeat costs a large finite amount.
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    nll, logp = _token_ce(logits, safe)
    ids, valid = previous_token_candidates(safe, keep, logits.shape[-1])  # (B, T, T) each
    log1m = log1m_softmax_at(logits, ids, logp_at=logp.gather(-1, ids))  # (B, T, T)
    penalty = -torch.where(valid, log1m, 0.0).sum(dim=-1)
    return finish(nll + alpha * penalty, keep)


def repeated_ngram_mask(targets: torch.Tensor, keep: torch.Tensor, n: int,
                        vocab_size: int) -> torch.Tensor:
    """(B, T) bool: token t belongs to an n-gram that already occurred earlier in its row.

    N-grams touching an ignored position never match. Each window is encoded as
    one int64 (base-V digits, exact while V^n < 2^62); a stable sort puts equal
    windows next to each other in position order, so every window equal to its
    sorted predecessor is a repeat. Falls back to comparing all window pairs
    (B, W, W) when the code would overflow.
    """
    B, T = targets.shape
    mask = torch.zeros(B, T, dtype=torch.bool, device=targets.device)
    if T < n:
        return mask
    safe = torch.where(keep, targets, 0)
    grams = safe.unfold(1, n, 1)  # (B, W, n), W = T - n + 1
    W = grams.shape[1]
    valid = keep.unfold(1, n, 1).all(dim=-1)  # (B, W)
    if n * math.log2(max(vocab_size, 2)) < 62:
        weights = vocab_size ** torch.arange(n - 1, -1, -1, device=targets.device)
        codes = (grams * weights).sum(-1)  # (B, W), >= 0
        codes = torch.where(valid, codes, -1 - torch.arange(W, device=targets.device))  # unique
        sorted_codes, order = torch.sort(codes, dim=1, stable=True)
        dup = sorted_codes[:, 1:] == sorted_codes[:, :-1]  # (B, W-1)
        repeat_starts = torch.zeros(B, W, dtype=torch.bool, device=targets.device)
        repeat_starts.scatter_(1, order[:, 1:], dup)
    else:
        same = (grams.unsqueeze(2) == grams.unsqueeze(1)).all(dim=-1)  # (B, W, W)
        same &= valid.unsqueeze(2) & valid.unsqueeze(1)
        earlier = torch.ones(W, W, dtype=torch.bool, device=targets.device).tril(-1)
        repeat_starts = (same & earlier).any(dim=-1)
    for k in range(n):  # mark the n tokens of each repeated window (loop over n, not T)
        mask[:, k:k + W] |= repeat_starts
    return mask


def _sequence_unlikelihood_reference(logits, targets, *, ignore_index=-100, ngram=4):
    n = int(ngram)
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
                out[b, t] = -_reference_log1m(logits[b, t], row[t])
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
    repeats = repeated_ngram_mask(targets, keep, int(ngram), logits.shape[-1])
    nll, _ = _token_ce(logits, safe)
    penalty = -log1m_softmax_at(logits, safe, logp_at=-nll)
    return finish(torch.where(repeats, penalty, 0.0), keep)
