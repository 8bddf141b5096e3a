"""scripts/bench.py's own logic (its commands run in tests/test_readme.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402


def test_largest_first_orders_batches_by_padded_target_tokens():
    """--longest: sentences x the longest target, largest first (a batch of many short
    sentences can outweigh one of few long ones)."""
    tgt_lens = [5, 30, 7, 7, 7, 7, 7, 2, 40]
    batches = [[0, 7], [1], [2, 3, 4, 5, 6], [8, 0]]  # padded: 10, 30, 35, 80
    assert bench.largest_first(batches, tgt_lens) == [[8, 0], [2, 3, 4, 5, 6], [1], [0, 7]]
    # One warm-up step on the third largest, then the two largest timed: they run with the
    # optimizer's state already allocated.
    warmed = bench.largest_first(batches, tgt_lens, warmup=1, timed=2)
    assert warmed == [[1], [8, 0], [2, 3, 4, 5, 6], [0, 7]]
