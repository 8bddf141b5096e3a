"""Validation during training: greedy BLEU and chrF on detokenized text, and loss/perplexity.

Validation decodes greedily whatever search the run will be tested with: cheap, and comparable
across runs. The batches for the loss are built once.
"""

from __future__ import annotations

import math

import torch

from nmt.core.runtime import autocast
from nmt.data.batching import Batch, ordered_batches
from nmt.data.tokenizer import Tokenizer
from nmt.decoding.decode import decode_corpus
from nmt.decoding.search import SearchOptions
from nmt.model.loss import sequence_loss
from nmt.model.seq2seq import Seq2Seq
from nmt.scoring import metrics


@torch.no_grad()
def validation_loss(
    model: Seq2Seq,
    batches: list[Batch],
    device: torch.device,
    precision: torch.dtype,
) -> dict:
    """Mean per-token cross-entropy (no smoothing) and perplexity over pre-built batches."""
    was_training = model.training
    model.eval()
    nll, tokens = 0.0, 0
    for batch in batches:
        with autocast(device, precision):
            out = sequence_loss(model, batch.to(device), label_smoothing=0.0)
        nll += float(out.nll)
        tokens += out.n_tokens
    model.train(was_training)
    loss = nll / max(tokens, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0))}


class Validator:
    """``validator(model) -> scores`` on the first ``max_sentences`` of the validation split."""

    def __init__(
        self,
        valid,
        *,
        tgt_lang: str,
        tokenizer: Tokenizer,
        search: SearchOptions,
        device: torch.device,
        decode_sentences: int,
        max_tokens: int | None,
        batch_size: int | None,
        max_sentences: int | None = None,
        precision: torch.dtype,
    ):
        if max_sentences:
            valid = valid.select(range(min(len(valid), max_sentences)))
        self.refs = [row[tgt_lang] for row in valid["translation"]]
        self.src_ids, tgt_ids = list(valid["src_ids"]), list(valid["tgt_ids"])
        self.tokenizer, self.device, self.precision = tokenizer, device, precision
        self.search, self.decode_sentences = search.greedy(), decode_sentences
        self.loss_batches = list(
            ordered_batches(self.src_ids, tgt_ids, max_tokens=max_tokens, batch_size=batch_size)
        )

    def __call__(self, model: Seq2Seq) -> dict:
        with autocast(self.device, self.precision):
            found = decode_corpus(
                model,
                self.src_ids,
                self.search,
                device=self.device,
                max_sentences=self.decode_sentences,
                max_tokens=None,  # validation decodes by sentence count (search.max_sentences)
            )
        hyps = self.tokenizer.decode_tgt([h[0].tokens for h in found])
        scores = metrics.score(hyps, self.refs)
        scores.update(validation_loss(model, self.loss_batches, self.device, self.precision))
        return scores
