"""A model rebuilt from its run directory: each missing or mismatched piece named, and a run
saved before newer config keys existed still translates."""

from __future__ import annotations

import shutil

import pytest
from conftest import multi30k_lines, nmt_translate
from omegaconf import OmegaConf

from nmt.translate import RunDirError, Translator


def test_missing_or_mismatched_pieces_are_clear_errors(tiny_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    (broken / "spm.model").unlink()
    with pytest.raises(RunDirError, match="no SentencePiece model"):
        Translator.from_run_dir(broken)
    shutil.copy(tiny_run / "spm.model", broken / "spm.model")
    shutil.rmtree(broken / "best")
    with pytest.raises(RunDirError, match="no checkpoint"):
        Translator.from_run_dir(broken)
    shutil.copytree(tiny_run / "best", broken / "best")
    (broken / "spm.model").write_bytes(b"not a model")
    result = nmt_translate(broken, b"hello\n")
    assert result.returncode == 1
    assert len(result.stderr.decode().strip().splitlines()) == 1
    # A valid SentencePiece model, but not the one the weights were trained with.
    from nmt.data.tokenizer import train_spm

    original = (tiny_run / "spm.model").read_bytes()
    other = train_spm(
        multi30k_lines("train", "en", 400),
        vocab_size=400,
        model_type="unigram",
        character_coverage=1.0,
        byte_fallback=True,
        normalization_rule_name="identity",
        input_sentence_size=0,
        num_threads=1,
        seed=1,
    )
    (broken / "spm.model").write_bytes(other)
    assert other != original
    with pytest.raises(RunDirError, match="is not the one best/ was trained with"):
        Translator.from_run_dir(broken)
    result = nmt_translate(broken, b"hello\n")
    assert (
        result.returncode == 1 and "is not the one best/ was trained with" in result.stderr.decode()
    )
    with pytest.raises(RunDirError, match="config.yaml: missing"):
        Translator.from_run_dir(tmp_path / "nowhere")


def test_a_run_saved_before_newer_keys_translates(tiny_run, tmp_path):
    """config.yaml of an older run lacks keys added since: they read conf/'s defaults, and the
    run translates as it did."""
    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    saved = OmegaConf.load(old / "config.yaml")
    for key in ("conditional", "var_dropout", "ctx_dropout", "word_dropout", "match_params"):
        del saved.model[key]
    del saved.train["max_lr_decays"]
    OmegaConf.save(saved, old / "config.yaml")
    lines = ["A dog runs in the park.", "Two men talk."]
    assert Translator.from_run_dir(old).translate(lines) == (
        Translator.from_run_dir(tiny_run).translate(lines)
    )
    saved.model["flux"] = 3  # a key conf/ does not know: one line naming it
    OmegaConf.save(saved, old / "config.yaml")
    with pytest.raises(RunDirError, match="not an nmt run config .Key 'flux' not in 'ModelConfig'"):
        Translator.from_run_dir(old)
