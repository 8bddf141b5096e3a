"""The ablation report's rows: seeds, diverged runs, early stops."""

from __future__ import annotations

import sys
from pathlib import Path

from nmt.report.ablation import Run, build_rows, markdown_table

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def test_table_marks_diverged_rows():
    def run(cell, status, **done):
        return Run(
            path=Path(f"/x/{cell}"),
            config={"model": {"cell": cell, "attention": "none"}, "seed": 1},
            done={"status": status, "parameters": 10, **done},
        )

    ok = run(
        "gru",
        "finished",
        train_tokens_per_s=100.0,
        steps=3,
        minutes=1.0,
        bleu=1.0,
        best_step=3,
        enc_hidden=8,
        dec_hidden=16,
        stop_reason="early_stopping",
    )
    ok.test = {"bleu": 2.0, "chrf": 20.0}
    rows = build_rows([run("tanh", "failed"), ok], {})
    table = markdown_table(rows, "gru")
    assert "| tanh | none | 10 | – | diverged |" in table
    assert "| gru | none | 10 | 8/16 | 100 | 3 | 1/1 |" in table and "(baseline)" in table
    # A cell with a diverged seed beside a finished one: its row counts both, averages one.
    seed2 = run("gru", "failed")
    seed2.config["seed"] = 2
    (row,) = build_rows([ok, seed2], {})
    assert (row["runs"], row["failed"], row["steps"]) == (2, 1, 3)
    assert "| 3 | 1/1 |" in markdown_table([row], "gru")
    done = {k: v for k, v in ok.done.items() if k not in ("status", "parameters")}
    seed3 = run("gru", "finished", **{**done, "steps": 5, "stop_reason": "max_epochs"})
    seed3.config["seed"], seed3.test = 3, {"bleu": 4.0, "chrf": 22.0}
    (row,) = build_rows([ok, seed2, seed3], {})
    assert (row["runs"], row["failed"], row["steps"], row["test_bleu"]["mean"]) == (3, 1, 4, 3.0)
    # Both ways validation ends a run count as early stops; a limit does not.
    for reason, counted in [("lr_decayed", "1/1"), ("max_epochs", "0/1")]:
        ok.done["stop_reason"] = reason
        assert f"| 3 | {counted} |" in markdown_table(build_rows([ok], {}), "gru")
