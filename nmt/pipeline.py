"""The stage pipeline: a training run from its configuration. The cached data and tokenizer
stages, the resume policy's answer (``nmt.resume``), the objects ``fit`` needs, the final
evaluation and ``done.json``.

``done.json`` is written when a run ends (finished, or failed inside a sweep), so rerunning a
sweep with ``train.resume=auto`` skips what finished and continues what did not.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shlex
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from nmt import resume
from nmt.core.config import group_kwargs
from nmt.core.errors import UserError, one_line, os_error_line
from nmt.core.provenance import provenance
from nmt.core.rundir import CONFIG_FILE, DONE_FILE, write_json, write_text
from nmt.core.runtime import (
    describe_device,
    pick_device,
    pick_precision,
    precision_name,
    seed_everything,
    threads_text,
)
from nmt.core.search_options import SearchOptions
from nmt.data import prepare as data
from nmt.data import tokenizer
from nmt.data.batching import BatchSampler
from nmt.model.checkpoint import CheckpointError
from nmt.model.seq2seq import build_model, count_parameters
from nmt.scoring.evaluate import evaluate_split
from nmt.training.distributed import World
from nmt.training.optim import Schedule, build_optimizer
from nmt.training.train import Interrupted, TrainingError, TrainOptions, fit
from nmt.training.validation import Validator
from nmt.translate import Translator

log = logging.getLogger("nmt")


def stage_data(cfg: DictConfig, run_dir: Path) -> None:
    report = data.prepare_corpus(**group_kwargs(cfg.data), cache_dir=cfg.cache_dir, out_dir=run_dir)
    log.info("%s", data.format_report(report))


def stage_spm(cfg: DictConfig, run_dir: Path) -> None:
    stage_data(cfg, run_dir)
    report = tokenizer.prepare_tokenizer(
        **group_kwargs(cfg.tokenizer), cache_dir=cfg.cache_dir, run_dir=run_dir
    )
    log.info("%s", tokenizer.format_report(report))


def _build(cfg: DictConfig, tok: tokenizer.Tokenizer, train_split) -> dict:
    """The model, optimizer, schedule and batch sampler the config describes."""
    try:
        model = build_model(
            **group_kwargs(cfg.model),
            src_vocab_size=tok.src_vocab_size,
            tgt_vocab_size=tok.tgt_vocab_size,
            joint_vocab=tok.joint,
        )
        o = cfg.optim
        optimizer = build_optimizer(
            model, optimizer=o.optimizer, lr=o.lr, weight_decay=o.weight_decay, betas=list(o.betas)
        )
        schedule = Schedule(
            optimizer,
            schedule=o.schedule,
            warmup_steps=o.warmup_steps,
            decay_factor=o.decay_factor,
            patience=o.patience,
            min_lr=o.min_lr,
        )
        src_ids, tgt_ids = train_split.ragged("src_ids"), train_split.ragged("tgt_ids")
        sampler = BatchSampler(
            src_lens=src_ids.lengths(),
            tgt_lens=tgt_ids.lengths(),
            **group_kwargs(cfg.batch, drop=()),
            seed=cfg.seed,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    return dict(
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        sampler=sampler,
        src_ids=src_ids,
        tgt_ids=tgt_ids,
    )


def _prepare(cfg: DictConfig, run_dir: Path) -> dict:
    """The cached data and tokenizer stages, and the checks that must not wait for the end of
    training; writes the run's config.yaml. Returns the corpus report."""
    SearchOptions.from_config(cfg.search)  # bad search settings fail now, not at final_eval
    stage_spm(cfg, run_dir)
    corpus_report = data.read_report(run_dir / data.ARTIFACT)
    absent = [split for split in cfg.final_eval if split not in corpus_report["sizes"]]
    if absent:  # known now, not after an hour of training
        raise UserError(
            f"final_eval names {absent}, which the data of this run does not have (it has "
            f"{list(corpus_report['sizes'])}); fix final_eval or data.test_splits"
        )
    write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    return corpus_report


