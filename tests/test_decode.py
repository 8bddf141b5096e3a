"""Corpus decoding (nmt.decoding.decode): batches of any shape, hypotheses back in input order."""

from __future__ import annotations

import torch
from test_search import LIMITS, run_beam, sentences, trained

from nmt.decoding.decode import decode_corpus
from nmt.decoding.search import Decodable, SearchOptions
from nmt.model.ensemble import Ensemble


def test_decode_corpus_keeps_input_order():
    model, src = trained("tanh"), sentences(11)
    options = dict(
        beam_size=3,
        alpha=0.6,
        min_len=0,
        n_best=1,
        coverage_penalty=0.0,
        no_repeat_ngram=0,
        **LIMITS,
    )
    found = decode_corpus(
        model,
        src,
        SearchOptions(**options),
        device=torch.device("cpu"),
        max_sentences=4,
        max_tokens=30,
    )
    direct = [h[0].tokens for h in run_beam(model, src, beam_size=3)]
    assert [h[0].tokens for h in found] == direct


def test_a_model_and_an_ensemble_are_both_decodable():
    model = trained("gru")
    assert isinstance(model, Decodable) and isinstance(
        Ensemble([model, trained("lstm")]), Decodable
    )
    assert not isinstance(model.encoder, Decodable)  # no decoder to step: not a model search takes
