"""Teachers: a full next-token distribution for every target position, for the
distillation losses (kl, reverse_kl).

A teacher conditions on the last m tokens of the *corpus* (not of the window),
so the first positions of a window are not starved of context. Only the first
m - 1 positions of a split have a shorter history h = p + 1; they use the
order-h table. All tables are stacked into one (sum_h V**h, V) matrix, so a
whole batch is one vectorized gather:

    row(p) = offset[h] + sum_{j<h} data[p - j] * V**j,   h = min(p + 1, m)

(the most recent token is the least significant digit, as in markov.py).

- ``NGramTeacher``: add-k smoothed n-gram counts of the TRAIN split.
- ``OracleTeacher``: the markov corpus's exact transition distribution; for a
  short history, the exact conditional under the stationary distribution
  (the corpus starts in stationarity, see MarkovSource.sample).
"""

from __future__ import annotations

import numpy as np
import torch

from lossbench.core.config import DataConfig
from lossbench.core.threads import blas_thread_independent

from .corpora import Corpus
from .markov import MarkovSource

MAX_TABLE_ENTRIES = 50_000_000  # V**(order-1) * V floats (200 MB in float32)


def _context_powers(vocab_size: int, m: int) -> np.ndarray:
    return vocab_size ** np.arange(m, dtype=np.int64)  # (m,) V^0 .. V^(m-1)


class Teacher:
    """Next-token distributions from stacked tables: ``tables[h]`` is (V**h, V),
    P(next | last h tokens), for h = 0..context_len."""

    name = "teacher"

    def __init__(self, tables: list[np.ndarray], vocab_size: int):
        self.vocab_size = vocab_size
        self.context_len = len(tables) - 1  # m
        for h, t in enumerate(tables):
            if t.shape != (vocab_size ** h, vocab_size):
                raise ValueError(f"table for history {h} has shape {t.shape}, expected "
                                 f"{(vocab_size ** h, vocab_size)}")
        sizes = [t.shape[0] for t in tables]
        self._offsets = torch.tensor(np.concatenate(([0], np.cumsum(sizes)[:-1])))  # (m+1,)
        self._powers = torch.from_numpy(_context_powers(vocab_size, self.context_len))  # (m,)
        # float64 -> float32 can leave rows summing to 1 +- 1e-7; fine for a loss target
        self._flat = torch.from_numpy(np.concatenate(tables).astype(np.float32))  # (R, V)

    def rows(self, data: torch.Tensor, starts: torch.Tensor, block_size: int) -> torch.Tensor:
        """Table row for each target position of each window: (B, T) int64."""
        n = data.numel()
        starts = starts.to(device=data.device, dtype=torch.long)
        if starts.numel() and (int(starts.min()) < 0 or int(starts.max()) + block_size >= n):
            raise ValueError(f"window starts must lie in [0, {n - block_size - 1}] "
                             f"for {n} tokens and block_size {block_size}")
        powers = self._powers.to(data.device)
        p = starts[:, None] + torch.arange(block_size, device=data.device)  # (B, T)
        hist = p[..., None] - torch.arange(self.context_len, device=data.device)  # (B, T, m)
        valid = hist >= 0  # digits before the start of the split do not exist
        digits = data[hist.clamp(min=0)].long() * valid  # (B, T, m); token folders: uint16/32
        ctx = (digits * powers).sum(dim=-1)  # (B, T)
        h = (p + 1).clamp(max=self.context_len)  # (B, T) history length
        return self._offsets.to(data.device)[h] + ctx  # (B, T)

    def probs(self, data: torch.Tensor, starts: torch.Tensor, block_size: int) -> torch.Tensor:
        """P(data[s+t+1] | corpus up to data[s+t]) for windows at ``starts``:
        (B, T, V) float32, on the tables' device."""
        rows = self.rows(data, starts, block_size)  # (B, T)
        return self._flat[rows.to(self._flat.device)]  # (B, T, V)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(vocab_size={self.vocab_size}, "
                f"context_len={self.context_len})")


NGRAM_CHUNK = 1 << 22  # target positions counted per pass: memory bounded by this, not n


