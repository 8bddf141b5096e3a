"""The figures: curves over seeds, a colour per cell of the cell table, heatmaps as real PNGs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nmt.model.cells import CELLS
from nmt.report.plots import (
    COLORS,
    PLOTS,
    _over_seeds,
    attention_heatmaps,
    gates_by_layer,
    plot_report,
)
from nmt.report.runs import Run

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_cell_of_the_table_has_its_own_colour():
    assert list(COLORS) == list(CELLS) and len(set(COLORS.values())) == len(CELLS)


def test_gates_split_into_layers_at_the_last_dot():
    assert gates_by_layer({"encoder.0.fwd.update": 0.5, "decoder.forget": 0.25}) == {
        "encoder.0.fwd": {"update": 0.5},
        "decoder": {"forget": 0.25},
    }


def run(seed, metrics, cell="gru", gate=0.4):
    return Run(
        path=Path(f"/x/{seed}"),
        done={"status": "finished"},
        config={"model": {"cell": cell, "attention": "bahdanau"}, "seed": seed},
        metrics=metrics,
        analysis={
            "gates": {"encoder.0.update": gate},
            "bleu_by_length": [{"bucket": "1-10", "sentences": 3, "bleu": 10.0 + seed}],
        },
    )


def test_curves_average_the_seeds_that_reached_each_step():
    a = run(1, [{"step": 2, "seconds": 60, "bleu": 1.0}, {"step": 4, "seconds": 120, "bleu": 3.0}])
    b = run(2, [{"step": 2, "seconds": 180, "bleu": 2.0}, {"step": 4, "seconds": 240}])
    xs, means, stds = _over_seeds([a, b], "bleu", "seconds")
    assert xs == [2.0, 2.0] and means == [1.5, 3.0]  # minutes; step 4 has one seed's BLEU
    assert stds == [pytest.approx(0.5**0.5), 0.0]


def test_the_report_draws_its_four_figures(tmp_path):
    """Each figure is a PNG of a readable size, and draws its data: other numbers (curves, BLEU
    by length, gates) give another picture."""
    from matplotlib.image import imread

    a = [{"step": 2, "seconds": 60, "bleu": 1.0, "loss": 4.0}]
    b = [{"step": 2, "seconds": 60, "bleu": 9.0, "loss": 2.0}, {"step": 4, "seconds": 90}]
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
    plot_report([("gru+bahdanau", [run(1, a), run(2, a)])], tmp_path / "a")
    plot_report([("gru+bahdanau", [run(5, b, gate=0.9), run(7, b, gate=0.9)])], tmp_path / "b")
    for name in PLOTS:
        first, second = (tmp_path / side / name for side in ("a", "b"))
        assert first.read_bytes()[:8] == PNG, name
        height, width = imread(first).shape[:2]
        assert height >= 200 and width >= 300, (name, height, width)
        assert first.read_bytes() != second.read_bytes(), f"{name} does not depend on its data"


def test_a_heatmap_per_translation_that_has_attention(tmp_path):
    def translation(attn, text):
        hyp = SimpleNamespace(attn=attn, tokens=[5, 6])
        return SimpleNamespace(hyps=[hyp], src_pieces=["▁a", "▁b"], texts=[text])

    found = [
        translation(torch.rand(2, 3), "a b"),
        translation(None, "none"),
        translation(torch.rand(2, 3), "c d"),
    ]
    drawn = attention_heatmaps(found, lambda hyp: ["▁x", "▁y"], tmp_path / "heat")
    assert [p.name for p in drawn] == ["0000.png", "0002.png"]
    assert all(p.read_bytes()[:8] == PNG for p in drawn)
