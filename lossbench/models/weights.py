"""Weights-only loading of ``init_from`` checkpoints: never code, only tensors.

``init_from`` is a file -- ``*.safetensors``, or a torch file read with
``weights_only=True`` (a state dict, or a lossbench checkpoint.pt / model.pt) -- or a
folder holding one: model.safetensors (or its shards, listed in
model.safetensors.index.json, as a Hugging Face checkpoint saves them), model.pt,
checkpoint.pt or pytorch_model.bin. The keys must match the model's (or, for a wrapped
model, its inner network's: an HF checkpoint folder loads into arch = "hf"); a key may be
missing only where the model ties it to a loaded one (an HF tied LM head).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn as nn

from lossbench.data.tokens import file_digest

_FOLDER_FILES = ("model.safetensors", "model.pt", "checkpoint.pt", "pytorch_model.bin")


def weight_files(path: str) -> list[Path]:
    """The files ``init_from`` reads, in order (FileNotFoundError naming what was looked for)."""
    root = Path(path).expanduser()
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"init_from: no such file or folder: {root}")
    index = root / "model.safetensors.index.json"
    if index.exists():
        doc = json.loads(index.read_text(encoding="utf-8"))
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict) or not weight_map or not all(
                isinstance(s, str) for s in weight_map.values()):
            raise ValueError(f"{index.name}: expected {{\"weight_map\": {{key: file}}}}")
        shards = sorted(set(weight_map.values()))
        inside = root.resolve()
        for s in shards:  # the index comes with the folder: it names files in it, no others
            if not (root / s).resolve().is_relative_to(inside):
                raise ValueError(f"{index.name}: shard {s!r} is outside {root}")
        return [root / s for s in shards]
    for name in _FOLDER_FILES:
        if (root / name).is_file():
            return [root / name]
    raise FileNotFoundError(f"init_from: {root} holds none of {', '.join(_FOLDER_FILES)}")


def weights_hash(path: str) -> str:
    """sha256 over the weight files' names and contents (hashes cached, lossbench.data.tokens)."""
    h = hashlib.sha256(b"lossbench weights v1\n")
    for f in weight_files(path):
        h.update(f"{f.name} {file_digest(f)[0]}\n".encode())
    return h.hexdigest()


def safetensors_load(f: Path):
    """safetensors' ``load_file``, or an ImportError naming the extra that has it."""
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise ImportError(f"{f.name} needs safetensors: pip install 'lossbench[hf]'") from e
    return load_file


def check_loadable(path: str) -> None:
    """What :func:`read_state` would import for ``path``'s files is installed (ImportError
    naming the pip command): checked before any run, not inside one."""
    for f in weight_files(path):
        if f.suffix == ".safetensors":
            safetensors_load(f)


def read_state(path: str) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(path):
        if f.suffix == ".safetensors":
            part = safetensors_load(f)(str(f), device="cpu")
        else:
            part = torch.load(f, map_location="cpu", weights_only=True)
            if isinstance(part, dict) and isinstance(part.get("model"), dict):
                part = part["model"]  # a lossbench checkpoint.pt: its weights only
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor)
                                                 for v in part.values()):
            raise ValueError(f"init_from {f}: not a dict of tensors")
        state.update(part)
    return state


def tied_groups(module: nn.Module) -> list[list[str]]:
    """Keys of ``module``'s state dict that name one shared tensor (a tied LM head and
    token embedding: ``transformer.wte.weight`` and ``lm_head.weight``), in groups of 2+."""
    by_tensor: dict[int, list[str]] = {}
    for key, value in module.state_dict(keep_vars=True).items():
        by_tensor.setdefault(id(value), []).append(key)
    return [keys for keys in by_tensor.values() if len(keys) > 1]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b))


def state_problem(module: nn.Module, state: dict[str, torch.Tensor], where: str, *,
                  shapes: bool = True) -> str | None:
    """Why ``state`` cannot be loaded into ``module`` exactly (one line), or None: keys the
    model lacks, weights it would lack, a matrix the model ties (one parameter) that the
    checkpoint holds as two different ones -- loading would keep whichever came last (the LM
    head's as the embedding) -- and, with ``shapes``, a shape that differs. A checkpoint
    with tied weights loads exactly into an untied model: both get the shared matrix."""
    own = module.state_dict(keep_vars=True)
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        return (f"init_from {where}: keys the model does not have: "
                f"{', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
    for keys in tied_groups(module):
        held = [k for k in keys if k in state]
        if any(not _same(state[held[0]], state[k]) for k in held[1:]):
            return (f"init_from {where}: the model ties {' and '.join(held)} (one matrix: "
                    f"tie_weights = true) but the checkpoint holds different ones (saved "
                    f"untied): set [model] tie_weights = false")
    loaded = {id(own[k]) for k in state}
    missing = [k for k in own if k not in state and id(own[k]) not in loaded]
    if missing:
        return (f"init_from {where}: no weights for {', '.join(missing[:3])}"
                f"{' ...' if len(missing) > 3 else ''}" + _tie_hint(module, missing))
    for k, v in state.items():
        if shapes and v.shape != own[k].shape:
            return (f"init_from {where}: {k} has shape {tuple(v.shape)}, the model "
                    f"{tuple(own[k].shape)} (a different vocabulary or size?)")
    return None


def _tie_hint(module: nn.Module, missing: list[str]) -> str:
    """A checkpoint of a tied model may store the shared matrix once (Hugging Face does)."""
    if any("lm_head" in k or "embed_out" in k for k in missing) and not tied_groups(module):
        return (" (a checkpoint of a model with tied weights stores the shared matrix once: "
                "set [model] tie_weights = true, or tie_word_embeddings in an hf config)")
    return ""


def _apply(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    if (problem := state_problem(module, state, where)) is not None:
        raise ValueError(problem)
    module.load_state_dict(state, strict=False)


def load_target(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """The module ``state`` is for: ``model``, or the network it wraps (an HF folder, or a
    bare state dict of the wrapped network)."""
    inner = getattr(model, "net", None)
    keys = set(state)
    if inner is not None and \
            len(keys & set(inner.state_dict())) > len(keys & set(model.state_dict())):
        return inner
    return model


def load_weights(model: nn.Module, path: str, expected_hash: str | None = None) -> None:
    """Overwrite ``model``'s weights with ``path``'s (see the module docstring)."""
    if expected_hash is not None and weights_hash(path) != expected_hash:
        raise ValueError(f"init_from {path}: changed since the suite was resolved: load the "
                         f"suite again")
    state = read_state(path)
    with torch.no_grad():
        _apply(load_target(model, state), state, str(path))
