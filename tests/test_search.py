from __future__ import annotations

import functools

import pytest
import torch
from conftest import tiny_model, toy_pairs

from nmt.data.batching import collate
from nmt.data.tokenizer import BOS_ID, EOS_ID
from nmt.decoding.search import Cancelled, SearchOptions, beam_search, greedy, length_penalty
from nmt.model.cells import CELLS
from nmt.model.loss import sequence_loss

LIMITS = dict(max_len_a=1.5, max_len_b=4)


@functools.cache
def trained(cell: str, attention: str = "bahdanau", conditional: bool = False):
    """A tiny model trained briefly on the toy task, so its outputs have realistic shapes."""
    torch.manual_seed(0)
    model = tiny_model(cell, attention, dropout=0.0, conditional=conditional)
    src, tgt = toy_pairs(30)
    batch = collate(src, tgt, range(30))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        out = sequence_loss(model, batch, 0.0)
        opt.zero_grad()
        (out.loss / out.n_tokens).backward()
        opt.step()
    return model.eval()


def sentences(n=7, seed=5):
    return toy_pairs(n, seed=seed)[0]


def opts(**kw) -> SearchOptions:
    args = dict(
        beam_size=5,
        alpha=0.6,
        min_len=0,
        n_best=1,
        coverage_penalty=0.0,
        no_repeat_ngram=0,
        **LIMITS,
    )
    args.update(kw)
    return SearchOptions(**args)


def run_beam(model, src, **kw):
    batch = collate(src, None, range(len(src)))
    return beam_search(model, batch.src_ids, batch.src_lens, batch.src_mask, opts(**kw))


def run_greedy(model, src):
    batch = collate(src, None, range(len(src)))
    return greedy(model, batch.src_ids, batch.src_lens, batch.src_mask, opts(beam_size=1))


@pytest.mark.parametrize("cell", CELLS)
def test_beam_one_equals_greedy(cell):
    model, src = trained(cell), sentences()
    beams = run_beam(model, src, beam_size=1, alpha=0.0)
    for g, b in zip(run_greedy(model, src), beams, strict=True):
        assert b[0].tokens == g.tokens
        assert b[0].log_prob == pytest.approx(g.log_prob, abs=1e-4)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("beam", [1, 5])
@pytest.mark.parametrize("conditional", [False, True])
def test_same_translation_alone_or_in_any_batch(cell, beam, conditional):
    model, src = trained(cell, conditional=conditional), sentences(9)
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
def test_lengths_and_attention(attention):
    model, src = trained("lstm", attention), sentences(6)
    for s, (h,) in zip(src, run_beam(model, src), strict=True):
        assert len(h.tokens) + 1 <= int((len(s) + 1) * 1.5 + 4)  # a * (source + eos) + b
        if attention == "none":
            assert h.attn is None
        else:
            assert h.attn.shape == (len(h.tokens) + 1, len(s) + 1)
            torch.testing.assert_close(h.attn.sum(-1), torch.ones(len(h.tokens) + 1))


@pytest.mark.parametrize("beam", [1, 4])
def test_min_len_holds_exactly(beam):
    """Every hypothesis has at least min_len tokens before its end; without the option some
    are shorter (so the option is what makes them long)."""
    model, src = trained("gru"), sentences(8)
    free = run_beam(model, src, beam_size=beam, alpha=0.0, max_len_b=30)
    shortest = min(len(h.tokens) for (h,) in free)
    min_len = shortest + 3
    forced = run_beam(model, src, beam_size=beam, alpha=0.0, max_len_b=30, min_len=min_len)
    assert min(len(h.tokens) for (h,) in forced) == min_len
    batch = collate(src, None, range(len(src)))
    greedy_forced = greedy(
        model,
        batch.src_ids,
        batch.src_lens,
        batch.src_mask,
        opts(beam_size=1, max_len_b=30, min_len=min_len),
    )
    assert min(len(h.tokens) for h in greedy_forced) == min_len


def test_length_penalty_is_gnmts():
    """((5 + |Y|) / 6) ** alpha (Wu et al. 2016): 1 for a one-token output, whatever alpha."""
    assert length_penalty(1, 0.6) == pytest.approx(1.0)
    assert length_penalty(7, 1.0) == pytest.approx(2.0)
    assert length_penalty(13, 0.5) == pytest.approx(3**0.5)
    assert length_penalty(20, 0.0) == 1.0


