"""Every architecture a run can train: the built-in GPT, a Hugging Face causal LM, or any
``factory(vocab_size, block_size, **model_kwargs) -> nn.Module`` mapping (B, T) ids to
(B, T, V) logits ([model] arch = "gpt" | "hf" | "python:package.module:factory").

The guarantees of lossbench.models.gpt hold for each: the model returns logits only (every loss
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

import hashlib
import importlib
import inspect
import os
import re
import sys
from pathlib import Path

import torch
import torch.nn as nn

from lossbench.core.config import ModelConfig
from lossbench.models.gpt import GPT, GPTConfig, build_model

from .weights import load_target, load_weights, read_state, state_problem


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

    def forward_with_hidden(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, T, V), last hidden states (B, T, C)) for a loss that declares
        ``needs_hidden``: transformers' ``output_hidden_states`` (the last entry: after the
        final norm, for GPT-2 and Llama-style models), a factory module's own
        ``forward_with_hidden`` (:func:`hidden_problem` refuses one without it)."""
        B, T = idx.shape
        if self.hf:
            out = self.net(input_ids=idx, use_cache=False, output_hidden_states=True)
            logits, hidden = out.logits, out.hidden_states[-1]
        elif callable(getattr(self.net, "forward_with_hidden", None)):
            logits, hidden = self.net.forward_with_hidden(idx)
        else:
            raise ValueError(f"{type(self.net).__name__} has no forward_with_hidden(idx) -> "
                             f"(logits (B, T, V), hidden (B, T, C)): a loss that needs "
                             f"hidden states cannot train it")
        if logits.shape != (B, T, self.vocab_size) or hidden.dim() != 3 \
                or hidden.shape[:2] != (B, T):
            raise ValueError(f"forward_with_hidden must return logits (B, T, V) and hidden "
                             f"states (B, T, C): got {tuple(logits.shape)} and "
                             f"{tuple(hidden.shape)} for input {(B, T)}")
        return logits, hidden

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


def definition_files(m: ModelConfig) -> list[Path]:
    """The files that define ``m``'s model beyond its config fields: a factory's module
    source (and the module that defines the factory, when it is re-exported), an hf_path's
    config.json (what ``AutoConfig.from_pretrained`` reads). None for the built-in GPT and
    an inline hf_config, which the run id holds already. Only these files: a factory that
    imports code from other modules of yours is not followed there."""
    if m.arch == "hf" and m.hf_path:
        root = Path(m.hf_path).expanduser()
        return [root / "config.json" if root.is_dir() else root]
    if m.arch.startswith("python:"):
        fn = _factory(m.arch)
        modules = [sys.modules[m.arch[len("python:"):].split(":")[0]], inspect.getmodule(fn)]
        files = []
        for module in modules:
            name = getattr(module, "__file__", None) if module is not None else None
            if name and Path(name) not in files:
                files.append(Path(name))
        return files
    return []


def arch_hash(m: ModelConfig) -> str | None:
    """sha256 over :func:`definition_files` (names and contents), or None when there are
    none: ModelConfig.arch_hash, which puts the model's definition into the run id."""
    files = definition_files(m)
    if not files:
        return None
    h = hashlib.sha256(b"lossbench model definition v1\n")
    for f in files:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        if m.arch.startswith("python:"):
            _check_imported(f, digest)
        h.update(f"{f.name} {digest}\n".encode())
    return h.hexdigest()


# module file -> (the module object, sha256 of the file when that object was first hashed)
_IMPORTED: dict[Path, tuple[object, str]] = {}


def _check_imported(file: Path, digest: str) -> None:
    """The run id names the file on disk, but this process builds with the code it imported:
    refuse a file edited since (Python does not import a module again)."""
    module = next((mod for mod in list(sys.modules.values())
                   if getattr(mod, "__file__", None) == str(file)), None)
    seen = _IMPORTED.get(file)
    if seen is None or seen[0] is not module:  # first seen in this process (or re-imported)
        _IMPORTED[file] = (module, digest)
    elif seen[1] != digest:
        raise ValueError(f"{file} changed since this process imported it: restart Python "
                         f"to build the new version")


