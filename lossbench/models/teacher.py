"""A trained network as the distillation teacher ([data] teacher = "model").

The teacher's next-token distribution is computed per batch, in the student's process, under
``no_grad`` and in eval mode (no dropout): it draws no random numbers, so the student's
batches, initial weights and dropout masks are those of every other loss of its seed. Its
weights come from ``teacher_from`` (a lossbench model.pt, a state dict, or a Hugging Face
folder: lossbench.models.weights reads them all weights-only), its architecture from the
run config's ``teacher_model``.

With ``teacher_topk = k`` the teacher keeps its k most probable tokens per position,
renormalised over them (t_c / sum_topk t, 0 elsewhere), and each batch's k log-probabilities
and indices are cached on disk (``.npz``, read with ``allow_pickle=False``), keyed by the
teacher, the corpus, the seed, the batch index and k: a later sweep of the same students reads
them instead of running the teacher. Live and cached top-k give the same numbers (the cache
stores exactly what the live path computes). What truncation does to each divergence is in
docs/distillation.md: every loss then sees a teacher with exact zeros outside the top k.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lossbench.core.config import ModelConfig, RunConfig
from lossbench.models import build

CACHE_VERSION = "lossbench teacher cache v1"


def teacher_model_config(config: RunConfig) -> ModelConfig:
    """The teacher's architecture with its weights file as ``init_from`` (ValueError when the
    run names no model teacher or its weights are not there)."""
    data, m = config.data, config.teacher_model
    if data.teacher != "model" or m is None:
        raise ValueError("[data] teacher = \"model\" needs the teacher's architecture "
                         "(teacher_model): resolve the suite (lossbench.suite.load)")
    if not data.teacher_from or not Path(data.teacher_from).expanduser().exists():
        raise ValueError(f"[data] teacher_from: no teacher weights at {data.teacher_from!r} "
                         f"(a teacher run that did not finish?)")
    init_hash = data.teacher_hash if data.teacher_hash and ":" not in data.teacher_hash else None
    return ModelConfig(**{**m.__dict__, "init_from": data.teacher_from, "init_hash": init_hash,
                          "dropout": 0.0})


def describe(m: ModelConfig) -> str:
    """"4x128" (layers x width) for the built-in GPT, else the arch (its hf_path's name)."""
    if m.arch == "gpt":
        return f"{m.n_layer}\u00d7{m.n_embd}"
    return Path(m.hf_path).name if m.hf_path else m.arch


class ModelTeacher:
    """Teacher distributions of a trained network for the student's batches."""

    def __init__(self, config: RunConfig, vocab_size: int, device: str = "cpu",
                 cache_dir: str | Path | None = None):
        self.spec = teacher_model_config(config)
        self.model: nn.Module = build(self.spec, vocab_size, seed=0).to(device)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.vocab_size, self.device, self.topk = vocab_size, device, config.data.teacher_topk
        self.description = describe(config.teacher_model)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.cache_dir = Path(cache_dir) if cache_dir and self.topk else None
        self._key = _cache_key(config) if self.cache_dir else ""

    def forward_flops_per_token(self) -> int:
        """The teacher's forward pass: a third of its training FLOPs/token (6N + attention)."""
        fpt = getattr(self.model, "flops_per_token", None)
        return int(fpt() // 3) if callable(fpt) else 2 * self.params

    @torch.no_grad()
    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log softmax of the teacher's logits for inputs ``x`` (B, T): (B, T, V) float32."""
        return F.log_softmax(self.model(x.to(self.device)).float(), dim=-1)

    def probs(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """The teacher's distribution for batch ``index`` with inputs ``x``: (B, T, V) float32,
        top-k truncated and renormalised when ``teacher_topk`` is set."""
        if not self.topk:
            return self.log_probs(x).exp()
        cached = self._read(index)
        if cached is None:
            top = self.log_probs(x).topk(min(self.topk, self.vocab_size), dim=-1)  # (B, T, k)
            cached = (top.values.cpu(), top.indices.cpu())
            self._write(index, *cached)
        values, indices = cached
        return topk_distribution(values, indices, self.vocab_size).to(self.device)

    @torch.no_grad()
    def val_ce(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """The teacher's mean cross-entropy on the evaluation windows (full distribution)."""
        logp = self.log_probs(x)
        return float(F.nll_loss(logp.flatten(0, 1), y.to(logp.device).flatten()))

    def _file(self, index: int) -> Path:
        return self.cache_dir / self._key / f"batch{index:08d}.npz"

    def _read(self, index: int):
        if self.cache_dir is None or not self._file(index).exists():
            return None
        with np.load(self._file(index), allow_pickle=False) as f:
            return torch.from_numpy(f["logp"]), torch.from_numpy(f["index"].astype(np.int64))

    def _write(self, index: int, values: torch.Tensor, indices: torch.Tensor) -> None:
        if self.cache_dir is None:
            return
        path = self._file(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, logp=values.numpy(), index=indices.numpy().astype(np.int32))
        os.replace(tmp, path)  # whole or absent: parallel students may write the same batch


def topk_distribution(logp: torch.Tensor, index: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The renormalised top-k teacher: softmax over the k kept log-probabilities, 0 elsewhere.
    (B, T, k), (B, T, k) -> (B, T, V).

    Examples:
        >>> import math, torch
        >>> logp = torch.tensor([[[math.log(0.6), math.log(0.2)]]])
        >>> topk_distribution(logp, torch.tensor([[[2, 0]]]), 4).tolist()
        [[[0.25, 0.0, 0.75, 0.0]]]
    """
    out = torch.zeros(*logp.shape[:-1], vocab_size, dtype=torch.float32)
    return out.scatter_(-1, index.long(), torch.softmax(logp.float(), dim=-1))


def _cache_key(config: RunConfig) -> str:
    """What a cached batch depends on: the teacher, the corpus, the batches (seed, batch size,
    block size), k, and the threads and device the teacher ran with."""
    d, t = config.data, config.train
    blob = json.dumps([CACHE_VERSION, d.teacher_hash, {k: v for k, v in d.__dict__.items()
                                                      if not k.startswith("teacher")},
                       config.seed, t.batch_size, config.model.block_size, d.teacher_topk,
                       t.threads, config.device], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

