"""A small decoder-only GPT, in the style of nanoGPT's model.py.

The model only ever returns logits: every loss lossbench compares is computed
outside the model, from the same logits, so the architecture cannot favour one
loss over another.

Identical runs need identical initial weights, so ``build_model`` derives the
initialization from its ``seed`` argument alone (inside a forked RNG), never
from whatever the global torch RNG happened to hold.

References:
1) nanoGPT: https://github.com/karpathy/nanoGPT/blob/master/model.py
2) GPT-2: Radford et al., Language Models are Unsupervised Multitask Learners, 2019
3) PaLM (FLOPs accounting, appendix B): Chowdhery et al., 2022
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from lossbench.core.config import ModelConfig
from lossbench.core.fields import ranged


@dataclass(frozen=True)
class GPTConfig(ModelConfig):
    """A :class:`~lossbench.core.config.ModelConfig` (its fields, defaults and checks: one
    definition) plus the corpus's vocabulary size. Usually made by :meth:`of`."""

    vocab_size: int = ranged(low=1, kw_only=True)  # V: the corpus decides, so no default

    @classmethod
    def of(cls, model: ModelConfig, vocab_size: int) -> "GPTConfig":
        """``model`` for a corpus of ``vocab_size`` tokens."""
        return cls(vocab_size=vocab_size, **dataclasses.asdict(model))


class CausalSelfAttention(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        # key, query, value projections for all heads, in one batched matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # output projection: writes into the residual stream (scaled init, see GPT)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, kv: list | None = None) -> torch.Tensor:
        """``kv``: None (training), or this layer's [keys, values] so far for incremental
        decoding, extended in place; after a prefill, one new token per call."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        causal = True
        if kv is not None:
            if kv[0] is not None:
                if T != 1:
                    raise ValueError("with a filled cache, decode one token at a time")
                k, v = torch.cat((kv[0], k), dim=2), torch.cat((kv[1], v), dim=2)  # (B, nh, S, hs)
                causal = False  # the one new query may see every cached key
            kv[0], kv[1] = k, v
        # attention dropout only while training: eval must be deterministic
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(x))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv: list | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
            wpe=nn.Embedding(config.block_size, config.n_embd),  # learned positions
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            # weight tying (Press & Wolf 2017): one (V, C) matrix embeds and un-embeds
            self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2: the residual projections get std 0.02/sqrt(2 * n_layer) so the
        # variance of the residual stream does not grow with depth (2 adds per block)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, V). Never a loss.

        ``cache`` (inference only): one [keys, values] list per layer, start as
        ``[[None, None] for _ in range(n_layer)]`` (distinct lists: each layer fills its own);
        ``idx`` continues the cached sequence.
        """
        return self.lm_head(self._last_hidden(idx, cache))  # (B, T, V)

    def forward_with_hidden(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, T) -> (logits (B, T, V), last hidden states (B, T, C)): the same
        computation as ``forward``, the hidden states being the output matrix's input (after
        the final layer norm), for losses that declare ``needs_hidden`` (SimCTG)."""
        x = self._last_hidden(idx, None)  # (B, T, C)
        return self.lm_head(x), x

    def _last_hidden(self, idx: torch.Tensor, cache: list | None) -> torch.Tensor:
        B, T = idx.size()
        start = 0 if cache is None or cache[0][0] is None else cache[0][0].size(2)
        if start + T > self.config.block_size:
            raise ValueError(f"cannot forward a sequence of length {start + T}: "
                             f"block_size is only {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C), broadcast over B
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if cache is None else cache[i])
        return self.transformer.ln_f(x)  # (B, T, C)

    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (tied weights counted once).

        With ``non_embedding=True`` the pure lookup tables are left out: the
        position embeddings always, and the token embeddings only when untied.
        When tied, the (V, C) matrix is also the LM head -- a real matmul -- so
        it stays in. Either way the count is blocks + final LayerNorm + V*C,
        the N of the FLOPs formula in :meth:`flops_per_token`.
        """
        n_params = sum(p.numel() for p in self.parameters())  # parameters() dedups tied
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
            if not self.config.tie_weights:
                n_params -= self.transformer.wte.weight.numel()
        return n_params

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward), PaLM appendix B:

            6 * N + 12 * L * H * Q * T

        N = ``num_params(non_embedding=True)`` (transformer blocks, final
        LayerNorm and the LM-head matrix V*C; no position/token lookup tables),
        L = n_layer, H = n_head, Q = head size (so H*Q = n_embd), T = block_size.
        6N: every weight does one multiply-add (2 FLOPs) per token forward and
        twice that backward. 12*L*H*Q*T: per layer, QK^T and AV each cost 2*T*H*Q
        FLOPs per token forward (4 T*C), times 3 for forward+backward. As in
        PaLM, attention is counted over the full T (causal masking not halved),
        and biases/LayerNorms count only as parameters in N.
        """
        cfg = self.config
        n = self.num_params(non_embedding=True)
        head_size = cfg.n_embd // cfg.n_head
        return 6 * n + 12 * cfg.n_layer * cfg.n_head * head_size * cfg.block_size

    def param_groups_for_norms(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups for per-layer gradient-norm reporting.

        "embed" (wte, wpe), "block0" .. "block{L-1}", "head" (final LayerNorm and,
        only when untied, the LM head -- a tied head *is* wte, already in "embed").
        Every parameter appears in exactly one group.
        """
        groups: dict[str, list[nn.Parameter]] = {
            "embed": [self.transformer.wte.weight, self.transformer.wpe.weight],
        }
        for i, block in enumerate(self.transformer.h):
            groups[f"block{i}"] = list(block.parameters())
        head = list(self.transformer.ln_f.parameters())
        if not self.config.tie_weights:
            head.append(self.lm_head.weight)
        groups["head"] = head
        return groups


