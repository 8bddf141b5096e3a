"""The loader: where a model is (run directory, bundle, export directory) → a complete
Translator, from plain arguments or a composed config."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmt import loader
from nmt.core.compose import compose
from nmt.core.search_options import SearchOptions
from nmt.model.restore import RunDirError

SEARCH = SearchOptions(
    beam_size=2,
    alpha=0.0,
    max_len_a=1.5,
    max_len_b=10,
    min_len=0,
    n_best=1,
    coverage_penalty=0.0,
    no_repeat_ngram=0,
)
PLAIN = dict(
    checkpoint="best",
    device="cpu",
    precision="fp32",
    backend="torch",
    quantize="none",
    search=SEARCH,
    max_sentences=8,
    max_tokens=4000,
    max_src_len=50,
)


def test_a_run_directory_loads_complete_from_plain_arguments(tiny_run):
    translator = loader.load(run_dir=tiny_run, **PLAIN)
    assert translator.search == SEARCH and translator.backend == ("torch", "none")
    assert translator.sources[0]["run_dir"] == str(tiny_run)
    assert translator.manifest is None and translator.parameters > 0
    assert (translator.src_lang, translator.tgt_lang) == ("en", "de")


def test_one_model_is_named_once(tiny_run, tmp_path):
    with pytest.raises(RunDirError, match="name one model"):
        loader.load(run_dir=tiny_run, model_file=tmp_path / "m.nmt", **PLAIN)
    with pytest.raises(RunDirError, match="no model"):
        loader.load(**PLAIN)


def test_a_file_is_unpacked_for_as_long_as_its_translator_lives(tiny_run, tmp_path):
    from nmt.serving.export import write_bundle

    write_bundle(tiny_run, tmp_path / "m.nmt", "best")
    translator = loader.load(model_file=tmp_path / "m.nmt", **PLAIN)
    assert translator.manifest["src"] == "en" and translator.sources[0]["run_dir"] is None
    assert translator.translate("A dog runs.") == loader.load(run_dir=tiny_run, **PLAIN).translate(
        "A dog runs."
    )
    unpacked = [Path(k.name) for k in translator._keep]
    assert unpacked and all(p.is_dir() for p in unpacked)
    translator.close()
    assert not any(p.exists() for p in unpacked)


def test_a_config_is_read_into_the_same_arguments(tiny_run):
    cfg = compose("translate", [f"run_dir={tiny_run}", "search=greedy", "backend=torch"])
    translator = loader.from_config(cfg)
    assert translator.search.beam_size == 1 and translator.backend == ("torch", "none")
    assert loader.from_config(cfg, search=SEARCH).search == SEARCH
