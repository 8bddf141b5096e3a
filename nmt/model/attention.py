"""Attention: (query, memory) -> (context, weights), padded source positions getting exactly zero.

The attention table: one :class:`AttentionKind` row per kind, everything the toolkit knows of
it: its score, its parameters, its keys, the fused training loop's forward and derivative, and
its place and line style in the report. No other module names a kind; adding one is adding a row.

- ``none``: the Cho et al. (2014) encoder-decoder: one fixed context vector, the encoder's final
  state, fed at every step; no weights.
- ``bahdanau``: additive, score = v^T tanh(W_k k_s + W_q q).
- ``luong_dot``: score = q^T k_s (needs equal query and key sizes).
- ``luong_general``: score = q^T W k_s.

Keys are projected once per sentence by ``keys`` and kept in the encoder's Memory, never on self.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _bits(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits


@dataclass(frozen=True)
class AttentionKind:
    """One row of the attention table.

    ``build(module, query_size, memory_size, attn_size)`` makes its parameters on the module;
    ``keys(module, outputs [B, S, D])`` what scores read, once per sentence; ``scores(module,
    query [B, K, Q], keys)`` -> [B, K, S]. The fused loop (``nmt.model.fused``) sees it through
    ``weights(module)`` (its parameters under the loop's names), ``step_scores(w, q [B, Q],
    keys)`` -> (scores [B, S], what its derivative keeps), ``query_grad(w, g_e, kept, q, keys,
    acc, weight)`` -> the query's gradient (its own parameters' gradients through ``weight`` and
    ``acc``), ``keys_grad(acc, queries)`` -> the gradients of the keys (and of parameters the loop
    adds up in ``acc``) after the last step, and ``scoring_keys(keys)`` (the keys in the precision
    it scores in). ``reads_memory``: False for ``none``, whose context is the encoder's summary.
    """

    name: str
    score: str  # the formula, as the docs write it
    style: str  # the report's line style
    reads_memory: bool
    build: Callable = lambda module, query_size, memory_size, attn_size: None
    keys: Callable = lambda module, outputs: None
    scores: Callable | None = None
    weights: Callable = lambda module: {}
    step_scores: Callable | None = None
    query_grad: Callable | None = None
    keys_grad: Callable | None = None
    scoring_keys: Callable = lambda keys: keys


def _dot_scores(module, query: Tensor, keys: Tensor) -> Tensor:
    return torch.bmm(query, keys.transpose(1, 2))


def _dot_step_scores(w: dict, q: Tensor, keys: Tensor) -> tuple[Tensor, None]:
    return torch.bmm(keys, q.unsqueeze(-1)).squeeze(-1), None


def _dot_query_grad(w, g_e, kept, q, keys, acc, weight) -> Tensor:
    acc.setdefault("g_e", []).append(g_e)
    return torch.bmm(g_e.unsqueeze(1), keys).squeeze(1)


def _dot_keys_grad(acc: dict, queries: list[Tensor]) -> dict:
    g_e = torch.stack(acc["g_e"], dim=1)  # [B, T, S]
    return {"keys": torch.bmm(g_e.transpose(1, 2), torch.stack(queries, dim=1))}


def _luong_dot_build(module, query_size: int, memory_size: int, attn_size: int) -> None:
    if query_size != memory_size:
        raise ValueError(
            f"model.attention=luong_dot needs decoder size {query_size} == encoder output "
            f"size {memory_size}; use luong_general"
        )


def _general_build(module, query_size: int, memory_size: int, attn_size: int) -> None:
    module.key_proj = nn.Linear(memory_size, query_size, bias=False)


def _additive_build(module, query_size: int, memory_size: int, attn_size: int) -> None:
    module.key_proj = nn.Linear(memory_size, attn_size, bias=False)
    module.query_proj = nn.Linear(query_size, attn_size, bias=True)
    module.v = nn.Linear(attn_size, 1, bias=False)


def _additive_scores(module, query: Tensor, keys: Tensor) -> Tensor:
    return AdditiveScores.apply(keys, module.query_proj(query), module.v.weight.squeeze(0))


def _additive_weights(module) -> dict:
    return {
        "att_wq": module.query_proj.weight,
        "att_bq": module.query_proj.bias,
        "att_v": module.v.weight.squeeze(0),
    }


def _additive_step_scores(w: dict, q: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    # attention's own blocked kernel (sigmoid energy, never [B, S, A]); keys: scoring_keys
    qp = F.linear(q, w["att_wq"], w["att_bq"]).to(keys.dtype)
    return AdditiveScores.apply(keys, qp.unsqueeze(1), w["att_v"]).squeeze(1), qp


def _additive_query_grad(w, g_e, qp, q, keys, acc, weight) -> Tensor:
    g_keys, g_qp, g_v = additive_scores_grad(keys, qp.unsqueeze(1), w["att_v"], g_e.unsqueeze(1))
    acc["keys"] = g_keys if "keys" not in acc else acc["keys"].add_(g_keys)
    acc["att_v"] = g_v if "att_v" not in acc else acc["att_v"].add_(g_v)
    g_qp = g_qp.squeeze(1)
    weight("att_wq", g_qp, q, bias="att_bq")
    return g_qp @ w["att_wq"]


def _additive_scoring_keys(keys: Tensor) -> Tensor:
    """In float32 under bf16 autocast, where scores that differ in the third digit decide the
    weights (scored in bf16, the query projection's gradient was off by tens of percent, as it
    is in autograd's bf16 loop)."""
    return keys if keys.dtype in (torch.float32, torch.float64) else keys.float()


ATTENTIONS: tuple[AttentionKind, ...] = (
    AttentionKind(
        name="none", score="(none: the encoder's summary, fixed)", style=":", reads_memory=False
    ),
    AttentionKind(
        name="bahdanau",
        score="v^T tanh(W_k k_s + W_q q)",
        style="-",
        reads_memory=True,
        build=_additive_build,
        keys=lambda module, outputs: module.key_proj(outputs),
        scores=_additive_scores,
        weights=_additive_weights,
        step_scores=_additive_step_scores,
        query_grad=_additive_query_grad,
        keys_grad=lambda acc, queries: {"keys": acc["keys"], "att_v": acc["att_v"]},
        scoring_keys=_additive_scoring_keys,
    ),
    AttentionKind(
        name="luong_dot",
        score="q^T k_s",
        style="--",
        reads_memory=True,
        build=_luong_dot_build,
        keys=lambda module, outputs: outputs,
        scores=_dot_scores,
        step_scores=_dot_step_scores,
        query_grad=_dot_query_grad,
        keys_grad=_dot_keys_grad,
    ),
    AttentionKind(
        name="luong_general",
        score="q^T W k_s",
        style="-.",
        reads_memory=True,
        build=_general_build,
        keys=lambda module, outputs: module.key_proj(outputs),
        scores=_dot_scores,
        step_scores=_dot_step_scores,
        query_grad=_dot_query_grad,
        keys_grad=_dot_keys_grad,
    ),
)
KINDS = tuple(row.name for row in ATTENTIONS)  # the table's order: the report's too
_BY_NAME = {row.name: row for row in ATTENTIONS}


def attention_kind(name: str) -> AttentionKind:
    """The table's row of ``model.attention=name``."""
    if name not in _BY_NAME:
        raise ValueError(f"model.attention={name!r}: expected one of {', '.join(KINDS)}")
    return _BY_NAME[name]


class Attention(nn.Module):
    """Scores a decoder query against encoder outputs.

    keys(outputs: [B, S, D]) -> [B, S, A]   (precomputed once per sentence)
    forward(query [B*K, Q], keys, values [B, S, D], mask [B, S], summary [B, D]) ->
        (context [B*K, D], weights [B*K, S] or None)

    Queries come in groups of K consecutive rows per sentence (K = 1 in training, the beam size
    in beam search): the K beams of a sentence read one copy of its memory.
    """

    def __init__(self, *, kind: str, query_size: int, memory_size: int, attn_size: int):
        super().__init__()
        self.row = attention_kind(kind)
        self.kind = kind
        self.row.build(self, query_size, memory_size, attn_size)

    def keys(self, outputs: Tensor) -> Tensor | None:
        return self.row.keys(self, outputs)

    def forward(
        self, query: Tensor, keys: Tensor | None, values: Tensor, mask: Tensor, summary: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        group = query.shape[0] // values.shape[0]  # K queries per sentence
        if not self.row.reads_memory:
            return summary.repeat_interleave(group, dim=0) if group > 1 else summary, None
        scores = self.row.scores(self, query.view(-1, group, query.shape[-1]), keys)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))  # [B, K, S]
        # fp32 under autocast too (half precision's weights would not sum to one); fp64 stays fp64.
        weights = torch.softmax(scores, dim=-1, dtype=max(scores.dtype, torch.float32, key=_bits))
        context = torch.bmm(weights.to(values.dtype), values)  # [B, K, D]
        return context.view(query.shape[0], -1), weights.view(query.shape[0], -1)


