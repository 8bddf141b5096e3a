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


def test_the_answer_says_what_each_interval_says():
    """A sentence per difference: its BLEU and chrF with their intervals in each setting that
    holds both cells, and 'lower' or 'higher' only where the BLEU interval leaves out zero."""
    from nmt.report.tables import answer_markdown

    def diff(b, low, high, pair="en-de", seeds=(3, 3), attention="bahdanau"):
        boot = {"delta": (low + high) / 2, "ci": [low, high], "p": 0.5}
        return {
            "a": "gru", "b": b, "what": f"{b} for gru", "pair": pair, "attention": attention,
            "seeds": list(seeds), "bleu": boot, "chrf": {**boot, "ci": [low * 2, high * 2]},
        }  # fmt: skip

    differences = [
        diff("tanh", -3.0, -1.0), diff("mingru", 0.5, 1.5), diff("gru_cho", -0.5, 0.3),
        diff("tanh", -2.0, 2.0, pair="en-fr"), diff("tanh", -4.0, -2.0, attention="none"),
    ]  # fmt: skip
    text = answer_markdown(differences, "test_2016_flickr", "beam5", "docs/x/report.md")
    lines = text.splitlines()
    assert "[the report](docs/x/report.md)" in lines[0] and "`test_2016_flickr`" in lines[0]
    assert "the difference of the seed means (3 seeds a cell) with its [95 % interval]" in lines[0]
    said = {line.split("** (gru → ")[0].strip("- *"): line for line in lines if "(gru → " in line}
    assert len(said) == 3  # one sentence a difference, its settings in it
    assert said["tanh for gru"] == (
        "- **tanh for gru** (gru → tanh): "
        "en→de with bahdanau attention: BLEU -2.00 [-3.00, -1.00] (lower), "
        "chrF -2.00 [-6.00, -2.00]; "
        "en→fr with bahdanau attention: BLEU +0.00 [-2.00, +2.00] (not told apart from zero), "
        "chrF +0.00 [-4.00, +4.00]; "
        "en→de without attention: BLEU -3.00 [-4.00, -2.00] (lower), chrF -3.00 [-8.00, -4.00]."
    )
    assert "BLEU +1.00 [+0.50, +1.50] (higher)" in said["mingru for gru"]
    assert "(not told apart from zero)" in said["gru_cho for gru"]
    # Seed counts that differ between settings: each setting says its own.
    text = answer_markdown(
        [diff("tanh", -3.0, -1.0), diff("tanh", -2.0, 2.0, pair="en-fr", seeds=(1, 2))], "s", "b"
    )
    assert "seed means with its [95 % interval]" in text
    assert "en→de with bahdanau attention (3 seeds a cell): BLEU" in text
    assert "en→fr with bahdanau attention (1–2 seeds a cell): BLEU" in text
    assert answer_markdown([], "s", "b") == ""
