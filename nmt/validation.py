"""Validation during training: greedy BLEU and chrF on detokenized text, and loss/perplexity.

Validation decodes greedily whatever search the run will be tested with: cheap, and comparable
across runs. The batches for the loss are built once.
"""

from __future__ import annotations

import torch

from nmt import evaluate
from nmt.batching import BatchSampler, collate
from nmt.model import Seq2Seq
from nmt.search import SearchOptions, decode_corpus
from nmt.tokenizer import Tokenizer
from nmt.train import validation_loss


class Validator:
    """``validator(model) -> scores`` on the first ``max_sentences`` of the validation split."""

    def __init__(self, valid, *, tgt_lang: str, tokenizer: Tokenizer, search: SearchOptions,
                 device: torch.device, decode_sentences: int, max_tokens: int | None,
                 batch_size: int | None, max_sentences: int | None = None):  # fmt: skip
        if max_sentences:
            valid = valid.select(range(min(len(valid), max_sentences)))
        self.refs = [row[tgt_lang] for row in valid["translation"]]
        self.src_ids, tgt_ids = list(valid["src_ids"]), list(valid["tgt_ids"])
        self.tokenizer, self.device = tokenizer, device
        self.search, self.decode_sentences = search.greedy(), decode_sentences
        sampler = BatchSampler(
            src_lens=[len(s) for s in self.src_ids], tgt_lens=[len(t) for t in tgt_ids],
            max_tokens=max_tokens, batch_size=batch_size, pool_size=1, seed=0, shuffle=False,
        )  # fmt: skip
        self.loss_batches = [
            collate([self.src_ids[i] for i in b], [tgt_ids[i] for i in b], b)
            for b in sampler.batches(0)
        ]

    def __call__(self, model: Seq2Seq) -> dict:
        found = decode_corpus(model, self.src_ids, self.search, device=self.device,
                              max_sentences=self.decode_sentences)  # fmt: skip
        hyps = self.tokenizer.decode_tgt([h[0].tokens for h in found])
        scores = evaluate.score(hyps, self.refs)
        scores.update(validation_loss(model, self.loss_batches, self.device))
        return scores
