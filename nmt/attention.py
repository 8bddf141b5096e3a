"""Attention: (query, memory) -> (context, weights), padded source positions getting exactly zero.

- ``none``: the Cho et al. (2014) encoder-decoder: one fixed context vector, the encoder's final
  state, fed at every step; no weights.
- ``bahdanau``: additive, score = v^T tanh(W_k k_s + W_q q).
- ``luong_dot``: score = q^T k_s (needs equal query and key sizes).
- ``luong_general``: score = q^T W k_s.

Keys are projected once per sentence by ``keys`` and kept in the encoder's Memory, never on self.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

KINDS = ("none", "bahdanau", "luong_dot", "luong_general")


class Attention(nn.Module):
    """Scores a decoder query against encoder outputs.

    keys(outputs: [B, S, D]) -> [B, S, A]   (precomputed once per sentence)
    forward(query [B, Q], keys, values [B, S, D], mask [B, S], summary [B, D]) ->
        (context [B, D], weights [B, S] or None)
    """

    def __init__(self, *, kind: str, query_size: int, memory_size: int, attn_size: int):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"model.attention={kind!r}: expected one of {', '.join(KINDS)}")
        if kind == "luong_dot" and query_size != memory_size:
            raise ValueError(
                f"model.attention=luong_dot needs decoder size {query_size} == encoder output "
                f"size {memory_size}; use luong_general"
            )
        self.kind = kind
        if kind == "bahdanau":
            self.key_proj = nn.Linear(memory_size, attn_size, bias=False)
            self.query_proj = nn.Linear(query_size, attn_size, bias=True)
            self.v = nn.Linear(attn_size, 1, bias=False)
        elif kind == "luong_general":
            self.key_proj = nn.Linear(memory_size, query_size, bias=False)

    def keys(self, outputs: Tensor) -> Tensor | None:
        if self.kind in ("bahdanau", "luong_general"):
            return self.key_proj(outputs)
        return outputs if self.kind == "luong_dot" else None

    def forward(
        self, query: Tensor, keys: Tensor | None, values: Tensor, mask: Tensor, summary: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        if self.kind == "none":
            return summary, None
        if self.kind == "bahdanau":
            energy = torch.tanh(keys + self.query_proj(query).unsqueeze(1))  # [B, S, A]
            scores = self.v(energy).squeeze(-1)
        else:
            scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # [B, S]
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)  # [B, D]
        return context, weights
