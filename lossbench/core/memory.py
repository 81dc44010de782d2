"""The memory a run needs and the machine has, checked before any run starts: a model,
batch or corpus that cannot fit is refused with its estimate, not killed mid-sweep."""

from __future__ import annotations

import os

GiB = 1024**3

# Sampling a Markov corpus holds, per token, the uniform draws as a numpy array (8 B) and as
# a Python list of floats (~32 B), the list of sampled ids (8 B), the int64 array and its
# hashed and split copies (3 x 8 B): about 72 bytes per token at the peak.
MARKOV_BYTES_PER_TOKEN = 72
# A text corpus, per token: the int64 ids and their train/val copies (16 B) and the text's
# UTF-32 code points (4 B) while tokenizing, plus the bytes and str themselves (~4 B).
TEXT_BYTES_PER_TOKEN = 24
EVAL_CHUNK = 64  # evaluation forwards up to 64 windows at once (lossbench.train.evaluation)


def memory_need(*, n_layer: int, n_head: int, n_embd: int, block_size: int, vocab: int,
                batch_size: int, tie_weights: bool = True,
                corpus_bytes: int = 0) -> dict[str, int]:
    """Estimated peak bytes of one training run, fp32, by part.

    With L = n_layer, H = n_head, C = n_embd, T = block_size, V = vocab, B = batch_size
    (one micro-batch) and P the parameter count:

        P           = L (12 C^2 + 13 C) + 2 C + T C + V C (x 2 when untied)
        params      = 4 P                  the weights
        optimizer   = 12 P                 their gradients and AdamW's two moments
        activations = 4 B T L (17 C + 2 H T)
                      per layer and token the backward pass keeps ~17 C floats
                      (LayerNorm inputs and outputs, q, k, v, attention output, the
                      4C MLP hidden before and after GELU) and two H x T attention rows
        logits      = 4 x 3 max(B, 64) T V  the (B, T, V) logits, their softmax and
                      gradient in the loss; evaluation forwards 64 windows at a time
        corpus      = ``corpus_bytes``, the tokens while the corpus is built

    An estimate within tens of percent, meant to catch sizes that cannot fit at all.
    """
    L, H, C, T, V, B = n_layer, n_head, n_embd, block_size, vocab, batch_size
    n_params = L * (12 * C * C + 13 * C) + 2 * C + T * C + V * C * (1 if tie_weights else 2)
    return {"params": 4 * n_params, "optimizer": 12 * n_params,
            "activations": 4 * B * T * L * (17 * C + 2 * H * T),
            "logits": 4 * 3 * max(B, EVAL_CHUNK) * T * V, "corpus": corpus_bytes}


def machine_memory(device: str = "cpu") -> int | None:
    """Total memory of the device a run uses, in bytes (None when unknown): physical RAM,
    or the first GPU's memory for "cuda". Total, not currently free: the verdict must
    not change with whatever else is running when the suite is loaded."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return None  # the command line reports the missing GPU itself
        return torch.cuda.get_device_properties(0).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX: do not guess
        return None


def size(n_bytes: float) -> str:
    """Bytes for people: '37.2 GiB', '1,230 GiB', '512 KiB'."""
    for unit, scale in (("GiB", GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if n_bytes >= scale:
            value = n_bytes / scale
            return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return f"{n_bytes:.0f} B"


def memory_problem(need: dict[str, int], have: int | None) -> str | None:
    """``needs ~X GiB (params ..., ...) but the machine has Y GiB``, or None if it fits."""
    total = sum(need.values())
    if have is None or total <= have:
        return None
    parts = ", ".join(f"{k} {size(v)}" for k, v in need.items() if v)
    return f"needs ~{size(total)} ({parts}) but the machine has {size(have)}"
