"""Gate statistics of a model and BLEU by source length."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_model, toy_pairs
from sacrebleu.metrics import BLEU

from nmt.data.batching import collate
from nmt.scoring.analysis import bleu_by_length, gate_statistics, length_buckets

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def test_gate_statistics_of_a_model():
    src, tgt = toy_pairs(6)
    batch = collate(src, tgt, list(range(6)))
    stats = gate_statistics(tiny_model("lstm", dec_layers=2), [batch], torch.device("cpu"))
    assert set(stats) == {
        f"{part}.{g}"
        for part in ("encoder.l0.fwd", "encoder.l0.bwd", "decoder.l0", "decoder.l1")
        for g in ("input", "forget", "output")
    }
    # The forget-gate bias starts at 1: an untrained LSTM keeps most of its memory.
    assert all(v > 0.6 for k, v in stats.items() if k.endswith("forget"))
    assert all(0.3 < v < 0.7 for k, v in stats.items() if not k.endswith("forget"))
    model = tiny_model("gru")
    assert {k.rsplit(".", 1)[1] for k in gate_statistics(model, [batch], torch.device("cpu"))} == {
        "reset",
        "update",
    }
    assert all(layer.recorder is None for layer in model.decoder.rnn.layers)
    assert gate_statistics(tiny_model("tanh"), [batch], torch.device("cpu")) == {}


def test_bleu_by_length_partitions_the_test_set():
    assert [label for *_, label in length_buckets((10, 15, 20))] == [
        "1-10",
        "11-15",
        "16-20",
        "21+",
    ]
    sources = ["a " * n for n in (3, 9, 12, 18, 30, 14)]
    refs = ["the cat sat on the mat", "a dog", "two men", "a red car", "blue sky", "a b c d"]
    hyps = ["the cat sat on a mat", "a dog", "two women", "a red car", "sky", "a b c"]
    rows = bleu_by_length(sources, hyps, refs, (10, 15, 20))
    assert [r["sentences"] for r in rows] == [2, 2, 1, 1]
    picked = [2, 5]  # 12 and 14 words
    expected = BLEU().corpus_score([hyps[i] for i in picked], [[refs[i] for i in picked]]).score
    assert rows[1]["bleu"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="5 hypotheses"):
        bleu_by_length(sources, hyps[:5], refs, (10, 15, 20))
