"""What a trained model does inside and where it fails: gate statistics and BLEU by length.

Used by the ablation report; both work on any run directory's model and data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from nmt.data.batching import Batch
from nmt.decoding.gates import recording
from nmt.model.seq2seq import Seq2Seq
from nmt.scoring.metrics import score


@torch.no_grad()
def gate_statistics(model: Seq2Seq, batches: Iterable[Batch], device: torch.device) -> dict:
    """Mean activation of every gate over the real tokens of ``batches`` (teacher forcing).

    Keys are ``encoder.l<layer>.<fwd|bwd>.<gate>`` and ``decoder.l<layer>.<gate>``, gates named
    as the cell's row names them (``nmt.model.cells``), none for a cell without gates. ``update`` and
    ``forget`` are both the share of the previous state a unit keeps.
    """
    model.to(device).eval()
    sums: dict[str, list[float]] = {}

    def add(key: str, total: float, count: float) -> None:
        acc = sums.setdefault(key, [0.0, 0.0])
        acc[0] += total
        acc[1] += count

    layers = list(model.decoder.rnn.layers)
    for batch in batches:
        batch = batch.to(device)
        enc = model.encoder.rnn
        x = model.encoder.embedding(batch.src_ids)
        real = int(batch.src_mask.sum())
        for (layer, d, gate), g in enc.gate_steps(x, batch.src_lens).items():
            key = f"encoder.l{layer}.{'bwd' if d else 'fwd'}.{gate}"
            add(key, float(g.sum()), real * g.shape[-1])
        with recording(layers) as records:
            memory = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
            model.decoder(batch.tgt_in, memory)
        mask = batch.tgt_mask.float()  # [B, T]; one record per time step
        for i, steps in enumerate(records):
            for gate in steps[0] if steps else {}:
                per_token = torch.stack([s[gate].mean(-1) for s in steps], dim=1)  # [B, T]
                add(f"decoder.l{i}.{gate}", float((per_token * mask).sum()), float(mask.sum()))
    return {key: total / count for key, (total, count) in sums.items() if count}


def length_buckets(edges: Iterable[int]) -> list[tuple[int, float, str]]:
    """Buckets ``(low, high, label)`` of source lengths in words from upper edges, e.g.
    (10, 15, 20) -> 1-10, 11-15, 16-20, 21+."""
    out, low = [], 1
    for high in edges:
        out.append((low, high, f"{low}-{high}"))
        low = high + 1
    out.append((low, math.inf, f"{low}+"))
    return out


def bleu_by_length(
    sources: list[str], hyps: list[str], refs: list[str], edges: Iterable[int]
) -> list[dict]:
    """Corpus BLEU and chrF of the sentences in each source-length bucket (words, whitespace
    split), as in Cho et al. (2014) and Bahdanau et al. (2015)."""
    if not len(sources) == len(hyps) == len(refs):
        raise ValueError(f"{len(sources)} sources, {len(hyps)} hypotheses, {len(refs)} references")
    out = []
    for low, high, label in length_buckets(edges):
        picked = [i for i, s in enumerate(sources) if low <= len(s.split()) <= high]
        row = {
            "bucket": label,
            "low": low,
            "high": None if high == math.inf else high,
            "sentences": len(picked),
        }
        if picked:
            scores = score([hyps[i] for i in picked], [refs[i] for i in picked])
            row.update(bleu=scores["bleu"], chrf=scores["chrf"])
        out.append(row)
    return out
