from __future__ import annotations

import pytest
import torch
from torch import nn

from nmt.cells import CELLS, CellLayer, select, sequence_mask, state_size, unwrap, wrap
from nmt.rnn import Recurrent, StackedCell

torch.manual_seed(0)


@pytest.mark.parametrize("cell", ["gru", "lstm", "tanh"])
def test_gate_equations_match_torch(cell):
    """The reference step functions give torch.nn.GRU / LSTM / RNN's outputs with its weights."""
    fused = {"gru": nn.GRU, "lstm": nn.LSTM, "tanh": nn.RNN}[cell](5, 7, batch_first=True)
    layer = CellLayer(cell, 5, 7)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, name).copy_(getattr(fused, f"{name}_l0"))
    x = torch.randn(3, 6, 5)
    expected, final = fused(x)
    state = tuple(torch.zeros(3, 7) for _ in range(state_size(cell)))
    gx = layer.project(x)
    outs = []
    for t in range(6):
        state = layer.step(gx[:, t], state)
        outs.append(state[0])
    torch.testing.assert_close(torch.stack(outs, 1), expected, atol=1e-6, rtol=1e-5)
    for mine, theirs in zip(state, wrap(final), strict=True):
        torch.testing.assert_close(mine, theirs[0], atol=1e-6, rtol=1e-5)


def test_gru_cho_follows_the_paper():
    """r = σ(W_r x + U_r h), z = σ(W_z x + U_z h), h~ = tanh(W x + U (r*h)), h = z*h + (1-z)*h~."""
    layer = CellLayer("gru_cho", 4, 6)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x, h = torch.randn(2, 4), torch.randn(2, 6)
    (W_r, W_z, W), (U_r, U_z, U) = layer.weight_ih.split(6), layer.weight_hh.split(6)
    (a_r, a_z, a), (b_r, b_z, b) = layer.bias_ih.split(6), layer.bias_hh.split(6)
    r = torch.sigmoid(x @ W_r.T + a_r + h @ U_r.T + b_r)
    z = torch.sigmoid(x @ W_z.T + a_z + h @ U_z.T + b_z)
    h_tilde = torch.tanh(x @ W.T + a + (r * h) @ U.T + b)
    expected = z * h + (1 - z) * h_tilde
    (got,) = layer.step(layer.project(x), (h,))
    torch.testing.assert_close(got, expected)


def test_lstm_forget_bias_starts_at_one():
    layer = CellLayer("lstm", 3, 4)
    assert torch.equal(layer.bias_ih[4:8], torch.ones(4))
    rnn = Recurrent(
        cell="lstm",
        input_size=3,
        hidden_size=4,
        layers=1,
        bidirectional=True,
        dropout=0,
        var_dropout=0.0,
    )
    assert torch.equal(rnn.rnn.bias_ih_l0[4:8] + rnn.rnn.bias_hh_l0[4:8], torch.ones(4))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_padding_leaves_encoding_unchanged(cell, layers):
    rnn = Recurrent(
        cell=cell,
        input_size=5,
        hidden_size=6,
        layers=layers,
        bidirectional=True,
        dropout=0.0,
        var_dropout=0.0,
    ).eval()
    x = torch.randn(3, 9, 5)
    lens = torch.tensor([4, 9, 6])
    out, final = rnn(x, lens)
    alone, alone_final = rnn(x[:1, :4], lens[:1])
    torch.testing.assert_close(out[:1, :4], alone, atol=1e-6, rtol=1e-5)
    assert torch.count_nonzero(out[0, 4:]) == 0
    assert len(final) == state_size(cell)
    for t, a in zip(final, alone_final, strict=True):
        assert t.shape == (layers * 2, 3, 6)
        torch.testing.assert_close(t[:, :1], a, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_stacked_cell_state_shapes_and_select(cell):
    stack = StackedCell(cell=cell, input_size=5, hidden_size=4, layers=2, dropout=0.0)
    state = tuple(torch.zeros(2, 3, 4) for _ in range(state_size(cell)))
    new = stack.step(stack.first.project(torch.randn(3, 5)), state)
    assert [t.shape for t in new] == [(2, 3, 4)] * state_size(cell)
    picked = select(new, torch.tensor([2, 2, 0]))
    assert torch.equal(picked[0][:, 0], new[0][:, 2]) and picked[0].shape == (2, 3, 4)


def test_wrap_unwrap_roundtrip():
    h, c = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    assert unwrap(wrap(h)) is h
    assert unwrap(wrap((h, c))) == (h, c)


def test_unknown_cell_is_one_clear_error():
    with pytest.raises(
        ValueError,
        match=r"model.cell='gruu': expected one of tanh, gru, gru_cho, gru_noreset, lstm",
    ):
        CellLayer("gruu", 2, 2)


def test_a_sequence_mask_is_inverted_dropout_per_sequence():
    torch.manual_seed(0)
    mask = sequence_mask(2000, 50, 0.3, torch.zeros(1))
    assert mask.shape == (2000, 50)
    values = mask.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7)
    assert float((mask == 0).float().mean()) == pytest.approx(0.3, abs=0.01)
    assert sequence_mask(3, 4, 0.0, torch.zeros(1)) is None
