"""The report's Markdown tables: one column per heading, the chosen rate in bold, gates by layer."""

from __future__ import annotations

from pathlib import Path

from nmt.runs import Run
from nmt.tables import gates_table, length_table, tuning_table


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
    assert "2 rates, 100 updates each, seed 1" in table and "serves every attention" in table
    assert "| gru | bahdanau | 10.00 | **12.50** |" in table
    assert "| tanh | bahdanau | **4.00** | diverged |" in table
    assert columns(table) == {5}


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
