"""Checkpoints of a run in progress."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from lossbench.atomic import atomic_write_bytes

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(folder: str | Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(folder) / CHECKPOINT, buffer.getvalue())


def load_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
