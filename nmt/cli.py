"""Hydra entry points: the only module that reads the config and wires the stages together.

Each ``*_main`` is a console script (``nmt-data``, ``nmt-spm``, ...). A stage reads its input
artifact from ``run_dir`` (running the cheap, cached upstream stages when it is missing) and
writes its own artifact there.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import datasets
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from nmt import data, tokenizer
from nmt.config import register_configs

log = logging.getLogger("nmt")

CONF_DIR = os.environ.get("NMT_CONF_DIR", str(Path(__file__).resolve().parent.parent / "conf"))


class _Fail(Exception):
    """Raised by a stage for a user error: printed as one line, exit status 1."""


def _kwargs(node: DictConfig, drop: tuple[str, ...] = ("name",)) -> dict:
    """A config group as plain keyword arguments (validated by its dataclass schema)."""
    values = asdict(OmegaConf.to_object(node))
    return {k: v for k, v in values.items() if k not in drop}


def _run_dir() -> Path:
    path = Path(HydraConfig.get().runtime.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _stage_data(cfg: DictConfig, run_dir: Path) -> dict:
    report = data.prepare_corpus(**_kwargs(cfg.data), cache_dir=cfg.cache_dir, out_dir=run_dir)
    log.info("%s", data.format_report(report))
    return report


def _stage_spm(cfg: DictConfig, run_dir: Path) -> dict:
    _stage_data(cfg, run_dir)
    report = tokenizer.prepare_tokenizer(
        **_kwargs(cfg.tokenizer), seed=cfg.seed, cache_dir=cfg.cache_dir, run_dir=run_dir
    )
    log.info("%s", tokenizer.format_report(report))
    return report


def data_task(cfg: DictConfig) -> None:
    """Data stage: write run_dir/data (the cleaned corpus in datasets format)."""
    _stage_data(cfg, _run_dir())


def spm_task(cfg: DictConfig) -> None:
    """Tokenizer stage: write run_dir/spm.model and run_dir/encoded."""
    _stage_spm(cfg, _run_dir())


def _one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _check_overrides(config_name: str, args: list[str]) -> None:
    """Compose once up front so a bad override fails with one line instead of Hydra's page."""
    if any(a.startswith("-") for a in args) or any("MULTIRUN" in a for a in args):
        return  # --help, --cfg, -m ...: Hydra's own handling
    overrides = [a for a in args if not a.lstrip("+~").startswith("hydra")]
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            compose(config_name, overrides=overrides)
    except Exception as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)


def _entry(task: Callable[[DictConfig], object], config_name: str) -> None:
    register_configs()
    datasets.disable_progress_bars()  # stages here take seconds; the training loop has its own bar
    _check_overrides(config_name, sys.argv[1:])

    def guarded(cfg: DictConfig) -> object:
        try:
            return task(cfg)
        except (data.DataError, _Fail) as e:
            print(f"error: {_one_line(e)}", file=sys.stderr)
            sys.exit(1)

    guarded.__name__ = task.__name__.removesuffix("_task")
    hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(guarded)()


def data_main() -> None:
    _entry(data_task, "train")


def spm_main() -> None:
    _entry(spm_task, "train")
