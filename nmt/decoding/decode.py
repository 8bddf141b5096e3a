"""Corpus decoding: many sentences in length-sorted batches, their hypotheses back in input order.

What translation, validation and the benchmarks decode through; ``nmt.decoding.search`` decides one batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from nmt.core.search_options import SearchOptions
from nmt.data.batching import ordered_batches
from nmt.decoding.search import Decodable, Hypothesis, Stop, search_batch


def decode_corpus(
    model: Decodable,
    src: list[list[int]],
    options: SearchOptions,
    *,
    device: torch.device,
    max_sentences: int,
    max_tokens: int | None,
    stop: Stop | None = None,
    done: Callable[[int], object] | None = None,
) -> list[list[Hypothesis]]:
    """Decode sentences (pieces without specials) in batches of at most ``max_sentences``
    sentences and ``max_tokens`` padded source tokens (None: no token limit); the n-best
    hypotheses of each, in input order. ``stop``: asked before every step of every batch
    (``nmt.decoding.search.Cancelled`` when it answers true); ``done``: told how many sentences each
    batch decided (a progress bar's update)."""
    was_training = model.training
    model.eval()
    results: list[list[Hypothesis]] = [[] for _ in src]
    try:
        for batch in ordered_batches(src, None, max_tokens=max_tokens, batch_size=max_sentences):
            rows = batch.indices.tolist()
            batch = batch.to(device)
            hyps = search_batch(model, batch.src_ids, batch.src_lens, batch.src_mask, options, stop)
            for i, h in zip(rows, hyps, strict=True):
                results[i] = h
            if done is not None:
                done(len(rows))
    finally:
        model.train(was_training)
    return results
