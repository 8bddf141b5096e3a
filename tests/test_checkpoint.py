"""Averaged checkpoints (checkpoint=avg-last-N / avg-best-N): the mean of the chosen kept
weights, each of them, and nothing of another model's shape."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from nmt.checkpoint import (
    CheckpointError,
    kept_checkpoints,
    load_average,
    load_weights,
    save_checkpoint,
)
from nmt.translate import Translator


def state(run_dir, checkpoint: str) -> dict[str, torch.Tensor]:
    return Translator.from_run_dir(run_dir, checkpoint=checkpoint, device="cpu").model.state_dict()


def test_avg_last_1_is_last_and_avg_last_3_the_mean_of_the_three(tiny_run_b):
    kept = kept_checkpoints(tiny_run_b)
    assert [step for step, _, _ in kept] == [4, 8, 12]
    last = state(tiny_run_b, "last")
    for name, value in state(tiny_run_b, "avg-last-1").items():
        torch.testing.assert_close(value, last[name], rtol=0, atol=0, msg=name)
    each = []
    for _, _, place in kept:
        model = Translator.from_run_dir(tiny_run_b, device="cpu").model
        load_weights(model, place)
        each.append({k: v.clone() for k, v in model.state_dict().items()})
    name = "decoder.embedding.weight"
    assert not torch.equal(each[0][name], each[1][name])
    assert not torch.equal(each[1][name], each[2][name])
    for name, value in state(tiny_run_b, "avg-last-3").items():
        mean = (each[0][name] + each[1][name] + each[2][name]) / 3
        torch.testing.assert_close(value, mean, msg=name)


def test_averaging_checkpoints_of_different_shapes_is_one_line(tmp_path):
    save_checkpoint(tmp_path / "a", tiny_model("gru"), {"step": 1})
    save_checkpoint(tmp_path / "b", tiny_model("gru", dec_hidden=24), {"step": 2})
    with pytest.raises(CheckpointError, match="differs in shape between the checkpoints") as e:
        load_average(tiny_model("gru"), [tmp_path / "a", tmp_path / "b"])
    assert "\n" not in str(e.value)
