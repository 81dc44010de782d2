"""SimCTG (Su et al., NeurIPS 2022): cross-entropy plus a contrastive term on the model's last
hidden states, which spreads the token representations of a sequence apart.

The only built-in loss that reads more than logits: it registers with ``needs_hidden=True``,
and the training loop supplies ``hidden_states`` (B, T, C) from the same forward pass as the
logits (lossbench.train.step; docs/repetition.md says why and for which architectures).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import finish, gather_target, prepare
from .registry import HParam, register_loss

_SU = ("Su, Lan, Wang, Yogatama, Kong & Collier, A Contrastive Framework for Neural Text "
       "Generation, NeurIPS 2022")


def _hidden_of(hidden_states, logits: torch.Tensor) -> torch.Tensor:
    if not isinstance(hidden_states, torch.Tensor) or hidden_states.dim() != 3 \
            or hidden_states.shape[:2] != logits.shape[:2]:
        got = tuple(hidden_states.shape) if isinstance(hidden_states, torch.Tensor) \
            else type(hidden_states).__name__
        raise ValueError(f"simctg needs hidden_states (B, T, C) = {tuple(logits.shape[:2])} + "
                         f"(C,), the model's last hidden states; got {got}")
    return hidden_states.to(logits.dtype)


def _simctg_reference(logits, targets, *, ignore_index=-100, margin=0.5, hidden_states=None):
    """Su et al., eq. 2 per token: CE_i + 1/(n-1) sum_{j != i} max(0, rho - s(h_i, h_i) +
    s(h_i, h_j)), s the cosine, over the n kept positions of the row."""
    logp = torch.log_softmax(logits, -1)
    out = torch.zeros(targets.shape, dtype=logits.dtype)
    for b in range(targets.shape[0]):
        kept = [t for t in range(targets.shape[1]) if int(targets[b, t]) != ignore_index]
        for i in kept:
            cl = torch.zeros((), dtype=logits.dtype)
            for j in kept:
                if j != i:
                    s = F.cosine_similarity(hidden_states[b, i], hidden_states[b, j], dim=0)
                    cl = cl + torch.relu(margin - 1.0 + s.clamp(max=1.0))
            out[b, i] = -logp[b, i, int(targets[b, i])] + cl / max(len(kept) - 1, 1)
    return out


@register_loss(
    "simctg",
    description="SimCTG: CE + a margin contrast pushing apart the cosine similarities of the "
                "last hidden states of a sequence's tokens.",
    reference=_SU,
    hparams={"margin": HParam(0.5, 0.0, 2.0, "rho, the margin of the contrastive term",
                              neutral=0.0)},
    properties=("nonnegative", "shift_invariant", "minimal_at_perfect_prediction"),
    reference_impl=_simctg_reference,
    needs_hidden=True,
)
def simctg(logits, targets, *, ignore_index=-100, margin=0.5, hidden_states=None):
    """SimCTG: cross-entropy plus a contrastive term on the last hidden states.

    L_i = -log p_{y_i} + 1/(n-1) Σ_{j kept, j != i} max(0, ρ - s(h_i, h_i) + s(h_i, h_j))

    s(u, v) = u·v / (|u| |v|) is the cosine (clamped to 1, so s(h_i, h_i) = 1), n the
    number of kept positions of the row; h_i is the model's last hidden state at position
    i (after the final layer norm, the input of the output matrix). The term is 0 once
    every pair of the row's representations is at cosine ≤ 1 - ρ: it makes the
    representation space isotropic (the paper's diagnosis of degeneration). ρ = 0 gives
    cross-entropy. The mean over a batch equals the authors' pooled normalization
    (Σ pairs / number of pairs) whenever every row keeps the same number of positions, as
    in every training batch; rows with different numbers are each averaged on their own,
    so a row's loss does not depend on the others.

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding); their
            hidden states are nobody's contrast either.
        margin: ρ in [0, 2], the margin of the contrastive term (the paper uses 0.5); 0
            gives cross-entropy.
        hidden_states: (B, T, C) the model's last hidden states, from the forward pass that
            gave ``logits``; the training loop passes them (``needs_hidden``).

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Su, Lan, Wang, Yogatama, Kong & Collier, A Contrastive Framework for Neural Text
        Generation, NeurIPS 2022.

    Examples:
        Two positions with identical hidden states (cosine 1) cost ρ each on top of the CE
        log 2; orthogonal ones (cosine 0) cost max(0, ρ - 1) = 0:

        >>> import torch
        >>> logits, targets = torch.zeros(1, 2, 2), torch.tensor([[0, 1]])
        >>> same = simctg(logits, targets, hidden_states=torch.ones(1, 2, 3))
        >>> apart = simctg(logits, targets, hidden_states=torch.eye(3)[:2].unsqueeze(0))
        >>> [round(x, 4) for x in same[0].tolist()], [round(x, 4) for x in apart[0].tolist()]
        ([1.1931, 1.1931], [0.6931, 0.6931])
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    hidden = F.normalize(_hidden_of(hidden_states, logits), dim=-1)  # (B, T, C), unit rows
    nll = -gather_target(F.log_softmax(logits, dim=-1), safe)  # (B, T)
    with torch.autocast(hidden.device.type, enabled=False):  # a matmul: fp32, not bf16
        cos = (hidden @ hidden.transpose(1, 2)).clamp(max=1.0)  # (B, T, T): s(h_i, h_j)
    pair = keep.unsqueeze(2) & keep.unsqueeze(1)  # (B, T, T): both kept
    pair &= ~torch.eye(keep.shape[1], dtype=torch.bool, device=keep.device)
    contrast = torch.where(pair, torch.relu(margin - 1.0 + cos), 0.0).sum(-1)  # (B, T)
    others = (keep.sum(1, keepdim=True) - 1).clamp(min=1).to(logits.dtype)  # (B, 1): n - 1
    return finish(nll + contrast / others, keep)
