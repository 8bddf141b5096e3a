"""Training: the loop, the optimizer and schedule, checkpoints that resume exactly.

A checkpoint directory (``last/``, ``best/``) holds ``model.safetensors`` (weights, shared tensors
stored once), ``meta.json``, and for ``last/`` a ``train_state.pt`` of plain tensors and numbers
(optimizer, scheduler, RNG states, data position) loaded with ``weights_only=True``. Directories
are written beside the target and renamed into place, so a killed save leaves the previous
checkpoint whole.
"""

from __future__ import annotations

import csv
import ctypes
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from tqdm import tqdm

from nmt.batching import BatchSampler, collate
from nmt.model import Seq2Seq

log = logging.getLogger(__name__)

MODEL_FILE, STATE_FILE, META_FILE = "model.safetensors", "train_state.pt", "meta.json"


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite losses, bad checkpoint); the message says why."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved."""


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


# --------------------------------------------------------------------------------------------
# Optimizer and schedule


def build_optimizer(model: nn.Module, *, optimizer: str, lr: float, weight_decay: float,
                    betas: list[float]) -> torch.optim.Optimizer:  # fmt: skip
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if optimizer not in kinds:
        raise ValueError(f"optim.optimizer={optimizer!r}: expected adam or adamw")
    return kinds[optimizer](
        model.parameters(), lr=lr, weight_decay=weight_decay, betas=tuple(betas)
    )


