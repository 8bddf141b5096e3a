"""Ensembles decode through the same search as one model: one member is that model, members
that agree change nothing, members that differ give the mean of their log-probabilities."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import invoke, multi30k_lines
from omegaconf import OmegaConf
from test_search import run_beam, run_greedy, sentences, trained

from nmt.core.specials import BOS_ID
from nmt.data.batching import collate
from nmt.model.ensemble import Ensemble
from nmt.translate import RunDirError, Translator

BIN = Path(sys.executable).parent


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
        expected, attns = [], []
        for model in (gru, lstm):
            mem = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
            step = model.decoder.step(prev, model.decoder.init_state(mem), mem)
            expected.append(torch.log_softmax(step.logits, dim=-1))
            attns.append(step.attn)
    torch.testing.assert_close(out.logits, (expected[0] + expected[1]) / 2)
    # Heatmaps and the coverage penalty see the members' mean attention, not one member's.
    torch.testing.assert_close(out.attn, (attns[0] + attns[1]) / 2)
    assert not torch.allclose(attns[0], attns[1])
    # A different model's vote moves the result: the pair is neither member alone.
    assert not torch.allclose(out.logits, expected[0])
    hyps = run_beam(both, src)
    assert all(h[0].tokens for h in hyps)


def test_members_must_share_the_target_vocabulary():
    from conftest import tiny_model

    with pytest.raises(ValueError, match="target vocabulary"):
        Ensemble([tiny_model("gru", vocab=40), tiny_model("gru", vocab=41)])


def test_translator_ensemble_is_symmetric_and_both_members_count(tiny_run, tiny_run_b):
    """run_dir=A ensemble=[B] decodes exactly as run_dir=B ensemble=[A], and neither member
    alone: the scores of the hypotheses move when the other member votes."""
    texts = multi30k_lines("test_2016_flickr", "en", 6)
    options = {"beam_size": 3, "n_best": 3}

    def hyps(run_dir, ensemble=()):
        translator = Translator.from_run_dir(
            run_dir, search=options, device="cpu", ensemble=list(ensemble)
        )
        return [[(h.tokens, h.score) for h in r.hyps] for r in translator.translate_full(texts)]

    ab, ba = hyps(tiny_run, [tiny_run_b]), hyps(tiny_run_b, [tiny_run])
    assert ab == ba
    assert ab != hyps(tiny_run) and ab != hyps(tiny_run_b)


def test_members_of_another_vocabulary_or_language_pair_are_refused(
    tiny_run, tiny_run_b, tiny_run_v500, tmp_path
):
    with pytest.raises(RunDirError, match="its SentencePiece model is not") as refused:
        Translator.from_run_dir(tiny_run, ensemble=[tiny_run_v500])
    assert str(tiny_run_v500) in str(refused.value) and "\n" not in str(refused.value)
    # The same weights and SentencePiece model, declared the other way round (de->en).
    swapped = tmp_path / "swapped"
    shutil.copytree(tiny_run_b, swapped)
    config = OmegaConf.load(swapped / "config.yaml")
    config.data.src, config.data.tgt = config.data.tgt, config.data.src
    OmegaConf.save(config, swapped / "config.yaml")
    with pytest.raises(RunDirError, match="translates de->en,"):
        Translator.from_run_dir(tiny_run, ensemble=[swapped])
    with pytest.raises(RunDirError, match="a training run directory"):
        Translator.from_run_dir(tiny_run, ensemble=[tmp_path])
    result = invoke(
        "nmt-translate", f"run_dir={tiny_run}", f"ensemble=[{tiny_run_v500}]", stdin="A dog.\n"
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert lines[-1].startswith("error: ") and "SentencePiece" in lines[-1]
