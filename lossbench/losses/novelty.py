"""Token-level objectives against repetition that followed unlikelihood: ScaleGrad (Lin et
al., ICML 2021) and the contrastive token loss (Jiang et al., 2022).

Both read the row's earlier targets, like token-level unlikelihood (``repetition.py``):
ScaleGrad rescales the probabilities of tokens not yet used before the softmax CE, CT
contrasts the target's logit with those of the preceding M targets. Neither needs generated
text or hidden states.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._common import finish, gather_target, prepare
from .registry import HParam, register_loss
from .repetition import first_occurrence

_LIN = ("Lin, Han & Joty, Straight to the Gradient: Learning to Use Novel Tokens for Neural "
        "Text Generation, ICML 2021")
_JIANG = ("Jiang, Zhang, Vakulenko & de Rijke, A Simple Contrastive Learning Objective for "
          "Alleviating Neural Text Degeneration, arXiv:2205.02517, 2022")


def used_token_mask(safe: torch.Tensor, keep: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, T, V) bool: [b, t, c] is True when c is the target of a kept position s < t of
    row b (c "already used" at step t; the target y_t itself included, unlike C_t of
    unlikelihood). ``safe`` (B, T) valid ids, ``keep`` (B, T) the positions that count.

    Examples:
        >>> import torch
        >>> safe = torch.tensor([[0, 1, 0, 2]])
        >>> used_token_mask(safe, torch.ones(1, 4, dtype=torch.bool), 3)[0].int().tolist()
        [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0]]
    """
    T = safe.shape[1]
    first = first_occurrence(safe, keep, vocab_size)  # (B, V), T where never kept
    pos = torch.arange(T, device=safe.device).view(1, T, 1)
    return first.unsqueeze(1) < pos  # (B, T, V)


def _scalegrad_reference(logits, targets, *, ignore_index=-100, gamma=0.2):
    """Lin et al., eq. 3, token by token: p~_i = gamma p_i / Z for novel i, p_i / Z else,
    Z = sum_novel gamma p_j + sum_used p_j; the loss is -log p~_y."""
    out = torch.zeros(targets.shape, dtype=logits.dtype)
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            y = int(targets[b, t])
            if y == ignore_index:
                continue
            used = {int(c) for c in targets[b, :t] if int(c) != ignore_index}
            p = torch.softmax(logits[b, t], 0)
            scale = torch.tensor([1.0 if c in used else gamma for c in range(p.numel())],
                                 dtype=p.dtype)
            out[b, t] = -torch.log(scale[y] * p[y] / (scale * p).sum())
    return out


