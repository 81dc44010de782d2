"""Checkpoints of a run in progress."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import torch

from lossbench.core.atomic import atomic_write_bytes
from lossbench.core.paths import read_regular
from lossbench.core.schema import CHECKPOINT, WEIGHTS


def save_checkpoint(folder: str | Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(folder) / CHECKPOINT, buffer.getvalue(), root=folder)




def save_weights(folder: str | Path, state_dict: dict[str, Any]) -> None:
    """A finished run's weights, as a plain state dict of CPU tensors (``init_from`` reads
    it with ``weights_only=True``)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
    atomic_write_bytes(Path(folder) / WEIGHTS, buffer.getvalue(), root=folder)


class RejectedCheckpoint(Exception):
    """A checkpoint that did not load as plain data; it was renamed, not deleted."""

    def __init__(self, kept_as: Path, reason: str):
        super().__init__(f"{kept_as.parent.name}/{CHECKPOINT} did not load safely ({reason}); "
                         f"kept as {kept_as.name}, the run restarts from step 0")
        self.kept_as = kept_as


def load_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none.

    Checkpoints may come from someone else's results directory, so they load as
    data only (``weights_only=True``: tensors, numbers, strings, lists, dicts): a
    pickle that would run code is refused, not executed. A file that does not
    load (crafted, truncated, not a checkpoint) is renamed
    ``checkpoint.pt.rejected-<time>`` for inspection and RejectedCheckpoint raised.
    """
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        return None
    try:
        data = io.BytesIO(read_regular(path))  # a FIFO or device: refused, never waited on
        state = torch.load(data, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not isinstance(state.get("next_step"), int):
            raise ValueError("not a lossbench checkpoint")
        return state
    except Exception as exc:  # any failure to read it as data: keep it aside, start over
        raise reject_checkpoint(folder, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                                if str(exc) else type(exc).__name__) from None


def reject_checkpoint(folder: str | Path, reason: str) -> RejectedCheckpoint:
    """Rename the folder's checkpoint aside and return the exception that says so."""
    path = Path(folder) / CHECKPOINT
    kept = path.with_name(f"{CHECKPOINT}.rejected-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, kept)
    return RejectedCheckpoint(kept, reason)
