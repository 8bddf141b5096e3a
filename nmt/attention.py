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
            scores = AdditiveScores.apply(keys, self.query_proj(query), self.v.weight.squeeze(0))
        else:
            scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # [B, S]
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)  # [B, D]
        return context, weights


class AdditiveScores(torch.autograd.Function):
    """scores = v^T tanh(keys + query): keys [B, S, A], query [B, A], v [A] -> [B, S].

    The [B, S, A] energy is recomputed in backward instead of being kept for every decoder step:
    stored, it is most of a training step's memory (128 sentences x 50 steps x 50 source
    positions x 512 floats is 650 MB); recomputed, it costs one add and one tanh per step.
    """

    @staticmethod
    def forward(ctx, keys: Tensor, query: Tensor, v: Tensor) -> Tensor:
        ctx.save_for_backward(keys, query, v)
        return torch.tanh(keys + query.unsqueeze(1)) @ v

    @staticmethod
    def backward(ctx, grad: Tensor):
        keys, query, v = ctx.saved_tensors
        energy = torch.tanh(keys + query.unsqueeze(1))
        grad = grad.unsqueeze(-1)  # [B, S, 1]
        grad_v = (grad * energy).sum(dim=(0, 1)) if ctx.needs_input_grad[2] else None
        energy.mul_(energy).neg_().add_(1.0).mul_(grad * v)  # d scores / d (keys + query)
        grad_query = energy.sum(dim=1) if ctx.needs_input_grad[1] else None
        return energy, grad_query, grad_v
