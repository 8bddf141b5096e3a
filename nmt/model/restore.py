"""A trained model rebuilt from its run directory: the saved config read over today's defaults,
the SentencePiece model, and the weights of a checkpoint (best, last, or an average of kept ones),
each checked against the others. Nothing in a run directory is executed: the config is plain
YAML, the weights are safetensors. A missing or mismatched piece is a :class:`RunDirError`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from nmt.core.compose import read_run_config
from nmt.core.config import group_kwargs
from nmt.core.errors import UserError, first_line
from nmt.core.rundir import CONFIG_FILE
from nmt.data.tokenizer import Tokenizer
from nmt.model.checkpoint import (
    META_FILE,
    CheckpointError,
    choose_kept,
    find_checkpoint,
    load_average,
    load_weights,
)
from nmt.model.seq2seq import Seq2Seq, build_model

log = logging.getLogger(__name__)


class RunDirError(UserError):
    """The run directory lacks a piece, or its pieces do not belong together."""


@dataclass
class RestoredModel:
    """A run directory's model with its weights, tokenizer, language pair and search settings."""

    model: Seq2Seq
    tokenizer: Tokenizer
    src: str
    tgt: str
    source: dict  # where the weights came from: {"run_dir", "checkpoint", "steps"}


def restore(run_dir: str | os.PathLike, checkpoint: str) -> RestoredModel:
    """The model of a run directory's ``checkpoint`` (best | last), checked against its
    config and SentencePiece model."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise RunDirError(f"{config_path}: missing; is {run_dir} a training run directory?")
    try:
        cfg = read_run_config(config_path)  # keys added since the run was saved: conf/'s values
        model_args = group_kwargs(cfg.model)
        src, tgt = cfg.data.src, cfg.data.tgt
    except Exception as e:
        raise RunDirError(f"{config_path}: not an nmt run config ({first_line(e)})") from None
    try:
        tok = Tokenizer.from_dir(run_dir, src, tgt)
    except ValueError as e:
        raise RunDirError(str(e)) from None
    averaged = re.fullmatch(r"avg-(last|best)-([1-9]\d*)", checkpoint)
    if checkpoint in ("best", "last"):
        places = [find_checkpoint(run_dir / checkpoint)]
        if places[0] is None:
            raise RunDirError(f"{run_dir / checkpoint}: no checkpoint; has the run trained yet?")
    elif averaged:
        try:
            places = choose_kept(run_dir, averaged[1], int(averaged[2]))
        except CheckpointError as e:
            raise RunDirError(str(e)) from None
    else:
        raise RunDirError(
            f"checkpoint={checkpoint!r}: expected best, last, avg-last-N or avg-best-N"
        )
    place = places[0]
    meta = json.loads((place / META_FILE).read_text())
    if meta.get("spm_sha256") not in (None, tok.sha256()):
        raise RunDirError(
            f"{run_dir}: the SentencePiece model is not the one {place.name}/ was trained with"
        )
    model = build_model(
        **model_args,
        src_vocab_size=tok.src_vocab_size,
        tgt_vocab_size=tok.tgt_vocab_size,
        joint_vocab=tok.joint,
    )
    try:
        if len(places) == 1:
            load_weights(model, place)
        else:
            load_average(model, places)
    except CheckpointError as e:
        raise RunDirError(str(e)) from None
    model_of = f"{model_args['cell']} {src}->{tgt}"  # config.yaml's: a bundle's meta has none
    if len(places) == 1:
        log.info("loaded %s (step %s, %s)", place, meta.get("step"), model_of)
    else:  # a kept checkpoint's name is its step
        names = ", ".join(p.name for p in places)
        log.info("loaded the mean of %s in %s (%s)", names, places[0].parent, model_of)
    steps = [json.loads((p / META_FILE).read_text()).get("step") for p in places]
    source = {"run_dir": str(run_dir), "checkpoint": checkpoint, "steps": steps}
    return RestoredModel(model=model, tokenizer=tok, src=src, tgt=tgt, source=source)
