"""Training: the loop that turns batches into updates, validations and checkpoints.

``fit`` reads top to bottom: restore or start, then per batch one update (:meth:`_Loop.update`),
the training log (:meth:`_Loop.log_window`), a validation every ``valid_every`` updates
(:meth:`_Loop.validate`) and the stopping rules. Checkpoints (``checkpoint.py``) resume exactly:
same weights, optimizer, schedule, RNG and data position as a run that never stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from nmt.core.runtime import autocast
from nmt.data.batching import Batch, BatchSampler, collate
from nmt.model.loss import sequence_loss
from nmt.model.seq2seq import Seq2Seq
from nmt.training.distributed import SINGLE, World, shard
from nmt.training.optim import Schedule
from nmt.training.progress import (
    Interrupted,
    MetricsLog,
    Progress,
    Signals,
    TrainingError,
    TrainOptions,
    limit_reached,
)
from nmt.training.saver import Saver

log = logging.getLogger(__name__)

__all__ = ["Interrupted", "TrainOptions", "TrainingError", "fit"]


_BAR = {"unit": "step", "dynamic_ncols": True, "mininterval": 1.0}  # one line a second at most


class _Loop:
    """One run's moving parts: model, optimizer and schedule, progress, checkpoints and logs."""

    def __init__(
        self,
        *,
        model: Seq2Seq,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        validate: Callable[[Seq2Seq], dict],
        run_dir: Path,
        device: torch.device,
        precision: torch.dtype,
        options: TrainOptions,
        meta: dict,
        world: World = SINGLE,
    ):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.world = world
        self.net = world.wrap(model, device)  # DDP under torchrun; alone, the model itself
        self.validate_fn, self.run_dir, self.device = validate, run_dir, device
        self.precision = precision
        self.options, self.meta = options, meta
        # Higher is better for BLEU and chrF; loss and perplexity are negated.
        self.sign = -1.0 if options.early_stop_metric in ("loss", "ppl") else 1.0
        self.saver = Saver(
            model=model,
            optimizer=optimizer,
            schedule=schedule,
            run_dir=run_dir,
            options=options,
            meta=meta,
            world=world,
        )
        self.last_dir, self.best_dir = self.saver.last_dir, self.saver.best_dir
        self.state = Progress()
        # Rank 0 writes the logs and checkpoints; the other ranks only train.
        self.metrics = MetricsLog(run_dir, options.tensorboard) if world.main else None
        self.bad_in_row = 0
        self.window_tokens, self.window_loss, self.window_start = 0, 0.0, time.monotonic()
        self.window_own_tokens = 0  # this rank's, for the loss average
        self.start = time.monotonic()

    def restore(self, resume: bool) -> None:
        """Continue from ``last/`` (train.resume), or refuse to overwrite a run that has one."""
        state = self.saver.restore(resume)
        if state is not None:
            self.state = state
            self.start = time.monotonic() - state.train_seconds
            if self.metrics is not None:
                self.metrics.resume_at(state.step)

    def save(self, place: Path, with_state: bool, extra: dict | None = None) -> None:
        self.saver.save(place, self.state, with_state, extra)

    def update(self, batch: Batch, tokens: float) -> bool:
        """One optimizer step on a batch; False when it was skipped for a non-finite loss or
        gradient (``max_bad_steps`` of them in a row stop training).

        ``tokens``: the target tokens of all ranks' batches of this step (data-parallel). The
        loss is normalised by them, so the step equals one process's on the ranks' batches
        together: DDP averages the ranks' gradients, hence the factor ``world.size``."""
        state = self.state
        # The last step's gradients go before the forward pass, not after it: they would
        # otherwise sit beside the activations at the step's peak (47 MiB of the reference model).
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            out = sequence_loss(self.model, batch, self.options.label_smoothing, forward=self.net)
        tokens = int(tokens)
        loss = out.loss / tokens * self.world.size  # DDP averages the ranks' gradients
        finite = bool(torch.isfinite(loss))
        # Under DDP every rank runs backward, whose all-reduce needs them all: a non-finite
        # loss on one rank makes the averaged gradient, and so every rank's norm, non-finite.
        if finite or self.world.enabled:
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.clip_norm)
            finite = bool(torch.isfinite(norm))
        if not finite:
            self.bad_in_row += 1
            log.warning(
                "step %d: non-finite loss or gradient, update skipped (%d in a row)",
                state.step,
                self.bad_in_row,
            )
            if self.bad_in_row >= self.options.max_bad_steps:
                raise TrainingError(
                    f"{self.bad_in_row} non-finite losses in a row at step {state.step}; stopped. "
                    f"The last good checkpoint is in {self.last_dir}; try a lower optim.lr or "
                    "optim.clip_norm"
                )
            return False
        self.bad_in_row = 0
        self.optimizer.step()
        state.step += 1
        state.tokens += tokens
        self.schedule.after_step(state.step)
        state.train_seconds = time.monotonic() - self.start
        self.window_tokens += tokens
        self.window_own_tokens += out.n_tokens
        self.window_loss += float(out.nll)
        return True

    def log_window(self, bar: tqdm) -> None:
        """Training loss and speed since the last log line: progress bar, CSV, TensorBoard."""
        state = self.state
        elapsed = time.monotonic() - self.window_start
        rate = self.window_tokens / max(elapsed, 1e-9)
        nll, own = self.world.total(self.window_loss, self.window_own_tokens, device=self.device)
        train_loss = nll / max(own, 1)
        lr = self.schedule.lr
        self.window_tokens, self.window_loss, self.window_start = 0, 0.0, time.monotonic()
        self.window_own_tokens = 0
        if self.metrics is None:
            return
        bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{rate:.0f}", lr=f"{lr:.2e}")
        self.metrics.train(
            step=state.step,
            epoch=state.epoch,
            seconds=round(state.train_seconds, 1),
            loss=round(train_loss, 4),
            tokens_per_s=round(rate, 1),
            lr=lr,
        )

    def stop_reason(self) -> str | None:
        """After a validation: "early_stopping" at ``patience`` validations in a row without a
        new best, "lr_decayed" once the schedule has cut the rate ``max_lr_decays`` times."""
        if self.state.bad_validations >= self.options.patience:
            return "early_stopping"
        if self.options.max_lr_decays and self.schedule.decays >= self.options.max_lr_decays:
            return "lr_decayed"
        return None

    def validate(self) -> str | None:
        """Validate, track the best, checkpoint; the reason to stop (``stop_reason``) or None.

        Data-parallel: rank 0 validates and the others take its scores, so every rank keeps
        the same best score, schedule and stopping decision."""
        state = self.state
        began = time.monotonic()
        self.model.eval()
        scores = self.world.broadcast(self.validate_fn(self.model) if self.world.main else None)
        self.model.train()
        state.valid_seconds += time.monotonic() - began
        state.last_valid_step = state.step
        value = scores[self.options.early_stop_metric] * self.sign
        improved = value > state.best_score  # never for NaN, which compares false
        if improved:
            state.best_score, state.best_step, state.bad_validations = value, state.step, 0
        else:
            state.bad_validations += 1
        if state.best_step == 0:  # a first validation with no finite score is still the best so far
            state.best_step, improved = state.step, True
        stop = None
        if state.step < self.options.min_steps:  # settling: only the best checkpoint counts
            state.bad_validations = 0
        else:
            self.schedule.after_validation(value)
            stop = self.stop_reason()
        if self.metrics is None:
            self.save(self.last_dir, with_state=True)  # takes part in gathering the RNG states
            return stop
        self.metrics.validation(state, scores, self.schedule.lr, improved, self.sign)
        if improved:
            self.save(self.best_dir, with_state=False, extra={"scores.json": scores})
        self.save(self.last_dir, with_state=True)
        if self.options.keep_last or self.options.keep_best:
            self.saver.keep(self.state, value)
        return stop

    def interrupted(self) -> Interrupted:
        self.save(self.last_dir, with_state=True)
        return Interrupted(
            f"interrupted at step {self.state.step}; checkpoint saved in {self.last_dir}; "
            f"continue with train.resume=true run_dir={self.run_dir}"
        )

    def results(self, stop_reason: str) -> dict:
        """The best validation's scores and how the run went (rank 0's, on every rank)."""
        state = self.state
        best = self.world.broadcast(
            json.loads((self.best_dir / "scores.json").read_text()) if self.world.main else None
        )
        return {**best, **state.summary(stop_reason)}