def ngram_counts(tokens, vocab_size: int, h: int) -> np.ndarray:
    """counts[ctx, y] over all positions with a full h-token history: (V**h, V) int64.

    ``tokens`` is any 1-D array (a memory map of a token folder too): it is read in chunks
    of NGRAM_CHUNK positions, each with the h tokens before it, so counting a multi-GB
    corpus holds a few int64 arrays of one chunk, never an int64 copy of the whole."""
    V, n = vocab_size, len(tokens)
    flat = np.zeros(V ** h * V, dtype=np.int64)
    for lo in range(h, n, NGRAM_CHUNK):  # target positions lo .. hi-1
        hi = min(n, lo + NGRAM_CHUNK)
        seg = np.asarray(tokens[lo - h:hi], dtype=np.int64)  # (hi - lo + h,)
        ctx = np.zeros(hi - lo, dtype=np.int64)  # context of target t: tokens t-h .. t-1
        for j in range(h):  # loop over context digits (orders), not positions
            ctx += seg[h - 1 - j: h - 1 - j + hi - lo] * V ** j
        flat += np.bincount(ctx * V + seg[h:], minlength=V ** h * V)
    return flat.reshape(V ** h, V)


def _token_range(tokens) -> tuple[int, int]:
    """(min, max) of a 1-D token array, read in chunks (no copy of a memory map)."""
    lows, highs = zip(*((int(c.min()), int(c.max())) for c in
                        (tokens[i:i + NGRAM_CHUNK] for i in range(0, len(tokens), NGRAM_CHUNK))))
    return min(lows), max(highs)


class NGramTeacher(Teacher):
    """Add-k smoothed n-gram: P(y | ctx) = (count(ctx, y) + k) / (count(ctx) + k V)."""

    name = "ngram"

    @classmethod
    def fit(cls, train_tokens, vocab_size: int, order: int = 3,
            add_k: float = 0.1) -> "NGramTeacher":
        """Fit on ``train_tokens`` (the TRAIN split only: the val split stays unseen)."""
        if order < 1:
            raise ValueError(f"ngram order must be >= 1, got {order}")
        if not add_k > 0:
            raise ValueError(f"ngram add_k must be > 0, got {add_k}")
        m = order - 1
        if vocab_size ** m * vocab_size > MAX_TABLE_ENTRIES:
            raise ValueError(f"an order-{order} n-gram table over V={vocab_size} has "
                             f"{vocab_size ** m * vocab_size:,} entries (limit "
                             f"{MAX_TABLE_ENTRIES:,}); use a lower ngram_order")
        if hasattr(train_tokens, "detach"):
            train_tokens = train_tokens.detach().cpu().numpy()  # a view: no copy
        tokens = np.asarray(train_tokens).reshape(-1)  # its own dtype (uint16 of a map too)
        if tokens.size:
            low, high = _token_range(tokens)
            if low < 0 or high >= vocab_size:
                raise ValueError(f"train tokens must lie in [0, {vocab_size})")
        tables = []
        for h in range(m + 1):
            counts = ngram_counts(tokens, vocab_size, h)  # (V^h, V)
            tables.append((counts + add_k) / (counts.sum(axis=1, keepdims=True)
                                               + add_k * vocab_size))
        teacher = cls(tables, vocab_size)
        teacher.order, teacher.add_k = order, add_k
        return teacher


class OracleTeacher(Teacher):
    """The exact next-token distribution of a ``MarkovSource`` corpus."""

    name = "oracle"

    def __init__(self, source: MarkovSource):
        V, k = source.vocab_size, source.order
        P = source.transition_table()  # (V^k, V)
        joint = source.stationary_distribution()[:, None] * P  # (V^k, V): P(ctx, y)
        tables = []
        for h in range(k):
            # the last h tokens of context c are its low digits: c = hi * V^h + lo
            marg = joint.reshape(V ** (k - h), V ** h, V).sum(axis=0)  # (V^h, V)
            tables.append(marg / marg.sum(axis=1, keepdims=True))
        tables.append(P)
        super().__init__(tables, V)
        self.source = source


@blas_thread_independent  # the tables are training targets: no thread-dependent sums
def build_teacher(config: DataConfig, corpus: Corpus) -> Teacher | None:
    """The teacher ``config.teacher`` names; None for "smoothed" (the loss then
    uses its own label-smoothed target). Computed on one BLAS thread
    (lossbench.core.threads)."""
    if config.teacher == "smoothed":
        return None
    if config.teacher == "ngram":
        return NGramTeacher.fit(corpus.train, corpus.vocab_size, config.ngram_order,
                                config.ngram_add_k)
    if config.teacher == "oracle":
        if corpus.source is None:
            raise ValueError("teacher 'oracle' needs a markov corpus (corpus.source is None)")
        return OracleTeacher(corpus.source)
    raise ValueError(f"unknown teacher {config.teacher!r}; expected 'ngram', 'oracle' "
                     f"or 'smoothed'")