def mixed_precision(device: str):
    """The forward-pass precision policy: bf16 autocast on CUDA, plain fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))


def build_model(config: GPTConfig, seed: int) -> GPT:
    """A GPT whose initial weights depend on ``seed`` alone.

    The init runs inside ``fork_rng`` after ``manual_seed(seed)``: the caller's
    global RNG state is neither read nor changed, so every loss in a comparison
    starts from bit-identical weights whatever ran before.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(config)


@torch.no_grad()
def greedy_generate(model: nn.Module, prefix: torch.Tensor, n_new: int) -> torch.Tensor:
    """Greedy (arg-max) continuation of ``prefix`` (B, P) -> new tokens (B, n_new).

    Uses no randomness (and no RNG state); runs in eval mode so dropout is off,
    then restores the model's previous train/eval mode. The context is cropped
    to the last ``block_size`` tokens; when prefix and continuation fit in it, keys and
    values are cached (same tokens as recomputing, a fraction of the work).
    """
    if prefix.dim() != 2 or prefix.size(1) < 1:
        raise ValueError(f"prefix must be (B, P) with P >= 1, got {tuple(prefix.shape)}")
    if n_new < 0:
        raise ValueError(f"n_new must be >= 0, got {n_new}")
    was_training = model.training
    model.eval()
    try:
        idx = prefix
        # other architectures (lossbench.models.CausalLM) carry block_size and no cache
        gpt = isinstance(model, GPT)
        block_size = model.config.block_size if gpt else model.block_size
        if gpt and prefix.size(1) + n_new <= block_size and n_new > 0:
            # everything fits in the context: a key/value cache makes each new token
            # one single-position forward instead of a forward over the whole context
            cache = [[None, None] for _ in model.transformer.h]
            logits = model(idx, cache)  # (B, P, V)
            for i in range(n_new):
                next_tok = logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (B, 1)
                idx = torch.cat((idx, next_tok), dim=1)
                if i + 1 < n_new:
                    logits = model(next_tok, cache)  # (B, 1, V)
            return idx[:, prefix.size(1):]
        for _ in range(n_new):
            logits = model(idx[:, -block_size:])  # (B, t, V)
            next_tok = logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (B, 1)
            idx = torch.cat((idx, next_tok), dim=1)
        return idx[:, prefix.size(1):]  # (B, n_new)
    finally:
        model.train(was_training)
