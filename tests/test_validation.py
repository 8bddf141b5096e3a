"""Validation during training: greedy scores on detokenized text and the token-weighted loss."""

from __future__ import annotations

import math

import torch
from conftest import tiny_model, toy_pairs

from nmt.data import prepare as data
from nmt.data import tokenizer
from nmt.data.batching import ordered_batches
from nmt.decoding.decode import decode_corpus
from nmt.decoding.search import SearchOptions
from nmt.scoring import metrics
from nmt.training.validation import Validator, validation_loss
from nmt.translate import Translator

CPU = torch.device("cpu")


def test_the_loss_is_per_token_whatever_the_batches(tmp_path):
    model = tiny_model("lstm", dropout=0.3)
    src, tgt = toy_pairs(9)
    whole = validation_loss(
        model, list(ordered_batches(src, tgt, max_tokens=None, batch_size=9)), CPU, torch.float32
    )
    pieces = validation_loss(
        model, list(ordered_batches(src, tgt, max_tokens=None, batch_size=2)), CPU, torch.float32
    )
    assert model.training  # left as it was found, dropout off while measuring
    assert math.isclose(pieces["loss"], whole["loss"], rel_tol=1e-6)
    assert math.isclose(whole["ppl"], math.exp(whole["loss"]), rel_tol=1e-9)


def test_validator_scores_greedy_translations_of_the_first_sentences(tiny_run):
    model = Translator.from_run_dir(tiny_run, device="cpu", precision="fp32", backend="torch").model
    report = data.read_report(tiny_run / data.ARTIFACT)
    valid = tokenizer.load_encoded(tiny_run)[report["valid_split"]]
    tok = tokenizer.Tokenizer.from_dir(tiny_run, "en", "de")
    beam = SearchOptions(
        beam_size=5,
        alpha=0.6,
        max_len_a=1.0,
        max_len_b=5,
        min_len=2,
        n_best=1,
        coverage_penalty=0.0,
        no_repeat_ngram=0,
    )
    validate = Validator(
        valid,
        tgt_lang="de",
        tokenizer=tok,
        search=beam,
        device=CPU,
        decode_sentences=3,
        max_tokens=None,
        batch_size=4,
        max_sentences=10,
        precision=torch.float32,
    )
    scores = validate(model)
    src = list(valid["src_ids"])[:10]
    found = decode_corpus(model, src, beam.greedy(), device=CPU, max_sentences=10, max_tokens=None)
    hyps = tok.decode_tgt([h[0].tokens for h in found])
    refs = [row["de"] for row in valid["translation"]][:10]
    expected = metrics.score(hyps, refs)
    assert scores["bleu"] == expected["bleu"] and scores["chrf"] == expected["chrf"]
    batches = list(
        ordered_batches(src, list(valid["tgt_ids"])[:10], max_tokens=None, batch_size=10)
    )
    assert math.isclose(
        scores["loss"], validation_loss(model, batches, CPU, torch.float32)["loss"], rel_tol=1e-6
    )
