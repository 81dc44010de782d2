"""A model for examples/own/factory.toml: any factory(vocab_size, block_size, **model_kwargs)
returning an nn.Module that maps (B, T) token ids to (B, T, V) logits."""

import torch
import torch.nn as nn


class GRULM(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, width: int = 128, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.rnn = nn.GRU(width, width, num_layers=layers, batch_first=True)
        self.head = nn.Linear(width, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(idx))  # (B, T, W): causal by construction
        return self.head(h)  # (B, T, V)


def gru(vocab_size: int, block_size: int, **kwargs) -> nn.Module:
    return GRULM(vocab_size, block_size, **kwargs)