def fit(
    *,
    model: Seq2Seq,
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    sampler: BatchSampler,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    validate: Callable[[Seq2Seq], dict],
    run_dir: Path,
    device: torch.device,
    options: TrainOptions,
    resume: bool,
    meta: dict,
    precision: torch.dtype,
    world: World = SINGLE,
) -> dict:
    """Train until max_steps / max_epochs / max_minutes / early stopping (``patience``,
    ``max_lr_decays``, neither before ``min_steps``); return the best scores.

    ``validate(model)`` returns a dict with at least ``early_stop_metric`` (higher is better for
    bleu/chrf; for loss/ppl lower is better). Checkpoints: ``run_dir/last`` (every validation,
    and on SIGINT/SIGTERM) and ``run_dir/best``.

    Under torchrun (``world``), each rank trains on its share of every group of batches and
    the ranks agree, once per update, on the group's token count, on a caught signal and on
    the time limit, so they stop together; the step-count limits agree by themselves.
    """
    model.to(device).train()
    run_dir.mkdir(parents=True, exist_ok=True)
    loop = _Loop(
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        validate=validate,
        run_dir=run_dir,
        device=device,
        precision=precision,
        options=options,
        meta=meta,
        world=world,
    )
    loop.restore(resume)
    state = loop.state
    bar = tqdm(
        total=options.max_steps or None,
        initial=state.step,
        # tqdm's None: a bar only on a terminal (a log file or a pipe gets none).
        disable=not world.main or (None if options.progress is None else not options.progress),
        **_BAR,
    )
    # A run resumed after it had stopped (killed before its end was recorded) does not train on.
    reason = limit_reached(state, options)
    if reason is None and state.last_valid_step >= 0:
        reason = loop.stop_reason()
    with Signals() as signals:
        while reason is None and state.epoch < options.max_epochs:
            reason = _epoch(loop, sampler, src_ids, tgt_ids, signals, bar)
    bar.close()
    return _finish(loop, reason)


