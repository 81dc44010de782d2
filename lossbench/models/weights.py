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


def _apply(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    own = module.state_dict(keep_vars=True)
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(f"init_from {where}: keys the model does not have: "
                         f"{', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
    loaded = {id(own[k]) for k in state}
    missing = [k for k in own if k not in state and id(own[k]) not in loaded]
    if missing:
        raise ValueError(f"init_from {where}: no weights for {', '.join(missing[:3])}"
                         f"{' ...' if len(missing) > 3 else ''}")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ValueError(f"init_from {where}: {k} has shape {tuple(v.shape)}, the model "
                             f"{tuple(own[k].shape)} (a different vocabulary or size?)")
    module.load_state_dict(state, strict=False)


def load_weights(model: nn.Module, path: str, expected_hash: str | None = None) -> None:
    """Overwrite ``model``'s weights with ``path``'s (see the module docstring)."""
    if expected_hash is not None and weights_hash(path) != expected_hash:
        raise ValueError(f"init_from {path}: changed since the suite was resolved: load the "
                         f"suite again")
    state = read_state(path)
    inner = getattr(model, "net", None)
    keys = set(state)
    target = model
    if inner is not None and \
            len(keys & set(inner.state_dict())) > len(keys & set(model.state_dict())):
        target = inner  # an HF folder (or a bare state dict of the wrapped network)
    with torch.no_grad():
        _apply(target, state, str(path))
