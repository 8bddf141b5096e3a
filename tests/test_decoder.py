"""The decoder: teacher forcing equals stepping, the conditional decoder's second transition,
and its regularisers (context, word and variational dropout) in training only."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model, toy_batch

from nmt.model.cells import CELLS, sequence_mask
from nmt.model.loss import sequence_loss
from nmt.model.seq2seq import count_parameters


@pytest.mark.parametrize("cell", CELLS)
def test_conditional_decoder_carries_the_second_transition(cell):
    """One step of the conditional decoder by its equations: the first transition queries
    attention, the second steps the top layer again on the context; the second's state is the
    one carried to the next step, and it (not the first's) meets the context in the output."""
    model = tiny_model(cell, dec_layers=2, conditional=True).eval()
    decoder, batch = model.decoder, toy_batch()
    with torch.no_grad():
        memory = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
        state = decoder.init_state(memory)
        prev = batch.tgt_in[:, 0]
        for _ in range(2):  # the second step starts from what the first carried
            out = decoder.step(prev, state, memory)
            x = torch.cat([decoder.embedding(prev), state.feed], dim=-1)
            first = decoder.rnn.step(decoder.rnn.first.project(x), state.rnn)
            context, _ = decoder.attention(
                first[0][-1], memory.keys, memory.outputs, memory.mask, memory.summary
            )
            top = decoder.second.step(decoder.second.project(context), tuple(t[-1] for t in first))
            for carried, below, second in zip(out.state.rnn, first, top, strict=True):
                torch.testing.assert_close(carried[:-1], below[:-1])
                torch.testing.assert_close(carried[-1], second)
            feed = torch.tanh(decoder.combine(torch.cat([top[0], context], dim=-1)))
            torch.testing.assert_close(out.state.feed, feed)
            state, prev = out.state, out.logits.argmax(-1)


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_teacher_forcing_equals_stepping(cell, conditional):
    """The fast training path and search's one-step path compute the same thing."""
    model = tiny_model(cell, dec_layers=2, conditional=conditional).eval()
    batch = toy_batch()
    memory = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
    hidden, _ = model.decoder(batch.tgt_in, memory)
    state = model.decoder.init_state(memory)
    for t in range(batch.tgt_in.shape[1]):
        out = model.decoder.step(batch.tgt_in[:, t], state, memory)
        state = out.state
        torch.testing.assert_close(
            out.logits, model.decoder.logits(hidden[:, t]), atol=1e-5, rtol=1e-4
        )


@pytest.mark.parametrize("cell", CELLS)
def test_conditional_decoder_adds_a_second_transition_on_the_context(cell):
    """conditional=true: one more layer of the same cell, its input the context (memory size
    32 here), stepped after attention; the decoder's output depends on it."""
    plain, cond = tiny_model(cell), tiny_model(cell, conditional=True)
    gates = cond.decoder.second.weight_ih.shape[0]
    recurrent = cond.decoder.second.weight_hh.shape[0]  # 0: gates that read the input alone
    assert cond.decoder.second.cell == cell and cond.decoder.second.weight_ih.shape[1] == 32
    assert count_parameters(cond) - count_parameters(plain) == gates * 33 + recurrent * 33
    batch = toy_batch()
    memory = cond.encode(batch.src_ids, batch.src_lens, batch.src_mask)
    before, _ = cond.decoder(batch.tgt_in, memory)
    with torch.no_grad():
        cond.decoder.second.weight_ih.add_(0.5)
    after, _ = cond.decoder(batch.tgt_in, memory)
    assert not torch.allclose(before, after)


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
    batch = toy_batch()
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
    batch = toy_batch()
    memory = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
    model.decoder.train()
    torch.manual_seed(3)
    dropped, _ = model.decoder(batch.tgt_in, memory)
    model.decoder.eval()
    with torch.no_grad():
        model.decoder.embedding.weight.zero_()  # the memory above was encoded before this
        expected, _ = model.decoder(batch.tgt_in, memory)
    torch.testing.assert_close(dropped, expected)


def test_decoder_masks_are_drawn_once_per_batch(monkeypatch):
    """Teacher forcing over T steps draws the variational masks once, not per step."""
    import nmt.model.decoder
    import nmt.model.rnn

    drawn = []

    def counting(*args):
        mask = sequence_mask(*args)
        drawn.append(mask)
        return mask

    monkeypatch.setattr(nmt.model.rnn, "sequence_mask", counting)
    monkeypatch.setattr(nmt.model.decoder, "sequence_mask", counting)
    model = tiny_model("gru", dec_layers=2, var_dropout=0.5, conditional=True).train()
    batch = toy_batch()
    memory = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
    drawn.clear()  # the encoder's own
    model.decoder(batch.tgt_in, memory)
    assert len(drawn) == 2 * 2 + 2  # (input, h) per layer, and the second transition's


@pytest.mark.parametrize("tie_output", [False, True])
def test_decoding_logits_follow_the_weights_they_were_laid_out_from(tie_output):
    """Decoding multiplies by a [E, V] copy of the output weight: it equals the training path's
    product, and an update of the weight (the optimizer's in-place step) makes a new copy."""
    torch.manual_seed(0)
    model = tiny_model("gru", tie_output=tie_output).eval()
    decoder = model.decoder
    hidden = torch.randn(5, decoder.combine.out_features)
    with torch.no_grad():
        first = decoder.logits(hidden)
    assert decoder._decode_weight is not None  # the copy is what decoding used
    with torch.enable_grad():
        reference = decoder.logits(hidden)  # F.linear on the weight itself
    torch.testing.assert_close(first, reference.detach(), rtol=1e-6, atol=1e-6)
    weight = decoder.output_layer(hidden)[1]
    with torch.no_grad():
        weight.mul_(-2.0)  # what an optimizer step does to it: in place
        after = decoder.logits(hidden)
    torch.testing.assert_close(after, decoder.logits(hidden.requires_grad_()).detach())
    assert not torch.allclose(after, first)


def test_switching_to_training_and_back_drops_the_decoding_copy():
    model = tiny_model("gru").eval()
    hidden = torch.randn(4, model.decoder.combine.out_features)
    with torch.no_grad():
        first = model.decoder.logits(hidden)
        model.train()
        model.decoder.output_layer(hidden)[1].data.mul_(-2.0)  # a write no version counts
        model.eval()
        after = model.decoder.logits(hidden)
    with torch.enable_grad():
        reference = model.decoder.logits(hidden).detach()
    assert not torch.allclose(after, first)
    torch.testing.assert_close(after, reference)
