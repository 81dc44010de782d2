"""The configuration of one training run, and its stable id.

A run is fully described by a :class:`RunConfig`: the loss and its
hyperparameters, the run seed, and the data / model / train / eval / finetune
sections. Everything that can change a number is in here (including the
intra-op thread count), so equal configs give equal results and the run id,
a hash of the resolved config, names the result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import string
from dataclasses import dataclass, field
from typing import Any

from lossbench.core.fields import check, derived, described, fields_ok, ranged

# what [data] accepts: the corpora, teachers and tokenizers lossbench.data implements
CORPORA = ("markov", "text", "stdlib", "tokens", "hf")
TEACHERS = ("ngram", "oracle", "smoothed", "model")
MARKOV_MAX_TOKENS = 200_000_000
# printable symbols for decoding markov tokens: 'a'..'z', then 'A'..'Z', digits, punctuation
ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
MARKOV_MAX_ENTRIES = 50_000_000  # V**k * V float64 ~ 400 MB; more is not a "small" benchmark
TOKENIZER_NAMES = ("char", "byte", "bpe", "hf")
BPE_MIN_VOCAB = 257  # the 256 byte tokens plus at least one merge
# experiment trackers a suite's [log] or --log may name (lossbench.sweep.trackers)
TRACKERS = ("tensorboard", "mlflow", "wandb")


@dataclass(frozen=True)
class DataConfig:
    """The corpus, its tokenizer, the train/val split and the distillation teacher
    (a suite's ``[data]``)."""

    corpus: str = ranged("markov", choices=CORPORA, doc=(
        '"markov" (a random order-k Markov source generated from a seed, no files) | '
        '"text" (a UTF-8 file or folder) | "stdlib" (the running Python\'s own sources) | '
        '"tokens" (a nanoGPT-style folder of ids, lossbench.data.tokens) | '
        '"hf" (a local Hugging Face dataset, lossbench.data.hf_datasets)'))
    path: str | None = described(None, doc=(
        '"text": a UTF-8 file or folder (read recursively); "tokens": the folder of '
        'train.bin, val.bin, meta.json/meta.pkl; "hf": a save_to_disk folder, or '
        '.jsonl/.json/.csv/.parquet/.txt files (a file or a folder of them)'))
    tokenizer: str = ranged("char", choices=TOKENIZER_NAMES, doc=(
        '"char" | "byte" | "bpe" | "hf" (tokenizer_path); markov symbols are their own '
        'tokens; with corpus = "tokens", "char" means meta.pkl\'s characters if it has '
        'them, else ids are shown as ids'))
    tokenizer_path: str | None = described(None, doc='tokenizer = "hf": a Hugging Face '
                                                     'tokenizer.json')
    text_field: str = described("text", doc='corpus = "hf": the column holding the text')
    split: str = described("train", doc='corpus = "hf": the split of a DatasetDict '
                                        '(or of the files)')
    bpe_vocab: int = ranged(512, BPE_MIN_VOCAB, doc=(
        'tokenizer = "bpe" only: vocabulary size (256 byte tokens + up to bpe_vocab - 256 '
        'merges, learned on the training text; fewer if it runs out of pairs). '
        'Needs the bpe extra: pip install "lossbench[bpe]"'))
    val_fraction: float = ranged(0.1, 0.0, 1.0, low_open=True, high_open=True, doc=(
        "the last fraction of the tokens, contiguous, is the validation split (like nanoGPT)"))
    markov_vocab: int = ranged(16, 2, len(ALPHABET), doc="markov: number of symbols "
                                                         "('a'..'p' at 16)")
    markov_order: int = ranged(2, 1, doc="markov: tokens of context the chain conditions on")
    markov_concentration: float = ranged(0.3, 0.0, low_open=True, doc=(
        "markov: Dirichlet concentration of each transition row; small -> peaked, low entropy"))
    markov_tokens: int = ranged(300_000, 2, MARKOV_MAX_TOKENS, doc="markov: corpus length "
                                                                   "in tokens")
    corpus_seed: int = ranged(0, 0, doc="fixes the generated corpus; independent of the "
                                        "run seed")
    teacher: str = ranged("ngram", choices=TEACHERS, doc=(
        'the target distribution of kl / reverse_kl: "ngram" (an add-k n-gram fitted on the '
        'training split) | "oracle" (markov only: the exact next-token distribution) | '
        '"smoothed" (no teacher: the label-smoothed one-hot) | "model" (a trained network: '
        'teacher_from, or a teacher run `teacher = { run = { ... } }`, docs/distillation.md)'))
    teacher_from: str | None = described(None, doc=(
        'teacher = "model": a lossbench model.pt ([train] save_weights; its run folder\'s '
        'config.json gives the architecture), a state dict (safetensors or a torch file, read '
        'weights-only) with a [teacher_model] section, or a local Hugging Face folder'))
    teacher_topk: int = ranged(0, 0, doc=(
        'teacher = "model": keep the teacher\'s k most probable tokens per position, '
        'renormalised, and cache them per batch on disk (npz) for later sweeps; 0: the full '
        'distribution, computed live'))
    teacher_hash: str | None = derived(None, doc=(
        "what the model teacher is: sha256 of teacher_from's weights (and of an HF folder's "
        "config), or \"run:<id>\" of a teacher run, filled in when a suite is resolved; the run "
        "id names it instead of teacher_from's path"))
    ngram_order: int = ranged(3, 1, doc="n of the n-gram teacher: it conditions on n-1 tokens")
    ngram_add_k: float = ranged(0.1, 0.0, low_open=True, doc=(
        "add-k smoothing of the n-gram teacher: every teacher probability > 0"))
    stdlib_max_bytes: int = ranged(4_000_000, 1, doc="stdlib: files in sorted order up to "
                                                     "this many bytes")
    content_hash: str | None = derived(None, doc=(
        "sha256 of a corpus read from files (text, stdlib, tokens, hf), filled in when a "
        "suite is resolved so the run id changes with the contents; load_corpus refuses "
        "other bytes. None: unchecked (markov corpora are a pure function of the fields "
        "above)"))
    tokenizer_hash: str | None = derived(None, doc="sha256 of tokenizer_path's bytes, "
                                                   "likewise")

    def __post_init__(self):
        cross = []
        if self.corpus in ("tokens", "hf") and not self.path:
            cross.append(("path", f"path: corpus={self.corpus!r} needs a path"))
        if (self.tokenizer == "hf") != bool(self.tokenizer_path):
            cross.append(("tokenizer_path", "tokenizer_path: set it, to a tokenizer.json, "
                                            "exactly when tokenizer = \"hf\""))
        if self.corpus == "hf" and self.tokenizer not in ("hf", "byte"):
            cross.append(("tokenizer", "tokenizer: corpus=\"hf\" is tokenized with "
                                       "tokenizer = \"hf\" (tokenizer_path) or \"byte\""))
        if self.corpus == "tokens" and self.tokenizer == "bpe":
            cross.append(("tokenizer", "tokenizer: a token folder is already tokenized; "
                                       "\"bpe\" learns its merges from text"))
        if self.teacher == "oracle" and self.corpus != "markov":
            cross.append(("teacher", f"teacher: 'oracle' needs corpus='markov' (the only corpus "
                                     f"with a known distribution), got corpus={self.corpus!r}"))
        if self.teacher != "model" and (self.teacher_from or self.teacher_topk):
            cross.append(("teacher_from", "teacher_from / teacher_topk: apply to "
                                          "teacher = \"model\""))
        if self.corpus == "text" and not self.path:
            cross.append(("path", "path: corpus='text' needs a path to a file or folder"))
        if (self.corpus == "markov" and fields_ok(self, "markov_vocab", "markov_order")
                and self.markov_vocab ** (self.markov_order + 1) > MARKOV_MAX_ENTRIES):
            cross.append(("markov_order", f"markov_order: the transition table has "
                                          f"markov_vocab**(markov_order + 1) = "
                                          f"{self.markov_vocab}**{self.markov_order + 1} entries,"
                                          f" more than {MARKOV_MAX_ENTRIES:,}"))
        check(self, *cross)


ARCHS = ("gpt", "hf", "python:package.module:factory")


def arch_problem(arch: str, hf_config: dict, hf_path: str | None) -> str | None:
    """Why [model] arch (with its hf_config / hf_path) cannot name a model; None if it can.
    The spelling only: whether a factory imports or a path exists is checked by preflight."""
    if not isinstance(arch, str):
        return f"arch: expected a string, got {arch!r}"
    if arch.startswith("python:"):
        if not re.fullmatch(r"python:[A-Za-z_][\w.]*:[A-Za-z_]\w*", arch):
            return f"arch: expected \"python:package.module:factory\", got {arch!r}"
        return None
    if arch not in ("gpt", "hf"):
        return f"arch: unknown value {arch!r}; expected one of {ARCHS}"
    if arch == "hf" and bool(hf_config) == bool(hf_path):
        return "arch: \"hf\" needs exactly one of hf_config (a table) or hf_path (a folder)"
    if arch != "hf" and (hf_config or hf_path):
        return f"arch: hf_config / hf_path apply to arch = \"hf\", not {arch!r}"
    if hf_config and not isinstance(hf_config.get("model_type"), str):
        return "hf_config: needs model_type, e.g. model_type = \"llama\""
    return None


@dataclass(frozen=True)
class ModelConfig:
    """The GPT, minus vocab_size (which the corpus decides). nanoGPT's CPU config.

    The one definition of the model's settings and their defaults:
    :class:`lossbench.models.gpt.GPTConfig` extends it with vocab_size.
    """

    n_layer: int = ranged(4, 1, doc="transformer blocks")
    n_head: int = ranged(4, 1, doc="attention heads per block")
    n_embd: int = ranged(128, 1, doc="width C; must be divisible by n_head")
    block_size: int = ranged(64, 2, doc=(
        "context length T (at least 2: a window and its shifted targets)"))
    dropout: float = ranged(0.0, 0.0, 1.0, high_open=True, doc=(
        'dropout probability of the built-in GPT (arch = "gpt" only); its masks come from '
        'the run seed, so every loss sees the same ones'))
    bias: bool = described(False, doc=(
        "bias in Linears and LayerNorms: off, as nanoGPT's shakespeare_char config"))
    tie_weights: bool = described(True, doc="the LM head shares the token-embedding matrix")
    arch: str = described("gpt", doc=(
        '"gpt" (the built-in GPT) | "hf" (a transformers causal LM from hf_config or '
        'hf_path; pip install "lossbench[hf]") | "python:package.module:factory" (your '
        'factory(vocab_size, block_size, **model_kwargs) returning an nn.Module)'))
    hf_config: dict[str, Any] = described(doc=(
        'arch = "hf": the transformers config as a table, e.g. '
        '{ model_type = "llama", hidden_size = 128, ... }'), default_factory=dict)
    hf_path: str | None = described(None, doc=(
        'arch = "hf": a local folder with a transformers config.json'))
    model_kwargs: dict[str, Any] = described(doc="keywords of a python: factory",
                                             default_factory=dict)
    init_from: str | None = described(None, doc=(
        "start every run from these weights (fine-tuning): safetensors, or a torch file "
        "read with weights_only=True"))
    init_hash: str | None = derived(None, doc="sha256 of init_from, filled in when resolved")
    arch_hash: str | None = derived(None, doc=(
        "sha256 of the files that define a non-built-in model (a factory's module source, an "
        "hf_path's config.json), filled in when resolved: the run id changes when they do"))

    def __post_init__(self):
        cross = []
        if fields_ok(self, "arch", "hf_config", "hf_path") and \
                (text := arch_problem(self.arch, self.hf_config, self.hf_path)) is not None:
            cross.append(("arch", text))
        if fields_ok(self, "arch", "dropout") and self.dropout and self.arch != "gpt":
            cross.append(("dropout", "dropout: applies to arch = \"gpt\" only (an hf model's "
                                     "is its config's, e.g. attention_dropout; a factory's its "
                                     "own): it would change the run id and nothing else"))
        if fields_ok(self, "n_embd", "n_head") and self.n_embd % self.n_head:
            cross.append(("n_embd", f"n_embd ({self.n_embd}) must be divisible by "
                                    f"n_head ({self.n_head})"))
        check(self, *cross)


@dataclass(frozen=True)
class TrainConfig:
    """Optimization, nanoGPT's shakespeare_char CPU settings by default."""

    steps: int = ranged(2000, 1, doc="optimizer steps of the main phase")
    batch_size: int = ranged(12, 1, doc="sequences per micro-batch")
    grad_accum: int = ranged(1, 1, doc="micro-batches per optimizer step")
    lr: float = ranged(1e-3, 0.0, low_open=True, doc="peak learning rate, after linear warmup")
    min_lr: float = ranged(1e-4, 0.0, doc="learning rate at the end of the cosine decay")
    warmup_steps: int = ranged(100, 0, doc="steps of linear warmup from 0 to lr")
    decay_steps: int | None = ranged(None, 0, doc="length of the cosine decay; None or 0: "
                                                  "steps")
    weight_decay: float = ranged(0.1, 0.0, doc="AdamW weight decay, on matrices only (not "
                                               "biases, norms)")
    beta1: float = ranged(0.9, 0.0, 1.0, high_open=True, doc="AdamW beta1")
    beta2: float = ranged(0.99, 0.0, 1.0, high_open=True, doc="AdamW beta2")
    grad_clip: float = ranged(1.0, 0.0, doc="max global gradient norm; 0 disables clipping")
    threads: int = ranged(1, 1, 256, doc=(
        "intra-op threads of this run: part of the run id, since float results depend on it"))
    checkpoint_every: int = ranged(250, 0, doc=(
        "steps between checkpoints; 0 disables (only used with a checkpoint dir)"))
    save_weights: bool = described(False, doc=(
        "keep the final weights as runs/<id>/model.pt (for init_from)"))

    def __post_init__(self):
        check(self)

    def schedule_problems(self) -> list[tuple[str, str]]:
        """Schedules that run but do not do what they say: a warmup longer than the run
        never reaches the peak lr, a floor above the peak decays upwards. Checked for
        suites only: from Python, a 1-step smoke run with the default warmup is fine."""
        problems = []
        if self.min_lr > self.lr:
            problems.append(("min_lr", f"min_lr={self.min_lr!r} is above lr={self.lr!r}: "
                                       f"the cosine would decay upwards"))
        if self.warmup_steps > self.steps:
            problems.append(("warmup_steps", f"warmup_steps={self.warmup_steps} is longer than "
                                             f"steps={self.steps}: the peak lr is never reached"))
        return problems


# [eval] grad_stats: the levels and their stored values (true and false were its first values)
GRAD_STATS = (True, False, "off", "cheap", "full")
_GRAD_LEVEL = {"off": False, "cheap": True}


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation on fixed validation tokens, independent of the training loss."""

    eval_every: int = ranged(250, 1, doc="steps between evaluations (and always at the end)")
    val_windows: int = ranged(64, 2, doc="fixed validation windows of block_size tokens")
    ece_bins: int = ranged(15, 1, 1000, doc="bins of the expected calibration error")
    grad_stats: bool | str = ranged(True, choices=GRAD_STATS, doc=(
        "gradient behaviour at the updates that end at an eval step (lossbench.train."
        "gradients): \"off\" (= false), \"cheap\" (= true: norms, cosine with CE, noise "
        "scale, signal-to-noise, sharpness, update ratios) or \"full\" (+ the raw Hessian's "
        "top eigenvalue, more Lanczos steps); stored as false / true / \"full\", so a suite "
        "that says \"cheap\" keeps its run ids"))
    rep_prefixes: int = ranged(8, 1, doc="greedy continuations for seq-rep-4 / uniq-seq")
    rep_prefix_len: int = ranged(16, 1, doc="tokens of each continuation's prompt")
    rep_continuation: int = ranged(48, 4, doc="tokens generated per continuation")
    rep_context: int = ranged(128, 1, 65536, doc=(
        "l of rep/wrep (Welleck et al.'s rep/128): the l most recent tokens; within a window "
        "at most block_size (the effective l is reported)"))
    rep_stream: bool = described(False, doc=(
        "rep/wrep over the val stream: each position's l context tokens include those before "
        "its window, so l may exceed block_size (the paper's rep/l at any block size); "
        "positions whose l tokens would start before the split are left out"))
    samples: int = ranged(3, 0, doc="decoded samples kept for the report")
    full_val_windows: int = ranged(4096, 0, doc=(
        "the final evaluation also scores up to this many consecutive val windows (the whole "
        "split when it fits: val_ce_full, comparable with other codebases); 0: off"))

    def __post_init__(self):
        check(self)
        object.__setattr__(self, "grad_stats", _GRAD_LEVEL.get(self.grad_stats, self.grad_stats))


@dataclass(frozen=True)
class ReportConfig:
    """How the report judges the runs (lossbench.analysis.inference); part of no run id."""

    margin: float | None = ranged(None, 0.0, low_open=True, doc=(
        "the practical margin m on the primary metric, in its unit: \"better\"/\"worse\" "
        "need a significant difference of at least m, and \"practically equivalent\" is "
        "TOST within ±m; unset: 0.005 on a metric in nats/token (0.5% of perplexity), "
        "else 0.5% of the baseline's mean"))

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class FinetuneConfig:
    """Optional sequence-level unlikelihood phase after the main steps (Welleck et al. 2020)."""

    steps: int = ranged(0, 0, doc="optimizer steps of the phase; 0: no phase")
    loss: str = described("sequence_unlikelihood", doc="the loss of the phase (a registered "
                                                       "name)")
    hparams: dict[str, Any] = described(doc="that loss's hyperparameters",
                                        default_factory=dict)
    lr: float = ranged(1e-4, 0.0, doc="learning rate, constant during the phase")
    prefix_len: int = ranged(16, 1, doc="tokens of each generation's prompt")
    continuation_len: int = ranged(48, 4, doc="tokens generated per continuation")
    mle_mix: float = ranged(0.5, 0.0, 1.0, doc=(
        "probability, per step, of an MLE (training-loss) update instead"))
    loss_source: str | None = derived(None, doc=(
        "the phase loss's definition, as RunConfig.loss_source"))

    def __post_init__(self):
        check(self)


# fields added after results existed, left out of the run id while at their default
_ADDED_AT_DEFAULT = (
    ("data", "content_hash", None), ("data", "tokenizer_path", None),
    ("data", "tokenizer_hash", None), ("data", "text_field", "text"), ("data", "split", "train"),
    ("model", "arch", "gpt"), ("model", "hf_config", {}), ("model", "hf_path", None),
    ("model", "model_kwargs", {}), ("model", "init_from", None), ("model", "init_hash", None),
    ("model", "arch_hash", None), ("train", "save_weights", False),
    ("", "loss_source", None), ("finetune", "loss_source", None),  # "": a top-level field
    ("data", "teacher_from", None), ("data", "teacher_topk", 0), ("data", "teacher_hash", None),
    ("", "teacher_model", None),
)


def parse_seeds(value: Any) -> list[int] | None:
    """Seeds as a suite writes them: a non-empty list of non-negative integers, or n for
    0..n-1. None when ``value`` is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = list(range(value))
    if isinstance(value, list) and value and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        return value
    return None


def hparam_columns(hparams: dict[str, Any]) -> dict[str, Any]:
    """A run's hyperparameters as table columns: ``hp_<name>`` (summary.csv, trackers)."""
    return {f"hp_{k}": v for k, v in hparams.items()}


def display_name(label: str, loss: str) -> str:
    """A run's name in tables and reports: its label, else its loss (one rule for live
    configs and stored ones, :func:`lossbench.store.runs.label_of`)."""
    return label or loss


@dataclass(frozen=True)
class RunConfig:
    """One training run: the loss and its hyperparameters, the run seed, and the data,
    model, train, eval and finetune sections. Everything that can change a result is in
    here, so equal configs give equal results and :meth:`run_id` names the result."""

    loss: str = "cross_entropy"
    hparams: dict[str, Any] = field(default_factory=dict)
    seed: int = 0  # initial weights, batch order and dropout masks: never the loss
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    device: str = "cpu"  # "cpu" | "cuda" (bf16 autocast on cuda)
    label: str = ""  # display name in reports; "" means the loss name
    loss_source: str | None = derived(None, doc=(
        "what defines the loss, filled in when a suite is resolved (lossbench.losses."
        "identity): a plugin's source hash, a built-in's definition version from 2 on; None: "
        "a built-in at version 1, or unresolved (then unchecked)"))
    teacher_model: ModelConfig | None = None  # [data] teacher = "model": its architecture

    @property
    def display_name(self) -> str:
        return display_name(self.label, self.loss)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                    "eval": EvalConfig, "finetune": FinetuneConfig}
        kwargs = {k: (sections[k](**v) if k in sections else v) for k, v in d.items()}
        if isinstance(kwargs.get("teacher_model"), dict):
            kwargs["teacher_model"] = ModelConfig(**kwargs["teacher_model"])
        return cls(**kwargs)

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run: the training steps, then the fine-tuning
        phase's (0 without one)."""
        return self.train.steps + self.finetune.steps

    def run_id(self) -> str:
        """Stable id: loss name plus a hash of the whole resolved config (device
        included: CPU and CUDA runs give different numbers). Computed once per config
        (the config is frozen; its hparams dict is never changed after construction)."""
        cached = self.__dict__.get("_run_id")
        if cached is None:
            cached = self._hash_id()
            object.__setattr__(self, "_run_id", cached)
        return cached

    def _hash_id(self) -> str:
        d = self.to_dict()
        for section, key, default in _ADDED_AT_DEFAULT:
            table = d[section] if section else d
            if table.get(key, default) == default:
                # added after the first results: absent, the ids of older results still hold
                table.pop(key, None)
        if d["data"].get("teacher_hash") is not None:  # the teacher's contents name it, not
            d["data"].pop("teacher_from", None)  # where its file lies (a results folder)
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return f"{self.loss}-{hashlib.sha256(blob).hexdigest()[:12]}"
