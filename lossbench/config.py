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
from dataclasses import dataclass, field
from typing import Any

from lossbench.data.corpora import DataConfig


@dataclass(frozen=True)
class ModelConfig:
    """The GPT, minus vocab_size (which the corpus decides). nanoGPT's CPU config."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64  # context length T
    dropout: float = 0.0
    bias: bool = False  # nanoGPT's shakespeare_char config
    tie_weights: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """Optimization, nanoGPT's shakespeare_char CPU settings by default."""

    steps: int = 2000
    batch_size: int = 12
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # peak, after linear warmup
    min_lr: float = 1e-4  # end of the cosine decay
    warmup_steps: int = 100
    decay_steps: int | None = None  # cosine length; None: = steps
    weight_decay: float = 0.1  # AdamW, on matrices only (not biases, norms)
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    threads: int = 1  # intra-op threads of this run: float results depend on it
    checkpoint_every: int = 250  # steps; 0 disables (only used with a checkpoint dir)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation on fixed validation tokens, independent of the training loss."""

    eval_every: int = 250  # steps (and always at the end)
    val_windows: int = 64  # fixed val windows of block_size tokens
    ece_bins: int = 15
    grad_stats: bool = True  # per-layer grad norms and cosine to the CE gradient at eval steps
    rep_prefixes: int = 8  # greedy continuations for seq-rep-4 / uniq-seq
    rep_prefix_len: int = 16
    rep_continuation: int = 48
    samples: int = 3  # decoded samples kept for the report
    full_val_windows: int = 4096  # final eval also scores up to this many consecutive val windows
    #   (the whole split when it fits: val_ce_full, comparable with other codebases); 0: off


@dataclass(frozen=True)
class FinetuneConfig:
    """Optional sequence-level unlikelihood phase after the main steps (Welleck et al. 2020)."""

    steps: int = 0  # 0: no phase
    loss: str = "sequence_unlikelihood"
    hparams: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-4  # constant during the phase
    prefix_len: int = 16
    continuation_len: int = 48
    mle_mix: float = 0.5  # probability of an MLE (training-loss) update instead, per step


def parse_seeds(value: Any) -> list[int] | None:
    """Seeds as a suite writes them: a non-empty list of non-negative integers, or n for
    0..n-1. None when ``value`` is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = list(range(value))
    if isinstance(value, list) and value and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        return value
    return None


@dataclass(frozen=True)
class RunConfig:
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

    @property
    def display_name(self) -> str:
        return self.label or self.loss

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                    "eval": EvalConfig, "finetune": FinetuneConfig}
        kwargs = {k: (sections[k](**v) if k in sections else v) for k, v in d.items()}
        return cls(**kwargs)

    def run_id(self) -> str:
        """Stable id: loss name plus a hash of the whole resolved config (device
        included: CPU and CUDA runs give different numbers)."""
        d = self.to_dict()
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return f"{self.loss}-{hashlib.sha256(blob).hexdigest()[:12]}"