def _trainee(
    cfg: DictConfig,
    run_dir: Path,
    corpus_report: dict,
    device: torch.device,
    precision: torch.dtype,
) -> dict:
    """fit's arguments from the config: model, optimizer, schedule, data, validator, meta."""
    tok = tokenizer.Tokenizer.from_dir(run_dir, cfg.data.src, cfg.data.tgt)
    encoded = tokenizer.load_encoded(run_dir)
    parts = _build(cfg, tok, encoded[corpus_report["train_split"]])
    parts["validate"] = Validator(
        encoded[corpus_report["valid_split"]],
        tgt_lang=cfg.data.tgt,
        tokenizer=tok,
        search=SearchOptions.from_config(cfg.search),
        device=device,
        decode_sentences=cfg.search.max_sentences,
        max_tokens=cfg.batch.max_tokens,
        batch_size=cfg.batch.batch_size,
        max_sentences=cfg.train.valid_max_sentences,
        precision=precision,
    )
    parameters = count_parameters(parts["model"])
    log.info(
        "model %s + %s: %s parameters; %d training pairs, device %s (%s, %s)",
        cfg.model.cell,
        cfg.model.attention,
        f"{parameters:,}",
        len(parts["src_ids"]),
        device,
        threads_text(torch.get_num_threads()),
        precision_name(precision),
    )
    parts["meta"] = {
        "src": cfg.data.src,
        "tgt": cfg.data.tgt,
        "cell": cfg.model.cell,
        "attention": cfg.model.attention,
        "parameters": parameters,
        **parts["model"].hidden_sizes,
        "spm_sha256": tok.sha256(),
        "torch": torch.__version__,
        "hardware": describe_device(device),
        "precision": precision_name(precision),
        "provenance": provenance(),
    }
    parts["options"] = TrainOptions(
        **group_kwargs(cfg.train, drop=("threads", "valid_max_sentences", "resume")),
        clip_norm=cfg.optim.clip_norm,
        label_smoothing=cfg.optim.label_smoothing,
    )
    return parts


def translator_for(cfg: DictConfig, run_dir: Path, checkpoint: str) -> Translator:
    """After training: the run's model with the training config's search, device and precision,
    on PyTorch, and everything else as ``nmt-translate`` has it; on the CPU threads the run
    trained with (``train.threads``; loading a model would otherwise take every core again)."""
    threads = torch.get_num_threads()
    translator = Translator.from_run_dir(
        run_dir,
        checkpoint=checkpoint,
        device=cfg.device,
        precision=cfg.precision,
        search=SearchOptions.from_config(cfg.search),
        backend="torch",  # the final evaluation measures the model as nmt-eval does
        quantize="none",
    )
    torch.set_num_threads(threads)
    return translator


def next_commands(run_dir: Path, split: str) -> list[str]:
    """What to run after training, as the user ran it: ``make ...`` under make (which sets
    MAKELEVEL for its recipes), else the nmt-* commands."""
    where = shlex.quote(f"run_dir={run_dir}")
    under_make = "MAKELEVEL" in os.environ
    translate, evaluate = (
        ("make translate", "make eval") if under_make else ("nmt-translate", "nmt-eval")
    )
    return [f"{translate} {where} input=FILE", f"{evaluate} {where} split={split}"]


def train_run(cfg: DictConfig, run_dir: Path, *, in_sweep: bool) -> float:
    """Train a model: data and spm stages (cached), the loop, then ``final_eval``; returns best
    valid BLEU. Writes ``done.json`` (the results) when it ends, so a rerun with
    ``train.resume=auto`` skips a finished run and continues an unfinished one.

    Under torchrun every rank runs this; rank 0 prepares the data, decides on resuming,
    validates, writes the run directory and evaluates (``nmt.training.distributed``)."""
    world = World.from_env()
    threads = world.threads(cfg.train.threads) if world.enabled else cfg.train.threads
    device = pick_device(world.device(cfg.device), threads)
    world.start(device)
    try:
        best = _train_run(cfg, run_dir, in_sweep, world, device)
        # The ranks leave together: a rank that tore its process group down while rank 0 still
        # evaluated and wrote done.json was seen to abort (gloo, a loaded 2-core machine).
        world.barrier()
        return best
    finally:
        world.stop()


