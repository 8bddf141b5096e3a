"""Finding conf/ and composing from it: a command's config as the command composes it, from inside
a Hydra app or outside one, and a run's saved config read over today's defaults.

Python callers (``Translator``, the sweep, the export) get the commands' defaults from the same YAML
files as the commands, never a copy of them.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nmt.core.config import register_configs
from nmt.core.errors import one_line


def conf_dir() -> str:
    """The configs: NMT_CONF_DIR when set; else nmt/conf of an installed package (a wheel ships
    conf/ there), found through the package's resources; else conf/ beside the source tree of
    this module (a clone, an editable install)."""
    if "NMT_CONF_DIR" in os.environ:
        return os.environ["NMT_CONF_DIR"]
    shipped = resources.files("nmt") / "conf"
    if shipped.is_dir():
        return str(shipped)
    return str(Path(__file__).resolve().parents[2] / "conf")


def compose(
    config_name: str, overrides: list[str] = (), *, hydra_config: bool = False
) -> DictConfig:
    """A config composed as its command composes it (``compose("translate")`` is what
    ``nmt-translate`` starts from), from inside a Hydra app or outside one: Python callers get
    the commands' defaults from the same YAML files, never a copy of them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    outer = GlobalHydra.instance()
    running = outer.hydra if outer.is_initialized() else None  # the app that calls us: put back
    outer.clear()
    try:
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            return hydra_compose(
                config_name, overrides=list(overrides), return_hydra_config=hydra_config
            )
    finally:
        if running is not None:
            GlobalHydra.instance().initialize(running)


def read_run_config(path: str | os.PathLike) -> DictConfig:
    """A run's saved config.yaml over today's defaults: the train config as ``nmt-train`` composes
    it now, with the run's own cell preset, and the saved values over it. A run saved before a
    key existed so reads that key's default from conf/, as a new run would, and never from a
    default written in code. A key conf/ no longer knows, or a value of the wrong type, is a
    ``ValueError`` naming it."""
    saved = OmegaConf.load(path)
    if not isinstance(saved, DictConfig) or not isinstance(saved.get("model"), DictConfig):
        raise ValueError("no model group")
    # The sweep plan (ablation) is a sweep's, not a run's: nothing of a model is in it.
    saved.pop("ablation", None)
    cell = saved.model.get("name")
    today = compose("train", [f"model={cell}"] if isinstance(cell, str) else [])
    try:
        merged = OmegaConf.merge(today, saved)
    except Exception as e:  # omegaconf's ConfigKeyError, ValidationError: their first line
        raise ValueError(one_line(e).split(" full_key:")[0]) from None
    merged.run_dir = str(Path(path).parent)  # where it is now, wherever it was trained
    return merged
