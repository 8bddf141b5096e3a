"""Seq2Seq: the encoder and the decoder, tensors in and tensors out; ``build_model`` from plain
arguments. The loss lives in ``loss.py``, batches in ``batching.py``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nmt.decoder import Decoder
from nmt.encoder import Encoder, Memory
from nmt.specials import PAD_ID


class Seq2Seq(nn.Module):
    def __init__(self, encoder: Encoder, decoder: Decoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, src_ids: Tensor, src_lens: Tensor, src_mask: Tensor) -> Memory:
        """src_ids: [B, S] -> Memory with the attention keys precomputed."""
        memory = self.encoder(src_ids, src_lens, src_mask)
        return memory.with_keys(self.decoder.attention.keys(memory.outputs))

    def forward(
        self, src_ids: Tensor, src_lens: Tensor, src_mask: Tensor, tgt_in: Tensor
    ) -> Tensor:
        """Teacher forcing: the decoder's output features [B, T, E] for target inputs tgt_in
        [B, T] (the output layer is applied by the loss, to real tokens only)."""
        memory = self.encode(src_ids, src_lens, src_mask)
        hidden, _ = self.decoder(tgt_in, memory)
        return hidden


def build_model(
    *,
    cell: str,
    attention: str,
    emb_dim: int,
    enc_hidden: int,
    dec_hidden: int,
    enc_layers: int,
    dec_layers: int,
    bidirectional: bool,
    dropout: float,
    emb_dropout: float,
    input_feeding: bool,
    tie_output: bool,
    tie_src_tgt: bool,
    src_vocab_size: int,
    tgt_vocab_size: int,
    joint_vocab: bool,
) -> Seq2Seq:
    """The encoder-decoder described by the ``model`` config group and the vocabulary.

    ``tie_src_tgt`` shares the source and target embeddings when the vocabulary is joint; with
    one vocabulary per language (``tokenizer=separate8k``) there is nothing to share.
    """
    src_emb = nn.Embedding(src_vocab_size, emb_dim, padding_idx=PAD_ID)
    if tie_src_tgt and joint_vocab:
        tgt_emb = src_emb
    else:
        tgt_emb = nn.Embedding(tgt_vocab_size, emb_dim, padding_idx=PAD_ID)
    for emb in {id(src_emb): src_emb, id(tgt_emb): tgt_emb}.values():
        nn.init.normal_(emb.weight, std=emb_dim**-0.5)
        with torch.no_grad():
            emb.weight[PAD_ID].zero_()
    encoder = Encoder(
        embedding=src_emb,
        cell=cell,
        hidden_size=enc_hidden,
        layers=enc_layers,
        bidirectional=bidirectional,
        dropout=dropout,
        emb_dropout=emb_dropout,
    )
    decoder = Decoder(
        embedding=tgt_emb,
        cell=cell,
        hidden_size=dec_hidden,
        layers=dec_layers,
        memory_size=encoder.output_size,
        attention=attention,
        input_feeding=input_feeding,
        dropout=dropout,
        emb_dropout=emb_dropout,
        tie_output=tie_output,
    )
    return Seq2Seq(encoder, decoder)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, shared tensors counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