def _construct(m: ModelConfig, vocab_size: int) -> nn.Module:
    if m.arch == "gpt":
        return GPT(GPTConfig.of(m, vocab_size))
    if m.arch == "hf":
        from .hf import build_hf

        return CausalLM(build_hf(m, vocab_size), m.block_size, vocab_size, hf=True)
    net = _factory(m.arch)(vocab_size, m.block_size, **m.model_kwargs)
    if not isinstance(net, nn.Module):
        raise TypeError(f"{m.arch} returned {type(net).__name__}, not a torch.nn.Module")
    return CausalLM(net, m.block_size, vocab_size, hf=False)


def hidden_problem(m: ModelConfig) -> str | None:
    """Why ``m``'s model cannot give its last hidden states (a loss with ``needs_hidden``),
    one line; None when it can: the GPT and transformers models always, a factory's module
    when it has ``forward_with_hidden(idx) -> (logits, hidden)`` (checked on the meta
    device; a factory that cannot be built there is checked when its run builds it)."""
    if not m.arch.startswith("python:"):
        return None
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = _construct(m, 256)
    except Exception:  # check_build reports what is wrong with the model itself
        return None
    if callable(getattr(model.net, "forward_with_hidden", None)):
        return None
    return (f"[model] arch: {m.arch} does not expose its last hidden states: give its module "
            f"a method forward_with_hidden(idx) -> (logits (B, T, V), hidden (B, T, C))")


def check_build(m: ModelConfig, vocab_size: int = 256) -> None:
    """Construct ``m``'s model on the meta device (no memory, no random numbers drawn from
    the global generator), so what only building shows -- a model_type with no causal LM,
    keywords the factory does not take, a factory that returns no Module or no (B, T, V)
    logits -- stops the suite before any run instead of failing every run. The corpus's
    vocabulary replaces ``vocab_size`` at run time."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = _construct(m, vocab_size)
            if not getattr(model, "hf", True):  # a factory's model: its logits' shape too
                model(torch.zeros((1, m.block_size), dtype=torch.long))
    except Exception as exc:  # a factory that needs real tensors (loads a file, copies data)
        text = str(exc).lower()
        if not any(s in text for s in ("meta tensor", "'meta' backend", "meta device")):
            raise


def init_problem(m: ModelConfig) -> str | None:
    """Why ``m.init_from``'s weights cannot initialise ``m``'s model exactly (keys, a tied
    matrix held untied; see :func:`weights.state_problem`), one line; None when they can, or
    when the model cannot be built without real tensors. Checked before any run; shapes
    depend on the corpus's vocabulary, and are checked when a run builds its model."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = _construct(m, 256)
    except Exception:  # check_build reports what is wrong with the model itself
        return None
    state = read_state(m.init_from)
    return state_problem(load_target(model, state), state, m.init_from, shapes=False)


def build(m: ModelConfig, vocab_size: int, seed: int) -> nn.Module:
    """The model ``m`` describes, its initial weights a function of ``seed`` alone (or of
    ``init_from``'s file, the same for every seed). A config resolved with an ``arch_hash``
    refuses definition files that changed since (its run id names the old ones)."""
    if m.arch_hash is not None and arch_hash(m) != m.arch_hash:
        raise ValueError(f"[model] {m.hf_path or m.arch}: the model definition changed since "
                         f"the suite was resolved: load the suite again")
    if m.arch == "gpt" and not m.init_from:
        return build_model(GPTConfig.of(m, vocab_size), seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _construct(m, vocab_size)
    if m.init_from:
        load_weights(model, m.init_from, m.init_hash)
    return model


def flops_note(model: nn.Module) -> str:
    """Why the model's FLOPs/token is an estimate ("" when it is the formula)."""
    return getattr(model, "flops_note", "")


__all__ = ["CausalLM", "arch_hash", "build", "check_build", "flops_note", "hidden_problem",
           "init_problem",
           "load_weights"]
