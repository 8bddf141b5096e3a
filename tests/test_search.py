from __future__ import annotations

import functools

import pytest
import torch
from conftest import tiny_model, toy_pairs

from nmt.batching import collate
from nmt.cells import CELLS
from nmt.search import beam_search, decode_corpus, greedy, length_penalty
from nmt.tokenizer import BOS_ID, EOS_ID

LIMITS = dict(max_len_a=1.5, max_len_b=4)


@functools.cache
def trained(cell: str, attention: str = "bahdanau"):
    """A tiny model trained briefly on the toy task, so its outputs have realistic shapes."""
    torch.manual_seed(0)
    model = tiny_model(cell, attention, dropout=0.0)
    src, tgt = toy_pairs(30)
    batch = collate(src, tgt, range(30))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        out = model.loss(batch, 0.0)
        opt.zero_grad()
        (out.loss / out.n_tokens).backward()
        opt.step()
    return model.eval()


def sentences(n=7, seed=5):
    return toy_pairs(n, seed=seed)[0]


def run_beam(model, src, **kw):
    batch = collate(src, None, range(len(src)))
    args = dict(beam_size=5, alpha=0.6, min_len=0, n_best=1, **LIMITS)
    args.update(kw)
    return beam_search(model, batch.src_ids, batch.src_lens, batch.src_mask, **args)


def run_greedy(model, src):
    batch = collate(src, None, range(len(src)))
    return greedy(model, batch.src_ids, batch.src_lens, batch.src_mask, **LIMITS)


@pytest.mark.parametrize("cell", CELLS)
def test_beam_one_equals_greedy(cell):
    model, src = trained(cell), sentences()
    beams = run_beam(model, src, beam_size=1, alpha=0.0)
    for g, b in zip(run_greedy(model, src), beams, strict=True):
        assert b[0].tokens == g.tokens
        assert b[0].log_prob == pytest.approx(g.log_prob, abs=1e-4)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("beam", [1, 5])
def test_same_translation_alone_or_in_any_batch(cell, beam):
    model, src = trained(cell), sentences(9)
    together = [h[0].tokens for h in run_beam(model, src, beam_size=beam)]
    alone = [run_beam(model, [s], beam_size=beam)[0][0].tokens for s in src]
    assert together == alone
    reordered = [h[0].tokens for h in run_beam(model, src[::-1] + src[:3], beam_size=beam)]
    assert reordered[: len(src)] == together[::-1]


def rescore(model, src_ids, tokens):
    """Sum of log-probabilities of tokens + eos under teacher forcing."""
    batch = collate([src_ids], [tokens], [0])
    memory = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
    hidden, _ = model.decoder(batch.tgt_in, memory)
    lprobs = torch.log_softmax(model.decoder.logits(hidden[0]), dim=-1)
    return float(lprobs.gather(1, batch.tgt_out[0].unsqueeze(1)).sum())


@pytest.mark.parametrize("cell", CELLS)
def test_scores_are_normalised_sums_of_log_probs(cell):
    model, src = trained(cell), sentences(5)
    with torch.no_grad():
        for s, hyps in zip(src, run_beam(model, src, n_best=3, alpha=0.6), strict=True):
            assert len(hyps) == 3
            assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
            for h in hyps:
                assert h.log_prob == pytest.approx(rescore(model, s, h.tokens), abs=1e-3)
                assert h.score == pytest.approx(h.log_prob / length_penalty(len(h.tokens) + 1, 0.6))


def test_beam_finds_at_least_greedys_score():
    model, src = trained("gru"), sentences(9)
    for g, b in zip(run_greedy(model, src), run_beam(model, src, alpha=0.0), strict=True):
        assert b[0].log_prob >= g.log_prob - 1e-4


@pytest.mark.parametrize("attention", ["bahdanau", "none"])
def test_lengths_attention_and_blocking(attention):
    model, src = trained("lstm", attention), sentences(6)
    for s, (h,) in zip(src, run_beam(model, src, min_len=3), strict=True):
        assert 3 <= len(h.tokens) + 1 <= int((len(s) + 1) * 1.5 + 4)
        if attention == "none":
            assert h.attn is None
        else:
            assert h.attn.shape == (len(h.tokens) + 1, len(s) + 1)
            torch.testing.assert_close(h.attn.sum(-1), torch.ones(len(h.tokens) + 1))
    for (h,) in run_beam(model, src, no_repeat_ngram=2, max_len_b=20):
        bigrams = list(zip(h.tokens, h.tokens[1:], strict=False))
        assert len(bigrams) == len(set(bigrams))
    for (h,) in run_beam(model, src, coverage_penalty=0.2):
        assert EOS_ID not in h.tokens and BOS_ID not in h.tokens


def test_decode_corpus_keeps_input_order():
    model, src = trained("tanh"), sentences(11)
    options = dict(beam_size=3, alpha=0.6, min_len=0, n_best=1, coverage_penalty=0.0,
                   no_repeat_ngram=0, **LIMITS)  # fmt: skip
    found = decode_corpus(model, src, device=torch.device("cpu"), max_sentences=4, max_tokens=30,
                          **options)  # fmt: skip
    direct = [h[0].tokens for h in run_beam(model, src, beam_size=3)]
    assert [h[0].tokens for h in found] == direct
