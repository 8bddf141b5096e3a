from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import multi30k_lines
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError
from sacrebleu.metrics import BLEU, CHRF, TER

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


def test_cli_three_lines_for_three_lines(tiny_run):
    result = translate(tiny_run, f"A dog runs.\n\n{LONG}\n".encode())
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    lines = result.stdout.decode().split("\n")
    assert len(lines) == 4 and lines[3] == "" and lines[1] == ""  # three lines, newline-terminated
    assert "<stdin>:3: longer than 250 pieces" in result.stderr.decode()


def test_invalid_utf8_line_gives_empty_line_or_stops(tiny_run):
    data = b"A dog.\n\xff\xfe bad\nA cat.\n"
    result = translate(tiny_run, data)
    assert result.returncode == 0
    lines = result.stdout.decode().split("\n")
    assert len(lines) == 4 and lines[1] == ""
    assert "<stdin>:2: invalid UTF-8 at byte 0 of the line" in result.stderr.decode()
    strict = translate(tiny_run, data, "strict=true")
    assert strict.returncode == 1
    assert (
        strict.stderr.decode()
        .strip()
        .splitlines()[-1]
        .startswith("error: <stdin>:2: invalid UTF-8")
    )


def test_files_and_n_best(tiny_run, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("A dog runs.\nTwo men.\n\n")
    out = tmp_path / "out.txt"
    result = translate(tiny_run, b"", f"input={src}", f"output={out}", "search.n_best=3")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    lines = out.read_text().split("\n")[:-1]
    assert len(lines) == 9
    assert all(len(line.split("\t")) == 2 for line in lines)
    scores = [float(line.split("\t")[1]) for line in lines]
    for group in (scores[0:3], scores[3:6]):
        assert group == sorted(group, reverse=True)  # n-best, best first
    assert lines[6:] == ["\t0.0000"] * 3  # an empty line: three empty hypotheses
    too_many = translate(tiny_run, b"x\n", "search.n_best=6")  # beam5 keeps 5
    assert too_many.returncode == 1
    assert too_many.stderr.decode().strip() == (
        "error: search.n_best=6 with search.beam_size=5: a beam keeps at most beam_size "
        "hypotheses; set search.beam_size=6 or more"
    )


def test_a_failed_translation_leaves_the_output_file_as_it_was(tiny_run, tmp_path):
    """output=FILE appears whole or not at all: a run that stops at a bad line (strict=true)
    leaves an earlier FILE untouched and nothing half-written beside it."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"A dog runs.\n" * 30 + b"\xff bad\n")
    out = tmp_path / "out.txt"
    out.write_text("an earlier translation\n")
    result = translate(
        tiny_run, b"", f"input={src}", f"output={out}", "strict=true", "buffer_lines=4"
    )
    assert result.returncode == 1 and f"{src}:31: invalid UTF-8" in result.stderr.decode()
    assert out.read_text() == "an earlier translation\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.txt"]
    missing = translate(tiny_run, b"A dog.\n", f"output={tmp_path / 'nowhere' / 'out.txt'}")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr.decode()
    assert missing.stderr.decode().strip().splitlines()[-1] == (
        f"error: output={tmp_path / 'nowhere' / 'out.txt'}: the directory "
        f"{tmp_path / 'nowhere'} does not exist; create it or choose another output"
    )


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


def test_eval_split_scores_and_plots(tiny_run):
    result = subprocess.run(
        [
            str(BIN / "nmt-eval"),
            f"run_dir={tiny_run}",
            "split=test_2016_flickr",
            "attention_plots=2",
            "search=greedy",
            "precision=fp32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test_2016_flickr: BLEU" in result.stdout and "nrefs:1|case:mixed" in result.stdout
    assert "test_2016_flickr: LT BLEU" in result.stdout and "not sacreBLEU" in result.stdout
    out_dir = tiny_run / "eval" / "test_2016_flickr-best-greedy"
    scores = json.loads((out_dir / "scores.json").read_text())
    # The scores are sacreBLEU's of the written hypotheses against the split's references.
    hyps = (out_dir / "hyps.txt").read_text().split("\n")[:-1]
    refs = multi30k_lines("test_2016_flickr", "de", 40)
    assert scores["bleu"] == pytest.approx(BLEU().corpus_score(hyps, [refs]).score)
    assert scores["chrf"] == pytest.approx(CHRF().corpus_score(hyps, [refs]).score)
    assert scores["ter"] == pytest.approx(TER().corpus_score(hyps, [refs]).score)
    assert scores["bleu_lc"] == pytest.approx(BLEU(lowercase=True).corpus_score(hyps, [refs]).score)
    assert scores["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert scores["bleu_lt_signature"].startswith("LT|lang:de|")
    assert scores["split"] == "test_2016_flickr" and scores["checkpoint"] == "best"
    assert scores["search"]["name"] == "greedy" and scores["search"]["beam_size"] == 1
    assert scores["sentences_per_s"] == pytest.approx(40 / scores["seconds"], rel=0.1)
    assert scores["precision"] == "fp32" and scores["hardware"].startswith("CPU ")
    # Which weights: the run, the checkpoint and the training step they are of.
    step = json.loads((tiny_run / "best" / "meta.json").read_text())["step"]
    assert scores["models"] == [{"run_dir": str(tiny_run), "checkpoint": "best", "steps": [step]}]
    assert len((out_dir / "hyps.txt").read_text().split("\n")) == 41
    plots = sorted((out_dir / "attention").glob("*.png"))
    assert len(plots) == 2 and all(p.stat().st_size > 2000 for p in plots)


def test_eval_two_hypothesis_files_runs_paired_bootstrap(tiny_run, tmp_path):
    from nmt.data import load_corpus

    corpus, _ = load_corpus(tiny_run)
    ref = [r["de"] for r in corpus["test_2016_flickr"]["translation"]]
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("".join(r + "\n" for r in ref))
    b.write_text("".join(" ".join(r.split()[:2]) + "\n" for r in ref))
    result = subprocess.run(
        [
            str(BIN / "nmt-eval"),
            f"run_dir={tiny_run}",
            "split=test_2016_flickr",
            f"hyps=[{a},{b}]",
            "bootstrap_samples=100",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{b} vs {a}: BLEU" in result.stdout and "(p = 0.0" in result.stdout
    short = tmp_path / "short.txt"
    short.write_text("one line\n")
    bad = subprocess.run(
        [str(BIN / "nmt-eval"), f"run_dir={tiny_run}", f"hyps=[{short}]"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        bad.returncode == 1 and "1 lines but split test_2016_flickr has 40 references" in bad.stderr
    )
    twice = subprocess.run(
        [str(BIN / "nmt-eval"), f"run_dir={tiny_run}", f"hyps=[{a},{a}]"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert twice.returncode == 1
    assert twice.stderr.strip() == f"error: hyps names {a} more than once; compare different files"


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
