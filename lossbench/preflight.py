"""Checks of a suite that span its sections, its files and the machine, made before any
run starts: what field ranges alone cannot see (lossbench.validation has those).

Each function returns problems as lines ``[section] key: message``; the suite loader
adds the file name and reports them all at once.
"""

from __future__ import annotations

import dataclasses
import itertools

from lossbench.config import ModelConfig, RunConfig, TrainConfig
from lossbench.data.corpora import CorpusFacts, DataConfig, corpus_facts
from lossbench.data.teachers import MAX_TABLE_ENTRIES as NGRAM_MAX_ENTRIES
from lossbench.tuning import TRAIN_KEYS, TuneSpec, apply_setting, settings
from lossbench.validation import (machine_memory, memory_need, memory_problem,
                                  value_problem)

# the [data] key that decides how many tokens a corpus has
_SIZE_KEY = {"markov": "markov_tokens", "text": "path", "stdlib": "stdlib_max_bytes"}


def resolve_corpus(data: DataConfig, model: ModelConfig, train: TrainConfig, *, device: str,
                   needs_ngram: bool) -> tuple[DataConfig, list[str]]:
    """``data`` with its content hash filled in (text and stdlib corpora: the run ids then
    change with the files' contents), and the problems of the corpus with this model:
    unreadable files, splits too short for one window, tables or sizes that do not fit."""
    key = _SIZE_KEY[data.corpus]
    try:
        facts = corpus_facts(data)
    except FileNotFoundError:
        return data, [f"[data] path: no such file or folder: {data.path}"]
    except (ValueError, OSError) as exc:  # empty, binary, not UTF-8, unreadable
        return data, [f"[data] {key}: {exc}"]
    problems = _split_problems(facts, model.block_size, key)
    if needs_ngram and facts.vocab_size ** data.ngram_order > NGRAM_MAX_ENTRIES:
        problems.append(f"[data] ngram_order: an order-{data.ngram_order} n-gram teacher over "
                        f"{facts.vocab_size} tokens has {facts.vocab_size}**{data.ngram_order} "
                        f"entries, more than {NGRAM_MAX_ENTRIES:,}; use a lower ngram_order")
    problems += _memory_problems(facts, model, train, device, key)
    if facts.content_hash is not None:
        data = dataclasses.replace(data, content_hash=facts.content_hash)
    return data, problems


def _split_problems(facts: CorpusFacts, block_size: int, key: str) -> list[str]:
    """Training and evaluation both read windows of block_size + 1 tokens from a split."""
    need = block_size + 1
    at_most = "at most " if facts.upper_bound else ""
    return [f"[data] {key}: the {split} split has {at_most}{n} tokens, fewer than "
            f"block_size + 1 = {need} (one window and its targets)"
            for split, n in (("training", facts.n_train), ("validation", facts.n_val))
            if n < need]


def _memory_problems(facts: CorpusFacts, model: ModelConfig, train: TrainConfig, device: str,
                     key: str) -> list[str]:
    need = memory_need(n_layer=model.n_layer, n_head=model.n_head, n_embd=model.n_embd,
                       block_size=model.block_size, vocab=facts.vocab_size,
                       batch_size=train.batch_size, tie_weights=model.tie_weights,
                       corpus_bytes=facts.build_bytes)
    if device == "cuda":  # the corpus is built in host memory, the model lives on the GPU
        corpus = {"corpus": need.pop("corpus")}
        lines = [(f"[data] {key}", memory_problem(corpus, machine_memory("cpu"))),
                 ("[model]/[train]", memory_problem(need, machine_memory("cuda")))]
    else:
        corpus_is_most = need["corpus"] == max(need.values())
        lines = [(f"[data] {key}" if corpus_is_most else "[model]/[train]",
                  memory_problem(need, machine_memory("cpu")))]
    return [f"{where}: {text}" for where, text in lines if text]


def tune_problems(tune: TuneSpec, train: TrainConfig) -> list[str]:
    """Tuned train values must be valid values of their field, and every tuning run (the
    tuning budget) and final run (the suite's steps) must have a sound schedule."""
    problems = [f"[tune.grid] {text}" for param, values in tune.grid if param in TRAIN_KEYS
                for v in values if (text := value_problem(TrainConfig, param, v))]
    if problems:
        return problems
    entry = RunConfig(train=train)  # the train axes apply to every loss alike
    budgets = sorted({tune.steps, train.steps})
    for setting, steps in itertools.product(settings(tune, entry), budgets):
        run = apply_setting(entry, setting, seed=0, steps=steps).train
        problems += [f"[tune] {text}" for _, text in run.schedule_problems()]
    return list(dict.fromkeys(problems))  # each problem once, however many grid points share it