def _epoch(
    loop: _Loop,
    sampler: BatchSampler,
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    signals: Signals,
    bar: tqdm,
) -> str | None:
    """The updates of the rest of an epoch: why training stops, or None at the epoch's end (the
    next epoch then starts at its first batch)."""
    state, options, world, device = loop.state, loop.options, loop.world, loop.device
    for position, indices in shard(sampler.iterate(state.epoch, state.position), world):
        batch = collate([src_ids[i] for i in indices], [tgt_ids[i] for i in indices], indices)
        # Before each update the ranks agree on its target tokens, a caught signal and the
        # clock, so that they stop at the same one (one process agrees with itself).
        tokens, caught, late = world.total(
            int(batch.tgt_mask.sum()),
            signals.caught is not None,
            limit_reached(state, options) is not None,
            device=device,
        )
        if caught:
            bar.close()
            raise loop.interrupted()
        if late:
            return limit_reached(state, options) or "max_minutes"
        state.position = position + 1  # consumed, whatever its update does
        if not loop.update(batch.to(device), tokens):
            continue
        bar.update(1)
        if state.step % options.log_every == 0:
            loop.log_window(bar)
        if state.step % options.valid_every == 0 and (stop := loop.validate()):
            return stop
        if options.max_steps and state.step >= options.max_steps:
            return "max_steps"
    state.epoch, state.position = state.epoch + 1, 0
    return None


def _finish(loop: _Loop, reason: str | None) -> dict:
    """The last validation (unless the last update had one), the time, the log line; the best
    scores."""
    state, options = loop.state, loop.options
    if state.last_valid_step != state.step:
        loop.validate()
    state.train_seconds = time.monotonic() - loop.start  # the last validation included
    reason = reason or "max_epochs"
    minutes, best = state.train_seconds / 60, state.best_score * loop.sign
    log.info(
        f"training stopped ({reason}) at step {state.step} after {minutes:.1f} min; best "
        f"{options.early_stop_metric} {best:.2f} at step {state.best_step}"
    )
    if loop.metrics is not None:
        loop.metrics.close()
    return loop.results(reason)
