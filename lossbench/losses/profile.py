"""What a loss pushes on: its gradient with respect to the logits as a function of the
target's probability p_y, computed from the registered function itself (no training, so a
plugin gets its profile too).

One family of logit rows stands for "a prediction with target probability p_y": V classes,
the target y = 0, the rest of the mass 1 - p_y spread over the other classes in fixed
proportions w_c proportional to 2^-(c-1)/2 (class 1 the likeliest alternative), logits
z = log p centred to mean 0 (the absolute level matters to z-loss and square loss on
logits). Each row is the second position of a two-token sequence whose first target is
class 1, so class 1 is a *repeated candidate* (a token already in the context: what
unlikelihood pushes down). Against a teacher (``teacher_probs`` losses), the teacher puts
``teacher_mass`` on y and the rest in the same proportions. Per row, with g = dL/dz:

    pull      -g_y              how hard the loss raises the target's logit
    push      sum_{c != y} g_c  how hard it lowers the other classes' logits, in total
    repeated  g_1               how hard it lowers the repeated candidate's logit

For a loss that is shift invariant (the softmax family) push = pull. Cross-entropy's
pull is 1 - p_y: it never stops; focal's vanishes as p_y -> 1; hinge's is 0 past the margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .registry import LossSpec

TEACHER_INPUT = "teacher_probs"
HIDDEN_INPUT = "hidden_states"  # a needs_hidden loss (SimCTG): its profile is on the logits, at
#   fixed hidden states (their term does not involve the logits)


@dataclass(frozen=True)
class Profile:
    loss: str
    hparams: dict
    vocab: int
    teacher_mass: float | None  # the teacher's p_y (teacher_probs losses), else None
    p_y: list[float]
    pull: list[float]
    push: list[float]
    repeated: list[float]


def grid(points: int = 41) -> torch.Tensor:
    """p_y from 1e-3 to 1 - 1e-3, denser near both ends (a logit-uniform grid)."""
    return torch.sigmoid(torch.linspace(-math.log(999.0), math.log(999.0), points,
                                        dtype=torch.float64))


def _shares(vocab: int) -> torch.Tensor:
    """(V - 1,) the fixed proportions of the non-target classes."""
    w = 2.0 ** (-torch.arange(vocab - 1, dtype=torch.float64) / 2)
    return w / w.sum()


def family(p_y: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, 2, V), targets (N, 2)): position 1 carries p_y, position 0 (target: the
    repeated candidate, class 1) the same row."""
    p = torch.cat([p_y[:, None], (1 - p_y[:, None]) * _shares(vocab)[None, :]], 1)  # (N, V)
    z = p.log()
    z = z - z.mean(-1, keepdim=True)
    logits = torch.stack([z, z], 1)  # (N, 2, V)
    targets = torch.tensor([1, 0]).expand(len(p_y), 2)
    return logits, targets


def teacher(n: int, vocab: int, mass: float) -> torch.Tensor:
    """(N, 2, V): ``mass`` on the target (class 0 at position 1, class 1 at position 0)."""
    row = torch.cat([torch.tensor([mass], dtype=torch.float64),
                     (1 - mass) * _shares(vocab)])  # (V,)
    first = row.clone()
    first[[0, 1]] = row[[1, 0]]  # position 0's target is class 1
    return torch.stack([first, row]).expand(n, 2, vocab).clone()


def unsupported(spec: LossSpec) -> str | None:
    """Why the profile of ``spec`` cannot be drawn from logits alone (None when it can)."""
    if spec.finetune_only:
        return "a fine-tuning loss: it needs the model's own generated continuation"
    missing = [k for k in spec.extra_inputs if k not in (TEACHER_INPUT, HIDDEN_INPUT)]
    if missing:
        return f"needs {', '.join(missing)} besides the logits"
    return None


def logit_gradients(spec: LossSpec, p_y: torch.Tensor, hparams: dict | None = None, *,
                    vocab: int = 16, teacher_mass: float = 0.5) -> torch.Tensor:
    """(N, V): dL/dz of position 1 for each p_y, by one backward over the whole batch (row
    independence and token locality, properties every loss is checked for, make each row's
    gradient its own)."""
    logits, targets = family(p_y, vocab)
    logits.requires_grad_(True)
    extras = {}
    if TEACHER_INPUT in spec.extra_inputs:
        extras[TEACHER_INPUT] = teacher(len(p_y), vocab, teacher_mass)
    if HIDDEN_INPUT in spec.extra_inputs:  # fixed: two orthogonal unit vectors per row
        extras[HIDDEN_INPUT] = torch.eye(2, dtype=logits.dtype).expand(len(p_y), 2, 2)
    per_token = spec.fn(logits, targets, **(hparams or {}), **extras)  # (N, 2)
    (grad,) = torch.autograd.grad(per_token[:, 1].sum(), logits)
    return grad[:, 1]


def profile(spec: LossSpec, hparams: dict | None = None, *, vocab: int = 16,
            teacher_mass: float = 0.5, points: int = 41) -> Profile:
    """The profile of ``spec`` at ``hparams`` (its defaults where missing). Raises
    ValueError with :func:`unsupported`'s reason for a loss that has none."""
    reason = unsupported(spec)
    if reason is not None:
        raise ValueError(f"{spec.name}: {reason}")
    hparams = {**spec.defaults(), **(hparams or {})}
    p_y = grid(points)
    g = logit_gradients(spec, p_y, hparams, vocab=vocab, teacher_mass=teacher_mass)
    return Profile(spec.name, hparams, vocab,
                   teacher_mass if TEACHER_INPUT in spec.extra_inputs else None,
                   p_y.tolist(), (-g[:, 0]).tolist(), g[:, 1:].sum(1).tolist(),
                   g[:, 1].tolist())
