"""The decoder's teacher-forced time loop as one autograd node (``model.fused=true``).

Autograd records a dozen small nodes per decoder step and keeps every tensor they saved; here the
forward pass runs the steps without a graph and keeps per step only what the backward pass needs
(the cells' gate activations and states, the attention weights, the combined output), and the
backward pass walks the steps in reverse with hand-written derivatives, adding each step's weight
gradients as it goes (one product per weight and step, as autograd does) and dropping the step's
activations at once. Each cell's step and derivative come from its row of the cell table
(``nmt.model.cells``; a row without a hand-written derivative has its step differentiated by autograd,
step by step, ``nmt.model.cell_grads.fused_step``); Bahdanau attention uses ``nmt.model.attention``'s blocked
kernels forward and backward.

Dropout: the masks are drawn before the loop (standard dropout as one [T, B, ·] mask per site,
variational dropout as today, one mask per sequence), so the fused and the autograd decoder differ
in the random numbers they draw, not in what they compute. ``tests/test_fused.py`` compares the
gradients of every parameter with autograd's in float64 for every cell, attention, conditional
decoder and regulariser.

Under bf16 autocast the products run in bf16 (backward too: it enters the forward's autocast
state), the weight gradients add up in float32, and additive attention scores in float32: its
scores and their softmax differ in the third digit, and in bf16 the query's gradient was lost in
the cancellation (autograd's bf16 loop keeps that error).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from nmt.model.attention import AttentionKind, attention_kind
from nmt.model.cell_grads import fused_step
from nmt.model.cells import spec

# Teacher forcing projects the target embeddings this many steps at a time, here and in the
# decoder's autograd loop: all steps at once would hold a [B, T, G] tensor through the loop and its
# gradient in backward (44 MiB each for 128 sentences of 56 tokens at G = 1536).
STEP_BLOCK = 8

# --------------------------------------------------------------------------------------------
# Attention of one step (one query per sentence) and its derivative.


def _attend(row: AttentionKind, q, w, keys, values, mask, summary):
    """(context, weights or None, what the row's derivative keeps)."""
    if not row.reads_memory:
        return summary, None, None
    scores, kept = row.step_scores(w, q, keys)
    a = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.bmm(a.unsqueeze(1), values).squeeze(1), a, kept


def _attend_back(row: AttentionKind, g_c, a, kept, q, keys, values, w, acc, weight):
    """The query's gradient; the memory's and attention weights' go into ``acc``, the row's
    parameters' through ``weight``."""
    if not row.reads_memory:
        acc["summary"] = acc.get("summary", 0) + g_c
        return None
    g_a = torch.bmm(values, g_c.unsqueeze(-1)).squeeze(-1)
    g_e = a * (g_a - (a * g_a).sum(-1, keepdim=True))
    return row.query_grad(w, g_e, kept, q, keys, acc, weight)


# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The shape of the loop: which cell, layers, attention, and which masks and weights exist."""

    cell: str
    layers: int
    attention: str
    conditional: bool
    input_feeding: bool
    names: tuple[str, ...]  # the tensors handed to the function, in order


def _mul(x: Tensor | None, mask: Tensor | None) -> Tensor | None:
    return x if mask is None or x is None else x * mask


class FusedLoop(torch.autograd.Function):
    """feeds [B, T, H], attention [B, T, S] or None = FusedLoop.apply(plan, *tensors)."""

    @staticmethod
    def forward(ctx, plan: Plan, *tensors):
        params = dict(zip(plan.names, tensors, strict=True))
        device = params["emb"].device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        w = _once(params, ctx.autocast)
        fwd = _cell(plan)[0]
        top, steps = plan.layers - 1, w["emb"].shape[1]
        states = [
            tuple(w[f"state{k}"][i] for k in range(_states(plan))) for i in range(plan.layers)
        ]
        feed, saved, feeds, attns = w["feed0"], [], [], []
        keys, row = _scoring_keys(plan, w), attention_kind(plan.attention)
        for t in range(steps):
            keep: dict = {"layers": []}
            if t % STEP_BLOCK == 0:  # the embeddings' projection for the next block of steps
                block = F.linear(w["emb"][:, t : t + STEP_BLOCK], w["w_emb"], w["b_ih0"])
            gx = block[:, t % STEP_BLOCK]
            if plan.input_feeding:
                gx = gx + F.linear(_mul(feed, w.get("feed_vmask")), w["w_feed"])  # again backward
            for i in range(plan.layers):
                if i > 0:
                    below = _mul(states[i - 1][0], _layer_mask(w, i, t))
                    gx = F.linear(below, w[f"w_ih{i}"], w[f"b_ih{i}"])
                else:
                    below = None
                hm = _mul(states[i][0], w.get(f"h_vmask{i}"))
                states[i], cell_saved = fwd(gx, states[i], w[f"w_hh{i}"], w[f"b_hh{i}"], hm)
                keep["layers"].append((below, cell_saved))
            q1 = states[top][0]
            c, a, qp = _attend(row, q1, w, keys, w["values"], w["mask"], w["summary"])
            cd = _mul(c, w["ctx_mask"][t] if "ctx_mask" in w else None)
            query = q1
            if plan.conditional:
                ctx_in = _mul(cd, w.get("x_vmask2"))
                gx2 = F.linear(ctx_in, w["w2_ih"], w["b2_ih"])
                hm2 = _mul(q1, w.get("h_vmask2"))
                states[top], saved2 = fwd(gx2, states[top], w["w2_hh"], w["b2_hh"], hm2)
                keep.update(ctx_in=ctx_in, saved2=saved2)
                query = states[top][0]
            qc = torch.cat([query, cd], dim=-1)
            u = torch.tanh(F.linear(qc, w["w_c"]))
            feed = _mul(u, w["feed_mask"][t] if "feed_mask" in w else None)
            keep.update(q1=q1, a=a, qp=qp, cd=cd, u=u)  # qc's halves: [query, cd]
            if plan.conditional:
                keep["query"] = query
            saved.append(keep)
            feeds.append(feed)
            attns.append(a)
        ctx.plan, ctx.saved, ctx.w, ctx.params = plan, saved, w, params
        attn = None if attns[0] is None else torch.stack(attns, dim=1)
        if attn is not None:
            ctx.mark_non_differentiable(attn)
        return torch.stack(feeds, dim=1), attn

    @staticmethod
    def backward(ctx, g_feeds: Tensor, _g_attn):
        device, enabled, dtype = ctx.autocast
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            return FusedLoop._backward(ctx, g_feeds)

    @staticmethod
    def _backward(ctx, g_feeds: Tensor):
        plan, saved, w = ctx.plan, ctx.saved, ctx.w
        back = _cell(plan)[1]
        top, steps, n_states = plan.layers - 1, len(saved), _states(plan)
        carry = [[None] * n_states for _ in range(plan.layers)]  # grads of the states after t
        g_feed_carry = None
        acc: dict = {}
        sums = _Grads(ctx.params)
        grads = sums.grads
        g_cs, attn_weights, queries = [], [], []
        keys, row = _scoring_keys(plan, w), attention_kind(plan.attention)
        emb = w["emb"]
        g_emb = torch.empty_like(emb)
        for t in reversed(range(steps)):
            keep = saved[t]
            start = t - t % STEP_BLOCK
            if t == steps - 1 or t % STEP_BLOCK == STEP_BLOCK - 1:  # a block's last step
                g_block, block_steps = None, t + 1 - start  # allocated in g_gx's dtype
            g_feed = g_feeds[:, t] + (0 if g_feed_carry is None else g_feed_carry)
            g_new, g_cd = _output_back(plan, w, keep, g_feed, carry[top], t, back, sums)
            g_c = _mul(g_cd, w["ctx_mask"][t] if "ctx_mask" in w else None)
            g_cs.append(g_c)
            attn_weights.append(keep["a"])
            queries.append(keep["q1"])
            g_q1 = _attend_back(
                row, g_c, keep["a"], keep["qp"], keep["q1"], keys, w["values"], w, acc, sums.weight
            )
            g_new[0] = _add(g_new[0], g_q1)
            g_gx = _layers_back(plan, w, keep, g_new, carry, t, back, sums)
            if g_block is None:  # under bf16 autocast g_gx is bf16: no per-step conversion
                g_block = g_gx.new_empty(emb.shape[0], block_steps, g_gx.shape[-1])
            g_block[:, t - start] = g_gx
            if t == start:  # the block's embeddings and their projection's weights, at once
                _embeddings_back(w, g_block, start, g_emb, sums)
            if plan.input_feeding:
                before = w["feed0"]  # the feed that entered step t, from step t - 1's output
                if t > 0:
                    before = _mul(
                        saved[t - 1]["u"], w["feed_mask"][t - 1] if "feed_mask" in w else None
                    )
                sums.weight("w_feed", g_gx, _mul(before, w.get("feed_vmask")))
                g_feed_carry = _mul(g_gx @ w["w_feed"], w.get("feed_vmask"))
            saved[t] = None  # this step's activations are no longer needed
        _memory_grads(plan, acc, grads, g_cs, attn_weights, queries)
        grads["emb"] = g_emb
        for k in range(n_states):
            grads[f"state{k}"] = torch.stack(
                [torch.zeros_like(w[f"state{k}"][0]) if c[k] is None else c[k] for c in carry]
            )
        grads["feed0"] = g_feed_carry
        ctx.saved = ctx.w = ctx.params = None
        wanted = ctx.needs_input_grad[1:]
        return (
            None,
            *(grads.get(n) if need else None for n, need in zip(plan.names, wanted, strict=True)),
        )


class _Grads:
    """The parameters' gradients, added up step by step."""

    def __init__(self, params: dict):
        self.params, self.grads = params, {}

    def _zero(self, name: str) -> Tensor:
        if name not in self.grads:
            self.grads[name] = torch.zeros_like(self.params[name])
        return self.grads[name]

    def weight(
        self, name: str, g: Tensor, x: Tensor, rows=slice(None), bias=None, cols=slice(None)
    ) -> None:
        """grad of w[name][rows, cols] += g^T x (and of the bias, the sum of g): a product per
        step, as autograd does; the step's saved tensors can go right after."""
        grad = self._zero(name)
        if g.dtype == x.dtype == grad.dtype:
            grad[rows, cols].addmm_(g.T, x)
        else:  # bf16 autocast: the product in bf16, added (converted as it adds) in float32
            grad[rows, cols].add_(g.T @ x)
        if bias is not None:
            self._zero(bias)[rows].add_(g.sum(0))

    def add_whole(self, w_name: str, b_name: str, whole) -> None:
        """A step's recurrent weight and bias gradients given whole (autograd's path)."""
        for name, g in zip((w_name, b_name), whole or (), strict=False):
            if g is not None and g.numel():
                self._zero(name).add_(g)

    def recurrent(self, w_name: str, b_name: str, rows, whole) -> None:
        """A cell's recurrent weight and bias gradients: its rows' products, or whole."""
        for r, g, x in rows:
            self.weight(w_name, g, x, r, bias=b_name)
        self.add_whole(w_name, b_name, whole)


def _output_back(plan, w, keep, g_feed, carry_top, t, back, sums: _Grads):
    """One step's output (u = tanh(W_c [query; context])) and, conditional, its second
    transition, backwards: the gradients of the top layer's new state and of the context."""
    g_u = _mul(g_feed, w["feed_mask"][t] if "feed_mask" in w else None)
    g_pre = g_u * (1 - keep["u"] * keep["u"])
    query = keep["query"] if plan.conditional else keep["q1"]
    sums.weight("w_c", g_pre, query, cols=slice(None, query.shape[-1]))
    sums.weight("w_c", g_pre, keep["cd"], cols=slice(query.shape[-1], None))
    g_qc = g_pre @ w["w_c"]
    g_query, g_cd = g_qc.split([g_pre.shape[-1], g_qc.shape[-1] - g_pre.shape[-1]], -1)
    g_new = [_add(carry_top[0], g_query), *carry_top[1:]]
    if plan.conditional:
        g_x2, rows2, g_hm2, direct2, whole2 = back(keep["saved2"], g_new, w["w2_hh"])
        sums.recurrent("w2_hh", "b2_hh", rows2, whole2)
        sums.weight("w2_ih", g_x2, keep["ctx_in"], bias="b2_ih")
        g_cd = g_cd + _mul(g_x2 @ w["w2_ih"], w.get("x_vmask2"))
        g_new = [_add(direct2[0], _mul(g_hm2, w.get("h_vmask2"))), *direct2[1:]]
    return g_new, g_cd


def _layers_back(plan, w, keep, g_new, carry, t, back, sums: _Grads) -> Tensor:
    """One step's recurrent layers backwards, top to bottom: ``carry`` becomes the gradients
    of the states before the step; returns the first layer's projected input's gradient."""
    top, g_below = plan.layers - 1, None
    for i in reversed(range(plan.layers)):
        if i < top:
            g_new = [_add(carry[i][0], g_below), *carry[i][1:]]
        below, cell_saved = keep["layers"][i]
        g_gx, rows, g_hm, direct, whole = back(cell_saved, g_new, w[f"w_hh{i}"])
        sums.recurrent(f"w_hh{i}", f"b_hh{i}", rows, whole)
        carry[i] = [_add(direct[0], _mul(g_hm, w.get(f"h_vmask{i}"))), *direct[1:]]
        if i > 0:
            sums.weight(f"w_ih{i}", g_gx, below, bias=f"b_ih{i}")
            g_below = _mul(g_gx @ w[f"w_ih{i}"], _layer_mask(w, i, t))
    return g_gx


def _embeddings_back(w, g_block: Tensor, start: int, g_emb: Tensor, sums: _Grads) -> None:
    """A block of steps' embeddings and their projection's weights, at once."""
    emb = w["emb"]
    stop = start + g_block.shape[1]
    g_emb[:, start:stop] = g_block @ w["w_emb"]  # (converted as it is stored)
    sums.weight(
        "w_emb",
        g_block.view(-1, g_block.shape[-1]),
        emb[:, start:stop].reshape(-1, emb.shape[-1]),
        bias="b_ih0",
    )


def _memory_grads(plan, acc, grads, g_cs, attn_weights, queries) -> None:
    """The gradients of the encoder's memory (keys, values, summary) and of the row's
    parameters added up over the steps, from the steps' small [B, S] and [B, ·] pieces by one
    batched product each (steps in reverse order)."""
    row = attention_kind(plan.attention)
    if not row.reads_memory:
        grads["summary"] = acc["summary"]
        return
    a = torch.stack(attn_weights, dim=1)  # [B, T, S]
    grads["values"] = torch.bmm(a.transpose(1, 2), torch.stack(g_cs, dim=1))
    grads.update(row.keys_grad(acc, queries))


def _scoring_keys(plan: Plan, w: dict) -> Tensor | None:
    """The keys in the precision the row scores in (``AttentionKind.scoring_keys``)."""
    keys = w.get("keys")
    return None if keys is None else attention_kind(plan.attention).scoring_keys(keys)


# The first decoder layer's weight views: autocast caches the casts of whole parameters only, so
# under bf16 autocast these would be cast at every step (w_feed) or block (w_emb), forward and
# backward; and the embeddings, which every block's projection casts.
_CAST_ONCE = ("w_emb", "w_feed", "emb")


def _once(params: dict, autocast: tuple) -> dict:
    """The loop's tensors, with those autocast would cast again and again cast once per call
    under bf16 autocast (the parameters' gradients stay float32: ``params`` keeps them)."""
    _, enabled, dtype = autocast
    if not enabled or dtype in (torch.float32, torch.float64):
        return params
    once = dict(params)
    for name in _CAST_ONCE:
        if name in params and params[name].dtype != dtype:
            once[name] = params[name].to(dtype)
    return once


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def _states(plan: Plan) -> int:
    return spec(plan.cell).states


def _cell(plan: Plan):
    """(forward, backward) of the plan's cell step."""
    row = spec(plan.cell)
    return fused_step(row.step, row.derivative)


def _layer_mask(w: dict, i: int, t: int) -> Tensor | None:
    """What multiplies the input of layer i > 0: its variational mask, or step t's dropout."""
    if f"x_vmask{i}" in w:
        return w[f"x_vmask{i}"]
    return w[f"drop{i}"][t] if f"drop{i}" in w else None
