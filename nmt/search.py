"""Search over the decoder's one-step interface: batched greedy decoding.

Sentences that finish leave the active batch, so a batch costs what its longest output needs and
no more. ``decode_corpus`` sorts by length, batches, and restores input order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nmt.batching import collate
from nmt.model import Seq2Seq
from nmt.tokenizer import BOS_ID, EOS_ID


@torch.no_grad()
def greedy(
    model: Seq2Seq, src_ids: Tensor, src_lens: Tensor, src_mask: Tensor, *, max_len_a: float,
    max_len_b: int, min_len: int = 0,
) -> list[list[int]]:  # fmt: skip
    """Greedy decoding of a batch; returns token ids without bos/eos, one list per sentence."""
    batch = src_ids.shape[0]
    device = src_ids.device
    memory = model.encode(src_ids, src_lens, src_mask)
    state = model.decoder.init_state(memory)
    limits = (src_lens.float() * max_len_a + max_len_b).long().to(device)  # [B]
    active = torch.arange(batch, device=device)  # original positions of the active rows
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    outputs: list[list[int]] = [[] for _ in range(batch)]
    for t in range(int(limits.max())):
        out = model.decoder.step(prev, state, memory)
        logits = out.logits
        if t < min_len:
            logits[:, EOS_ID] = float("-inf")
        prev = logits.argmax(dim=-1)
        done = (prev == EOS_ID) | (t + 1 >= limits[active])
        for row, token, finished in zip(active.tolist(), prev.tolist(), done.tolist(), strict=True):
            if token != EOS_ID:
                outputs[row].append(token)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            active, prev = active[keep], prev[keep]
            memory, state = memory.select(keep), out.state.select(keep)
        else:
            state = out.state
    return outputs


def decode_corpus(
    model: Seq2Seq, src: list[list[int]], *, max_sentences: int, device: torch.device,
    max_len_a: float, max_len_b: int, min_len: int = 0,
) -> list[list[int]]:  # fmt: skip
    """Greedy-decode many sentences (pieces without specials) in length-sorted batches."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(src)), key=lambda i: len(src[i]))
    results: list[list[int]] = [[] for _ in src]
    for start in range(0, len(order), max_sentences):
        chunk = order[start : start + max_sentences]
        batch = collate([src[i] for i in chunk], None, chunk).to(device)
        hyps = greedy(
            model, batch.src_ids, batch.src_lens, batch.src_mask,
            max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
        )  # fmt: skip
        for i, hyp in zip(chunk, hyps, strict=True):
            results[i] = hyp
    model.train(was_training)
    return results
