"""Batch sampling that depends on (seed, step) only.

Every run of a comparison must see the same batches in the same order, so the
window starts of step k come from a private ``torch.Generator`` seeded from
(seed, k) alone: nothing the loss, the model or any other code does with the
global RNG can shift them, and a run resumed at step k gets step k's batch.
"""

from __future__ import annotations

import numpy as np
import torch


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed from (seed, step), via numpy's SeedSequence hash.

    ``stream`` separates independent uses of the same step (0: batches; training
    uses 1 for dropout masks and 2 for the fine-tuning phase's MLE/unlikelihood
    draw), so no two of them share a random stream.
    (Plain seed * C + step would make neighbouring runs share streams.)
    """
    if seed < 0 or step < 0 or stream < 0:
        raise ValueError(f"seed, step and stream must be >= 0, got {seed}, {step}, {stream}")
    entropy = (seed, step) if stream == 0 else (seed, step, stream)
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)
    return int(state[0]) & (2**63 - 1)


def train_batch_starts(n_tokens: int, block_size: int, batch_size: int, seed: int,
                       step: int) -> torch.Tensor:
    """Random window starts for training step ``step``: (B,) int64 in
    [0, n_tokens - block_size - 1], so x and the shifted y both fit."""
    n_starts = n_tokens - block_size  # a window reads block_size + 1 tokens
    if n_starts < 1:
        raise ValueError(f"{n_tokens} tokens cannot hold one window of block_size "
                         f"{block_size} (+1 for the targets)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    g = torch.Generator().manual_seed(step_seed(seed, step))
    return torch.randint(0, n_starts, (batch_size,), generator=g)  # (B,)


def get_batch(data: torch.Tensor, starts: torch.Tensor,
              block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of ``data`` (N,) at ``starts`` (B,) -> x, y (B, T).

    x[b] = data[s : s+T] and y[b] = data[s+1 : s+T+1] (s = starts[b]): y[:, t] is
    the token after x[:, t]. One vectorized gather, no loop over the batch.
    """
    starts = starts.to(device=data.device, dtype=torch.long)
    if starts.numel() and (int(starts.min()) < 0
                           or int(starts.max()) + block_size >= data.numel()):
        raise ValueError(f"window starts must lie in [0, {data.numel() - block_size - 1}] "
                         f"for {data.numel()} tokens and block_size {block_size}")
    offsets = torch.arange(block_size + 1, device=data.device)  # (T+1,)
    # (B, T+1); int64 whatever the storage (token folders map uint16/uint32 files)
    windows = data[starts[:, None] + offsets].long()
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()  # (B, T), (B, T)


def eval_starts(n_tokens: int, block_size: int, n_windows: int) -> torch.Tensor:
    """Fixed, evenly spaced window starts over a split: (n,) int64, no seed.

    Every run is evaluated on the same tokens. n = min(n_windows, number of
    windows whose targets do not overlap); ValueError only if not one fits.
    The first window starts at 0 and the last at n_tokens - block_size - 1,
    so the windows cover the whole split.
    """
    if n_windows < 1:
        raise ValueError(f"n_windows must be >= 1, got {n_windows}")
    max_start = n_tokens - block_size - 1
    if max_start < 0:
        raise ValueError(f"split of {n_tokens} tokens is too short for one evaluation "
                         f"window of block_size {block_size} (+1 for the targets)")
    n = min(n_windows, (n_tokens - 1) // block_size)  # spacing >= block_size
    if n == 1:
        return torch.zeros(1, dtype=torch.long)
    # integer arithmetic: exact, and floors of points >= T apart stay >= T apart
    return torch.arange(n, dtype=torch.long) * max_start // (n - 1)  # (n,)
