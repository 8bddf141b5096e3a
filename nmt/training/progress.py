"""What a training run is told and what it records as it goes: its settings
(:class:`TrainOptions`) and stopping rules, where it stands (:class:`Progress`, saved in every
checkpoint), its numbers (:class:`MetricsLog`: metrics.csv for validations, train_metrics.csv for
training windows, TensorBoard for both), and the signals that stop it cleanly."""

from __future__ import annotations

import csv
import io
import logging
import math
import signal
from dataclasses import dataclass
from pathlib import Path

from nmt.core.errors import UserError, has_extra, require_extra
from nmt.core.rundir import write_text

log = logging.getLogger(__name__)
loop_log = logging.getLogger("nmt.training.train")  # a validation's lines are the training loop's


class TrainingError(UserError):
    """Training cannot go on (non-finite losses, bad checkpoint); the message says why."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved."""


@dataclass(frozen=True)
class TrainOptions:
    """How ``fit`` trains: the ``train`` config group's loop settings, with the optimizer group's
    ``clip_norm`` and ``label_smoothing``."""

    max_steps: int  # 0: no limit
    max_epochs: int
    max_minutes: float  # 0: no limit
    valid_every: int
    log_every: int
    patience: int  # validations without improvement before early stopping
    early_stop_metric: str  # bleu | chrf (higher is better) | loss | ppl (lower is better)
    max_bad_steps: int  # non-finite losses in a row that stop training
    tensorboard: bool | None  # None: when the [tb] extra is installed
    progress: bool | None  # None: a bar when stderr is a terminal
    clip_norm: float
    label_smoothing: float
    keep_last: int  # weights of the last N validations kept in kept/, for averaging
    keep_best: int  # and of the N best
    max_lr_decays: int  # stop once the plateau schedule has cut the rate this often; 0: never
    min_steps: int  # before this update: no early stop, no plateau cut (the best is still kept)


@dataclass
class Progress:
    """Where training is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of `epoch` already consumed
    best_score: float = -math.inf
    best_step: int = 0
    bad_validations: int = 0
    last_valid_step: int = -1
    train_seconds: float = 0.0  # wall clock of training, validations included
    valid_seconds: float = 0.0  # the validations' part of it
    tokens: int = 0  # target tokens trained on

    def summary(self, stop_reason: str) -> dict:
        """How the run went, for done.json: steps, time, speed (validation time excluded too)."""
        train_only = self.train_seconds - self.valid_seconds
        return {
            "best_step": self.best_step,
            "steps": self.step,
            "minutes": self.train_seconds / 60,
            "stop_reason": stop_reason,
            "tokens_per_s": self.tokens / max(self.train_seconds, 1e-9),
            "train_tokens_per_s": self.tokens / max(train_only, 1e-9),
            "valid_minutes": self.valid_seconds / 60,
        }


# The ways validation ends a run (the others are limits: max_steps, max_epochs, max_minutes).
VALIDATION_STOPS = ("early_stopping", "lr_decayed")


def limit_reached(state: Progress, options: TrainOptions) -> str | None:
    if options.max_steps and state.step >= options.max_steps:
        return "max_steps"
    if options.max_minutes and state.train_seconds >= options.max_minutes * 60:
        return "max_minutes"
    return None


class Signals:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each update."""

    def __init__(self):
        self.caught: int | None = None

    def __enter__(self):
        signals = (signal.SIGINT, signal.SIGTERM)
        self.previous = {s: signal.signal(s, self._handle) for s in signals}
        return self

    def _handle(self, signum, _frame):
        self.caught = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class MetricsLog:
    """Rows of numbers per step: ``valid`` rows to metrics.csv, ``train`` rows to
    train_metrics.csv, both to TensorBoard (``run_dir/tb``) when asked."""

    def __init__(self, run_dir: Path, tensorboard: bool | None):
        self.run_dir = run_dir
        self.writer = _tensorboard(run_dir) if _wants_tensorboard(tensorboard) else None

    def resume_at(self, step: int) -> None:
        """A run resumed from its checkpoint of ``step``: the rows of later steps go, written
        before a checkpoint that was never saved (a full disk, a kill), as they will be again."""
        for name in ("metrics.csv", "train_metrics.csv"):
            _drop_rows_after(self.run_dir / name, step)

    def train(self, **row: float) -> None:
        _append_csv(self.run_dir / "train_metrics.csv", row)
        self._scalars("train", row, ("loss", "tokens_per_s", "lr"))

    def valid(self, **row: float) -> None:
        _append_csv(self.run_dir / "metrics.csv", row)
        self._scalars("valid", row, [k for k in row if k != "step"])

    def validation(
        self, state: Progress, scores: dict, lr: float, improved: bool, sign: float
    ) -> None:
        """A validation's row (its numbers) and its log line, with the best so far."""
        numbers = {k: v for k, v in scores.items() if isinstance(v, int | float)}
        self.valid(
            step=state.step,
            epoch=state.epoch,
            seconds=round(state.train_seconds, 1),
            lr=lr,
            **numbers,
        )
        best = state.best_score * sign
        loop_log.info(
            "step %d valid %s%s",
            state.step,
            " ".join(f"{k} {v:.2f}" for k, v in scores.items() if isinstance(v, float)),
            " (best)" if improved else f" (best {best:.2f} at {state.best_step})",
        )
        if "bleu_signature" in scores:
            loop_log.info("  %s", scores["bleu_signature"])

    def _scalars(self, prefix: str, row: dict, keys) -> None:
        if self.writer is not None:
            for key in keys:
                self.writer.add_scalar(f"{prefix}/{key}", row[key], row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _drop_rows_after(path: Path, step: int) -> None:
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "step" not in rows[0]:
        return
    at = rows[0].index("step")
    kept = [rows[0], *(r for r in rows[1:] if len(r) > at and int(float(r[at])) <= step)]
    if len(kept) < len(rows):
        text = io.StringIO()
        csv.writer(text).writerows(kept)
        write_text(path, text.getvalue())


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _wants_tensorboard(tensorboard: bool | None) -> bool:
    """true: TensorBoard logs, refused in one line without the [tb] extra; null: when it is
    installed; false: CSV only."""
    if tensorboard:
        require_extra("tb", "train.tensorboard=true")
    return tensorboard is not False and has_extra("tb")


def _tensorboard(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / "tb"))
