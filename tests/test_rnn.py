"""The encoder's stepped loop against PyTorch's fused kernels, every cell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from nmt.model.cells import CELLS
from nmt.model.rnn import Recurrent

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cell", CELLS)
def test_stepped_encoder_reads_the_fused_weights(cell):
    """Gate statistics step the gate equations with the encoder's weights; the outputs of that
    loop equal the (fused, packed) forward's, so the weights are read the right way round."""
    torch.manual_seed(0)
    rnn = Recurrent(
        cell=cell,
        input_size=5,
        hidden_size=6,
        layers=2,
        bidirectional=True,
        dropout=0.0,
        var_dropout=0.0,
    ).eval()
    x, lens = torch.randn(3, 7, 5), torch.tensor([7, 4, 1])
    expected, final = rnn(x, lens)
    stepped, stepped_final = rnn._loop(x, lens)
    torch.testing.assert_close(stepped, expected, atol=1e-5, rtol=1e-4)
    for a, b in zip(stepped_final, final, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    sums = rnn.gate_sums(x, lens)
    gates = {g for _, _, g in sums}
    expect = {
        "tanh": set(),
        "gru": {"reset", "update"},
        "gru_cho": {"reset", "update"},
        "gru_noreset": {"update"},
        "lstm": {"input", "forget", "output"},
        "lstm_nog": {"input", "forget"},
        "lstm_cifg": {"forget", "output"},
        "lstm_cifg_nog": {"forget"},
        "mingru": {"update"},
        "minlstm": {"forget"},
    }[cell]
    assert gates == expect
    for (layer, d, _), (total, count) in sums.items():
        assert layer in (0, 1) and d in (0, 1)
        assert count == int(lens.sum()) * 6  # real positions only, every unit
        assert 0.0 < total / count < 1.0
