"""Every architecture a run can train: the built-in GPT, a Hugging Face causal LM, or any
``factory(vocab_size, block_size, **model_kwargs) -> nn.Module`` mapping (B, T) ids to
(B, T, V) logits ([model] arch = "gpt" | "hf" | "python:package.module:factory").

The guarantees of lossbench.model hold for each: the model returns logits only (every loss
is computed outside it, from the same logits), and its initial weights depend on the run
seed alone -- it is constructed inside ``fork_rng`` after ``manual_seed(seed)``, so the
global RNG is neither read nor changed. ``init_from`` then overwrites the weights with a
local checkpoint's (weights-only loading, lossbench.models.weights): the fine-tuning
comparison, where every loss starts from the same pretrained model.

A non-GPT model is wrapped in :class:`CausalLM`, which gives it what training and
evaluation use from the GPT: ``block_size``, parameter groups for gradient norms, and
FLOPs per token (PaLM's formula where the config names layers, width and heads; else
6 x parameters, an estimate that leaves attention out, and ``flops_note`` says so).
"""

from __future__ import annotations

import importlib
import os
import re
import sys

import torch
import torch.nn as nn

from lossbench.config import ModelConfig
from lossbench.model import GPT, build_model

from .weights import load_weights


class CausalLM(nn.Module):
    """A (B, T) -> (B, T, V) module (``hf``: a transformers model) behind GPT's interface."""

    def __init__(self, net: nn.Module, block_size: int, vocab_size: int, hf: bool):
        super().__init__()
        self.net, self.block_size, self.vocab_size, self.hf = net, block_size, vocab_size, hf
        self.flops_note = ""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"cannot forward a sequence of length {T}: block_size is only "
                             f"{self.block_size}")
        logits = self.net(input_ids=idx, use_cache=False).logits if self.hf else self.net(idx)
        if not isinstance(logits, torch.Tensor) or logits.shape != (B, T, self.vocab_size):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise ValueError(f"the model must map (B, T) ids to (B, T, V) logits: got {got} "
                             f"for input {(B, T)}, V = {self.vocab_size}")
        return logits  # (B, T, V)

    def _lookup_only(self) -> list[nn.Parameter]:
        """Embedding tables that are not also an output matrix (tied): pure lookups."""
        out_ids = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)}
        return [m.weight for m in self.modules()
                if isinstance(m, nn.Embedding) and id(m.weight) not in out_ids]

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(p.numel() for p in self._lookup_only())
        return n

    def flops_per_token(self) -> int:
        """6 N + 12 L H Q T (PaLM appendix B, as the GPT's) when the config says L, H, Q;
        otherwise 6 N, and ``flops_note`` says it is an estimate."""
        n = self.num_params(non_embedding=True)
        cfg = getattr(self.net, "config", None)
        layers = getattr(cfg, "num_hidden_layers", None)
        heads = getattr(cfg, "num_attention_heads", None)
        hidden = getattr(cfg, "hidden_size", None)
        if layers and heads and hidden:
            head_dim = getattr(cfg, "head_dim", None) or hidden // heads
            self.flops_note = ""
            return 6 * n + 12 * layers * heads * head_dim * self.block_size
        self.flops_note = ("FLOPs/token estimated as 6 x parameters (no formula for this "
                           "architecture; attention not counted)")
        return 6 * n

    def param_groups_for_norms(self) -> dict[str, list[nn.Parameter]]:
        """"embed" (lookup tables), "block{i}" (parameters under a numbered layer), "head"
        (the rest: final norm, output matrix); each parameter in exactly one group."""
        lookup = {id(p) for p in self._lookup_only()}
        groups: dict[str, list[nn.Parameter]] = {"embed": []}
        blocks: dict[int, list[nn.Parameter]] = {}
        head = []
        for name, p in self.named_parameters():  # tied parameters appear once
            layer = re.search(r"\.(\d+)\.", f".{name}")
            if id(p) in lookup:
                groups["embed"].append(p)
            elif layer:
                blocks.setdefault(int(layer.group(1)), []).append(p)
            else:
                head.append(p)
        groups.update({f"block{i}": blocks[i] for i in sorted(blocks)})
        groups["head"] = head
        return groups


def _factory(arch: str):
    """The callable ``python:package.module:factory`` names (ImportError/AttributeError
    with the name when it cannot be found). The module is found as ``python -m`` finds
    one: the working directory first, so a factory in your project imports when lossbench
    runs from its root (the ``lossbench`` script itself does not put it on the path)."""
    module, name = arch[len("python:"):].split(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    fn = getattr(importlib.import_module(module), name)
    if not callable(fn):
        raise TypeError(f"{module}.{name} is not callable")
    return fn


def _construct(m: ModelConfig, vocab_size: int) -> nn.Module:
    if m.arch == "gpt":
        return GPT(m.to_gpt(vocab_size))
    if m.arch == "hf":
        from .hf import build_hf

        return CausalLM(build_hf(m, vocab_size), m.block_size, vocab_size, hf=True)
    net = _factory(m.arch)(vocab_size, m.block_size, **m.model_kwargs)
    if not isinstance(net, nn.Module):
        raise TypeError(f"{m.arch} returned {type(net).__name__}, not a torch.nn.Module")
    return CausalLM(net, m.block_size, vocab_size, hf=False)


def build(m: ModelConfig, vocab_size: int, seed: int) -> nn.Module:
    """The model ``m`` describes, its initial weights a function of ``seed`` alone (or of
    ``init_from``'s file, the same for every seed)."""
    if m.arch == "gpt" and not m.init_from:
        return build_model(m.to_gpt(vocab_size), seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _construct(m, vocab_size)
    if m.init_from:
        load_weights(model, m.init_from, m.init_hash)
    return model


def flops_note(model: nn.Module) -> str:
    """Why the model's FLOPs/token is an estimate ("" when it is the formula)."""
    return getattr(model, "flops_note", "")


__all__ = ["CausalLM", "build", "flops_note", "load_weights"]
