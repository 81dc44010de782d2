"""Checks of a suite that span its sections, its files and the machine, made before any
run starts: what field ranges alone cannot see (lossbench.core.fields has those).

Each function returns problems as lines ``[section] key: message``; the suite loader
adds the file name and reports them all at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from pathlib import Path

from lossbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from lossbench.core.extras import import_extra
from lossbench.core.fields import value_problem
from lossbench.core.memory import machine_memory, memory_need, memory_problem
from lossbench.data.corpora import CorpusFacts, corpus_facts
from lossbench.data.teachers import MAX_TABLE_ENTRIES as NGRAM_MAX_ENTRIES
from lossbench.data.teachers import NGRAM_CHUNK
from lossbench.losses import get_loss
from lossbench.losses.identity import loss_identity
from lossbench.suite.tuning import TRAIN_KEYS, TuneSpec, apply_setting, settings

# the n-gram teacher's peak per counted position (measured with tracemalloc, orders 1 and
# 2): the int64 tokens, context ids and (context, target) ids of one chunk, 8 bytes each
NGRAM_BYTES_PER_TOKEN = 24
# the [data] key that decides how many tokens a corpus has
_SIZE_KEY = {"markov": "markov_tokens", "text": "path", "stdlib": "stdlib_max_bytes",
             "tokens": "path", "hf": "path"}


def missing_paths(data: DataConfig, model: ModelConfig,
                  suite_dir: Path | None = None) -> dict[str, list[str]]:
    """Section -> problems, for the files a suite names that are not there. A relative path
    is read from the working directory (as written: it is part of the run id), so the line
    names the absolute path tried, and the suite's folder when the path is there instead."""
    found: dict[str, list[str]] = {}
    path = data.path if data.corpus in ("text", "tokens", "hf") else None  # markov: unused
    for section, key, value in (("data", "path", path),
                                ("data", "tokenizer_path", data.tokenizer_path),
                                ("model", "hf_path", model.hf_path),
                                ("model", "init_from", model.init_from)):
        if value is None or (tried := Path(value).expanduser()).exists():
            continue
        text = f"[{section}] {key}: no such file or folder: {value}"
        if not tried.is_absolute():
            text += f" (relative to the working directory: tried {tried.absolute()}"
            beside = (suite_dir / tried) if suite_dir is not None else None
            if beside is not None and beside.exists():
                text += (f"; {beside} exists: paths are read from where lossbench runs, not "
                         f"from the suite's folder")
            text += ")"
        found.setdefault(section, []).append(text)
    return found


def resolve_corpus(data: DataConfig, model: ModelConfig, train: TrainConfig, *, device: str,
                   needs_ngram: bool) -> tuple[DataConfig, list[str]]:
    """``data`` with its content hash filled in (text and stdlib corpora: the run ids then
    change with the files' contents), and the problems of the corpus with this model:
    a missing optional extra, unreadable files, splits too short for one window, tables or
    sizes that do not fit."""
    key = _SIZE_KEY[data.corpus]
    if data.tokenizer == "bpe":  # learned at run time: corpus_facts only counts bytes
        try:
            import_extra("tokenizers", 'tokenizer "bpe"', "bpe")
        except ImportError as exc:
            return data, [f"[data] tokenizer: {exc}"]
    if data.tokenizer == "hf":
        try:
            raw = Path(data.tokenizer_path).expanduser().read_bytes()
        except OSError as exc:
            return data, [f"[data] tokenizer_path: cannot read {data.tokenizer_path}: "
                          f"{exc.strerror or exc}"]
        data = dataclasses.replace(data, tokenizer_hash=hashlib.sha256(raw).hexdigest())
    try:
        facts = corpus_facts(data)
    except ImportError as exc:  # an optional extra: the message names the pip command
        return data, [f"[data] {data.corpus}: {exc}"]
    except FileNotFoundError as exc:
        return data, [f"[data] path: no such file or folder: {data.path}"
                      if data.corpus in ("text", "hf") else f"[data] path: {exc}"]
    except (ValueError, OSError) as exc:  # empty, binary, not UTF-8, unreadable
        return data, [f"[data] {key}: {exc}"]
    except Exception as exc:  # a tokenizer file or dataset its library cannot read
        return data, [f"[data] {key}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"]
    problems = _split_problems(facts, model.block_size, key)
    if needs_ngram and facts.vocab_size ** data.ngram_order > NGRAM_MAX_ENTRIES:
        problems.append(f"[data] ngram_order: an order-{data.ngram_order} n-gram teacher over "
                        f"{facts.vocab_size} tokens has {facts.vocab_size}**{data.ngram_order} "
                        f"entries, more than {NGRAM_MAX_ENTRIES:,}; use a lower ngram_order")
    if needs_ngram and data.corpus in ("tokens", "hf"):  # mapped; the teacher counts it
        #   in chunks of int64 arrays (lossbench.data.teachers.ngram_counts)
        facts = dataclasses.replace(facts, build_bytes=min(facts.n_train, NGRAM_CHUNK)
                                    * NGRAM_BYTES_PER_TOKEN)
    problems += _memory_problems(facts, model, train, device, key)
    if facts.content_hash is not None:
        data = dataclasses.replace(data, content_hash=facts.content_hash)
    return data, problems


