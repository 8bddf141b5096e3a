"""Names and values resolved inside conf/: a sweep job's run directory (``nmt_dirname``), the
timestamp of a default ``run_dir`` (``nmt_stamp``), what tuning chose (``nmt_tuned_lr``,
``nmt_tuned_search``) and where a corpus is read from by default (``nmt_data_dir``). Registered
with OmegaConf on import, so a launcher's job process has them.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from nmt.core.rundir import SEARCH_FILE, TUNING_FILE

MAX_DIRNAME = 200  # file systems stop at 255 bytes per name


def short_dirname(name: str) -> str:
    """A run directory name from a sweep's overrides, cut with a hash when it would be too long
    for the file system (distinct override lists keep distinct names)."""
    if len(name.encode()) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return name.encode()[: MAX_DIRNAME - 17].decode(errors="ignore") + "~" + digest


# Keys that never change a run's results; everything else a job overrides is in its name.
# (cache_dir holds stage results keyed by their own settings, so any cache gives the same run.)
NAME_EXCLUDE = ("run_dir", "cache_dir", "train.resume", "train.progress", "device", "experiment")


def run_dirname(overrides: list[str]) -> str:
    """A sweep job's directory name from its overrides (``hydra.overrides.task``): sorted
    ``key=value`` pairs joined by commas, a path value replaced by a hash of it (so
    ``data.root=/a/b`` neither nests directories nor collides with another root)."""
    items = []
    for override in overrides:
        key, _, value = str(override).partition("=")
        key = key.lstrip("+~")
        if key in NAME_EXCLUDE or key.startswith(("hydra", "ablation")):  # the plan: not a result
            continue
        if "/" in value or "\\" in value:
            value = "#" + hashlib.sha256(value.encode()).hexdigest()[:10]
        items.append(f"{key}={value}")
    return short_dirname(",".join(sorted(items)))


def tuned_lr(sweep_dir: str, cell: str, attention: str) -> float:
    """The learning rate nmt-ablate's tuning chose for this cell and attention (presets with an
    ``ablation.tune`` block set ``optim.lr`` to this)."""
    path = Path(sweep_dir) / TUNING_FILE
    if not path.is_file():
        raise ValueError(
            f"{path}: no tuned learning rates; this preset's runs start with `make ablate` "
            "(nmt-ablate), which tunes them first"
        )
    chosen = json.loads(path.read_text())["chosen"]
    if attention not in chosen.get(cell, {}):
        raise ValueError(f"{path}: no learning rate tuned for {cell} with attention={attention}")
    return float(chosen[cell][attention])


def tuned_search(run_dir: str, key: str) -> float:
    """A search setting nmt-tune-search chose for a run (``search=tuned`` reads its beam size
    and length penalty from here)."""
    path = Path(run_dir) / SEARCH_FILE
    if not path.is_file():
        raise ValueError(
            f"{path}: no search settings chosen for this run; run `make tune-search "
            f'ARGS="run_dir={run_dir}"` first, or pick another search'
        )
    return json.loads(path.read_text())["chosen"][key]


def run_stamp(pattern: str) -> str:
    """The timestamp in a default run_dir: ``NMT_RUN_STAMP`` when set, else now. The ranks of a
    torchrun job start apart and would each read their own now; ``make train NPROC=...`` sets
    one stamp for them all."""
    return os.environ.get("NMT_RUN_STAMP") or datetime.now().strftime(pattern)


# Used by hydra.sweep.subdir and the ablation presets; registered on import so a launcher's job
# process has them too.
# A clone's neighbour: the corpora beside the clone (../shared/data/<name> from its top).
CLONE_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def data_dir(name: str) -> str:
    """The default ``data.root`` of corpus ``name``, the same from any working directory: the
    directory NMT_DATA_DIR names; else, in a clone, ``../shared/data/<name>`` beside it when that
    exists; else the user's data directory (``$XDG_DATA_HOME/nmt/<name>``, by default
    ``~/.local/share/nmt/<name>``), which nmt-data names when it is empty."""
    if os.environ.get("NMT_DATA_DIR"):
        return os.environ["NMT_DATA_DIR"]
    if (CLONE_DATA / name).is_dir():
        return str(CLONE_DATA / name)
    home = os.environ.get("XDG_DATA_HOME") or str(Path("~/.local/share").expanduser())
    return str(Path(home) / "nmt" / name)


OmegaConf.register_new_resolver("nmt_data_dir", data_dir, replace=True)
OmegaConf.register_new_resolver("nmt_dirname", run_dirname, replace=True)
OmegaConf.register_new_resolver("nmt_tuned_lr", tuned_lr, replace=True)
OmegaConf.register_new_resolver("nmt_stamp", run_stamp, replace=True, use_cache=True)
OmegaConf.register_new_resolver("nmt_tuned_search", tuned_search, replace=True)
