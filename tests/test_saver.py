"""What training keeps: the last and best checkpoints, best scores written with best weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_fit

from nmt.model.checkpoint import (
    CheckpointError,
    choose_kept,
    find_checkpoint,
    kept_checkpoints,
)


def test_kept_checkpoints_are_the_last_and_the_best(tmp_path):
    """keep_last=2, keep_best=1: after validations scoring 1, 5, 2, 3, 0.5 at steps 4..20,
    the best (step 8) and the last two (16, 20) stay."""
    scores = iter([1.0, 5.0, 2.0, 3.0, 0.5])
    run_fit(
        tmp_path,
        max_steps=20,
        validate=lambda m: {"bleu": next(scores)},
        keep_last=2,
        keep_best=1,
    )
    assert [step for step, _, _ in kept_checkpoints(tmp_path)] == [8, 16, 20]
    assert [p.name for p in choose_kept(tmp_path, "best", 1)] == ["step-0000008"]
    assert [p.name for p in choose_kept(tmp_path, "last", 2)] == ["step-0000016", "step-0000020"]
    with pytest.raises(CheckpointError, match="3 kept checkpoints, averaging needs 4"):
        choose_kept(tmp_path, "last", 4)


def test_best_scores_arrive_with_the_best_weights(tmp_path, monkeypatch):
    """best/scores.json is written inside the checkpoint directory before it is renamed in:
    a save killed half-way leaves the previous best whole, scores and weights together."""
    from nmt.model import checkpoint

    scores = iter([1.0, 2.0])
    real_replace, renamed_in = os.replace, []

    def recording_replace(a, b):
        if str(b).endswith("best"):  # what the directory holds as it becomes best/
            scores_file = Path(a) / "scores.json"
            renamed_in.append(scores_file.is_file() and json.loads(scores_file.read_text()))
        real_replace(a, b)

    monkeypatch.setattr(checkpoint.os, "replace", recording_replace)
    run_fit(tmp_path, max_steps=4, validate=lambda m: {"bleu": next(scores)})
    monkeypatch.undo()
    assert renamed_in == [{"bleu": 1.0}]
    assert json.loads((tmp_path / "best" / "scores.json").read_text())["bleu"] == 1.0

    def dying_replace(a, b):
        if str(b).endswith("best"):
            raise KeyboardInterrupt("killed while renaming best/")
        real_replace(a, b)

    monkeypatch.setattr(checkpoint.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        run_fit(tmp_path, max_steps=8, resume=True, validate=lambda m: {"bleu": next(scores)})
    monkeypatch.undo()
    best = checkpoint.find_checkpoint(tmp_path / "best")
    assert json.loads((best / "scores.json").read_text())["bleu"] == 1.0
    assert json.loads((best / "meta.json").read_text())["step"] == 4


def test_a_first_validation_without_a_finite_score_still_leaves_a_best(tmp_path):
    """NaN compares false with every score: the first validation must still give best/, and
    a later finite score must still replace it."""
    _, result = run_fit(tmp_path / "nan", max_steps=8, validate=lambda m: {"bleu": float("nan")})
    assert find_checkpoint(tmp_path / "nan" / "best") is not None
    assert result["best_step"] == 4 and result["steps"] == 8
    scores = iter([float("nan"), 2.0, float("nan"), 1.0])
    _, result = run_fit(tmp_path / "later", max_steps=16, validate=lambda m: {"bleu": next(scores)})
    assert result["best_step"] == 8 and result["bleu"] == 2.0
    meta = json.loads((tmp_path / "later" / "best" / "meta.json").read_text())
    assert meta["step"] == 8
