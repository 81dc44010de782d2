"""Results do not depend on the BLAS thread count of the process that computes them, nor on
the executor: every number a run stores is bit-identical under 1 and 2 numpy BLAS threads
(and 1 or 2 ambient torch threads: a run sets its own, ``train.threads``, which is in its id),
in-process and in the local pool's spawned workers.

Before lossbench.core.threads, ``np.linalg.solve`` made a markov chain's stationary
distribution (hence its entropy rate, every ``excess_ce`` and the oracle teacher) differ by
an ulp between 1 and 2 OpenBLAS threads: between a Dask worker and a local one.
"""

import json
import math

import pytest
import torch
from threadpoolctl import threadpool_limits

from lossbench.core.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from lossbench.data.markov import MarkovSource
from lossbench.data.teachers import OracleTeacher
from lossbench.train import state
from lossbench.train.loop import train_run

# chains whose LAPACK solve differed in the last bit between 1 and 2 OpenBLAS threads
CHAINS = [(16, 2), (8, 3), (32, 2), (4, 4), (6, 3)]
TIMING = {"wall_s", "train_s", "eval_s", "tokens_per_s", "attempts"}


def bits(value):
    """A value with every float as its exact bit pattern (NaN included), for equality."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else value.hex()
    if isinstance(value, dict):
        return {k: bits(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [bits(v) for v in value]
    return value


def under_threads(n: int, fn):
    """``fn()`` with numpy's BLAS and torch's intra-op pool at ``n`` threads, from cold
    caches (the corpus and teacher caches would otherwise hand back the first call's)."""
    state.cached_corpus.cache_clear()
    state._cached_teacher.cache_clear()
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            return fn()
    finally:
        torch.set_num_threads(before)
        state.cached_corpus.cache_clear()
        state._cached_teacher.cache_clear()


@pytest.mark.parametrize("vocab,order", CHAINS)
def test_markov_exact_quantities_do_not_depend_on_blas_threads(vocab, order):
    def exact():
        source = MarkovSource(vocab, order, 0.3, seed=0)
        teacher = OracleTeacher(source)
        return (source.stationary_distribution().tobytes(), source.entropy_rate().hex(),
                teacher._flat.numpy().tobytes())

    assert under_threads(1, exact) == under_threads(2, exact)


def stored(result) -> dict:
    """What a run stores (result.json's summary, steps and evals), minus its timings."""
    summary = {k: v for k, v in result.summary().items() if k not in TIMING}
    steps = {k: v for k, v in result.steps.items() if k != "wall_s"}
    return bits(json.loads(json.dumps({"summary": summary, "steps": steps,
                                       "evals": result.evals}, default=str)))


def tiny_run(loss: str, teacher: str, threads: int = 1, **data) -> RunConfig:
    return RunConfig(
        loss=loss, seed=3,
        data=DataConfig(markov_vocab=8, markov_order=3, markov_tokens=6000, teacher=teacher,
                        **data),
        model=ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16),
        train=TrainConfig(steps=4, batch_size=4, warmup_steps=1, threads=threads),
        eval=EvalConfig(eval_every=2, val_windows=8, rep_prefixes=2, rep_prefix_len=4,
                        rep_continuation=8, full_val_windows=8))


@pytest.mark.parametrize("loss,teacher,threads", [
    ("kl", "oracle", 1), ("cross_entropy", "smoothed", 1),
    pytest.param("kl", "ngram", 2, marks=pytest.mark.slow),  # 2 torch threads: ~15 s here
])
def test_every_stored_metric_is_bit_identical_under_1_and_2_threads(loss, teacher, threads):
    config = tiny_run(loss, teacher, threads)
    one = under_threads(1, lambda: stored(train_run(config)))
    two = under_threads(2, lambda: stored(train_run(config)))
    assert one["evals"][-1]["excess_ce"] == two["evals"][-1]["excess_ce"]
    assert one == two


@pytest.mark.slow
def test_local_pool_workers_store_what_the_process_itself_stores(tmp_path, monkeypatch):
    """The same suite in-process (workers=1, BLAS at 1 thread here) and on the local pool
    (spawned workers whose OpenBLAS starts with 2 threads): bit-identical result.json."""
    from lossbench.suite.load import load_suite
    from lossbench.sweep.sweep import run_suite

    from tests.helpers import tiny_toml

    path = tmp_path / "t.toml"
    path.write_text(tiny_toml("t", '["cross_entropy", "kl"]', seeds=(0, 1),
                              data={"markov_order": 3, "teacher": "oracle"},
                              train={"steps": 6}))
    suite = load_suite(path)
    with threadpool_limits(limits=1, user_api="blas"):
        state.cached_corpus.cache_clear()
        run_suite(suite, tmp_path / "inline", workers=1)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")  # read by each spawned worker's numpy
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    run_suite(suite, tmp_path / "pool", workers=2)
    for run in suite.runs:
        a, b = (json.loads((tmp_path / d / "runs" / run.run_id() / "result.json").read_text())
                for d in ("inline", "pool"))
        for r in (a, b):
            r["summary"] = {k: v for k, v in r["summary"].items() if k not in TIMING}
            r["steps"].pop("wall_s")
        assert bits(a) == bits(b), run.run_id()
