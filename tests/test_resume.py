"""The resume policy (nmt.resume.decide) on copies of a real finished run: what train.resume
false, true and auto may do to a run directory that holds a run. The commands that apply it
(and what a refusal leaves behind) are in test_pipeline.py."""

from __future__ import annotations

import json
import shutil

import pytest
from omegaconf import OmegaConf

from nmt.core.compose import read_run_config
from nmt.core.errors import UserError
from nmt.resume import DEFINING, check_run_dir, decide


@pytest.fixture
def run(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def settings(run_dir, mode: str, **changes):
    """The run's own settings (as a rerun of its command composes them), with changes."""
    cfg = read_run_config(run_dir / "config.yaml")
    cfg.train.resume = mode
    for key, value in changes.items():
        OmegaConf.update(cfg, key.replace("__", "."), value)
    return cfg


def test_a_new_run_never_lands_on_one(run, tmp_path):
    with pytest.raises(UserError, match="already holds a training run; continue it with"):
        decide(settings(run, "false"), run)
    assert decide(settings(run, "false"), tmp_path / "empty") is False
    with pytest.raises(UserError, match="nothing to resume"):
        decide(settings(run, "true"), tmp_path / "empty")
    with pytest.raises(UserError, match="expected true, false or auto"):
        decide(settings(run, "maybe"), run)


def test_true_continues_with_other_training_settings_but_nothing_else(run):
    assert decide(settings(run, "true", train__patience=99, train__max_steps=60), run) is True
    changes = {
        "data__max_len": 10,
        "tokenizer__vocab_size": 700,
        "model__emb_dim": 48,
        "optim__lr": 0.5,
        "batch__max_tokens": 900,
        "seed": 7,
    }
    assert {key.split("__")[0] for key in changes} == set(DEFINING)
    for key, value in changes.items():
        with pytest.raises(
            UserError, match=f"trained with other settings .*{key.replace('__', '.')}"
        ):
            decide(settings(run, "true", **{key: value}), run)


def test_auto_skips_a_finished_run_and_continues_to_a_raised_budget(run):
    done = json.loads((run / "done.json").read_text())
    assert done["stop_reason"] == "max_steps"
    assert decide(settings(run, "auto"), run) is None  # finished: skipped
    with pytest.raises(UserError, match="train.resume=auto will not reuse it"):
        decide(settings(run, "auto", train__patience=99), run)
    assert (run / "done.json").is_file()  # refused: nothing changed
    assert decide(settings(run, "auto", train__max_steps=60), run) is True
    assert not (run / "done.json").exists()  # gives way to the new one at the end


def test_a_run_that_stopped_early_stays_as_it_is(run):
    done = json.loads((run / "done.json").read_text())
    (run / "done.json").write_text(json.dumps({**done, "stop_reason": "early_stopping"}))
    assert decide(settings(run, "auto", train__max_steps=60), run) is None


def test_a_run_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="lies under .*file, which is a file"):
        check_run_dir(tmp_path / "file" / "run")
