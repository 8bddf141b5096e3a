"""The report's Markdown tables: one column per heading, the chosen rate in bold, gates by layer."""

from __future__ import annotations

from pathlib import Path

from nmt.report.runs import Run
from nmt.report.tables import gates_table, length_table, tuning_table


def columns(table: str) -> set[int]:
    return {line.count("|") for line in table.splitlines() if line.startswith("|")}


def test_tuning_table_marks_the_chosen_rate_per_cell_and_a_diverged_one():
    tuning = {
        "lrs": [1e-3, 3e-3],
        "max_steps": 100,
        "seed": 1,
        "metric": "bleu",
        "attention": "bahdanau",
        "chosen": {"gru": {"bahdanau": 3e-3}, "tanh": {"bahdanau": 1e-3}},
        "runs": [
            {"cell": "gru", "attention": "bahdanau", "lr": 1e-3, "valid_bleu": 10.0},
            {"cell": "gru", "attention": "bahdanau", "lr": 3e-3, "valid_bleu": 12.5},
            {"cell": "tanh", "attention": "bahdanau", "lr": 1e-3, "valid_bleu": 4.0},
            {"cell": "tanh", "attention": "bahdanau", "lr": 3e-3, "valid_bleu": None},
        ],
    }
    table = tuning_table(tuning)
    assert "the grid {0.001, 0.003}; 100 updates a rate, seed 1" in table
    assert "the rate serves every attention (the runs in other settings reuse it" in table
    tuning["pairs"] = "en→de"
    assert (
        "tuned with attention bahdanau on en→de, the rate serves every attention and language "
        "pair (the runs in other settings reuse it, untuned there):" in tuning_table(tuning)
    )
    # two rates: every best is at an edge, and the table says the cell is not tuned
    assert (
        "| gru | bahdanau | 10.00 | **12.50** | **at the highest rate tried: not tuned** |" in table
    )
    assert (
        "| tanh | bahdanau | **4.00** | diverged | **at the lowest rate tried: not tuned** |"
        in table
    )
    assert columns(table) == {6}


def test_tuning_table_has_every_rate_a_widened_search_tried_and_says_what_is_bracketed():
    tuning = {
        "lrs": [1e-3, 2e-3],
        "factor": 2.0,
        "max_points": 4,
        "max_steps": 100,
        "seed": 1,
        "metric": "bleu",
        "attention": None,
        "runs": [
            {"cell": "gru", "attention": "none", "lr": 1e-3, "valid_bleu": 10.0},
            {"cell": "gru", "attention": "none", "lr": 2e-3, "valid_bleu": 12.5},
            {"cell": "gru", "attention": "none", "lr": 4e-3, "valid_bleu": 11.0},
            {"cell": "lstm", "attention": "none", "lr": 5e-4, "valid_bleu": 9.0},
            {"cell": "lstm", "attention": "none", "lr": 1e-3, "valid_bleu": 8.0},
            {"cell": "lstm", "attention": "none", "lr": 2e-3, "valid_bleu": 7.0},
        ],
    }
    table = tuning_table(tuning)
    assert "widened by a factor 2 past whichever edge held the best, up to 4 rates" in table
    assert "| cell | attention | lr 0.0005 | lr 0.001 | lr 0.002 | lr 0.004 | optimum |" in table
    assert "| gru | none | – | 10.00 | **12.50** | 11.00 | bracketed |" in table
    assert "| lstm | none | **9.00** | 8.00 | 7.00 | – | **at the lowest rate tried" in table


def run(cell, seed, gates):
    return Run(
        path=Path(f"/x/{cell}{seed}"),
        done={},
        config={"model": {"cell": cell, "attention": "none"}, "seed": seed},
        analysis={"gates": gates},
    )


def test_gates_table_has_a_row_per_cell_and_layer_from_its_first_seed():
    runs = [
        run("lstm", 2, {"enc.0.forget": 0.9}),
        run("lstm", 1, {"enc.0.forget": 0.5, "dec.input": 0.25}),
        run("gru", 1, {"enc.0.update": 0.125}),
        run("tanh", 1, {}),  # no gates: no row
    ]
    lines = gates_table(runs).splitlines()
    assert lines[0] == "| cell | attention | layer | update | reset | forget | input | output |"
    assert lines[2:] == [
        "| gru | none | enc.0 | 0.125 |  |  |  |  |",
        "| lstm | none | enc.0 |  |  | 0.500 |  |  |",
        "| lstm | none | dec |  |  |  | 0.250 |  |",
    ]
    assert gates_table([run("tanh", 1, {})]) == ""


def test_length_table_shows_intervals_only_where_seeds_give_one():
    def finished(cell, seed, bleus):
        r = run(cell, seed, {})
        r.analysis["bleu_by_length"] = [
            {"bucket": b, "sentences": 10, "bleu": v}
            for b, v in zip(("1-10", "11+"), bleus, strict=True)
        ]
        r.done["status"] = "finished"
        return r

    one = [finished("gru", 1, [20.0, 10.0])]
    two = [finished("lstm", 1, [20.0, 10.0]), finished("lstm", 2, [22.0, 12.0])]
    table = length_table([("gru+none", one), ("lstm+none", two)])
    assert table.splitlines()[0] == "| row | 1-10 (10) | 11+ (10) |"
    assert "| gru+none | 20.00 | 10.00 |" in table
    assert "| lstm+none | 21.00 [" in table and columns(table) == {4}


def test_the_hardware_line_counts_threads_in_the_singular_too(monkeypatch):
    import torch

    from nmt.core.runtime import describe_device
    from nmt.report.tables import _hardware

    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert ", 1 thread (torch " in describe_device(torch.device("cpu"))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert ", 2 threads (torch " in describe_device(torch.device("cpu"))
    # A run recorded before said "1 threads": the report says it right.
    old = Run.__new__(Run)
    old.done = {"hardware": "CPU AMD EPYC, 1 threads (torch 2.13.0+cpu)"}
    assert _hardware([old]) == "CPU AMD EPYC, 1 thread (torch 2.13.0+cpu)"
