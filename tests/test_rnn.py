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
    steps = rnn.gate_steps(x, lens)
    gates = {g for _, _, g in steps}
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
    real = torch.arange(7)[None, :] < lens[:, None]  # [B, S]
    for (layer, d, _), g in steps.items():
        assert layer in (0, 1) and d in (0, 1)
        assert g.shape == (3, 7, 6)
        assert (g[~real] == 0).all()  # padding: nothing
        assert ((g[real] > 0) & (g[real] < 1)).all()  # a sigmoid's activations, in place


@pytest.mark.parametrize("cell", ["gru", "lstm", "mingru"])
def test_stepped_gates_stand_at_their_tokens(cell):
    """gate_steps puts each step's gates at its token, the backward direction's too: the forward
    direction's gates at t depend on tokens up to t alone, the backward's on tokens from t on."""
    torch.manual_seed(0)
    rnn = Recurrent(
        cell=cell,
        input_size=5,
        hidden_size=6,
        layers=1,
        bidirectional=True,
        dropout=0.0,
        var_dropout=0.0,
    ).eval()
    x = torch.randn(1, 7, 5)
    whole = rnn.gate_steps(x, torch.tensor([7]))
    for t in (0, 3, 6):
        prefix = rnn.gate_steps(x[:, : t + 1], torch.tensor([t + 1]))
        suffix = rnn.gate_steps(x[:, t:], torch.tensor([7 - t]))
        for (layer, d, gate), g in whole.items():
            alone = suffix[layer, d, gate][:, 0] if d else prefix[layer, d, gate][:, t]
            torch.testing.assert_close(g[:, t], alone, atol=1e-6, rtol=1e-5)