def _train_run(
    cfg: DictConfig, run_dir: Path, in_sweep: bool, world: World, device: torch.device
) -> float:
    if not world.main:
        logging.getLogger("nmt").setLevel(logging.WARNING)  # one rank speaks
    # Ranks started a second apart name a timestamped run_dir differently: rank 0's wins.
    run_dir = Path(world.broadcast(str(run_dir)))
    done = run_dir / DONE_FILE
    resuming = world.broadcast(resume.decide(cfg, run_dir) if world.main else None)
    if resuming is None:
        result = json.loads(done.read_text())
        log.info(
            "%s: finished before (%s); skipped. Delete the directory to train it again",
            run_dir,
            result.get("status"),
        )
        return float(result.get("bleu", float("nan")))
    if world.main:
        log.info("run directory: %s", run_dir)  # every next command takes run_dir=<this>
        corpus_report = _prepare(cfg, run_dir)
    world.barrier()  # the others read what rank 0 prepared
    if not world.main:
        corpus_report = data.read_report(run_dir / data.ARTIFACT)
    precision = pick_precision(cfg.precision, device, training=True)
    seed_everything(cfg.seed)
    parts = _trainee(cfg, run_dir, corpus_report, device, precision)
    if world.enabled:
        parts["meta"]["world_size"] = world.size
        if world.rank:  # the same initial weights, each rank its own dropout masks
            seed_everything(cfg.seed + world.rank)
    try:
        best = fit(
            **parts,
            run_dir=run_dir,
            device=device,
            precision=precision,
            resume=resuming,
            world=world,
        )
    except Interrupted as e:
        if world.main:
            print(str(e), file=sys.stderr)
        sys.exit(130)
    except (TrainingError, CheckpointError, OSError) as e:
        if not in_sweep or world.enabled:
            raise
        # One diverged run, or one whose checkpoint could not be written (a full disk), must not
        # end a sweep: record it (the report lists it) and go on.
        message = one_line(e) if isinstance(e, UserError) else os_error_line(e)
        log.error("%s: %s", run_dir, message)
        try:
            write_json(done, {**parts["meta"], "status": "failed", "error": message})
        except OSError as again:
            log.error("%s: could not record the failure either (%s)", done, os_error_line(again))
        return float("nan")
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if device.type == "cuda":  # the accelerator's own high-water mark, beside the host's RSS
        best["gpu_peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    if world.enabled:
        best["rank_peak_rss_gib"] = [round(p, 3) for p in world.gather(peak_gib)]
    if not world.main:
        return float(best["bleu"])
    log.info(
        "best valid BLEU %.2f chrF %.2f at step %d; %d steps in %.1f min, %.0f target "
        "tokens/s (validation time included), peak RSS %.2f GiB | %s",
        best["bleu"],
        best["chrf"],
        best["best_step"],
        best["steps"],
        best["minutes"],
        best["tokens_per_s"],
        peak_gib,
        best["bleu_signature"],
    )
    if cfg.final_eval:
        translator = translator_for(cfg, run_dir=run_dir, checkpoint="best")
        for split in cfg.final_eval:
            evaluate_split(
                translator,
                run_dir,
                split,
                checkpoint="best",
                search_name=cfg.search.name,
            )
    # ru_maxrss is the process's: in a sweep whose jobs share a process, the largest run so far.
    write_json(
        done,
        {**parts["meta"], **best, "status": "finished", "process_peak_rss_gib": round(peak_gib, 3)},
    )
    if not in_sweep:
        split = (cfg.final_eval or [*corpus_report["sizes"]][-1:])[0]
        for command in next_commands(run_dir, split):
            log.info("next: %s", command)
    return float(best["bleu"])
