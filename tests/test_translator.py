"""The decoding floor's Translator: built from its parts by hand, it translates without loading
anything, and one call's search leaves the translator's own untouched."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from nmt.core.search_options import SearchOptions
from nmt.decoding.translator import Translator
from nmt.model.restore import restore

GREEDY = SearchOptions(
    beam_size=1,
    alpha=0.0,
    max_len_a=1.5,
    max_len_b=10,
    min_len=0,
    n_best=1,
    coverage_penalty=0.0,
    no_repeat_ngram=0,
)


def built(run_dir: Path, **extra) -> Translator:
    loaded = restore(run_dir, "best")
    return Translator(
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        device=torch.device("cpu"),
        search=GREEDY,
        max_sentences=8,
        max_tokens=4000,
        max_src_len=50,
        precision=torch.float32,
        backend=("torch", "none"),
        **extra,
    )


def test_a_translator_from_its_parts_counts_its_parameters_and_decodes(tiny_run):
    translator = built(tiny_run)
    assert translator.parameters == sum(p.numel() for p in translator.model.parameters())
    assert translator.backend == ("torch", "none") and not translator.model.training
    out = translator.translate(["A dog runs.", ""])
    assert len(out) == 2 and out[1] == ""


def test_one_calls_search_is_that_calls_only(tiny_run):
    translator = built(tiny_run)
    beam = GREEDY.replace(beam_size=3, n_best=3)
    full = translator.translate_full(["A dog runs in the park."], search=beam)
    assert len(full[0].hyps) == 3  # the call's n-best
    assert translator.search == GREEDY  # the translator's own, untouched
    assert len(translator.translate_full(["A dog runs in the park."])[0].hyps) == 1
    assert (
        translator.translate("Two men.", search=beam)
        == translator.translate_full("Two men.", search=beam).texts[0]
    )


def test_close_removes_the_directories_it_was_given(tiny_run):
    kept = tempfile.TemporaryDirectory(prefix="nmt-test-")
    translator = built(tiny_run, keep=(kept,))
    assert Path(kept.name).is_dir()
    translator.close()
    assert not Path(kept.name).exists()
