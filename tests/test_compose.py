"""Composing from conf/: where it is found, a command's config from inside or outside a Hydra
app, and a run's saved config over today's defaults."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from nmt.core.compose import compose, conf_dir, read_run_config

ROOT = Path(__file__).resolve().parents[1]


def test_conf_is_found_beside_the_source_unless_named(tmp_path, monkeypatch):
    assert (ROOT / "conf" / "train.yaml").samefile(f"{conf_dir()}/train.yaml")
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    (tmp_path / "conf" / "decode.yaml").write_text(
        (ROOT / "conf" / "decode.yaml").read_text().replace("max_tokens: ", "max_tokens: 7 #")
    )
    monkeypatch.setenv("NMT_CONF_DIR", str(tmp_path / "conf"))
    assert conf_dir() == str(tmp_path / "conf")
    assert compose("translate").max_tokens == 7


def test_a_command_config_composed_inside_a_running_app_leaves_it_running():
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        outer = GlobalHydra.instance().hydra
        cfg = compose("translate", ["search=greedy"])
        assert GlobalHydra.instance().hydra is outer  # the caller's app, put back
    assert cfg.search.beam_size == 1 and cfg.checkpoint == "best"
    assert not GlobalHydra.instance().is_initialized()
    assert compose("translate").search.beam_size == 5  # outside any app too


def test_a_saved_config_reads_missing_keys_from_conf_and_names_unknown_ones(tmp_path):
    saved = compose("train", ["model=lstm"])
    del saved.train.max_lr_decays  # a key added after the run was saved
    saved.optim.lr = 0.123
    OmegaConf.save(saved, tmp_path / "config.yaml")
    cfg = read_run_config(tmp_path / "config.yaml")
    assert cfg.train.max_lr_decays == compose("train").train.max_lr_decays
    assert cfg.optim.lr == 0.123 and cfg.model.cell == "lstm"
    assert cfg.run_dir == str(tmp_path)
    plain = OmegaConf.to_container(saved)
    plain["train"]["nonsense"] = 1  # a key conf/ no longer knows
    OmegaConf.save(OmegaConf.create(plain), tmp_path / "config.yaml")
    with pytest.raises(ValueError, match="nonsense"):
        read_run_config(tmp_path / "config.yaml")