@pytest.mark.parametrize("beam", [1, 3])
def test_length_limit_is_a_times_source_plus_b_and_wins_over_min_len(beam):
    """With the end forbidden until past the limit, every output stops exactly at the limit
    int(a * (source + eos) + b), counting its end token, and still ends with a hypothesis."""
    model, src = trained("gru"), sentences(6)
    batch = collate(src, None, range(len(src)))
    for a, b in [(1.5, 4), (0.0, 3), (2.0, 0)]:
        options = dict(max_len_a=a, max_len_b=b, min_len=1000)
        if beam == 1:
            hyps = [
                [h]
                for h in greedy(
                    model,
                    batch.src_ids,
                    batch.src_lens,
                    batch.src_mask,
                    opts(beam_size=1, **options),
                )
            ]
        else:
            hyps = run_beam(model, src, beam_size=beam, **options)
        for s, hs in zip(src, hyps, strict=True):
            assert len(hs) == 1
            assert len(hs[0].tokens) + 1 == int((len(s) + 1) * a + b)
            assert hs[0].log_prob > float("-inf")


def repeats(tokens: list[int], n: int) -> int:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) - len(set(grams))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_blocks_what_search_would_repeat(n):
    torch.manual_seed(1)
    model = tiny_model("gru", "bahdanau", dropout=0.0).eval()  # untrained: it loops
    src = sentences(6)
    free = run_beam(model, src, beam_size=3, max_len_b=25)
    assert sum(repeats(h.tokens, n) for (h,) in free) > 0  # the control repeats
    blocked = run_beam(model, src, beam_size=3, max_len_b=25, no_repeat_ngram=n)
    assert all(repeats(h.tokens, n) == 0 for (h,) in blocked)
    assert any(len(h.tokens) >= 2 * n for (h,) in blocked)


def test_coverage_penalty_is_added_to_the_score_and_changes_the_ranking():
    model, src = trained("gru"), sentences(9)
    plain = run_beam(model, src, n_best=3)
    penalised = run_beam(model, src, n_best=3, coverage_penalty=2.0)
    for hyps in penalised:
        for h in hyps:
            covered = h.attn.sum(0).clamp(max=1.0).log().sum()
            expected = h.log_prob / length_penalty(len(h.tokens) + 1, 0.6) + 2.0 * float(covered)
            assert h.score == pytest.approx(expected, abs=1e-4)
            assert EOS_ID not in h.tokens and BOS_ID not in h.tokens
    before = [[h.tokens for h in hyps] for hyps in plain]
    after = [[h.tokens for h in hyps] for hyps in penalised]
    assert before != after


def test_in_place_log_softmax_equals_torchs_over_several_blocks():
    from nmt.decoding.search import log_softmax_

    logits = torch.randn(150, 37) * 5
    expected = torch.log_softmax(logits, dim=-1)
    out = log_softmax_(logits, block=64)  # blocks of 64, 64 and 22 rows
    assert out.data_ptr() == logits.data_ptr()
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("search", [greedy, beam_search], ids=["greedy", "beam"])
def test_a_search_asked_to_stop_stops_before_its_next_step(search):
    """``stop`` is asked before every step: the search raises Cancelled the first time it answers
    true, having taken no step after (the service's time budget frees the decoder this way)."""
    model = tiny_model("gru")
    b = collate(sentences(), None, range(7))
    steps, asked = [], []
    step = model.decoder.step

    def counted(*args):
        steps.append(1)
        return step(*args)

    model.decoder.step = counted

    def stop() -> bool:
        asked.append(len(steps))
        return len(steps) == 3

    options = opts(min_len=30, max_len_a=0.0, max_len_b=40, beam_size=2, n_best=1)
    with pytest.raises(Cancelled):
        search(model.eval(), b.src_ids, b.src_lens, b.src_mask, options, stop)
    assert len(steps) == 3 and asked == [0, 1, 2, 3]
    found = search(model, b.src_ids, b.src_lens, b.src_mask, options, lambda: False)
    assert len(steps) == 3 + 40 and len(found) == 7  # never told to stop: all 40 steps
