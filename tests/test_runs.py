"""Reading finished runs for the report: finding them, their metrics, their order and context."""

from __future__ import annotations

import json

import pytest
import yaml

from nmt.model.cells import CELLS
from nmt.report.runs import ReportError, Run, context, find_runs, load_run, run_order


def make_run(path, cell="gru", attention="bahdanau", seed=1, status="running", **config):
    path.mkdir(parents=True)
    (path / "done.json").write_text(json.dumps({"status": status}))
    tree = {"model": {"cell": cell, "attention": attention}, "seed": seed, **config}
    (path / "config.yaml").write_text(yaml.safe_dump(tree))
    return path


def test_runs_are_found_as_given_or_one_level_below(tmp_path):
    a, b = make_run(tmp_path / "sweep" / "a"), make_run(tmp_path / "sweep" / "b")
    lone = make_run(tmp_path / "lone")
    (tmp_path / "sweep" / "unfinished").mkdir()
    assert find_runs([tmp_path / "sweep", lone, tmp_path / "missing"]) == [a, b, lone]


def test_a_resumed_step_is_read_once_with_its_last_values(tmp_path):
    run_dir = make_run(tmp_path / "r")
    (run_dir / "metrics.csv").write_text("step,bleu,lr\n2,1.0,0.1\n4,2.0,0.1\n4,3.0,\n6,4.0,0.1\n")
    run = load_run(run_dir, "test_2016_flickr", "beam")
    assert [(m["step"], m["bleu"]) for m in run.metrics] == [(2, 1), (4, 3), (6, 4)]
    assert "lr" not in run.metrics[1]  # an empty field is absent, not zero


def test_a_run_without_what_the_report_needs_names_the_fix(tmp_path):
    (tmp_path / "bare").mkdir()
    with pytest.raises(ReportError, match=r"bare/config\.yaml: missing"):
        load_run(tmp_path / "bare", "val", "beam")
    done = make_run(tmp_path / "done", status="finished")
    with pytest.raises(ReportError, match=r"translate the split first: make eval"):
        load_run(done, "test_2016_flickr", "beam")


def run(cell, attention="bahdanau", seed=1, **config):
    tree = {"model": {"cell": cell, "attention": attention}, "seed": seed, **config}
    return Run(path=None, done={}, config=tree)


def test_rows_follow_attention_then_the_cell_table_then_the_seed():
    runs = [run(c, a, s) for a in ("none", "bahdanau") for c in reversed(CELLS) for s in (2, 1)]
    ordered = sorted(runs, key=run_order)
    assert [(r.attention, r.cell, r.seed) for r in ordered] == [
        (a, c, s) for a in ("none", "bahdanau") for c in CELLS for s in (1, 2)
    ]


def test_context_is_everything_but_the_cell_its_recipe_and_the_seed():
    base = run("gru", optim={"lr": 1e-3}, train={"max_steps": 10, "progress": True})
    assert context(base) == context(
        run("lstm", seed=7, optim={"lr": 5e-4}, train=dict(max_steps=10, progress=False))
    )
    assert context(base) != context(
        run("gru", "none", optim={"lr": 1e-3}, train=dict(max_steps=10, progress=True))
    )
    assert context(base) != context(
        run("gru", optim={"lr": 1e-3}, train=dict(max_steps=20, progress=True))
    )
