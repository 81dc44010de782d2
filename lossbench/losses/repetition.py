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
from ._fused import unlikelihood_ce
from .likelihood import _ce_reference, _token_ce
from .registry import HParam, register_loss

_WELLECK = ("Welleck et al., Neural Text Generation with Unlikelihood Training, ICLR 2020")
# The vocabulary mask costs B T V, the gathered ids B T T, but a gathered entry costs about
# 1.5 mask entries (gather forward, scatter backward): break-even measured at V ~ 1.5 T
# (V = 65 to 1024, T = 64 and 512, 1 thread, benchmarks/loss_speed.py).
_DENSE_BELOW = 1.5


def first_occurrence(safe: torch.Tensor, keep: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, V): the first kept position of each token id in its row, T where it never occurs.

    ``safe`` (B, T) are valid ids and ``keep`` (B, T) marks the positions that count
    (see ``_common.prepare``).

    Examples:
        >>> import torch
        >>> safe, keep = torch.tensor([[2, 0, 2, 1]]), torch.tensor([[False, True, True, True]])
        >>> first_occurrence(safe, keep, 4).tolist()  # 2 at position 0 is ignored; 3 never
        [[1, 3, 2, 4]]
    """
    B, T = safe.shape
    pos = torch.arange(T, device=safe.device)
    first = torch.full((B, vocab_size), T, dtype=torch.long, device=safe.device)
    return first.scatter_reduce(1, safe, torch.where(keep, pos, T), reduce="amin")


def previous_token_candidates(safe: torch.Tensor, keep: torch.Tensor, vocab_size: int,
                              dtype: torch.dtype = torch.float32):
    """C_t = {y_s : s < t, s kept} minus {y_t}, as ids (B, T, T) with a 0/1 mask (B, T, T).

    Entry [b, t, s] is y_s; it is a valid candidate for position t when s < t, s is
    the first kept occurrence of y_s in the row (so each token counts once) and
    y_s != y_t. At most T candidates per position: O(B T^2), not O(B T V), and no loop.
    The mask is built in ``dtype`` by arithmetic: boolean tensor ops are several times
    slower than float ones on CPU, and the loss multiplies by it.

    Examples:
        Targets 0, 1, 0, 2: C_2 = {1} (0 is the target itself), C_3 = {0, 1}:

        >>> import torch
        >>> safe = torch.tensor([[0, 1, 0, 2]])
        >>> ids, mask = previous_token_candidates(safe, torch.ones(1, 4, dtype=torch.bool), 3)
        >>> [sorted(ids[0, t][mask[0, t] > 0].tolist()) for t in range(4)]
        [[], [0], [1], [0, 1]]
    """
    B, T = safe.shape
    first_of_own = first_occurrence(safe, keep, vocab_size).gather(1, safe)  # (B, T): first[y_t]
    is_first = (keep & (first_of_own == torch.arange(T, device=safe.device))).to(dtype)
    earlier = torch.ones(T, T, dtype=dtype, device=safe.device).tril_(-1)  # [t, s]: s < t
    mask = earlier * is_first.unsqueeze(1)  # (B, T, T)
    # y_t's own earlier occurrence is s = first[y_t] (when < t): drop it. first[y_t] = T
    # (t ignored, y_t never kept) is clamped to T - 1, which is never earlier than t.
    mask.scatter_(-1, first_of_own.clamp_max(T - 1).unsqueeze(-1), 0.0)
    return safe.unsqueeze(1).expand(B, T, T), mask


def seen_token_mask(safe: torch.Tensor, keep: torch.Tensor, vocab_size: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The same C_t as a 0/1 mask over the vocabulary (B, T, V): [b, t, c] = 1 when c
    occurred at a kept position s < t of row b and c != y_t. O(B T V), no gather and no
    scatter: the cheaper form unless V is well above T.

    Examples:
        >>> import torch
        >>> safe = torch.tensor([[0, 1, 0, 2]])
        >>> seen_token_mask(safe, torch.ones(1, 4, dtype=torch.bool), 3)[0].int().tolist()
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]]
    """
    B, T = safe.shape
    first = first_occurrence(safe, keep, vocab_size).to(dtype)  # exact: positions < 2^24
    pos = torch.arange(T, dtype=dtype, device=safe.device).view(1, T, 1)
    mask = (pos - first.unsqueeze(1)).clamp_(0.0, 1.0)  # integers: 1 iff first[c] < t
    return mask.scatter_(-1, safe.unsqueeze(-1), 0.0)


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
    """Token-level unlikelihood: cross-entropy plus a push-down on tokens already seen.

    L_t = -log p_{y_t} + α sum_{c in C_t} -log(1 - p_c)
    C_t = {y_s : s < t, s not ignored} minus {y_t}

    C_t holds the earlier targets of the same row, each once; the current target is
    never penalized. It has at most min(t, V) members: a mask over the vocabulary
    when V < 1.5 T, gathered ids (at most T per position) otherwise; both cost
    O(B T V) at most. log(1 - p_c) is computed without cancellation, so a confident wrong
    repeat costs a large finite amount (closed-form gradient: ``_fused.unlikelihood_ce``).

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding);
            they are no one's candidates either.
        alpha: α in [0, 10], the weight of the unlikelihood term; 0 gives cross-entropy.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Welleck et al., Neural Text Generation with Unlikelihood Training, ICLR 2020.

    Examples:
        Uniform p = 1/3 over V = 3 and targets 0, 1, 0, 2: C_t = {}, {0}, {1}, {0, 1},
        so L_t = log 3 + |C_t| * -log(2/3):

        >>> import torch
        >>> loss = unlikelihood(torch.zeros(1, 4, 3), torch.tensor([[0, 1, 0, 2]]))
        >>> [round(x, 4) for x in loss[0].tolist()]
        [1.0986, 1.5041, 1.5041, 1.9095]
    """
    return _unlikelihood(logits, targets, ignore_index=ignore_index, alpha=alpha)