def resolve_losses(run: RunConfig) -> RunConfig:
    """``run`` with what defines its loss (and its fine-tuning phase's) filled in: a
    plugin's source hash, a built-in's definition version (lossbench.losses.identity), so
    the run id changes when the loss's code does. Plugins must be loaded first."""
    ft = run.finetune
    if ft.steps:  # a phase of 0 steps never calls its loss
        ft = dataclasses.replace(ft, loss_source=loss_identity(get_loss(ft.loss)))
    return dataclasses.replace(run, loss_source=loss_identity(get_loss(run.loss)), finetune=ft)


def device_problem(device) -> str | None:
    """Why a suite cannot run on ``device``: "cpu", "cuda" (checked by the command line when
    it starts) or "mps" (Apple GPUs, where torch sees one)."""
    if device not in ("cpu", "cuda", "mps"):
        return f"expected \"cpu\", \"cuda\" or \"mps\", got {device!r}"
    if device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            return "\"mps\": torch sees no Apple GPU (MPS) on this machine"
    return None


def resolve_model(model: ModelConfig) -> tuple[ModelConfig, list[str]]:
    """``model`` with init_from's hash and the hash of its definition files filled in (the
    run ids then change with the weights, a factory's module, an hf_path's config.json),
    and what would stop it from being built: a missing extra, a config transformers cannot
    read, a factory that does not import, weights that are not there."""
    problems = []
    what = "hf_path" if model.hf_path else "hf_config" if model.arch == "hf" else "arch"
    try:
        if model.arch != "gpt":
            from lossbench.models import arch_hash, check_build

            check_build(model)  # on the meta device: what building shows, at no cost
            model = dataclasses.replace(model, arch_hash=arch_hash(model))
    except ImportError as exc:
        problems.append(f"[model] arch: {str(exc).splitlines()[0]}")
    except FileNotFoundError as exc:  # an hf_path that is not there
        problems.append(f"[model] {what}: {exc}")
    except Exception as exc:  # an unknown model_type, a bad key, a factory that is missing
        problems.append(f"[model] {what}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    if model.init_from:
        from lossbench.models import init_problem
        from lossbench.models.weights import check_loadable, weights_hash

        try:
            model = dataclasses.replace(model, init_hash=weights_hash(model.init_from))
            check_loadable(model.init_from)
            if not problems and (problem := init_problem(model)) is not None:
                problems.append(f"[model] {problem}")  # keys, a tied matrix held untied
        except ImportError as exc:  # safetensors files without the extra
            problems.append(f"[model] init_from: {exc}")
        except OSError as exc:  # weight_files names init_from and what it looked for
            problems.append(f"[model] {exc}" if str(exc).startswith("init_from")
                            else f"[model] init_from: {exc}")
        except (ValueError, KeyError) as exc:  # a shard index that is not one
            problems.append(f"[model] init_from: {model.init_from}: unreadable ({exc})")
    return model, problems


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
