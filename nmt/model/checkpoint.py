"""The checkpoint directory format, for training and inference alike.

A checkpoint directory (``last/``, ``best/``) holds ``model.safetensors`` (weights, tied tensors
stored once and named in its metadata, as safetensors' ``save_model`` writes them), ``meta.json``, and for ``last/`` a ``train_state.pt`` of plain tensors and numbers
(optimizer, scheduler, RNG states, data position) loaded with ``weights_only=True``: nothing in a
checkpoint is unpickled. Directories are written beside the target and renamed into place, so a
killed save leaves the previous checkpoint whole (found again by :func:`find_checkpoint`).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from nmt.core.errors import UserError, first_line
from nmt.core.rundir import META_FILE, MODEL_FILE, find_checkpoint  # noqa: F401  (re-exported)

STATE_FILE = "train_state.pt"
KEPT_DIR, KEPT_SCORE = "kept", "keep_score"  # run_dir/kept/step-NNNNNNN/, its meta's score


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded: damaged, pickled, or of another model."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stored_weights(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors to store, each a CPU copy with storage of its own, and the aliases of the tied
    ones (a name -> the stored name holding the same tensor).

    Copies rather than the live tensors: on CUDA, cuDNN packs each RNN's weights into one flat
    buffer, every parameter a view of part of it, and safetensors refuses to save views that do
    not cover their storage ("None is covering the entire storage")."""
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in model.state_dict().items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride())
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().to("cpu", copy=True).contiguous()
    return tensors, aliases


def save_checkpoint(
    place: Path,
    model: nn.Module,
    meta: dict,
    state: dict | None = None,
    extra: dict[str, dict] | None = None,
) -> None:
    """Write a checkpoint directory atomically: build ``<place>.tmp``, then rename it in.

    ``extra`` maps file names to JSON values written inside it (``best/scores.json``), so they
    arrive with the weights or not at all."""
    tmp = place.with_name(place.name + ".tmp")
    old = place.with_name(place.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_checkpoint(tmp, model, meta, state, extra)
    except (OSError, RuntimeError, SafetensorError) as e:
        # A full disk or a quota (EFBIG, ENOSPC) fails mid-file: the half-written directory goes,
        # and the checkpoint there before stays whole.
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"; the previous one in {place} is intact" if place.exists() else ""
        raise CheckpointError(
            f"{place}: could not write the checkpoint ({first_line(e)}){kept}; free some space "
            "(or raise the quota) and continue with train.resume=true"
        ) from None
    if place.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(place, old)
    os.replace(tmp, place)
    _fsync_dir(place.parent)
    shutil.rmtree(old, ignore_errors=True)


def _write_checkpoint(
    tmp: Path, model: nn.Module, meta: dict, state: dict | None, extra: dict[str, dict] | None
) -> None:
    tmp.mkdir(parents=True)
    tensors, aliases = _stored_weights(model)
    header = {**aliases, "format": "nmt", "step": str(meta["step"])}
    save_file(tensors, str(tmp / MODEL_FILE), metadata=header)
    if state is not None:
        # Serialised in memory, written as plain bytes: a failed write is then an OSError that
        # names its cause (EFBIG, ENOSPC), not a message from deep inside the zip writer.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        (tmp / STATE_FILE).write_bytes(buffer.getbuffer())
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    for name, value in (extra or {}).items():
        (tmp / name).write_text(json.dumps(value, indent=2))
    for name in os.listdir(tmp):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(tmp)


def _read_weights(model: nn.Module, place: Path) -> dict[str, Tensor]:
    """The checkpoint's tensors under every name of the model's state dict: a tied name that the
    file stores once is filled from the stored name it aliases (whichever of the tied names the
    writer kept: ``save_model`` and this module choose differently)."""
    path = place / MODEL_FILE
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: not a valid safetensors checkpoint ({e})") from None
    expected = model.state_dict()
    for name in expected.keys() - tensors.keys():
        if header.get(name) in tensors:
            tensors[name] = tensors[header[name]]
    missing, unexpected = expected.keys() - tensors.keys(), tensors.keys() - expected.keys()
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not match the model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); was it trained with another model config?"
        )
    return tensors


def load_weights(model: nn.Module, place: Path) -> dict:
    """Copy safetensors weights into the model's own tensors; return the meta. Copying in place
    keeps whatever layout the model's tensors have, cuDNN's packed RNN weights included."""
    tensors = _read_weights(model, place)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise CheckpointError(
            f"{place / MODEL_FILE}: does not match the model ({first_line(e)})"
        ) from None
    return json.loads((place / META_FILE).read_text())


def kept_checkpoints(run_dir: Path) -> list[tuple[int, float, Path]]:
    """(step, score, place) of the checkpoints kept for averaging (``train.keep_last`` /
    ``keep_best``), by step; the score is the early-stopping metric, higher is better."""
    out = []
    for place in sorted((Path(run_dir) / KEPT_DIR).glob("step-*")):
        if place.name.endswith((".tmp", ".old")) or find_checkpoint(place) != place:
            continue
        meta = json.loads((place / META_FILE).read_text())
        out.append((int(meta["step"]), float(meta[KEPT_SCORE]), place))
    return sorted(out)


def choose_kept(run_dir: Path, which: str, n: int) -> list[Path]:
    """The ``n`` most recent (``which="last"``) or best (``"best"``) kept checkpoints."""
    kept = kept_checkpoints(run_dir)
    if len(kept) < n:
        raise CheckpointError(
            f"{Path(run_dir) / KEPT_DIR}: {len(kept)} kept checkpoints, averaging needs {n}; "
            "train with train.keep_last or train.keep_best of at least that"
        )
    chosen = kept[-n:] if which == "last" else sorted(kept, key=lambda k: -k[1])[:n]
    return [place for _, _, place in chosen]


def load_average(model: nn.Module, places: list[Path]) -> dict:
    """Load the mean of the weights of several checkpoints of one model (Vaswani et al. 2017
    average the last ones); returns the first one's meta. Means are taken in fp32."""
    meta = load_weights(model, places[0])  # checks the names and shapes
    tensors = [_read_weights(model, place) for place in places]
    state = model.state_dict()
    with torch.no_grad():
        for name in state:
            try:
                mean = torch.stack([t[name].float() for t in tensors]).mean(dim=0)
            except RuntimeError:
                raise CheckpointError(
                    f"{places}: {name} differs in shape between the checkpoints; one model only"
                ) from None
            state[name].copy_(mean.to(state[name].dtype))
    return meta


def load_train_state(path: Path) -> dict:
    """Training state, never unpickling arbitrary objects (``weights_only=True``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: refused to load (not a plain-tensor training state: {first_line(e)})"
        ) from None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
