from __future__ import annotations

import json
import os
import pickle
import signal

import pytest
import torch
from conftest import metrics_rows, run_fit, tiny_model
from safetensors.torch import load_file, save_model

from nmt.model.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_average,
    load_train_state,
    load_weights,
    save_checkpoint,
)
from nmt.training.train import TrainingError


def test_resume_reaches_the_same_weights(tmp_path):
    """Stopped at step 8 and resumed to 16 == never stopped (CPU), across an epoch boundary."""
    straight, _ = run_fit(tmp_path / "a", max_steps=16)
    run_fit(tmp_path / "b", max_steps=8)
    resumed, result = run_fit(tmp_path / "b", max_steps=16, resume=True)
    assert result["steps"] == 16
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_checkpoint_contents_and_refusing_to_overwrite(tmp_path):
    model, _ = run_fit(tmp_path, max_steps=4)
    # last/ holds the model as training left it, and the state to continue it, as tensors.
    from safetensors.torch import load_file

    from nmt.model.checkpoint import load_train_state

    weights = load_file(tmp_path / "last" / "model.safetensors")
    own = model.state_dict()  # tied weights are stored once
    for name, t in weights.items():
        assert torch.equal(t, own[name]), name
    assert sum(t.numel() for t in weights.values()) == sum(p.numel() for p in model.parameters())
    state = load_train_state(tmp_path / "last" / "train_state.pt")
    assert state["progress"]["step"] == 4 and state["optimizer"]["state"]
    assert json.loads((tmp_path / "last" / "meta.json").read_text())["step"] == 4
    best = json.loads((tmp_path / "best" / "scores.json").read_text())
    assert set(best) >= {"bleu"} and best["bleu"] <= 0  # the test's validate: -|sum of weights|
    with pytest.raises(TrainingError, match="already has a checkpoint; resume with train.resume"):
        run_fit(tmp_path, max_steps=4)


