"""Batches: length-bucketed token batches (or fixed sentence counts), padding, masks and lengths.

The order of an epoch depends only on (seed, epoch): shuffle all examples, sort each pool of
``pool_size`` batches' worth by length, cut it into batches that fit the token budget, shuffle the
batches. Since the order is a pure function, resuming at batch k of epoch e is just skipping k.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nmt.core.specials import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Batch:
    """Padded tensors of one batch; masks are True on real tokens.

    src_ids: [B, S] int64 (source pieces + eos); src_lens: [B] int64 (CPU)
    tgt_in: [B, T] int64 (bos + pieces); tgt_out: [B, T] int64 (pieces + eos)
    indices: [B] int64, the examples' positions in the dataset
    """

    src_ids: Tensor
    src_lens: Tensor
    src_mask: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    tgt_mask: Tensor
    indices: Tensor

    @property
    def n_tgt_tokens(self) -> int:
        return int(self.tgt_mask.sum())

    def to(self, device: torch.device | str) -> Batch:
        moved = {
            k: v if k == "src_lens" else v.to(device, non_blocking=True)
            for k, v in vars(self).items()
        }
        return Batch(**moved)


def pad(seqs: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> Tensor:
    """Right-pad int sequences into a [B, L] int64 tensor."""
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate(
    src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]] | None, indices: Sequence[int]
) -> Batch:
    """A Batch from pieces without specials: eos ends the source, bos/eos frame the target."""
    src_ids = pad([[*s, EOS_ID] for s in src])
    src_lens = torch.tensor([len(s) + 1 for s in src], dtype=torch.long)
    if tgt is None:
        tgt_in = tgt_out = torch.zeros((len(src), 0), dtype=torch.long)
    else:
        tgt_in = pad([[BOS_ID, *t] for t in tgt])
        tgt_out = pad([[*t, EOS_ID] for t in tgt])
    return Batch(
        src_ids=src_ids,
        src_lens=src_lens,
        src_mask=src_ids != PAD_ID,
        tgt_in=tgt_in,
        tgt_out=tgt_out,
        tgt_mask=tgt_out != PAD_ID,
        indices=torch.as_tensor(list(indices), dtype=torch.long),
    )


class BatchSampler:
    """Deterministic, resumable epochs of example indices grouped into batches.

    ``cost(i)`` is the padded size an example adds: ``max(len(src)+1, len(tgt)+1)``; a batch's
    padded size ``len(batch) * max cost`` never exceeds ``max_tokens``, and a batch holds at most
    ``batch_size`` sentences; either limit may be None.
    """

    def __init__(
        self,
        *,
        src_lens: Sequence[int],
        tgt_lens: Sequence[int],
        max_tokens: int | None,
        batch_size: int | None,
        pool_size: int,
        seed: int,
        shuffle: bool = True,
    ):
        if max_tokens is None and batch_size is None:
            raise ValueError("set batch.max_tokens, batch.batch_size or both")
        self.cost = [max(s, t) + 1 for s, t in zip(src_lens, tgt_lens, strict=True)]
        if max_tokens is not None and self.cost and max(self.cost) > max_tokens:
            worst = max(range(len(self.cost)), key=self.cost.__getitem__)
            raise ValueError(
                f"example {worst} needs {self.cost[worst]} tokens but batch.max_tokens={max_tokens}; "
                "raise max_tokens or lower data.max_len"
            )
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.pool_size, self.seed, self.shuffle = pool_size, seed, shuffle

    def __len__(self) -> int:
        return len(self.cost)

    def _cut(self, ordered: list[int]) -> list[list[int]]:
        batches, current, longest = [], [], 0
        for i in ordered:
            longest_with = max(longest, self.cost[i])
            full = (self.batch_size is not None and len(current) >= self.batch_size) or (
                self.max_tokens is not None and longest_with * (len(current) + 1) > self.max_tokens
            )
            if current and full:
                batches.append(current)
                current, longest_with = [], self.cost[i]
            current.append(i)
            longest = longest_with
        if current:
            batches.append(current)
        return batches

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of an epoch, in order; the same for the same (seed, epoch)."""
        n = len(self.cost)
        if not self.shuffle:
            return self._cut(sorted(range(n), key=self.cost.__getitem__))
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen).tolist()
        per_batch = (
            self.batch_size
            if self.max_tokens is None
            else max(1, self.max_tokens // max(1, sorted(self.cost)[n // 2]))
        )
        if self.batch_size is not None:
            per_batch = min(per_batch, self.batch_size)
        pool = max(1, self.pool_size * per_batch)
        batches = []
        for start in range(0, n, pool):
            chunk = sorted(order[start : start + pool], key=self.cost.__getitem__)
            batches.extend(self._cut(chunk))
        perm = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[i] for i in perm]

    def iterate(self, epoch: int, start: int = 0) -> Iterator[tuple[int, list[int]]]:
        """(position, batch) pairs of an epoch from batch ``start`` on, for exact resumption."""
        for position, batch in enumerate(self.batches(epoch)):
            if position >= start:
                yield position, batch


def ordered_batches(
    src: Sequence[Sequence[int]],
    tgt: Sequence[Sequence[int]] | None,
    *,
    max_tokens: int | None,
    batch_size: int | None,
) -> Iterator[Batch]:
    """Every example once, in length-sorted batches and never shuffled: what decoding, the
    validation loss and the report's statistics read (``Batch.indices`` maps each row back to
    its example). Without ``tgt`` the batches hold sources only."""
    sampler = BatchSampler(
        src_lens=[len(s) for s in src],
        tgt_lens=[0] * len(src) if tgt is None else [len(t) for t in tgt],
        max_tokens=max_tokens,
        batch_size=batch_size,
        pool_size=1,
        seed=0,
        shuffle=False,
    )
    for chunk in sampler.batches(0):
        pairs = None if tgt is None else [tgt[i] for i in chunk]
        yield collate([src[i] for i in chunk], pairs, chunk)
