from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import multi30k_lines
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from nmt.translate import RunDirError, Translator, single_line

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
LONG = "house " * 2000


def translate(run_dir, stdin: bytes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "nmt-translate"), f"run_dir={run_dir}", *args],
        input=stdin,
        capture_output=True,
        timeout=300,
    )


def test_api_one_output_per_input(tiny_run):
    translator = Translator.from_run_dir(tiny_run, search={"beam_size": 2})
    out = translator.translate(["A dog runs.", "", LONG, "Two men."])
    assert len(out) == 4 and out[1] == ""
    full = translator.translate_full([LONG])
    assert full[0].truncated
    assert translator.translate("Two men.") == out[3]  # one string in, one string out
    assert translator.translate_full("Two men.").texts == [out[3]]


def test_api_and_command_line_translate_alike(tiny_run):
    """With nothing chosen, the API decodes as nmt-translate does (conf/translate.yaml: beam 5,
    precision auto), not with the search the run was trained with (greedy)."""
    from nmt.runtime import pick_device, pick_precision

    lines = ["A dog runs in the park.", "", "Two men talk.", "A woman reads a book."]
    api = Translator.from_run_dir(tiny_run)
    assert OmegaConf.load(tiny_run / "config.yaml").search.beam_size == 1
    assert (api.search.beam_size, api.search.alpha) == (5, 0.6)
    assert api.precision == pick_precision("auto", pick_device("auto"))
    cli = translate(tiny_run, "".join(f"{t}\n" for t in lines).encode())
    assert cli.returncode == 0, cli.stderr.decode()[-2000:]
    assert cli.stdout.decode().split("\n")[:-1] == api.translate(lines)
    # A setting chosen on both sides: the same translations again.
    greedy = translate(tiny_run, "".join(f"{t}\n" for t in lines).encode(), "search=greedy")
    api_greedy = Translator.from_run_dir(tiny_run, search="greedy").translate(lines)
    assert greedy.stdout.decode().split("\n")[:-1] == api_greedy
    with pytest.raises(ValidationError):
        Translator.from_run_dir(tiny_run, max_tokens="many")


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
    result = translate(broken, b"hello\n")
    assert result.returncode == 1
    assert len(result.stderr.decode().strip().splitlines()) == 1
    # A valid SentencePiece model, but not the one the weights were trained with.
    from nmt.tokenizer import train_spm

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
    result = translate(broken, b"hello\n")
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


def test_translations_stay_on_one_line():
    assert single_line("ein\nHund\r\nläuft\r") == "ein Hund läuft "
