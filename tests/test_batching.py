from __future__ import annotations

import random

import pytest
import torch

from nmt.data.batching import BatchSampler, collate
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


def lengths(n=2000, seed=0):
    rng = random.Random(seed)
    src = [rng.randint(1, 60) for _ in range(n)]
    tgt = [max(1, s + rng.randint(-5, 5)) for s in src]
    return src, tgt


def sampler(**kw):
    src, tgt = lengths()
    args = dict(src_lens=src, tgt_lens=tgt, max_tokens=1000, batch_size=None, pool_size=20, seed=7)
    args.update(kw)
    return BatchSampler(**args)


def test_epoch_yields_every_example_once_within_budget():
    s = sampler()
    batches = s.batches(epoch=0)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(s)))
    assert max(len(b) * max(s.cost[i] for i in b) for b in batches) <= 1000
    # Length bucketing keeps padding small: most of each batch is real tokens.
    padded = sum(len(b) * max(s.cost[i] for i in b) for b in batches)
    assert sum(s.cost) / padded > 0.9


def test_same_seed_same_batches_other_epoch_other_order():
    assert sampler().batches(3) == sampler().batches(3)
    assert sampler().batches(3) != sampler().batches(4)
    assert sampler().batches(3) != sampler(seed=8).batches(3)


def test_resume_inside_epoch_continues_where_it_stopped():
    s = sampler()
    full = list(s.iterate(epoch=2))
    resumed = list(sampler().iterate(epoch=2, start=17))
    assert resumed == full[17:]
    assert resumed[0][0] == 17


def test_sentence_count_batches():
    s = sampler(max_tokens=None, batch_size=32)
    batches = s.batches(0)
    assert all(len(b) <= 32 for b in batches)
    assert sum(len(b) == 32 for b in batches) >= len(batches) - 20  # only pool tails are short
    assert sorted(i for b in batches for i in b) == list(range(len(s)))


def test_unshuffled_is_sorted_by_length():
    s = sampler(shuffle=False)
    order = [i for b in s.batches(0) for i in b]
    assert [s.cost[i] for i in order] == sorted(s.cost)


def test_example_over_budget_is_an_error():
    with pytest.raises(ValueError, match="needs 61 tokens but batch.max_tokens=50"):
        BatchSampler(
            src_lens=[60], tgt_lens=[3], max_tokens=50, batch_size=None, pool_size=1, seed=0
        )


def test_collate_pads_and_masks():
    batch = collate([[5, 6, 7], [8]], [[9], [10, 11]], indices=[4, 2])
    assert batch.src_ids.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.src_lens.tolist() == [4, 2]
    assert batch.src_mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 9, PAD_ID], [BOS_ID, 10, 11]]
    assert batch.tgt_out.tolist() == [[9, EOS_ID, PAD_ID], [10, 11, EOS_ID]]
    assert batch.n_tgt_tokens == 5
    assert batch.indices.dtype == torch.long and batch.indices.tolist() == [4, 2]