class AdditiveScores(torch.autograd.Function):
    """scores = v^T tanh(keys + query): keys [B, S, A], query [B, K, A], v [A] -> [B, K, S].

    The [B, S, A] energy is the largest tensor of a decoder step, so two things:
    - it is recomputed in backward instead of being kept for every decoder step: stored, it is
      most of a training step's memory (128 sentences x 50 steps x 50 source positions x 512
      floats is 650 MB); recomputed, it costs one add and one activation per step;
    - in fp32 it goes through the sigmoid, tanh(u) = 2 sigmoid(2u) - 1, so that
      v^T tanh(u) = (2v)^T s - sum(v) with s = sigmoid(2u): torch's CPU tanh is 3.5x slower than
      its sigmoid (measured on AVX2, 2 threads: 1.97 vs 0.57 ms for [128, 15, 512]), and the
      affine part folds into v. Half precision keeps tanh: 2s - 1 cancels where bf16 has no bits.
    """

    @staticmethod
    def forward(ctx, keys: Tensor, query: Tensor, v: Tensor) -> Tensor:
        ctx.save_for_backward(keys, query, v)
        return additive_scores(keys, query, v)

    @staticmethod
    def backward(ctx, grad: Tensor):
        keys, query, v = ctx.saved_tensors
        return additive_scores_grad(keys, query, v, grad, ctx.needs_input_grad[:3])