@register_loss(
    "scalegrad",
    description="ScaleGrad: CE of probabilities rescaled by gamma on tokens not yet used "
                "in the row (novel tokens), renormalized.",
    reference=_LIN,
    hparams={"gamma": HParam(0.2, 0.01, 1.0, "scale of the novel tokens' probabilities "
                                             "(< 1 favours them)", neutral=1.0)},
    properties=("nonnegative", "shift_invariant", "minimal_at_perfect_prediction"),
    reference_impl=_scalegrad_reference,
)
def scalegrad(logits, targets, *, ignore_index=-100, gamma=0.2):
    """ScaleGrad: cross-entropy of a rescaled distribution that favours novel tokens.

    p~_i = γ p_i / Z if i is novel at step t, p_i / Z otherwise,
    Z = Σ_{j novel} γ p_j + Σ_{j used} p_j,           L_t = -log p~_{y_t}

    A token is used at step t when it is the target of an earlier kept position of the
    row (y_s, s < t), novel otherwise (the paper's S_novel). In logits: add log γ to the
    novel tokens' logits and take the CE, so γ = 1 is cross-entropy exactly. With γ < 1
    the gradient on a novel target is larger and the push on used non-targets stronger
    (Lin et al., sec. 3): the model learns to prefer novel tokens. The authors' code adds
    1e-8 to p~ before its log; this form needs no such floor.

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding);
            they use no token either.
        gamma: γ in [0.01, 1], the scale of the novel tokens' probabilities; 1 gives
            cross-entropy (the paper uses 0.2 for language modelling).

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Lin, Han & Joty, Straight to the Gradient: Learning to Use Novel Tokens for Neural
        Text Generation, ICML 2021.

    Examples:
        Uniform logits over V = 2, targets 0, 0: at t = 0 both tokens are novel (plain CE,
        log 2); at t = 1 token 0 is used, so p~_0 = 1 / (1 + γ):

        >>> import torch
        >>> loss = scalegrad(torch.zeros(1, 2, 2), torch.tensor([[0, 0]]), gamma=0.5)
        >>> [round(x, 4) for x in loss[0].tolist()]
        [0.6931, 0.4055]
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    used = used_token_mask(safe, keep, logits.shape[-1])  # (B, T, V)
    shifted = logits + (~used).to(logits.dtype) * math.log(gamma)  # log γ on novel tokens
    nll = -gather_target(F.log_softmax(shifted, dim=-1), safe)  # (B, T)
    return finish(nll, keep)


def preceding_negatives(safe: torch.Tensor, keep: torch.Tensor, m: int):
    """The preceding m targets of each position as negatives: ids (B, T, m) and a bool mask
    (B, T, m). Entry [b, t, k] is y_{t-m+k}; it counts when that position exists, is kept
    and its target differs from y_t. A token repeated in the window counts each time, as in
    the authors' code.

    Examples:
        >>> import torch
        >>> ids, ok = preceding_negatives(torch.tensor([[3, 1, 3, 2]]),
        ...                               torch.ones(1, 4, dtype=torch.bool), 2)
        >>> [ids[0, t][ok[0, t]].tolist() for t in range(4)]
        [[], [3], [1], [1, 3]]
    """
    B, T = safe.shape
    pad_ids = torch.zeros(B, m, dtype=safe.dtype, device=safe.device)
    pad_keep = torch.zeros(B, m, dtype=torch.bool, device=safe.device)
    ids = torch.cat([pad_ids, safe], 1).unfold(1, m, 1)[:, :T]  # (B, T, m): y_{t-m..t-1}
    ok = torch.cat([pad_keep, keep], 1).unfold(1, m, 1)[:, :T]
    return ids, ok & (ids != safe.unsqueeze(-1))


def _ct_reference(logits, targets, *, ignore_index=-100, negatives=16):
    """Jiang et al., eq. 5 plus the CE they train it with, token by token:
    L_t = -log p_{y_t} + log(1 + sum_{s = t-M}^{t-1} [y_s != y_t] exp(z_{y_s} - z_{y_t}))."""
    logp = torch.log_softmax(logits, -1)
    out = torch.zeros(targets.shape, dtype=logits.dtype)
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            y = int(targets[b, t])
            if y == ignore_index:
                continue
            z = logits[b, t]
            acc = torch.ones((), dtype=logits.dtype)
            for s in range(max(0, t - int(negatives)), t):
                c = int(targets[b, s])
                if c != ignore_index and c != y:
                    acc = acc + torch.exp(z[c] - z[y])
            out[b, t] = -logp[b, t, y] + torch.log(acc)
    return out


@register_loss(
    "ct",
    description="Contrastive token loss + CE: log(1 + sum over the preceding M targets c "
                "!= y of exp(z_c - z_y)), added to the cross-entropy.",
    reference=_JIANG,
    hparams={"negatives": HParam(16, 0, 1024, "M, how many preceding targets are negatives",
                                 neutral=0, integer=True)},
    properties=("nonnegative", "shift_invariant", "minimal_at_perfect_prediction"),
    reference_impl=_ct_reference,
)
def ct(logits, targets, *, ignore_index=-100, negatives=16):
    """Contrastive token loss, trained with cross-entropy as in the paper: CE + CT.

    L_t = -log p_{y_t} + log(1 + Σ_{y⁻ ∈ S_t} exp(z_{y⁻} - z_{y_t}))
    S_t = (y_{t-M}, ..., y_{t-1}) without the ignored positions and the copies of y_t

    CT is a softmax over the target and its negatives only: it pushes down the logits of
    the recently used tokens relative to the target's, and never the rest of the
    vocabulary (unlike unlikelihood, which pushes every earlier token's probability down
    whatever the target's). M = 0 gives cross-entropy. Deliberate differences from the
    authors' package (``ct-loss``): CT here covers every position (the package's default
    covers the first quarter of each sequence, ``ct_length=0.25``) and M is a token count
    (the package also reads a value <= 1 as a fraction of that length); ignored positions
    are neither scored nor negatives, where the package uses a pad id (default 0, which
    would also drop token 0 as a target and a negative).

    Args:
        logits: (B, T, V) unnormalized scores; fp16/bf16 are computed in fp32.
        targets: (B, T) int64 token ids in [0, V), or ``ignore_index``.
        ignore_index: target id marking positions that do not count (padding); they are
            nobody's negatives either.
        negatives: M in [0, 1024], how many preceding targets are negatives; 0 gives
            cross-entropy.

    Returns:
        (B, T) per-token loss, exactly 0 at ignored positions.

    References:
        Jiang, Zhang, Vakulenko & de Rijke, A Simple Contrastive Learning Objective for
        Alleviating Neural Text Degeneration, arXiv:2205.02517, 2022.

    Examples:
        Uniform logits over V = 3 and targets 0, 1, 0: S = (), (0,), (1,), so CT adds
        log 2 at t = 1 and t = 2 to the CE log 3:

        >>> import torch
        >>> loss = ct(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 0]]), negatives=2)
        >>> [round(x, 4) for x in loss[0].tolist()]
        [1.0986, 1.7918, 1.7918]
    """
    logits, safe, keep = prepare(logits, targets, ignore_index)
    nll = -gather_target(F.log_softmax(logits, dim=-1), safe)  # (B, T)
    m = min(int(negatives), logits.shape[1])
    if m == 0:
        return finish(nll, keep)
    ids, ok = preceding_negatives(safe, keep, m)  # (B, T, m)
    diff = logits.gather(-1, ids) - gather_target(logits, safe).unsqueeze(-1)  # z_c - z_y
    diff = torch.where(ok, diff, float("-inf"))
    zero = torch.zeros_like(diff[..., :1])
    contrast = torch.logsumexp(torch.cat([zero, diff], -1), -1)  # log(1 + sum exp)
    return finish(nll + contrast, keep)