def test_killed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    model = tiny_model("lstm")
    place = tmp_path / "last"
    save_checkpoint(place, model, {"step": 1}, {"x": torch.ones(2)})
    real_save = torch.save

    def dying_save(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(place, model, {"step": 2}, {"x": torch.zeros(2)})
    monkeypatch.setattr(torch, "save", real_save)
    found = find_checkpoint(place)
    assert found == place
    assert load_weights(tiny_model("lstm"), found)["step"] == 1

    # Killed between moving the old checkpoint aside and renaming the new one in.
    real_replace, calls = os.replace, []

    def dying_replace(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed mid-rename")
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(place, model, {"step": 3}, {"x": torch.zeros(2)})
    monkeypatch.setattr(os, "replace", real_replace)
    found = find_checkpoint(place)
    assert found is not None and json.loads((found / "meta.json").read_text())["step"] == 1


def pack_like_cudnn(module: torch.nn.Module) -> None:
    """Make the module's parameters views of one flat buffer, as cuDNN lays out an RNN's
    weights on CUDA (``flatten_parameters``)."""
    params = list(module.parameters())
    flat = torch.cat([p.detach().flatten() for p in params])
    offset = 0
    for p in params:
        p.data = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()


def test_checkpoint_of_weights_packed_in_one_buffer(tmp_path):
    """Training on CUDA crashed at its first checkpoint: safetensors refuses parameters that are
    views of part of one storage. They save; they load into a plain model and, in place, into a
    packed one (the packing survives); the tied embeddings are stored once and stay tied."""
    model = tiny_model("gru")
    pack_like_cudnn(model.encoder)  # the encoder's embedding is the decoder's too
    save_checkpoint(tmp_path / "c", model, {"step": 7})
    stored = load_file(tmp_path / "c" / "model.safetensors")
    assert len(stored) == len(model.state_dict()) - 1  # decoder.embedding.weight: an alias
    plain, packed = tiny_model("gru"), tiny_model("gru")
    pack_like_cudnn(packed.encoder)
    buffer = packed.encoder.embedding.weight.untyped_storage().data_ptr()
    for target in (plain, packed):
        with torch.no_grad():
            for p in target.parameters():
                p.add_(1.0)
        assert load_weights(target, tmp_path / "c")["step"] == 7
        for (name, a), b in zip(
            model.state_dict().items(), target.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), name
        assert target.encoder.embedding.weight is target.decoder.embedding.weight
    assert all(p.untyped_storage().data_ptr() == buffer for p in packed.encoder.parameters())


def test_average_mixes_checkpoints_of_both_writers(tmp_path):
    """Checkpoints written by safetensors' save_model (before the CUDA fix) store another of the
    tied names than save_checkpoint does; a run resumed across the change keeps both kinds, and
    averaging them failed ("the checkpoints hold different tensors")."""
    old, new = tiny_model("gru"), tiny_model("gru")
    with torch.no_grad():
        for p in new.parameters():
            p.add_(2.0)
    (tmp_path / "old").mkdir()
    save_model(old, str(tmp_path / "old" / "model.safetensors"), metadata={"step": "1"})
    (tmp_path / "old" / "meta.json").write_text(json.dumps({"step": 1}))
    save_checkpoint(tmp_path / "new", new, {"step": 2})
    stored = [load_file(tmp_path / d / "model.safetensors").keys() for d in ("old", "new")]
    assert stored[0] != stored[1]  # the two writers really differ
    mean = tiny_model("gru")
    load_average(mean, [tmp_path / "old", tmp_path / "new"])
    for name, p in mean.state_dict().items():
        expected = (old.state_dict()[name] + new.state_dict()[name]) / 2
        assert torch.allclose(p, expected), name
    assert mean.encoder.embedding.weight is mean.decoder.embedding.weight


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "train_state.pt"
    with open(path, "wb") as f:
        pickle.dump({"optimizer": Payload()}, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_train_state(path)
    torch.save({"progress": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_train_state(path)
    place = tmp_path / "ckpt"
    place.mkdir()
    (place / "meta.json").write_text("{}")
    torch.save({"weight": torch.ones(2)}, place / "model.safetensors")  # a pickle in disguise
    with pytest.raises(CheckpointError, match="not a valid safetensors checkpoint"):
        load_weights(tiny_model("gru"), place)


def test_non_finite_losses_stop_training_with_checkpoint_intact(tmp_path):
    """A run that starts producing NaN after a resume gives up after max_bad_steps and leaves
    the last good checkpoint as it was (no NaN weights saved over it)."""
    run_fit(tmp_path, max_steps=4)
    before = (tmp_path / "last" / "model.safetensors").read_bytes()

    def poisoned():
        m = tiny_model("gru", dropout=0.3, emb_dropout=0.2)
        # A hook survives loading the checkpoint's weights: every loss from now on is NaN.
        m.decoder.combine.register_forward_hook(lambda mod, inp, out: out * float("nan"))
        return m

    with pytest.raises(TrainingError, match="3 non-finite losses in a row at step 4"):
        run_fit(tmp_path, max_steps=12, resume=True, model_fn=poisoned)
    assert (tmp_path / "last" / "model.safetensors").read_bytes() == before
    assert json.loads((tmp_path / "last" / "meta.json").read_text())["step"] == 4


def test_signal_saves_a_checkpoint_and_stops(tmp_path):
    from nmt.training.train import Interrupted

    def validate(m):
        # Arrives during the validation of step 4; the loop stops before the next update, as
        # the ranks of a data-parallel run do (they agree on it before each update).
        os.kill(os.getpid(), signal.SIGTERM)
        return {"bleu": 0.0}

    with pytest.raises(Interrupted, match="interrupted at step 4; checkpoint saved"):
        run_fit(tmp_path, max_steps=50, validate=validate)
    assert json.loads((tmp_path / "last" / "meta.json").read_text())["step"] == 4
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_a_finished_run_resumed_does_not_train_on(tmp_path):
    """Killed after training but before its end was recorded: resuming adds no update."""
    trained, first = run_fit(tmp_path, max_steps=6)
    resumed, again = run_fit(tmp_path, max_steps=6, resume=True)
    assert first["steps"] == again["steps"] == 6 and again["stop_reason"] == "max_steps"
    for p, q in zip(trained.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_validation_time_is_accounted_apart(tmp_path):
    import time

    def slow_validate(m):
        time.sleep(0.3)
        return {"bleu": 1.0}

    _, result = run_fit(tmp_path, max_steps=8, validate=slow_validate)  # validations at 4 and 8
    assert result["valid_minutes"] * 60 >= 0.6
    assert result["minutes"] >= result["valid_minutes"]
    assert result["train_tokens_per_s"] > result["tokens_per_s"]


def test_early_stopping_after_patience_validations(tmp_path):
    scores = iter([5.0, 4.0, 6.0, 5.5, 5.0, 4.0, 3.0])

    def validate(m):
        return {"bleu": next(scores)}

    _, result = run_fit(tmp_path, max_steps=100, validate=validate, patience=2)
    # Best 6.0 at the third validation (step 12), then two without improvement: stop at 20.
    assert result["stop_reason"] == "early_stopping"
    assert result["steps"] == 20 and result["best_step"] == 12
    assert [row["step"] for row in metrics_rows(tmp_path)] == ["4", "8", "12", "16", "20"]
    assert json.loads((tmp_path / "best" / "meta.json").read_text())["step"] == 12


def test_training_stops_once_the_schedule_has_cut_the_rate_max_lr_decays_times(tmp_path):
    # Every second validation a new best, so `patience` never stops the run; each other one
    # halves the rate (plateau, patience 0). Cut twice at the fourth validation: stop there.
    scores = iter([1.0, 0.5, 2.0, 1.5, 3.0, 2.5, 4.0, 3.5])
    _, result = run_fit(
        tmp_path, max_steps=100, validate=lambda m: {"bleu": next(scores)}, max_lr_decays=2
    )
    assert result["stop_reason"] == "lr_decayed"
    assert result["steps"] == 16 and result["best_step"] == 12
    assert [float(row["lr"]) for row in metrics_rows(tmp_path)] == pytest.approx(
        [3e-3, 1.5e-3, 1.5e-3, 7.5e-4]
    )


def test_before_min_steps_no_validation_stops_the_run_or_cuts_its_rate(tmp_path):
    # Without min_steps the rate would be cut at update 8 (0.5 after 1.0); nothing counts
    # before update 12, so the cuts come at 24 and 32, and the second stops the run.
    scores = iter([1.0, 0.5, 0.4, 1.5, 3.0, 2.5, 4.0, 3.5, 3.0, 2.0])
    _, result = run_fit(
        tmp_path,
        max_steps=100,
        validate=lambda m: {"bleu": next(scores)},
        max_lr_decays=2,
        min_steps=12,
    )
    assert result["stop_reason"] == "lr_decayed"
    assert result["steps"] == 32 and result["best_step"] == 28
    assert [float(row["lr"]) for row in metrics_rows(tmp_path)] == pytest.approx(
        [3e-3, 3e-3, 3e-3, 3e-3, 3e-3, 1.5e-3, 1.5e-3, 7.5e-4]
    )
    early = tmp_path / "early"
    scores = iter([2.0, 1.0, 0.5, 0.4, 3.0, 1.0, 1.0])
    _, result = run_fit(
        early, max_steps=100, validate=lambda m: {"bleu": next(scores)}, patience=2, min_steps=16
    )
    # Patience 2 would stop the run at update 12; the validations before 16 count for nothing,
    # and after the best at 20 two more without one (24, 28) stop it.
    assert result["stop_reason"] == "early_stopping"
    assert result["steps"] == 28 and result["best_step"] == 20


def test_max_lr_decays_counts_the_cuts_made_before_a_resume(tmp_path):
    scores = iter([1.0, 0.5, 2.0, 1.5, 3.0, 2.5, 4.0, 3.5])

    def validate(m):
        return {"bleu": next(scores)}

    run_fit(tmp_path, max_steps=8, validate=validate)  # one cut, at step 8
    _, result = run_fit(tmp_path, max_steps=100, validate=validate, resume=True, max_lr_decays=2)
    assert result["stop_reason"] == "lr_decayed" and result["steps"] == 16
    # Without the option the same scores run on to the step limit.
    _, result = run_fit(tmp_path / "off", max_steps=32, validate=lambda m: {"bleu": 1.0})
    assert result["stop_reason"] == "max_steps" and result["steps"] == 32


def test_max_minutes_stops_training(tmp_path):
    _, result = run_fit(tmp_path, max_steps=1000, max_minutes=1e-9)
    assert result["stop_reason"] == "max_minutes" and result["steps"] == 1


def test_tensorboard_event_files_hold_the_metrics_rows(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_fit(tmp_path, max_steps=8, tensorboard=True, validate=lambda m: {"bleu": 2.5})
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"valid/bleu", "valid/lr", "train/loss", "train/tokens_per_s", "train/lr"} <= tags
    bleu = events.Scalars("valid/bleu")
    assert [e.step for e in bleu] == [4, 8] and bleu[0].value == pytest.approx(2.5)
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8]
