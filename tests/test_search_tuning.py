"""Search settings chosen on validation (nmt-tune-search) and used again (search=tuned)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import invoke

from nmt.scoring.search_tuning import choose, edge_gains, grid, on_edge


def test_grid_tries_greedy_once_and_smaller_beams_first():
    assert grid([5, 1], [0.6, 0.0]) == [(1, 0.0), (5, 0.0), (5, 0.6)]
    with pytest.raises(ValueError, match="at least one value"):
        grid([], [0.0])


def test_the_choice_is_the_highest_bleu_and_of_equals_the_first():
    rows = [
        {"beam_size": 1, "alpha": 0.0, "bleu": 20.0},
        {"beam_size": 5, "alpha": 0.0, "bleu": 21.5},
        {"beam_size": 5, "alpha": 0.6, "bleu": 22.0},
        {"beam_size": 12, "alpha": 0.6, "bleu": 22.0},
        {"beam_size": 12, "alpha": 1.0, "bleu": 21.0},
    ]
    assert choose(rows) is rows[2]
    assert choose(rows[3:]) is rows[3]


def test_on_edge_names_the_bounds_a_larger_value_could_beat():
    beams, alphas = [1, 5, 12], [0.0, 0.6, 1.0]
    assert on_edge((12, 1.0), beams, alphas) == ["beam_size", "alpha"]
    assert on_edge((12, 0.6), beams, alphas) == ["beam_size"]
    assert on_edge((5, 1.0), beams, alphas) == ["alpha"]
    assert on_edge((5, 0.6), beams, alphas) == []
    assert on_edge((1, 0.0), [1], [0.0, 1.0]) == []  # greedy: no penalty, no beam varied
    assert on_edge((5, 1.0), [5], [1.0]) == []  # nothing varied, nothing to widen


def test_edge_gains_measure_the_chosen_setting_against_the_grid_below_each_bound():
    rows = [
        {"beam_size": b, "alpha": a, "bleu": bleu}
        for b, a, bleu in [(1, 0.0, 30.0), (5, 0.0, 31.0), (5, 1.0, 31.5), (12, 0.0, 31.2)]
        + [(12, 1.0, 31.6)]
    ]
    # beam 12 alpha 1.0: +0.1 over the best smaller beam (5, 1.0), +0.4 over beam 12 alpha 0.0
    assert edge_gains(rows, (12, 1.0), ["beam_size", "alpha"]) == {"beam_size": 0.1, "alpha": 0.4}
    assert edge_gains(rows, (5, 1.0), ["alpha"]) == {"alpha": 0.5}
    assert edge_gains(rows, (5, 0.0), []) == {}


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return invoke(*args, stdin=stdin)  # in this process: the commands' words and files


def test_tune_search_records_the_best_and_search_tuned_decodes_with_it(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    text = "A dog runs in the park.\nTwo men talk.\n"
    refused = run("nmt-translate", f"run_dir={run_dir}", "search=tuned", stdin=text)
    assert refused.returncode != 0 and "make tune-search" in refused.stderr

    grid_args = ("beam_sizes=[1,3]", "alphas=[0.0,1.0]", "progress=false")
    done = run("nmt-tune-search", f"run_dir={run_dir}", *grid_args)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run_dir / "search.json").read_text())
    assert result["split"] == "val" and result["checkpoint"] == "best"
    tried = [(row["beam_size"], row["alpha"]) for row in result["grid"]]
    assert tried == [(1, 0.0), (3, 0.0), (3, 1.0)]
    best = max(result["grid"], key=lambda row: row["bleu"])
    assert result["chosen"] == {"beam_size": best["beam_size"], "alpha": best["alpha"]}
    assert result["on_edge"] == on_edge((best["beam_size"], best["alpha"]), [1, 3], [0.0, 1.0])
    assert ("note: the best is the largest" in done.stdout) == bool(result["on_edge"])
    assert list(result["edge_gains"]) == result["on_edge"]
    for name, gain in result["edge_gains"].items():
        assert f"+{gain:.2f} BLEU over a smaller {name}" in done.stdout
    assert "search=tuned" in done.stdout

    tuned = run("nmt-translate", f"run_dir={run_dir}", "search=tuned", stdin=text)
    chosen = result["chosen"]
    explicit = run(
        "nmt-translate",
        f"run_dir={run_dir}",
        f"search.beam_size={chosen['beam_size']}",
        f"search.alpha={chosen['alpha']}",
        stdin=text,
    )
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    assert tuned.stdout == explicit.stdout and len(tuned.stdout.splitlines()) == 2


def test_tuning_on_a_test_split_must_be_asked_for_and_is_recorded(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    grid_args = ("beam_sizes=[1,2]", "alphas=[0.0]", "progress=false")
    refused = run("nmt-tune-search", f"run_dir={run_dir}", "split=test_2016_flickr", *grid_args)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "is a test split" in refused.stderr and "allow_test=true" in refused.stderr
    assert not (run_dir / "search.json").exists()
    asked = ("split=test_2016_flickr", "allow_test=true")
    done = run("nmt-tune-search", f"run_dir={run_dir}", *asked, *grid_args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run_dir / "search.json").read_text())["split"] == "test_2016_flickr"
    scored = run("nmt-eval", f"run_dir={run_dir}", "search=tuned", "split=val")
    assert scored.returncode == 0, scored.stderr[-3000:]
    scores = json.loads((run_dir / "eval" / "val-best-tuned" / "scores.json").read_text())
    assert scores["search"]["tuned_on"] == "test_2016_flickr"
    assert "tuned on" not in scored.stderr  # another split than the one it was tuned on
    again = run("nmt-eval", f"run_dir={run_dir}", "search=tuned", "split=test_2016_flickr")
    assert again.returncode == 0 and "tuned on test_2016_flickr itself" in again.stderr


def test_tune_search_outside_a_run_is_one_line(tmp_path):
    result = run("nmt-tune-search", f"run_dir={tmp_path}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'data'}: no prepared data; is {tmp_path} a training run directory?"
    )
