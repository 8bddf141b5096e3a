"""nmt-eval (nmt.scoring.evaluate): a split translated and scored, hypothesis files compared."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import invoke, multi30k_lines
from sacrebleu.metrics import BLEU, CHRF, TER

BIN = Path(sys.executable).parent


def test_eval_split_scores_and_plots(tiny_run):
    result = invoke(
        "nmt-eval",
        f"run_dir={tiny_run}",
        "split=test_2016_flickr",
        "attention_plots=2",
        "search=greedy",
        "precision=fp32",
        "progress=true",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "translating test_2016_flickr: 100%" in result.stderr and "40/40" in result.stderr
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
    from nmt.data.prepare import load_corpus

    corpus, _ = load_corpus(tiny_run)
    ref = [r["de"] for r in corpus["test_2016_flickr"]["translation"]]
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("".join(r + "\n" for r in ref))
    b.write_text("".join(" ".join(r.split()[:2]) + "\n" for r in ref))
    result = invoke(
        "nmt-eval",
        f"run_dir={tiny_run}",
        "split=test_2016_flickr",
        f"hyps=[{a},{b}]",
        "bootstrap_samples=100",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{b} vs {a}: BLEU" in result.stdout and "(p = 0.0" in result.stdout
    short = tmp_path / "short.txt"
    short.write_text("one line\n")
    bad = invoke("nmt-eval", f"run_dir={tiny_run}", f"hyps=[{short}]")
    assert (
        bad.returncode == 1 and "1 lines but split test_2016_flickr has 40 references" in bad.stderr
    )
    twice = invoke("nmt-eval", f"run_dir={tiny_run}", f"hyps=[{a},{a}]")
    assert twice.returncode == 1
    assert twice.stderr.strip() == f"error: hyps names {a} more than once; compare different files"


@pytest.mark.parametrize("command", ["nmt-eval", "nmt-tune-search"])
def test_a_split_the_run_lacks_is_refused_before_the_model_loads(tiny_run, command):
    """One line naming the splits the run has, and no model loaded for it (its log line absent)."""
    refused = invoke(command, f"run_dir={tiny_run}", "split=tset_2016")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: split 'tset_2016' is not in {tiny_run / 'data'} (has train, val, test_2016_flickr)"
    ]
