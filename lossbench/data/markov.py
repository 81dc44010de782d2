"""A random order-k Markov chain: the default corpus, generated, with no files.

Its exact next-token distribution and entropy rate are known, which gives the
benchmark an oracle: a model's validation loss can be compared to the entropy
rate (the best achievable cross-entropy, in nats/token), and distillation
losses can be trained against the true distribution (``OracleTeacher``).

Context ids. The context of the token at position p+1 is the k tokens
x[p-k+1..p]; its id is ``sum_j x[p-j] * V**j`` (j = 0..k-1), i.e. the most
recent token is the least significant base-V digit. Emitting y moves the chain
from context c to ``(c * V) % V**k + y``. The n-gram and oracle teachers use the
same scheme (teachers.py).
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from lossbench.core.config import ALPHABET, MARKOV_MAX_ENTRIES
from lossbench.core.threads import blas_thread_independent

from .tokenizers import CharTokenizer

DENSE_MAX_CONTEXTS = 2048  # exact linear solve up to here (a 32 MB matrix)
FLOOR = 1e-6  # every transition gets at least ~this probability (ergodic; reverse KL finite)


def _check_sizes(vocab_size: int, order: int) -> None:
    if not 2 <= vocab_size <= len(ALPHABET):
        raise ValueError(f"markov vocab_size must be in [2, {len(ALPHABET)}] "
                         f"(printable symbols), got {vocab_size}")
    if order < 1:
        raise ValueError(f"markov order must be >= 1, got {order}")
    if vocab_size ** order * vocab_size > MARKOV_MAX_ENTRIES:
        raise ValueError(f"markov transition table V**order * V = {vocab_size}**{order} * "
                         f"{vocab_size} exceeds {MARKOV_MAX_ENTRIES:,} entries; "
                         f"lower the order or the vocabulary")


def next_context(ctx: np.ndarray | int, token: np.ndarray | int, vocab_size: int,
                 order: int):
    """Context id after emitting ``token`` from context ``ctx`` (see module doc)."""
    return (ctx * vocab_size) % vocab_size ** order + token


def context_digits(ctx: int, vocab_size: int, order: int) -> np.ndarray:
    """The k tokens of context ``ctx``, oldest first: (order,) int64."""
    powers = vocab_size ** np.arange(order - 1, -1, -1, dtype=np.int64)  # V^(k-1) .. V^0
    return (ctx // powers) % vocab_size


class MarkovSource:
    """Random order-k chain over ``vocab_size`` symbols, fixed by ``seed``.

    Each of the V**k rows of the transition table is drawn from a symmetric
    Dirichlet(concentration) (small concentration -> peaked rows -> low entropy),
    floored at ``FLOOR`` and renormalized so every transition is possible.
    """

    def __init__(self, vocab_size: int = 16, order: int = 2, concentration: float = 0.3,
                 seed: int = 0):
        _check_sizes(vocab_size, order)
        if not concentration > 0:
            raise ValueError(f"markov concentration must be > 0, got {concentration}")
        rng = np.random.default_rng(seed)
        table = rng.dirichlet(np.full(vocab_size, concentration),
                              size=vocab_size ** order)  # (V^k, V)
        self._init(table, order)
        self.concentration = concentration
        self.seed = seed

    @classmethod
    def from_table(cls, table: np.ndarray, order: int) -> "MarkovSource":
        """A chain with a given (V**order, V) transition table (rows are renormalized)."""
        table = np.asarray(table, dtype=np.float64)
        if table.ndim != 2 or table.shape[0] != table.shape[1] ** order:
            raise ValueError(f"table must have shape (V**order, V) with order={order}, "
                             f"got {table.shape}")
        if (table < 0).any() or not np.isfinite(table).all():
            raise ValueError("transition probabilities must be finite and >= 0")
        _check_sizes(table.shape[1], order)
        self = cls.__new__(cls)
        self._init(table, order, floor=0.0)
        self.concentration = None
        self.seed = None
        return self

    def _init(self, table: np.ndarray, order: int, floor: float = FLOOR) -> None:
        table = np.maximum(table, floor)
        self._table = table / table.sum(axis=1, keepdims=True)  # (V^k, V)
        self.vocab_size = table.shape[1]
        self.order = order
        self.n_contexts = self.vocab_size ** order
        self._pi = None  # stationary distribution, computed on first use

    # ---- exact quantities -------------------------------------------------

    def transition_table(self) -> np.ndarray:
        """P(next | context): (V**k, V) float64, rows indexed by context id."""
        return self._table.copy()

    def context_transition_matrix(self) -> np.ndarray:
        """The chain on contexts, dense T[c, c'] (V**k, V**k): V nonzeros per row."""
        V, K = self.vocab_size, self.n_contexts
        ctx = np.arange(K)[:, None]  # (K, 1)
        dst = next_context(ctx, np.arange(V)[None, :], V, self.order)  # (K, V)
        T = np.zeros((K, K))
        T[np.broadcast_to(ctx, (K, V)), dst] = self._table
        return T

    @blas_thread_independent  # LAPACK's solve sums in a thread-count-dependent order
    def stationary_distribution(self) -> np.ndarray:
        """pi over contexts (V**k,): the solution of pi T = pi, sum(pi) = 1.

        Up to ``DENSE_MAX_CONTEXTS`` contexts it is solved exactly: the linear
        system (I - T)^T pi = 0 with one equation replaced by sum(pi) = 1
        (nonsingular: after the floor every k-step transition is possible, so
        the chain is irreducible and aperiodic). Beyond that a dense solve is
        too big and sparse LU fills in badly on this shift-register graph, so
        power iteration runs to an L1 step below 1e-14 -- one step is a
        vectorized (V, V**(k-1), V) contraction, and converges in ~20-500 steps.
        """
        if self._pi is None:
            if self.n_contexts <= DENSE_MAX_CONTEXTS:
                pi = self._stationary_dense()
            else:
                pi = self._stationary_power()
            pi = np.clip(pi, 0.0, None)  # round-off can leave -1e-18
            self._pi = pi / pi.sum()
        return self._pi.copy()

    def _stationary_dense(self) -> np.ndarray:
        K = self.n_contexts
        A = np.eye(K) - self.context_transition_matrix().T  # (K, K): A @ pi = 0
        A[-1, :] = 1.0  # replace one (redundant) balance equation by sum(pi) = 1
        b = np.zeros(K)
        b[-1] = 1.0
        return np.linalg.solve(A, b)

    def _stationary_power(self, tol: float = 1e-14, max_iter: int = 100_000) -> np.ndarray:
        V, K = self.vocab_size, self.n_contexts
        # context c = hi * V^(k-1) + lo; emitting y leads to lo * V + y, so one
        # step sums pi(c) P(c, y) over the dropped oldest digit hi
        P = self._table.reshape(V, K // V, V)  # (hi, lo, y)
        pi = np.full(K, 1.0 / K)
        for _ in range(max_iter):
            new = np.einsum("hl,hly->ly", pi.reshape(V, K // V), P).ravel()  # (K,)
            step = np.abs(new - pi).sum()
            pi = new
            if step < tol:
                return pi
        raise RuntimeError(f"stationary distribution did not converge in {max_iter} "
                           f"power iterations (last L1 step {step:.2e})")

    @blas_thread_independent  # the dot product too: every excess_ce subtracts this
    def entropy_rate(self) -> float:
        """H = sum_c pi(c) * H(P(. | c)), in nats per token."""
        P = self._table
        row_entropy = -(P * np.log(P, where=P > 0, out=np.zeros_like(P))).sum(axis=1)  # (K,)
        return float(self.stationary_distribution() @ row_entropy)

    # ---- sampling ----------------------------------------------------------

    def sample(self, n_tokens: int, seed: int) -> np.ndarray:
        """A stationary sample path: (n_tokens,) int64.

        The first k tokens are a context drawn from the stationary distribution,
        so every position (not only late ones) has the stationary marginal.
        """
        if n_tokens < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
        V, k, K = self.vocab_size, self.order, self.n_contexts
        # (seed, 1): a stream distinct from MarkovSource(seed=seed)'s table draws
        rng = np.random.default_rng((seed, 1))
        cum_pi = np.cumsum(self.stationary_distribution())
        ctx = int(min(np.searchsorted(cum_pi, rng.random() * cum_pi[-1], side="right"), K - 1))
        head = context_digits(ctx, V, k)
        n_rest = n_tokens - k
        if n_rest <= 0:
            return head[:n_tokens].astype(np.int64)

        # Inverse-CDF sampling: y = #{cum[c, :] <= u}. Each step depends on the
        # previous k tokens, so the chain is inherently sequential; the loop body
        # is kept to Python ints and floats (bisect on a cached Python list per
        # row) -- about 0.65 us/token, vs. ~3 us for np.searchsorted per step.
        cum = np.cumsum(self._table, axis=1)  # (K, V)
        cum[:, -1] = 1.0  # u < 1 always lands on a symbol, whatever the round-off
        uniforms = rng.random(n_rest).tolist()
        rows: list = [None] * K  # rows converted to lists lazily: large K stays cheap
        out = []
        append = out.append
        for u in uniforms:
            row = rows[ctx]
            if row is None:
                row = rows[ctx] = cum[ctx].tolist()
            y = bisect_right(row, u)
            append(y)
            ctx = (ctx * V) % K + y
        return np.concatenate((head, np.asarray(out, dtype=np.int64)))

    # ---- text view ---------------------------------------------------------

    @property
    def tokenizer(self) -> CharTokenizer:
        """Symbols shown as 'a', 'b', ... so samples read as text."""
        return CharTokenizer(ALPHABET[: self.vocab_size])

    def __repr__(self) -> str:
        return (f"MarkovSource(vocab_size={self.vocab_size}, order={self.order}, "
                f"concentration={self.concentration}, seed={self.seed})")
