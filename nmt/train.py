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
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from nmt.batching import Batch, BatchSampler, collate
from nmt.checkpoint import (
    STATE_FILE,
    CheckpointError,
    find_checkpoint,
    load_train_state,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from nmt.loss import sequence_loss
from nmt.model import Seq2Seq
from nmt.optim import Schedule
from nmt.progress import (
    Interrupted,
    MetricsLog,
    Progress,
    Signals,
    TrainingError,
    TrainOptions,
    limit_reached,
)
from nmt.runtime import autocast

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
    ):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.validate_fn, self.run_dir, self.device = validate, run_dir, device
        self.precision = precision
        self.options, self.meta = options, meta
        # Higher is better for BLEU and chrF; loss and perplexity are negated.
        self.sign = -1.0 if options.early_stop_metric in ("loss", "ppl") else 1.0
        self.last_dir, self.best_dir = run_dir / "last", run_dir / "best"
        self.state = Progress()
        self.metrics = MetricsLog(run_dir, options.tensorboard)
        self.bad_in_row = 0
        self.window_tokens, self.window_loss, self.window_start = 0, 0.0, time.monotonic()
        self.start = time.monotonic()

    def restore(self, resume: bool) -> None:
        """Continue from ``last/`` (train.resume), or refuse to overwrite a run that has one."""
        found = find_checkpoint(self.last_dir)
        if not resume:
            if found is not None:
                raise TrainingError(
                    f"{found}: this run directory already has a checkpoint; resume with "
                    "train.resume=true or choose another run_dir"
                )
            return
        if found is None:
            raise TrainingError(f"{self.last_dir}: nothing to resume (train.resume=true)")
        try:
            load_weights(self.model, found)
            saved = load_train_state(found / STATE_FILE)
        except CheckpointError as e:
            raise TrainingError(str(e)) from None
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        self.state = Progress(**saved["progress"])
        set_rng_state(saved["rng"])
        self.start = time.monotonic() - self.state.train_seconds
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            found,
            self.state.step,
            self.state.epoch,
            self.state.position,
        )

    def update(self, batch: Batch) -> bool:
        """One optimizer step on a batch; False when it was skipped for a non-finite loss or
        gradient (``max_bad_steps`` of them in a row stop training)."""
        state = self.state
        with autocast(self.device, self.precision):
            out = sequence_loss(self.model, batch, self.options.label_smoothing)
        loss = out.loss / out.n_tokens
        self.optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if finite:
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
        state.tokens += out.n_tokens
        self.schedule.after_step(state.step)
        state.train_seconds = time.monotonic() - self.start
        self.window_tokens += out.n_tokens
        self.window_loss += float(out.nll)
        return True

    def log_window(self, bar: tqdm) -> None:
        """Training loss and speed since the last log line: progress bar, CSV, TensorBoard."""
        state = self.state
        elapsed = time.monotonic() - self.window_start
        rate = self.window_tokens / max(elapsed, 1e-9)
        train_loss = self.window_loss / max(self.window_tokens, 1)
        lr = self.schedule.lr
        bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{rate:.0f}", lr=f"{lr:.2e}")
        self.metrics.train(
            step=state.step,
            epoch=state.epoch,
            seconds=round(state.train_seconds, 1),
            loss=round(train_loss, 4),
            tokens_per_s=round(rate, 1),
            lr=lr,
        )
        self.window_tokens, self.window_loss, self.window_start = 0, 0.0, time.monotonic()

    def validate(self) -> bool:
        """Validate, track the best, checkpoint; True when early stopping says stop."""
        state = self.state
        began = time.monotonic()
        self.model.eval()
        scores = self.validate_fn(self.model)
        self.model.train()
        state.valid_seconds += time.monotonic() - began
        state.last_valid_step = state.step
        value = scores[self.options.early_stop_metric] * self.sign
        improved = value > state.best_score
        if improved:
            state.best_score, state.best_step, state.bad_validations = value, state.step, 0
        else:
            state.bad_validations += 1
        self.schedule.after_validation(value)
        numbers = {k: v for k, v in scores.items() if isinstance(v, int | float)}
        self.metrics.valid(
            step=state.step,
            epoch=state.epoch,
            seconds=round(state.train_seconds, 1),
            lr=self.schedule.lr,
            **numbers,
        )
        best = state.best_score * self.sign
        log.info(
            "step %d valid %s%s",
            state.step,
            " ".join(f"{k} {v:.2f}" for k, v in scores.items() if isinstance(v, float)),
            " (best)" if improved else f" (best {best:.2f} at {state.best_step})",
        )
        if "bleu_signature" in scores:
            log.info("  %s", scores["bleu_signature"])
        if improved:
            self.save(self.best_dir, with_state=False, extra={"scores.json": scores})
        self.save(self.last_dir, with_state=True)
        return state.bad_validations >= self.options.patience

    def save(self, place: Path, with_state: bool, extra: dict | None = None) -> None:
        state = self.state
        train_state = None
        if with_state:
            train_state = {
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "progress": asdict(state),
                "rng": rng_state(),
            }
        meta = {
            **self.meta,
            "step": state.step,
            "epoch": state.epoch,
            "best_score": state.best_score,
        }
        save_checkpoint(place, self.model, meta, train_state, extra)

    def interrupted(self) -> Interrupted:
        self.save(self.last_dir, with_state=True)
        return Interrupted(
            f"interrupted at step {self.state.step}; checkpoint saved in {self.last_dir}; "
            f"continue with train.resume=true run_dir={self.run_dir}"
        )

    def results(self, stop_reason: str) -> dict:
        """The best validation's scores and how the run went."""
        state = self.state
        best = json.loads((self.best_dir / "scores.json").read_text())
        train_only = state.train_seconds - state.valid_seconds
        return {
            **best,
            "best_step": state.best_step,
            "steps": state.step,
            "minutes": state.train_seconds / 60,
            "stop_reason": stop_reason,
            "tokens_per_s": state.tokens / max(state.train_seconds, 1e-9),
            "train_tokens_per_s": state.tokens / max(train_only, 1e-9),
            "valid_minutes": state.valid_seconds / 60,
        }


