"""Variational (per-sequence) dropout, context and word dropout: training only, one mask per
sequence held over time, and nothing in evaluation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nmt.model import cells
from nmt.model.cells import CELLS
from nmt.model.rnn import Recurrent


@pytest.mark.parametrize("cell", CELLS)
def test_encoder_masks_stay_the_same_over_time_and_are_off_in_eval(cell, monkeypatch):
    """Every step of a layer and direction sees h times the same mask; in eval no mask at all
    and the outputs are those of the model without variational dropout."""
    import nmt.model.rnn

    torch.manual_seed(0)
    seen: list = []
    made: list = []
    real = cells.SPECS[cell]
    real_mask = nmt.model.rnn.sequence_mask

    def making(batch, size, p, like):
        made.append(real_mask(batch, size, p, like))
        return made[-1]

    def recording(gx, state, w_hh, b_hh, hm):
        seen.append((state[0], hm))
        return real.step(gx, state, w_hh, b_hh, hm)

    monkeypatch.setitem(cells.SPECS, cell, dataclasses.replace(real, step=recording))
    monkeypatch.setattr(nmt.model.rnn, "sequence_mask", making)
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
    h_masks = [m for m in made if m is not None and m.shape == (3, 6)]
    assert len(h_masks) == 4  # a mask per layer and direction
    for k, mask in enumerate(h_masks):
        for h, hm in seen[5 * k : 5 * k + 5]:
            assert torch.equal(hm, h * mask)
    assert len({id(m) for m in h_masks}) == 4

    seen.clear()
    rnn.eval()
    out, _ = rnn(x, lens)
    assert all(hm is h for h, hm in seen)
    plain, _ = rnn._loop(x, lens)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
def test_encoder_variational_masks_hide_the_input_and_the_history(cell, monkeypatch):
    """Masks of zeros on the input give the encoding of a zero input; on the state, the
    recurrent products see no state (Gal's dropout masks what enters them): the encoding of an
    RNN whose recurrent weights are zero."""
    import copy

    import nmt.model.rnn

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
        monkeypatch.setattr(nmt.model.rnn, "sequence_mask", masks(0.0, 1.0))
        hidden_input, _ = rnn.train()(x, lens)
        expected, _ = rnn.eval()(torch.zeros_like(x), lens)
        torch.testing.assert_close(hidden_input, expected * real, atol=1e-5, rtol=1e-4)

        monkeypatch.setattr(nmt.model.rnn, "sequence_mask", masks(1.0, 0.0))
        no_history, _ = rnn.train()(x, lens)
        blind = copy.deepcopy(rnn).eval()
        for _, w_hh, _, _ in blind.layer_weights():
            w_hh.zero_()
        expected, _ = blind(x, lens)
        torch.testing.assert_close(no_history, expected, atol=1e-5, rtol=1e-4)
        if cells.spec(cell).recurrent_blocks:  # the minimal cells' gates never read h
            assert not torch.allclose(no_history, rnn.eval()(x, lens)[0], atol=1e-3)
