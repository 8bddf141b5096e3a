"""Variational (per-sequence) dropout, context and word dropout: training only, one mask per
sequence held over time, and nothing in evaluation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_model, toy_pairs

from nmt import cells
from nmt.batching import collate
from nmt.cells import CELLS, sequence_mask
from nmt.loss import sequence_loss
from nmt.rnn import Recurrent


def batch_of(n=4):
    src, tgt = toy_pairs(n)
    return collate(src, tgt, range(n))


def test_a_sequence_mask_is_inverted_dropout_per_sequence():
    torch.manual_seed(0)
    mask = sequence_mask(2000, 50, 0.3, torch.zeros(1))
    assert mask.shape == (2000, 50)
    values = mask.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7)
    assert float((mask == 0).float().mean()) == pytest.approx(0.3, abs=0.01)
    assert sequence_mask(3, 4, 0.0, torch.zeros(1)) is None


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


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("regulariser", ["var_dropout", "ctx_dropout", "word_dropout"])
def test_each_decoder_regulariser_acts_in_training_only(regulariser, conditional):
    """Each of var/ctx/word dropout alone changes a training forward, and nothing in eval:
    there the model equals one built without it (the same weights)."""
    torch.manual_seed(1)
    model = tiny_model("lstm", dec_layers=2, conditional=conditional, **{regulariser: 0.4})
    torch.manual_seed(1)
    plain = tiny_model("lstm", dec_layers=2, conditional=conditional)
    plain.load_state_dict(model.state_dict())
    batch = batch_of()
    model.eval(), plain.eval()
    torch.testing.assert_close(
        sequence_loss(model, batch, 0.0).loss, sequence_loss(plain, batch, 0.0).loss
    )
    # The decoder alone (the encoder takes var_dropout too): the same memory for both.
    memory = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
    model.decoder.train(), plain.decoder.train()
    torch.manual_seed(2)
    a, _ = model.decoder(batch.tgt_in, memory)
    torch.manual_seed(2)
    b, _ = plain.decoder(batch.tgt_in, memory)
    assert not torch.allclose(a, b)
    a.sum().backward()  # the masked paths are differentiable end to end
    assert all(p.grad is not None for p in model.decoder.rnn.parameters())


def test_word_dropout_drops_whole_words():
    """At a rate near 1 every target word is dropped: the decoder then reads zero embeddings."""
    torch.manual_seed(0)
    model = tiny_model("gru", word_dropout=0.9999).eval()
    batch = batch_of()
    memory = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
    model.decoder.train()
    torch.manual_seed(3)
    dropped, _ = model.decoder(batch.tgt_in, memory)
    model.decoder.eval()
    with torch.no_grad():
        model.decoder.embedding.weight.zero_()  # the memory above was encoded before this
        expected, _ = model.decoder(batch.tgt_in, memory)
    torch.testing.assert_close(dropped, expected)


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


def test_decoder_masks_are_drawn_once_per_batch(monkeypatch):
    """Teacher forcing over T steps draws the variational masks once, not per step."""
    import nmt.decoder
    import nmt.rnn

    drawn = []

    def counting(*args):
        mask = sequence_mask(*args)
        drawn.append(mask)
        return mask

    monkeypatch.setattr(nmt.rnn, "sequence_mask", counting)
    monkeypatch.setattr(nmt.decoder, "sequence_mask", counting)
    model = tiny_model("gru", dec_layers=2, var_dropout=0.5, conditional=True).train()
    batch = batch_of()
    memory = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
    drawn.clear()  # the encoder's own
    model.decoder(batch.tgt_in, memory)
    assert len(drawn) == 2 * 2 + 2  # (input, h) per layer, and the second transition's