def additive_scores(keys: Tensor, query: Tensor, v: Tensor) -> Tensor:
    """v^T tanh(keys + query): keys [B, S, A], query [B, K, A], v [A] -> [B, K, S]."""
    # Traced for ONNX (nmt.serving.onnx_export): one expression, with no blocks of traced sizes.
    if keys.dtype not in (torch.float32, torch.float64) or torch.jit.is_tracing():
        return torch.tanh(keys.unsqueeze(1) + query.unsqueeze(2)) @ v
    scores = keys.new_empty(keys.shape[0], query.shape[1], keys.shape[1])
    w, c = 2.0 * v.to(keys.dtype), v.sum().to(keys.dtype)
    with _no_autocast(keys):  # 2 v^T s - sum(v) cancels: its products stay in keys' precision
        for rows in _blocks(keys, query):
            torch.sub(_sigmoid_energy(keys[rows], query[rows]) @ w, c, out=scores[rows])
    return scores


def _no_autocast(like: Tensor):
    """Autocast off (the fused decoder loop scores in float32 under bf16 autocast)."""
    return torch.autocast(like.device.type, enabled=False)


def additive_scores_grad(
    keys: Tensor, query: Tensor, v: Tensor, grad: Tensor, needs=(True, True, True)
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The gradients of keys, query and v given the scores' gradient [B, K, S] (the energy
    recomputed, in blocks)."""
    need_keys, need_query, need_v = needs
    if keys.dtype not in (torch.float32, torch.float64):
        energy = torch.tanh(keys.unsqueeze(1) + query.unsqueeze(2))
        grad_v = (grad.unsqueeze(-1) * energy).sum(dim=(0, 1, 2)) if need_v else None
        # d tanh(u) / du = 1 - tanh(u)^2
        energy.mul_(energy).neg_().add_(1.0).mul_(v).mul_(grad.unsqueeze(-1))
        grad_keys = energy.sum(dim=1) if need_keys else None
        return grad_keys, energy.sum(dim=2) if need_query else None, grad_v
    with _no_autocast(keys):
        return _sigmoid_scores_grad(keys, query, v.to(keys.dtype), grad.to(keys.dtype), needs)


def _sigmoid_scores_grad(keys, query, v, grad, needs):
    need_keys, need_query, need_v = needs
    grad_keys = torch.empty_like(keys) if need_keys else None
    grad_query = torch.empty_like(query) if need_query else None
    grad_v, grad_sum = torch.zeros_like(v), grad.new_zeros(())
    four_v = 4.0 * v
    for rows in _blocks(keys, query):
        energy = _sigmoid_energy(keys[rows], query[rows])  # s = sigmoid(2u)
        g = grad[rows]
        if need_v:  # sum over (b, k, s) of g * (2s - 1)
            flat = g.reshape(1, -1)
            grad_v.add_((flat @ energy.view(flat.shape[1], -1)).squeeze(0), alpha=2.0)
            grad_sum += flat.sum()
        # d scores / d (keys + query) = g v (1 - tanh(u)^2) = g v 4 s (1 - s)
        energy.addcmul_(energy, energy, value=-1.0).mul_(four_v).mul_(g.unsqueeze(-1))
        if need_query:
            torch.sum(energy, dim=2, out=grad_query[rows])
        if need_keys:
            grad_keys[rows] = energy.squeeze(1) if energy.shape[1] == 1 else energy.sum(1)
    return grad_keys, grad_query, grad_v - grad_sum if need_v else None


ENERGY_BLOCK = 1 << 20  # floats of energy per block: 4 MiB


def _blocks(keys: Tensor, query: Tensor) -> list[slice]:
    """Sentence ranges whose energy [b, K, S, A] stays under ENERGY_BLOCK floats: a block is
    reused from the heap, where one [B, K, S, A] tensor (13 MB for a beam of 5 over 64 sentences)
    would be mapped and page-faulted afresh at every step (runtime.return_freed_memory maps
    allocations of 8 MiB and more)."""
    per_sentence = query.shape[1] * keys.shape[1] * keys.shape[2]
    size = max(1, ENERGY_BLOCK // max(per_sentence, 1))
    return [slice(start, start + size) for start in range(0, keys.shape[0], size)]


def _sigmoid_energy(keys: Tensor, query: Tensor) -> Tensor:
    """sigmoid(2 (keys + query)) in one allocation: keys [b, S, A], query [b, K, A] -> [b, K, S, A]."""
    return torch.add(keys.unsqueeze(1), query.unsqueeze(2)).mul_(2.0).sigmoid_()