def _unlikelihood(logits, targets, *, ignore_index=-100, alpha=1.0, dense=None):
    """``unlikelihood`` with the candidate representation forced (``dense``: the
    vocabulary mask; False: gathered ids; None: the cheaper one for this T and V)."""
    logits, safe, keep = prepare(logits, targets, ignore_index)
    T, V = logits.shape[1:]
    if dense is None:
        dense = V < _DENSE_BELOW * T
    if dense:
        ids, mask = None, seen_token_mask(safe, keep, V, logits.dtype)
    else:
        ids, mask = previous_token_candidates(safe, keep, V, logits.dtype)
    return finish(unlikelihood_ce(logits, safe, mask, ids, alpha), keep)


def repeated_ngram_mask(targets: torch.Tensor, keep: torch.Tensor, n: int,
                        vocab_size: int) -> torch.Tensor:
    """(B, T) bool: token t belongs to an n-gram that already occurred earlier in its row.

    ``targets`` (B, T), ``keep`` (B, T) bool: the positions that count.

    N-grams touching an ignored position never match. Each window is encoded as
    one int64 (base-V digits, exact while V^n < 2^62); a stable sort puts equal
    windows next to each other in position order, so every window equal to its
    sorted predecessor is a repeat. Falls back to comparing all window pairs
    (B, W, W) when the code would overflow.

    Examples:
        >>> import torch
        >>> targets = torch.tensor([[1, 2, 3, 1, 2, 3, 4]])
        >>> repeated_ngram_mask(targets, torch.ones(1, 7, dtype=torch.bool), 3, 5).int().tolist()
        [[0, 0, 0, 1, 1, 1, 0]]
    """
    B, T = targets.shape
    mask = torch.zeros_like(targets, dtype=torch.bool)  # (B, T); like targets under vmap
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
        repeat_starts = torch.zeros_like(valid)  # (B, W) bool
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
    """Sequence-level unlikelihood: push down the tokens of repeated n-grams.

    L_t = -log(1 - p_{y_t}) if y_t is part of an n-gram that already occurred earlier
    in the row, else 0

    ``targets`` is the model's own greedy continuation: the fine-tuning phase decodes a
    continuation from a prefix, feeds it back, and penalizes the repeats. N-grams
    touching an ignored position never match.

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V) (a generated continuation), or
            ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding).
        ngram: n in [1, 16], the length of the repeated n-grams.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions and outside repeats.

    References:
        Welleck et al., Neural Text Generation with Unlikelihood Training, ICLR 2020.

    Examples:
        The bigram (1, 2) repeats at positions 2-3; with p = 1/3 each of its tokens
        costs -log(2/3):

        >>> import torch
        >>> targets = torch.tensor([[1, 2, 1, 2]])
        >>> loss = sequence_unlikelihood(torch.zeros(1, 4, 3), targets, ngram=2)
        >>> [round(x, 4) for x in loss[0].tolist()]
        [0.0, 0.0, 0.4055, 0.4055]
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    repeats = repeated_ngram_mask(targets, keep, int(ngram), logits.shape[-1])
    nll, _ = _token_ce(logits, safe)
    penalty = -log1m_softmax_at(logits, safe, logp_at=-nll)
    return finish(torch.where(repeats, penalty, 0.0), keep)
