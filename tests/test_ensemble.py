"""Ensembles decode through the same search as one model: one member is that model, members
that agree change nothing, members that differ give the mean of their log-probabilities."""

from __future__ import annotations

import pytest
import torch
from test_search import run_beam, run_greedy, sentences, trained

from nmt.batching import collate
from nmt.ensemble import Ensemble
from nmt.specials import BOS_ID
from nmt.translate import RunDirError, Translator


def same_hypotheses(a, b):
    assert [h.tokens for h in a] == [h.tokens for h in b]
    assert [h.log_prob for h in a] == pytest.approx([h.log_prob for h in b], abs=1e-5)


@pytest.mark.parametrize("beam", [1, 5])
def test_an_ensemble_of_one_is_that_model(beam):
    model, src = trained("gru"), sentences()
    alone = Ensemble([model]).eval()
    if beam == 1:
        same_hypotheses(run_greedy(alone, src), run_greedy(model, src))
    else:
        for a, b in zip(run_beam(alone, src), run_beam(model, src), strict=True):
            same_hypotheses(a, b)


def test_copies_of_a_model_decode_as_the_model():
    model, src = trained("lstm"), sentences()
    for a, b in zip(run_beam(Ensemble([model, model]), src), run_beam(model, src), strict=True):
        same_hypotheses(a, b)


def test_members_of_different_cells_average_their_log_probabilities():
    gru, lstm, src = trained("gru"), trained("lstm", "luong_dot"), sentences(3)
    both = Ensemble([gru, lstm])
    batch = collate(src, None, range(len(src)))
    prev = torch.full((len(src),), BOS_ID)
    with torch.no_grad():
        memory = both.encode(batch.src_ids, batch.src_lens, batch.src_mask)
        out = both.decoder.step(prev, both.decoder.init_state(memory), memory)
        expected = []
        for model in (gru, lstm):
            mem = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
            step = model.decoder.step(prev, model.decoder.init_state(mem), mem)
            expected.append(torch.log_softmax(step.logits, dim=-1))
    torch.testing.assert_close(out.logits, (expected[0] + expected[1]) / 2)
    # A different model's vote moves the result: the pair is neither member alone.
    assert not torch.allclose(out.logits, expected[0])
    hyps = run_beam(both, src)
    assert all(h[0].tokens for h in hyps)


def test_members_must_share_the_target_vocabulary():
    from conftest import tiny_model

    with pytest.raises(ValueError, match="target vocabulary"):
        Ensemble([tiny_model("gru", vocab=40), tiny_model("gru", vocab=41)])


def test_translator_ensemble_of_a_run_with_itself(tiny_run, tmp_path):
    texts = ["A dog runs in the park.", "Two men talk."]
    options = {"beam_size": 3}
    one = Translator.from_run_dir(tiny_run, search=options, device="cpu")
    two = Translator.from_run_dir(tiny_run, search=options, device="cpu", ensemble=[tiny_run])
    assert isinstance(two.model, Ensemble) and len(two.model.models) == 2
    assert two.translate(texts) == one.translate(texts)
    with pytest.raises(RunDirError, match="a training run directory"):
        Translator.from_run_dir(tiny_run, ensemble=[tmp_path])
