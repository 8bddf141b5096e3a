"""Decoder: bridge, recurrent cell with input feeding, attention (then, conditional, a second
transition on the context), output layer.

Two ways in, sharing one step: ``init_state``/``step`` for search (one token at a time) and
``forward`` for teacher-forced training, which computes every time step's embedding projection at
once and returns the attentional vectors so the output layer runs on real tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.model import fused as fused_loop
from nmt.model.attention import Attention
from nmt.model.cells import CellLayer, State, select, sequence_mask, state_size
from nmt.model.encoder import Memory
from nmt.model.rnn import StackedCell


@dataclass
class DecoderState:
    """rnn: State, each [layers, B, H]; feed: [B, H] the previous attentional vector."""

    rnn: State
    feed: Tensor

    def select(self, index: Tensor) -> DecoderState:
        return DecoderState(rnn=select(self.rnn, index), feed=self.feed.index_select(0, index))


@dataclass
class StepOutput:
    """logits: [B, V]; attn: [B, S] or None (no attention)."""

    logits: Tensor
    state: DecoderState
    attn: Tensor | None


class Decoder(nn.Module):
    """Conditional RNN decoder over an encoder Memory."""

    def __init__(
        self,
        *,
        embedding: nn.Embedding,
        cell: str,
        hidden_size: int,
        layers: int,
        memory_size: int,
        attention: str,
        input_feeding: bool,
        dropout: float,
        emb_dropout: float,
        tie_output: bool,
        conditional: bool,
        var_dropout: float,
        ctx_dropout: float,
        word_dropout: float,
        fused: bool,
    ):
        super().__init__()
        # Training's time loop as one autograd node (nmt.model.fused), in fp32 or under bf16 autocast;
        # False: autograd's own graph.
        self.fused = fused
        # Training-only regularisers, each off at 0: per-sequence masks on the recurrent inputs
        # and states (variational), dropout of the attention context, and of whole target words
        # (their embeddings zeroed) under teacher forcing.
        self.var_dropout, self.word_dropout = var_dropout, word_dropout
        self.ctx_dropout = nn.Dropout(ctx_dropout)
        self.embedding = embedding
        emb_dim, vocab = embedding.embedding_dim, embedding.num_embeddings
        self.emb_dim, self.layers, self.input_feeding = emb_dim, layers, input_feeding
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.dropout = nn.Dropout(dropout)
        # Bridge: the encoder's final state -> the decoder's initial state (h, and c if any).
        self.bridge = nn.ModuleList(
            nn.Linear(memory_size, hidden_size) for _ in range(state_size(cell))
        )
        self.rnn = StackedCell(
            cell=cell,
            input_size=emb_dim + (hidden_size if input_feeding else 0),
            hidden_size=hidden_size,
            layers=layers,
            dropout=dropout,
        )
        self.attention = Attention(
            kind=attention, query_size=hidden_size, memory_size=memory_size, attn_size=hidden_size
        )
        # Conditional: the top layer steps again, on the context, from the state that queried
        # attention (the cGRU of dl4mt and Nematus, here for any cell of the seam).
        self.second = CellLayer(cell, memory_size, hidden_size) if conditional else None
        self.combine = nn.Linear(hidden_size + memory_size, hidden_size, bias=False)
        self.tie_output = tie_output
        if tie_output:
            self.out_proj = (
                nn.Linear(hidden_size, emb_dim, bias=False)
                if hidden_size != emb_dim
                else nn.Identity()
            )
            self.out_bias = nn.Parameter(torch.zeros(vocab))
        else:
            self.out = nn.Linear(hidden_size, vocab)
        self._decode_weight: tuple | None = None  # (the weight's identity, its [E, V] copy)

    def init_state(self, memory: Memory) -> DecoderState:
        rnn = tuple(
            torch.tanh(bridge(final)).unsqueeze(0).expand(self.layers, -1, -1).contiguous()
            for bridge, final in zip(self.bridge, memory.final, strict=True)
        )
        return DecoderState(rnn=rnn, feed=rnn[0].new_zeros(rnn[0].shape[1:]))

    def train(self, mode: bool = True) -> Decoder:
        """Switching between training and decoding drops the output-layer copy of ``logits``:
        whatever training did to the weight, decoding starts from the weight itself."""
        self._decode_weight = None
        return super().train(mode)

    def output_layer(self, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(x, weight, bias) with logits = x @ weight.T + bias: hidden [..., H] -> x [..., E or H].

        Split out so the loss can run the vocabulary-sized product in chunks.
        """
        if self.tie_output:
            return self.out_proj(hidden), self.embedding.weight, self.out_bias
        return hidden, self.out.weight, self.out.bias

    def logits(self, hidden: Tensor) -> Tensor:
        """Output layer: [..., H] attentional vectors -> [..., V] logits.

        Decoding (no gradient, not exporting) multiplies by a [E, V] copy of the weight laid out
        for the product: a few dozen rows against a wide, short weight run ~20 % faster on CPU
        that way than through the transposed [V, E] view. The copy follows the weight's version
        (an update of nmt.training.optim's optimizers or a loaded checkpoint makes a new one) and is
        dropped at every switch between training and evaluation."""
        x, weight, bias = self.output_layer(hidden)
        if torch.is_grad_enabled() or torch.jit.is_tracing() or x.dim() != 2:
            return F.linear(x, weight, bias)
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._decode_weight is None or self._decode_weight[0] != key:
            self._decode_weight = (key, weight.detach().t().contiguous())
        return torch.addmm(bias, x, self._decode_weight[1])

    def _advance(self, gx: Tensor, state: DecoderState, memory: Memory, masks=None):
        """One step from the first layer's projected input. ``masks``: variational dropout
        (``forward`` in training): the stacked layers', then the second transition's."""
        rnn = self.rnn.step(gx, state.rnn, None if masks is None else masks[:-1])
        query = rnn[0][-1]  # top layer h: [B, H]
        context, attn = self.attention(
            query, memory.keys, memory.outputs, memory.mask, memory.summary
        )
        context = self.ctx_dropout(context)
        if self.second is not None:
            x_mask, h_mask = masks[-1] if masks is not None else (None, None)
            ctx = context if x_mask is None else context * x_mask
            top = self.second.step(self.second.project(ctx), tuple(t[-1] for t in rnn), h_mask)
            rnn = tuple(torch.cat([t[:-1], n.unsqueeze(0)]) for t, n in zip(rnn, top, strict=True))
            query = top[0]
        feed = self.dropout(torch.tanh(self.combine(torch.cat([query, context], dim=-1))))
        return DecoderState(rnn=rnn, feed=feed), attn

    def step(self, prev_ids: Tensor, state: DecoderState, memory: Memory) -> StepOutput:
        """One step: prev_ids [B] int64 -> logits [B, V], new state, attention [B, S]."""
        x = self.emb_dropout(self.embedding(prev_ids))
        if self.input_feeding:
            x = torch.cat([x, state.feed], dim=-1)
        state, attn = self._advance(self.rnn.first.project(x), state, memory)
        return StepOutput(logits=self.logits(state.feed), state=state, attn=attn)

    def _sequence_masks(self, like: Tensor):
        """Variational dropout masks for a batch (None when off): the stacked layers', then
        the second transition's (None, None when there is none)."""
        masks = self.rnn.sequence_masks(like.shape[0], self.var_dropout, like)
        if masks is None:
            return None
        second = (None, None)
        if self.second is not None:
            second = (
                sequence_mask(
                    like.shape[0], self.second.weight_ih.shape[1], self.var_dropout, like
                ),
                sequence_mask(like.shape[0], self.second.hidden_size, self.var_dropout, like),
            )
        return [*masks, second]

    def forward(self, tgt_in: Tensor, memory: Memory) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: tgt_in [B, T] -> attentional vectors [B, T, H], attention [B, T, S]."""
        emb = self.emb_dropout(self.embedding(tgt_in))
        if self.training and self.word_dropout > 0:  # a dropped word: its embedding zeroed
            keep = torch.rand(tgt_in.shape, device=emb.device) >= self.word_dropout
            emb = emb * (keep.unsqueeze(-1) / (1 - self.word_dropout))
        masks = self._sequence_masks(emb) if self.training else None
        feed_mask = None
        if masks is not None:  # the first layer's input mask covers [embedding; feed]
            x_mask = masks[0][0]
            emb, feed_mask = emb * x_mask[:, None, : self.emb_dim], x_mask[:, self.emb_dim :]
        first = self.rnn.first
        w_emb = first.weight_ih[:, : self.emb_dim]
        if self.fused and self.training and torch.is_grad_enabled():
            return self._fused(emb, memory, masks, feed_mask)
        w_feed = first.weight_ih[:, self.emb_dim :]
        state = self.init_state(memory)
        feeds, attns = [], []
        # The embedding part of the first layer's input projection, one product per block of
        # STEP_BLOCK steps (nmt.model.fused): all steps at once would hold a [B, T, G] tensor through
        # the loop and its gradient twice over in backward (the steps' pieces, then their stack).
        # Split and unbound, not sliced per step: each slice's backward would zero-fill a whole
        # [B, T, ·] gradient (T^2 memory traffic over a batch); these are one cat and one stack.
        for block in emb.split(fused_loop.STEP_BLOCK, dim=1):
            for gx in F.linear(block, w_emb, first.bias_ih).unbind(1):  # [B, G] per step
                if self.input_feeding:
                    feed = state.feed if feed_mask is None else state.feed * feed_mask
                    gx = gx + F.linear(feed, w_feed)
                state, attn = self._advance(gx, state, memory, masks)
                feeds.append(state.feed)
                attns.append(attn)
        attn = None if attns[0] is None else torch.stack(attns, dim=1)
        return torch.stack(feeds, dim=1), attn

    def _fused(self, emb: Tensor, memory: Memory, masks, feed_mask) -> tuple[Tensor, Tensor | None]:
        """``forward``'s loop as one autograd node (nmt.model.fused), every dropout mask drawn first."""
        batch, steps = emb.shape[:2]
        state = self.init_state(memory)

        def dropout_mask(p: float, size: int) -> Tensor | None:
            if p <= 0:
                return None
            return emb.new_empty(steps, batch, size).bernoulli_(1 - p).div_(1 - p)

        hidden, context_size = state.feed.shape[-1], memory.outputs.shape[-1]
        first = self.rnn.first
        w = {"emb": emb, "w_emb": first.weight_ih[:, : self.emb_dim], "b_ih0": first.bias_ih}
        w.update({f"state{k}": s for k, s in enumerate(state.rnn)})
        w.update(feed0=state.feed, keys=memory.keys, values=memory.outputs, mask=memory.mask)
        w.update(summary=memory.summary, feed_vmask=feed_mask)
        if self.input_feeding:
            w["w_feed"] = first.weight_ih[:, self.emb_dim :]
        for i, layer in enumerate(self.rnn.layers):
            w[f"w_hh{i}"], w[f"b_hh{i}"] = layer.weight_hh, layer.bias_hh
            if i > 0:
                w[f"w_ih{i}"], w[f"b_ih{i}"] = layer.weight_ih, layer.bias_ih
            if masks is not None:
                w[f"h_vmask{i}"] = masks[i][1]
                if i > 0:
                    w[f"x_vmask{i}"] = masks[i][0]
            elif i > 0:
                w[f"drop{i}"] = dropout_mask(self.dropout.p, hidden)
        w.update(self.attention.row.weights(self.attention))
        w["w_c"] = self.combine.weight
        w["ctx_mask"] = dropout_mask(self.ctx_dropout.p, context_size)
        w["feed_mask"] = dropout_mask(self.dropout.p, hidden)
        if self.second is not None:
            w.update(w2_ih=self.second.weight_ih, b2_ih=self.second.bias_ih)
            w.update(w2_hh=self.second.weight_hh, b2_hh=self.second.bias_hh)
            if masks is not None:
                w["x_vmask2"], w["h_vmask2"] = masks[-1]
        w = {k: v for k, v in w.items() if v is not None}
        plan = fused_loop.Plan(
            cell=self.rnn.first.cell,
            layers=self.layers,
            attention=self.attention.kind,
            conditional=self.second is not None,
            input_feeding=self.input_feeding,
            names=tuple(w),
        )
        return fused_loop.FusedLoop.apply(plan, *w.values())