def fit(
    *,
    model: Seq2Seq,
    src_ids: list[list[int]],
    tgt_ids: list[list[int]],
    sampler: BatchSampler,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    validate: Callable[[Seq2Seq], dict],
    run_dir: Path,
    device: torch.device,
    options: TrainOptions,
    resume: bool,
    meta: dict,
    precision: torch.dtype = torch.float32,
) -> dict:
    """Train until max_steps / max_epochs / max_minutes / early stopping; return the best scores.

    ``validate(model)`` returns a dict with at least ``early_stop_metric`` (higher is better for
    bleu/chrf; for loss/ppl lower is better). Checkpoints: ``run_dir/last`` (every validation,
    and on SIGINT/SIGTERM) and ``run_dir/best``.
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
    )
    loop.restore(resume)
    state = loop.state
    bar = tqdm(
        total=options.max_steps or None, initial=state.step, disable=not options.progress, **_BAR
    )
    # A run resumed after it had stopped (killed before its end was recorded) does not train on.
    reason = limit_reached(state, options)
    if reason is None and state.last_valid_step >= 0 and state.bad_validations >= options.patience:
        reason = "early_stopping"
    with Signals() as signals:
        while reason is None and state.epoch < options.max_epochs:
            for position, indices in sampler.iterate(state.epoch, state.position):
                state.position = position + 1  # consumed, whatever its update does
                src, tgt = [src_ids[i] for i in indices], [tgt_ids[i] for i in indices]
                if not loop.update(collate(src, tgt, indices).to(device)):
                    continue
                bar.update(1)
                if state.step % options.log_every == 0:
                    loop.log_window(bar)
                if signals.caught is not None:
                    bar.close()
                    raise loop.interrupted()
                if state.step % options.valid_every == 0 and loop.validate():
                    reason = "early_stopping"
                else:
                    reason = limit_reached(state, options)
                if reason is not None:
                    break
            else:  # the epoch is over
                state.epoch, state.position = state.epoch + 1, 0
    bar.close()
    if state.last_valid_step != state.step:
        loop.validate()
    state.train_seconds = time.monotonic() - loop.start  # the last validation included
    reason = reason or "max_epochs"
    minutes, best = state.train_seconds / 60, state.best_score * loop.sign
    log.info(
        f"training stopped ({reason}) at step {state.step} after {minutes:.1f} min; best "
        f"{options.early_stop_metric} {best:.2f} at step {state.best_step}"
    )
    loop.metrics.close()
    return loop.results(reason)
