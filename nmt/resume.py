"""The resume policy: what a training command may do to a run directory that already holds a run.

``decide`` answers it for ``train.resume`` (false | true | auto) before anything is written, so a
refused command leaves the run directory as it found it: a new run never lands on a finished one,
a resumed run is the same run (same data, tokenizer, model, optimizer, batching, seed), and a
sweep rerun skips what is finished and continues what is not, up to a raised budget.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from nmt.core.errors import UserError
from nmt.core.overrides import changed_settings
from nmt.core.rundir import CONFIG_FILE, DONE_FILE, find_checkpoint

log = logging.getLogger("nmt")


# The budget of a run: raising one continues a run that stopped at it (train.resume=auto).
BUDGET = {
    "train.max_epochs": "max_epochs",
    "train.max_steps": "max_steps",
    "train.max_minutes": "max_minutes",
}


def _raised(saved, now) -> bool:
    """A budget raised: a larger limit, or none (0) where there was one."""
    return bool(saved) and (not now or now > saved)


# What a run's weights and artifacts are made of. train.resume=true continues a run with other
# training settings (a longer budget, more patience), never with another of these: the run's
# config.yaml, spm.model and data/ would stop describing the weights in last/ and best/.
DEFINING = ("data", "tokenizer", "model", "optim", "batch", "seed")


def holds_run(run_dir: Path) -> bool:
    """Whether run_dir holds a training run's results: weights, or a record that it ended."""
    return find_checkpoint(run_dir / "last") is not None or (run_dir / DONE_FILE).is_file()


def check_run_dir(run_dir: Path) -> None:
    """Refuse a run_dir that cannot be one: a file, or a path through one."""
    for path in (run_dir, *run_dir.parents):
        if path.exists() and not path.is_dir():
            where = "is" if path == run_dir else f"lies under {path}, which is"
            raise UserError(
                f"run_dir={run_dir} {where} a file, not a directory; choose another run_dir"
            )


def decide(cfg: DictConfig, run_dir: Path) -> bool | None:
    """train.resume: whether to continue ``last/``; None when the run finished and is skipped.

    Every refusal happens here, before anything is written, so a refused command leaves the
    run directory as it found it. false: a directory that already holds a run is refused.
    true: continues ``last/``, with other ``train.*`` settings but the same ``DEFINING`` ones.
    auto: a run with other settings is refused, but for its budget (``BUDGET``): raised, a run
    that stopped at the old one continues from ``last/`` to the new one (its ``done.json``
    gives way to the new one at the end), and a run that stopped early stays as it is."""
    mode = str(cfg.train.resume).lower()
    if mode not in ("true", "false", "auto"):
        raise UserError(f"train.resume={cfg.train.resume!r}: expected true, false or auto")
    check_run_dir(run_dir)
    saved = run_dir / CONFIG_FILE
    differ = changed_settings(cfg, saved) if saved.is_file() else []
    if mode == "false":
        if holds_run(run_dir):
            raise UserError(
                f"{run_dir}: already holds a training run; continue it with train.resume=true, "
                "or start a new one with another run_dir"
            )
        return False
    if mode == "true":
        if find_checkpoint(run_dir / "last") is None:
            raise UserError(
                f"{run_dir / 'last'}: nothing to resume (train.resume=true); is run_dir right?"
            )
        defining = [d for d in differ if d[0].split(".")[0] in DEFINING]
        if defining:
            key, was, now = defining[0]
            raise UserError(
                f"{run_dir}: trained with other settings ({len(defining)} differ, e.g. {key}: "
                f"{was!r} there, {now!r} now); resume it as it was trained, or start a new run "
                "with another run_dir"
            )
        return True
    budget = [d for d in differ if d[0] in BUDGET and _raised(d[1], d[2])]
    differ = [d for d in differ if d not in budget]
    if differ:
        key, was, now = differ[0]
        raise UserError(
            f"{run_dir}: trained with other settings ({len(differ)} differ, e.g. {key}: "
            f"{was!r} there, {now!r} now); train.resume=auto will not reuse it. Choose "
            "another run_dir or hydra.sweep.dir"
        )
    done = run_dir / DONE_FILE
    if done.is_file():
        result = json.loads(done.read_text())
        stopped_by = result.get("stop_reason")
        if result.get("status") == "finished" and stopped_by in {BUDGET[k] for k, *_ in budget}:
            log.info("%s stopped at its %s; continuing to the raised budget", run_dir, stopped_by)
            done.unlink()
            return find_checkpoint(run_dir / "last") is not None
        return None
    return find_checkpoint(run_dir / "last") is not None
