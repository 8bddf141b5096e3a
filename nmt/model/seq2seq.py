"""Seq2Seq: the encoder and the decoder, tensors in and tensors out; ``build_model`` from plain
arguments. The loss lives in ``loss.py``, batches in ``batching.py``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nmt.core.specials import PAD_ID
from nmt.model.decoder import Decoder
from nmt.model.encoder import Encoder, Memory


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
    match_params: str | None,
    conditional: bool,
    var_dropout: float,
    ctx_dropout: float,
    word_dropout: float,
    fused: bool,
) -> Seq2Seq:
    """The encoder-decoder described by the ``model`` config group and the vocabulary.

    ``tie_src_tgt`` shares the source and target embeddings when the vocabulary is joint; with
    one vocabulary per language (``tokenizer=separate8k``) there is nothing to share.
    ``match_params``: a cell name; the recurrent layers are resized (``matched_hidden``) so that
    the model has as many parameters as this architecture built with that cell.
    ``conditional``: the decoder's second transition after attention (``Decoder``).
    ``var_dropout`` (recurrent inputs and states, one mask per sequence), ``ctx_dropout`` (the
    attention context) and ``word_dropout`` (whole target words): training-only, 0 is off.
    ``fused``: the decoder's training loop as one autograd node (``nmt.model.fused``).
    """
    if match_params not in (None, cell):
        arch = {k: v for k, v in locals().items() if k in _ARCH}
        enc_hidden, dec_hidden = matched_hidden(arch, match_params)
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
        var_dropout=var_dropout,
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
        conditional=conditional,
        var_dropout=var_dropout,
        ctx_dropout=ctx_dropout,
        word_dropout=word_dropout,
        fused=fused,
    )
    model = Seq2Seq(encoder, decoder)
    model.hidden_sizes = {"enc_hidden": enc_hidden, "dec_hidden": dec_hidden}  # after matching
    return model


_ARCH = [
    "cell",
    "attention",
    "emb_dim",
    "enc_hidden",
    "dec_hidden",
    "enc_layers",
    "dec_layers",
    "bidirectional",
    "dropout",
    "emb_dropout",
    "input_feeding",
    "tie_output",
    "tie_src_tgt",
    "src_vocab_size",
    "tgt_vocab_size",
    "joint_vocab",
    "conditional",
    "var_dropout",
    "ctx_dropout",
    "word_dropout",
    "fused",
]


def matched_hidden(arch: dict, reference_cell: str) -> tuple[int, int]:
    """(enc_hidden, dec_hidden) for ``arch["cell"]`` such that the model has the parameter count
    of ``arch`` built with ``reference_cell``, as Chung et al. (2014) matched their units.

    Both sizes scale by one factor (their ratio kept, embeddings and vocabulary untouched): the
    decoder size is bisected to the integers around the reference count, then the encoder size
    is nudged by up to two units around the ratio to land nearest it (within 0.2 % for models of
    a few hundred units). Counted on the meta device: no memory, milliseconds per model.
    """
    if reference_cell == arch["cell"]:
        return arch["enc_hidden"], arch["dec_hidden"]
    target = _parameters_of({**arch, "cell": reference_cell})
    ratio = arch["enc_hidden"] / arch["dec_hidden"]

    def sizes(dec: int) -> tuple[int, int]:
        return max(1, round(dec * ratio)), dec

    def count(dec: int) -> int:
        enc, dec = sizes(dec)
        return _parameters_of({**arch, "enc_hidden": enc, "dec_hidden": dec})

    low, high = 1, max(2, arch["dec_hidden"])
    while count(high) < target:  # the count grows with the size: bracket, then bisect
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if count(middle) < target else (low, middle)
    # One decoder unit moves the count by 2 (enc + dec) x hidden x gates weights; the encoder
    # size nudged around the ratio fills in between (small models need it to land within 1 %).
    candidates = [
        (enc, dec)
        for dec in (low, high)
        for enc in range(max(1, sizes(dec)[0] - 2), sizes(dec)[0] + 3)
    ]
    return min(
        candidates,
        key=lambda c: (
            abs(_parameters_of({**arch, "enc_hidden": c[0], "dec_hidden": c[1]}) - target),
            abs(c[0] - c[1] * ratio),
        ),
    )


def _parameters_of(arch: dict) -> int:
    with torch.device("meta"):
        return count_parameters(build_model(**arch, match_params=None))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, shared tensors counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
