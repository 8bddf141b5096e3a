"""Encoder: embeddings and a (bidirectional) RNN over packed sequences -> Memory."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor, nn

from nmt.model.cells import State
from nmt.model.rnn import Recurrent, final_top


@dataclass
class Memory:
    """What the decoder attends to; every field is indexed by sentence on dim 0.

    outputs: [B, S, D]; mask: [B, S] bool; keys: [B, S, A] or None (attention's precomputed
    projection); summary: [B, D] (top layer's final state, directions concatenated);
    final: State, each [B, D].
    """

    outputs: Tensor
    mask: Tensor
    summary: Tensor
    final: State
    keys: Tensor | None = None

    def select(self, index: Tensor) -> Memory:
        """Memory of the sentences ``index`` (for beams, a sentence repeated)."""
        return Memory(
            outputs=self.outputs.index_select(0, index),
            mask=self.mask.index_select(0, index),
            summary=self.summary.index_select(0, index),
            final=tuple(t.index_select(0, index) for t in self.final),
            keys=None if self.keys is None else self.keys.index_select(0, index),
        )

    def with_keys(self, keys: Tensor | None) -> Memory:
        return replace(self, keys=keys)


class Encoder(nn.Module):
    """embed -> dropout -> Recurrent; a sentence encodes the same with or without padding."""

    def __init__(
        self,
        *,
        embedding: nn.Embedding,
        cell: str,
        hidden_size: int,
        layers: int,
        bidirectional: bool,
        dropout: float,
        emb_dropout: float,
        var_dropout: float,
    ):
        super().__init__()
        self.embedding = embedding
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.rnn = Recurrent(
            cell=cell,
            input_size=embedding.embedding_dim,
            hidden_size=hidden_size,
            layers=layers,
            bidirectional=bidirectional,
            dropout=dropout,
            var_dropout=var_dropout,
        )
        self.output_size = hidden_size * (2 if bidirectional else 1)

    def forward(self, src_ids: Tensor, src_lens: Tensor, src_mask: Tensor) -> Memory:
        """src_ids: [B, S] int64; src_lens: [B] int64 on CPU; src_mask: [B, S] bool."""
        x = self.emb_dropout(self.embedding(src_ids))
        outputs, final = self.rnn(x, src_lens)
        top = final_top(final, self.rnn.layers, self.rnn.dirs)
        return Memory(outputs=outputs, mask=src_mask, summary=top[0], final=top)
