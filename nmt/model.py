"""Seq2Seq: the encoder, the decoder and the loss; ``build_model`` from plain arguments."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nmt.batching import Batch
from nmt.decoder import Decoder
from nmt.encoder import Encoder, Memory
from nmt.tokenizer import PAD_ID


@dataclass
class LossOutput:
    """Sums over the batch's real target tokens (divide by n_tokens for means)."""

    loss: Tensor  # label-smoothed, for the gradient
    nll: Tensor  # plain negative log-likelihood, for perplexity
    n_tokens: int


class Seq2Seq(nn.Module):
    def __init__(self, encoder: Encoder, decoder: Decoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, src_ids: Tensor, src_lens: Tensor, src_mask: Tensor) -> Memory:
        """src_ids: [B, S] -> Memory with the attention keys precomputed."""
        memory = self.encoder(src_ids, src_lens, src_mask)
        return memory.with_keys(self.decoder.attention.keys(memory.outputs))

    def loss(self, batch: Batch, label_smoothing: float) -> LossOutput:
        """Label-smoothed cross-entropy over real tokens; the output layer skips padding."""
        memory = self.encode(batch.src_ids, batch.src_lens, batch.src_mask)
        hidden, _ = self.decoder(batch.tgt_in, memory)
        logits = self.decoder.logits(hidden[batch.tgt_mask])  # [N, V], N real tokens
        target = batch.tgt_out[batch.tgt_mask]
        loss, nll = SmoothedCrossEntropy.apply(logits.float(), target, label_smoothing)
        return LossOutput(loss=loss.sum(), nll=nll.sum(), n_tokens=int(target.numel()))


class SmoothedCrossEntropy(torch.autograd.Function):
    """Label-smoothed cross-entropy per row with a fused backward: softmax - smoothed target.

    Same values as ``F.cross_entropy(..., label_smoothing=eps, reduction="none")`` (the smoothing
    mass spread over all V classes); the backward is two passes over [N, V] instead of the
    gather/scatter/log-softmax chain autograd would record, which matters at V = 8k.
    forward(logits [N, V] float, target [N] int64, eps) -> (loss [N], nll [N] without grad)
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, eps: float):
        lse = torch.logsumexp(logits, dim=-1)
        nll = lse - logits.gather(1, target.unsqueeze(1)).squeeze(1)
        smooth = lse - logits.mean(dim=-1)
        ctx.save_for_backward(logits, lse, target)
        ctx.eps = eps
        ctx.mark_non_differentiable(nll)
        return (1.0 - eps) * nll + eps * smooth, nll

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor):
        logits, lse, target = ctx.saved_tensors
        grad = torch.exp(logits - lse.unsqueeze(1))
        grad.sub_(ctx.eps / logits.shape[1])
        rows = torch.arange(len(target), device=grad.device)
        grad[rows, target] -= 1.0 - ctx.eps
        grad.mul_(grad_loss.unsqueeze(1))
        return grad, None, None


def build_model(*, cell: str, attention: str, emb_dim: int, enc_hidden: int, dec_hidden: int,
                enc_layers: int, dec_layers: int, bidirectional: bool, dropout: float,
                emb_dropout: float, input_feeding: bool, tie_output: bool, tie_src_tgt: bool,
                src_vocab_size: int, tgt_vocab_size: int, joint_vocab: bool) -> Seq2Seq:  # fmt: skip
    """The encoder-decoder described by the ``model`` config group and the vocabulary."""
    src_emb = nn.Embedding(src_vocab_size, emb_dim, padding_idx=PAD_ID)
    if tie_src_tgt:
        if not joint_vocab:
            raise ValueError(
                "model.tie_src_tgt=true needs a joint vocabulary (tokenizer.joint=true)"
            )
        tgt_emb = src_emb
    else:
        tgt_emb = nn.Embedding(tgt_vocab_size, emb_dim, padding_idx=PAD_ID)
    for emb in {id(src_emb): src_emb, id(tgt_emb): tgt_emb}.values():
        nn.init.normal_(emb.weight, std=emb_dim**-0.5)
        with torch.no_grad():
            emb.weight[PAD_ID].zero_()
    encoder = Encoder(
        embedding=src_emb, cell=cell, hidden_size=enc_hidden, layers=enc_layers,
        bidirectional=bidirectional, dropout=dropout, emb_dropout=emb_dropout,
    )  # fmt: skip
    decoder = Decoder(
        embedding=tgt_emb, cell=cell, hidden_size=dec_hidden, layers=dec_layers,
        memory_size=encoder.output_size, attention=attention, input_feeding=input_feeding,
        dropout=dropout, emb_dropout=emb_dropout, tie_output=tie_output,
    )  # fmt: skip
    return Seq2Seq(encoder, decoder)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, shared tensors counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
