"""What a training run keeps on disk while it trains: ``last/`` (weights and the whole training
state, at every validation and on a signal), ``best/`` (weights and scores), ``kept/`` (the
weights of the last and best validations, for averaging), and the restore from ``last/`` that a
resumed run starts with. Under torchrun rank 0 writes, and every rank's RNG state goes in.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from nmt.model.checkpoint import (
    KEPT_DIR,
    KEPT_SCORE,
    STATE_FILE,
    CheckpointError,
    find_checkpoint,
    kept_checkpoints,
    load_train_state,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from nmt.model.seq2seq import Seq2Seq
from nmt.training.distributed import World
from nmt.training.optim import Schedule
from nmt.training.progress import Progress, TrainingError, TrainOptions

log = logging.getLogger("nmt.training.train")


class Saver:
    """A run's checkpoints: where they go and what they hold."""

    def __init__(
        self,
        *,
        model: Seq2Seq,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        run_dir: Path,
        options: TrainOptions,
        meta: dict,
        world: World,
    ):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.run_dir, self.options, self.meta, self.world = run_dir, options, meta, world
        self.last_dir, self.best_dir = run_dir / "last", run_dir / "best"

    def restore(self, resume: bool) -> Progress | None:
        """Continue from ``last/`` (train.resume), or refuse to overwrite a run that has one."""
        found = find_checkpoint(self.last_dir)
        if not resume:
            if found is not None:
                raise TrainingError(
                    f"{found}: this run directory already has a checkpoint; resume with "
                    "train.resume=true or choose another run_dir"
                )
            return None
        if found is None:
            raise TrainingError(f"{self.last_dir}: nothing to resume (train.resume=true)")
        try:
            load_weights(self.model, found)
            saved = load_train_state(found / STATE_FILE)
        except CheckpointError as e:
            raise TrainingError(str(e)) from None
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        state = Progress(**saved["progress"])
        ranks = saved.get("rng_ranks")
        if self.world.enabled and ranks and len(ranks) == self.world.size:
            set_rng_state(ranks[self.world.rank])
        else:
            if self.world.enabled:
                log.warning(
                    "%s was written by %s; dropout masks will not continue as they would have",
                    found,
                    f"{len(ranks)} ranks" if ranks else "one process",
                )
            set_rng_state(saved["rng"])
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            found,
            state.step,
            state.epoch,
            state.position,
        )
        return state

    def keep(self, state: Progress, value: float) -> None:
        """This validation's weights into kept/step-NNNNNNN/; then only the ``keep_last`` most
        recent and the ``keep_best`` best (by the early-stopping metric) stay."""
        place = self.run_dir / KEPT_DIR / f"step-{state.step:07d}"
        self.save(place, state, with_state=False, meta={KEPT_SCORE: value})
        kept = kept_checkpoints(self.run_dir)
        last = self.options.keep_last
        stay = {p for _, _, p in kept[-last:]} if last else set()
        stay |= {p for _, _, p in sorted(kept, key=lambda k: -k[1])[: self.options.keep_best]}
        for _, _, p in kept:
            if p not in stay:
                shutil.rmtree(p)

    def save(
        self,
        place: Path,
        state: Progress,
        with_state: bool,
        extra: dict | None = None,
        meta: dict | None = None,
    ) -> None:
        """Rank 0 writes; with the training state, every rank must call (each one's RNG state
        goes into the checkpoint, so a resumed run draws the same dropout masks)."""
        train_state = None
        if with_state:
            rngs = self.world.gather(rng_state())
            train_state = {
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "progress": asdict(state),
                "rng": rngs[0],
            }
            if self.world.enabled:
                train_state["rng_ranks"] = rngs
        if not self.world.main:
            return
        meta = {
            **self.meta,
            "step": state.step,
            "epoch": state.epoch,
            "best_score": state.best_score,
            **(meta or {}),
        }
        save_checkpoint(place, self.model, meta, train_state, extra)
