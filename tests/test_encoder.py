"""Variational (per-sequence) dropout, context and word dropout: training only, one mask per
sequence held over time, and nothing in evaluation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nmt import cells
from nmt.cells import CELLS
from nmt.rnn import Recurrent


@pytest.mark.parametrize("cell", CELLS)
def test_encoder_masks_stay_the_same_over_time_and_are_off_in_eval(cell, monkeypatch):
    """Every step of a layer and direction gets the same h mask object; in eval no mask at all
    and the outputs are those of the model without variational dropout."""
    torch.manual_seed(0)
    seen: list = []
    real = cells.SPECS[cell]

    def recording(gx, state, w_hh, b_hh, h_mask=None):
        seen.append(h_mask)
        return real.step(gx, state, w_hh, b_hh, h_mask)

    monkeypatch.setitem(cells.SPECS, cell, dataclasses.replace(real, step=recording))
    rnn = Recurrent(
        cell=cell,
        input_size=8,
        hidden_size=6,
        layers=2,
        bidirectional=True,
        dropout=0.0,
        var_dropout=0.5,
    )
    x, lens = torch.randn(3, 5, 8), torch.tensor([5, 3, 2])
    rnn.train()
    rnn(x, lens)
    assert len(seen) == 2 * 2 * 5  # layers x directions x steps
    per_run = [seen[i : i + 5] for i in range(0, len(seen), 5)]
    for masks in per_run:
        assert all(m is masks[0] for m in masks) and masks[0].shape == (3, 6)
    assert len({id(masks[0]) for masks in per_run}) == 4  # a mask per layer and direction

    seen.clear()
    rnn.eval()
    out, _ = rnn(x, lens)
    assert all(m is None for m in seen)
    plain, _ = rnn._loop(x, lens)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
def test_encoder_variational_masks_hide_the_input_and_the_history(cell, monkeypatch):
    """Masks of zeros on the input give the encoding of a zero input; on the state, the
    recurrent products see no state (Gal's dropout masks what enters them): the encoding of an
    RNN whose recurrent weights are zero."""
    import copy

    import nmt.rnn

    rnn = Recurrent(
        cell=cell,
        input_size=8,
        hidden_size=6,
        layers=1,
        bidirectional=True,
        dropout=0.0,
        var_dropout=0.5,
    )
    x, lens = torch.randn(3, 5, 8), torch.tensor([5, 3, 2])
    real = (torch.arange(5)[None, :] < lens[:, None]).unsqueeze(-1)

    def masks(x_value: float, h_value: float):
        # The input is 8 wide and the state 6: the size tells the two masks apart.
        def mask(batch, size, p, like):
            value = x_value if size == 8 else h_value
            return like.new_full((batch, size), value) if p > 0 else None

        return mask

    with torch.no_grad():
        monkeypatch.setattr(nmt.rnn, "sequence_mask", masks(0.0, 1.0))
        hidden_input, _ = rnn.train()(x, lens)
        expected, _ = rnn.eval()(torch.zeros_like(x), lens)
        torch.testing.assert_close(hidden_input, expected * real, atol=1e-5, rtol=1e-4)

        monkeypatch.setattr(nmt.rnn, "sequence_mask", masks(1.0, 0.0))
        no_history, _ = rnn.train()(x, lens)
        blind = copy.deepcopy(rnn).eval()
        for _, w_hh, _, _ in blind.layer_weights():
            w_hh.zero_()
        expected, _ = blind(x, lens)
        torch.testing.assert_close(no_history, expected, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(no_history, rnn.eval()(x, lens)[0], atol=1e-3)
