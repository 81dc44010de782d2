"""Per-token values of a loss that returns a mean or a sum, and when they cannot be had.

A reduced loss is checked on per-token values recovered from its value on growing prefixes
of each row (:func:`per_token_from_prefixes`): exact whenever token t's loss depends on
positions up to t only, as for every next-token loss. A loss that flags a token because of
the tokens after it (sequence-level unlikelihood: a repeated n-gram is penalised on all its
tokens once it is complete) is not causal, and its prefixes tell nothing about its per-token
values. :func:`causality_violation` finds such a loss from the gradients: the gradient of the
loss at position t with respect to t's logits is the same in the prefix ending at t and in
the whole row exactly when t's loss ignores what follows.
"""

from __future__ import annotations

import torch


def per_token_from_prefixes(raw, reduction: str, logits, targets, *, ignore_index=-100,
                            teacher_probs=None, **hparams):
    """l[b, t] = S_b(t) - S_b(t - 1), with S_b(t) the loss summed over the first t + 1
    positions of row b (the sum, or the mean times the kept count). Rows are called one at a
    time: `row_independent` checks the batch as a whole."""
    keep = targets != ignore_index
    sums = []
    for b in range(targets.shape[0]):
        row = []
        for t in range(targets.shape[1]):
            n = int(keep[b, :t + 1].sum())
            if reduction == "mean" and n == 0:
                row.append(None)  # a mean over no token: nothing to call
                continue
            out = raw(logits[b:b + 1, :t + 1], targets[b:b + 1, :t + 1],
                      ignore_index=ignore_index, **hparams,
                      teacher_probs=None if teacher_probs is None else teacher_probs[b:b + 1, :t + 1])
            row.append(out * n if reduction == "mean" else out)
        sums.append(row)
    made = [s for row in sums for s in row if s is not None]
    dtype = made[0].dtype if made else torch.promote_types(logits.dtype, torch.float32)
    zero = torch.zeros((), dtype=dtype, device=logits.device)
    sums = [[zero if s is None else s for s in row] for row in sums]
    return torch.stack([torch.stack([s - (row[t - 1] if t else zero) for t, s in enumerate(row)])
                        for row in sums])


def _plain_rows(needs_teacher: bool):
    """Rows with repeated tokens and n-grams (what sequence-level losses look for)."""
    g = torch.Generator().manual_seed(0)
    targets = torch.tensor([[1, 2, 3, 1, 2, 3, 1, 2, 4, 0], [0, 1, 0, 1, 2, 2, 2, 2, 3, 1]])
    logits = torch.randn(2, 10, 5, generator=g, dtype=torch.float64)
    extras = {}
    if needs_teacher:
        extras["teacher_probs"] = torch.randn(2, 10, 5, generator=g, dtype=torch.float64).softmax(-1)
    return logits, targets, extras


def causality_violation(raw, reduction: str, hparams: dict, needs_teacher: bool) -> str | None:
    """Where a reduced loss's value at a position depends on later positions (a message), None
    when it does not, "" when the loss cannot be called so (its exception is the diagnosis's
    business). Every position is kept."""
    logits, targets, extras = _plain_rows(needs_teacher)
    T = targets.shape[1]
    try:
        for b in range(targets.shape[0]):
            row = {k: v[b:b + 1] for k, v in extras.items()}
            x = logits[b:b + 1].clone().requires_grad_(True)
            whole = raw(x, targets[b:b + 1], ignore_index=-100, **hparams, **row)
            (g_all,) = torch.autograd.grad(whole * (T if reduction == "mean" else 1), x)
            scale = float(g_all.abs().max()) + 1e-12
            for t in range(T - 1):
                y = logits[b:b + 1, :t + 1].clone().requires_grad_(True)
                part = raw(y, targets[b:b + 1, :t + 1], ignore_index=-100, **hparams,
                           **{k: v[:, :t + 1] for k, v in row.items()})
                (g_t,) = torch.autograd.grad(part * (t + 1 if reduction == "mean" else 1), y)
                gap = float((g_t[0, t] - g_all[0, t]).abs().max())
                if gap > 1e-4 * scale:
                    return (f"the gradient of its loss at position {(b, t)} is "
                            f"{g_t[0, t].abs().max().item():.4g} (largest entry) in the row's "
                            f"first {t + 1} positions but {g_all[0, t].abs().max().item():.4g} "
                            f"in the whole row")
    except Exception:  # noqa: BLE001  the loss's own error: diagnose() reports it
        return ""
    return None
