"""Averaged checkpoints (checkpoint=avg-last-N / avg-best-N): the mean of the chosen kept
weights, each of them, and nothing of another model's shape."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from nmt.model.checkpoint import (
    CheckpointError,
    kept_checkpoints,
    load_average,
    load_weights,
    save_checkpoint,
)
from nmt.translate import Translator


def state(run_dir, checkpoint: str) -> dict[str, torch.Tensor]:
    return Translator.from_run_dir(
        run_dir, checkpoint=checkpoint, device="cpu", backend="torch"
    ).model.state_dict()


def test_avg_last_1_is_last_and_avg_last_3_the_mean_of_the_three(tiny_run_b):
    kept = kept_checkpoints(tiny_run_b)
    assert [step for step, _, _ in kept] == [4, 8, 12]
    last = state(tiny_run_b, "last")
    for name, value in state(tiny_run_b, "avg-last-1").items():
        torch.testing.assert_close(value, last[name], rtol=0, atol=0, msg=name)
    each = []
    for _, _, place in kept:
        model = Translator.from_run_dir(tiny_run_b, device="cpu", backend="torch").model
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


def test_averaging_checkpoints(tmp_path):
    """N copies of one checkpoint average to it; two different ones to their mean (tied
    embeddings stay tied)."""
    a, b = tiny_model("lstm"), tiny_model("lstm")
    save_checkpoint(tmp_path / "a", a, {"step": 1})
    save_checkpoint(tmp_path / "b", b, {"step": 2})
    copies = tiny_model("lstm")
    load_average(copies, [tmp_path / "a"] * 3)
    for (name, p), q in zip(a.state_dict().items(), copies.state_dict().values(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7, msg=name)
    mean = tiny_model("lstm")
    assert load_average(mean, [tmp_path / "a", tmp_path / "b"])["step"] == 1
    for name, p in mean.state_dict().items():
        expected = (a.state_dict()[name] + b.state_dict()[name]) / 2
        torch.testing.assert_close(p, expected, msg=name)
    assert mean.decoder.embedding.weight is mean.encoder.embedding.weight


def test_weights_of_another_model_are_refused(tmp_path):
    """A checkpoint whose tensors do not all belong to the model (here: one with attention
    loaded into one without) is refused, not half-loaded."""
    save_checkpoint(tmp_path / "c", tiny_model("gru", "bahdanau"), {"step": 1})
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_weights(tiny_model("gru", "none"), tmp_path / "c")