class Schedule:
    """constant | warmup_decay (linear warmup, then inverse square root) | plateau (on the
    validation metric). ``after_step`` runs every update, ``after_validation`` every validation."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, schedule: str, warmup_steps: int,
                 decay_factor: float, patience: int, min_lr: float):  # fmt: skip
        if schedule not in ("constant", "warmup_decay", "plateau"):
            raise ValueError(
                f"optim.schedule={schedule!r}: expected constant, warmup_decay or plateau"
            )
        self.kind, self.optimizer = schedule, optimizer
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=decay_factor, patience=patience, min_lr=min_lr
        )
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.warmup = max(1, warmup_steps)

    def after_step(self, step: int) -> None:
        if self.kind != "warmup_decay":
            return
        scale = min(step / self.warmup, math.sqrt(self.warmup / max(step, 1)))
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * scale

    def after_validation(self, score: float) -> None:
        if self.kind == "plateau":
            self.plateau.step(score)

    def state_dict(self) -> dict:
        return {"plateau": self.plateau.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.plateau.load_state_dict(state["plateau"])

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


# --------------------------------------------------------------------------------------------
# Checkpoints


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(place: Path, model: nn.Module, meta: dict, state: dict | None = None,
                    extra: dict[str, dict] | None = None) -> None:  # fmt: skip
    """Write a checkpoint directory atomically: build ``<place>.tmp``, then rename it in.

    ``extra`` maps file names to JSON values written inside it (``best/scores.json``), so they
    arrive with the weights or not at all."""
    tmp = place.with_name(place.name + ".tmp")
    old = place.with_name(place.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / MODEL_FILE), metadata={"format": "nmt", "step": str(meta["step"])})
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    for name, value in (extra or {}).items():
        (tmp / name).write_text(json.dumps(value, indent=2))
    for name in os.listdir(tmp):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(tmp)
    if place.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(place, old)
    os.replace(tmp, place)
    _fsync_dir(place.parent)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(place: Path) -> Path | None:
    """The complete checkpoint at place, or the previous one if a save died mid-rename."""
    for candidate in (place, place.with_name(place.name + ".old")):
        if (candidate / META_FILE).is_file() and (candidate / MODEL_FILE).is_file():
            return candidate
    return None


def load_weights(model: nn.Module, place: Path) -> dict:
    """Load safetensors weights into model (re-tying shared tensors); return the meta."""
    try:
        missing, unexpected = load_model(model, str(place / MODEL_FILE), strict=False)
    except Exception as e:
        raise TrainingError(
            f"{place / MODEL_FILE}: not a valid safetensors checkpoint ({e})"
        ) from None
    if missing or unexpected:
        raise TrainingError(
            f"{place / MODEL_FILE}: does not match the model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); was it trained with another model config?"
        )
    return json.loads((place / META_FILE).read_text())


def load_train_state(path: Path) -> dict:
    """Training state, never unpickling arbitrary objects (``weights_only=True``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainingError(
            f"{path}: refused to load (not a plain-tensor training state: {first})"
        ) from None


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def return_freed_memory() -> bool:
    """Make glibc serve allocations of 8 MiB and more with mmap, so freeing returns them.

    Batches of varying length allocate differently sized activations every step; glibc's heap
    otherwise keeps the high-water mark and fragments, and a long batch leaves peak RSS 1.7x
    what the step needs. 8 MiB keeps the per-step [B, H] tensors on the heap (1 MiB cost a
    quarter of the speed in page faults); measured on the reference model, 2.5 -> 1.4 GiB peak
    for 6 % fewer tokens/s. Returns False where mallopt is unavailable (not glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 8 << 20))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def pick_device(name: str, threads: int | None = None) -> torch.device:
    """auto: CUDA when present, else CPU with all cores (or ``threads``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cpu":
        torch.set_num_threads(threads or os.cpu_count() or 1)
        return_freed_memory()
    return device


def describe_device(device: torch.device) -> str:
    """What the run trained on, for reports: GPU name, or CPU model and thread count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# The loop


@torch.no_grad()
def validation_loss(model: Seq2Seq, batches: list, device: torch.device) -> dict:
    """Mean per-token cross-entropy (no smoothing) and perplexity over pre-built batches."""
    was_training = model.training
    model.eval()
    nll, tokens = 0.0, 0
    for batch in batches:
        out = model.loss(batch.to(device), label_smoothing=0.0)
        nll += float(out.nll)
        tokens += out.n_tokens
    model.train(was_training)
    loss = nll / max(tokens, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0))}


class _Signals:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each update."""

    def __init__(self):
        self.caught: int | None = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, _frame):
        self.caught = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


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
    clip_norm: float,
    label_smoothing: float,
    max_steps: int,
    max_epochs: int,
    max_minutes: float,
    valid_every: int,
    log_every: int,
    patience: int,
    early_stop_metric: str,
    resume: bool,
    max_bad_steps: int,
    tensorboard: bool,
    progress: bool,
    meta: dict,
) -> dict:
    """Train until max_steps / max_epochs / max_minutes / early stopping; return the best scores.

    ``validate(model)`` returns a dict with at least ``early_stop_metric`` (higher is better for
    bleu/chrf; for loss/ppl lower is better). Checkpoints: ``run_dir/last`` (every validation,
    and on SIGINT/SIGTERM) and ``run_dir/best``.
    """
    model.to(device).train()
    run_dir.mkdir(parents=True, exist_ok=True)
    state = Progress()
    last_dir, best_dir = run_dir / "last", run_dir / "best"
    found = find_checkpoint(last_dir)
    if resume:
        if found is None:
            raise TrainingError(f"{last_dir}: nothing to resume (train.resume=true)")
        load_weights(model, found)
        saved = load_train_state(found / STATE_FILE)
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        state = Progress(**saved["progress"])
        _set_rng_state(saved["rng"])
        log.info("resumed from %s at step %d (epoch %d, batch %d)", found, state.step, state.epoch,
                 state.position)  # fmt: skip
    elif found is not None:
        raise TrainingError(
            f"{found}: this run directory already has a checkpoint; resume with train.resume=true "
            "or choose another run_dir"
        )
    sign = -1.0 if early_stop_metric in ("loss", "ppl") else 1.0
    writer = _tensorboard(run_dir) if tensorboard else None
    metrics_path = run_dir / "metrics.csv"

    def checkpoint(place: Path, with_state: bool, extra: dict | None = None) -> None:
        train_state = None
        if with_state:
            train_state = {
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "progress": asdict(state),
                "rng": _rng_state(),
            }
        save_checkpoint(place, model, {**meta, "step": state.step, "epoch": state.epoch,
                                       "best_score": state.best_score}, train_state, extra)  # fmt: skip

    def run_validation() -> bool:
        """Validate, track the best, checkpoint; True when early stopping says stop."""
        began = time.monotonic()
        model.eval()
        scores = validate(model)
        model.train()
        state.valid_seconds += time.monotonic() - began
        state.last_valid_step = state.step
        value = scores[early_stop_metric] * sign
        improved = value > state.best_score
        if improved:
            state.best_score, state.best_step, state.bad_validations = value, state.step, 0
        else:
            state.bad_validations += 1
        schedule.after_validation(value)
        row = {"step": state.step, "epoch": state.epoch, "seconds": round(state.train_seconds, 1),
               "lr": schedule.lr, **{k: v for k, v in scores.items() if isinstance(v, int | float)}}  # fmt: skip
        _append_csv(metrics_path, row)
        if writer is not None:
            for k, v in row.items():
                if k not in ("step",):
                    writer.add_scalar(f"valid/{k}", v, state.step)
        log.info(
            "step %d valid %s%s", state.step,
            " ".join(f"{k} {v:.2f}" for k, v in scores.items() if isinstance(v, float)),
            " (best)" if improved else f" (best {state.best_score * sign:.2f} at {state.best_step})",
        )  # fmt: skip
        if "bleu_signature" in scores:
            log.info("  %s", scores["bleu_signature"])
        if improved:
            checkpoint(best_dir, with_state=False, extra={"scores.json": scores})
        checkpoint(last_dir, with_state=True)
        return state.bad_validations >= patience

    start = time.monotonic() - state.train_seconds
    bad_in_row, window_tokens, window_loss, window_start = 0, 0, 0.0, time.monotonic()
    bar = tqdm(total=max_steps or None, initial=state.step, disable=not progress, unit="step",
               dynamic_ncols=True, mininterval=1.0)  # fmt: skip
    # A run resumed after it had stopped (killed before its end was recorded) does not train on.
    reached = {
        "max_steps": bool(max_steps) and state.step >= max_steps,
        "max_minutes": bool(max_minutes) and state.train_seconds >= max_minutes * 60,
        "early_stopping": state.last_valid_step >= 0 and state.bad_validations >= patience,
    }
    spent = [reason for reason, hit in reached.items() if hit]
    stop_reason = spent[0] if spent else "max_epochs"
    with _Signals() as signals:
        while not spent and state.epoch < max_epochs:
            for position, indices in sampler.iterate(state.epoch, state.position):
                batch = collate([src_ids[i] for i in indices], [tgt_ids[i] for i in indices],
                                indices).to(device)  # fmt: skip
                with torch.autocast(
                    device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
                ):
                    out = model.loss(batch, label_smoothing)
                loss = out.loss / out.n_tokens
                optimizer.zero_grad(set_to_none=True)
                finite = bool(torch.isfinite(loss))
                if finite:
                    loss.backward()
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
                    finite = bool(torch.isfinite(norm))
                state.position = position + 1
                if not finite:
                    bad_in_row += 1
                    log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)",
                                state.step, bad_in_row)  # fmt: skip
                    if bad_in_row >= max_bad_steps:
                        raise TrainingError(
                            f"{bad_in_row} non-finite losses in a row at step {state.step}; stopped. "
                            f"The last good checkpoint is in {last_dir}; try a lower optim.lr or "
                            "optim.clip_norm"
                        )
                    continue
                bad_in_row = 0
                optimizer.step()
                state.step += 1
                state.tokens += out.n_tokens
                schedule.after_step(state.step)
                state.train_seconds = time.monotonic() - start
                window_tokens += out.n_tokens
                window_loss += float(out.nll)
                bar.update(1)
                if state.step % log_every == 0:
                    elapsed = time.monotonic() - window_start
                    rate = window_tokens / max(elapsed, 1e-9)
                    train_loss = window_loss / max(window_tokens, 1)
                    bar.set_postfix(
                        loss=f"{train_loss:.3f}", tok_s=f"{rate:.0f}", lr=f"{schedule.lr:.2e}"
                    )
                    _append_csv(run_dir / "train_metrics.csv", {
                        "step": state.step, "epoch": state.epoch, "seconds": round(state.train_seconds, 1),
                        "loss": round(train_loss, 4), "tokens_per_s": round(rate, 1), "lr": schedule.lr,
                    })  # fmt: skip
                    if writer is not None:
                        writer.add_scalar("train/loss", train_loss, state.step)
                        writer.add_scalar("train/tokens_per_s", rate, state.step)
                        writer.add_scalar("train/lr", schedule.lr, state.step)
                    window_tokens, window_loss, window_start = 0, 0.0, time.monotonic()
                if signals.caught is not None:
                    checkpoint(last_dir, with_state=True)
                    bar.close()
                    raise Interrupted(
                        f"interrupted at step {state.step}; checkpoint saved in {last_dir}; "
                        f"continue with train.resume=true run_dir={run_dir}"
                    )
                if state.step % valid_every == 0 and run_validation():
                    stop_reason = "early_stopping"
                    break
                if max_steps and state.step >= max_steps:
                    stop_reason = "max_steps"
                    break
                if max_minutes and state.train_seconds >= max_minutes * 60:
                    stop_reason = "max_minutes"
                    break
            else:
                state.epoch, state.position = state.epoch + 1, 0
                continue
            break
    bar.close()
    if state.last_valid_step != state.step:
        run_validation()
    state.train_seconds = time.monotonic() - start  # up to now: the last validation included
    log.info("training stopped (%s) at step %d after %.1f min; best %s %.2f at step %d",
             stop_reason, state.step, state.train_seconds / 60, early_stop_metric,
             state.best_score * sign, state.best_step)  # fmt: skip
    if writer is not None:
        writer.close()
    best = json.loads((best_dir / "scores.json").read_text())
    return {**best, "best_step": state.best_step, "steps": state.step,
            "minutes": state.train_seconds / 60, "stop_reason": stop_reason,
            "tokens_per_s": state.tokens / max(state.train_seconds, 1e-9),
            "train_tokens_per_s": state.tokens / max(state.train_seconds - state.valid_seconds, 1e-9),
            "valid_minutes": state.valid_seconds / 60}  # fmt: skip


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but keep training if it is broken
        log.warning("tensorboard unavailable; metrics go to CSV only")
        return None
    return SummaryWriter(str(run_dir / "tb"))
