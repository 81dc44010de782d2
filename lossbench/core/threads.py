"""Numbers that do not depend on how many threads the machine's BLAS happens to use.

numpy's OpenBLAS (or MKL) splits a matrix product, a dot product or an LU factorisation
over as many threads as it is allowed (by default one per core, or OPENBLAS_NUM_THREADS),
and each split sums in a different order: ``np.linalg.solve`` gave a Markov chain's
stationary distribution, and so its entropy rate and every run's ``excess_ce``, one ulp
apart under 1 and 2 threads, i.e. between a Dask worker and a local one.

Every numpy computation on the way into a result (corpora, teachers, the numbers a run
stores) runs under :func:`one_blas_thread`, so it is the same on every machine setting and
executor. torch's own intra-op threads are not this: a run sets them to ``train.threads``,
which is part of its config and so of its id.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

from threadpoolctl import threadpool_limits

F = TypeVar("F", bound=Callable)


def one_blas_thread() -> threadpool_limits:
    """A context manager: numpy's BLAS / LAPACK on one thread inside, as before after."""
    return threadpool_limits(limits=1, user_api="blas")


def blas_thread_independent(fn: F) -> F:
    """Decorator: ``fn`` runs under :func:`one_blas_thread` (its result is then the same
    whatever the caller's BLAS thread count)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with one_blas_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
