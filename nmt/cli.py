"""Hydra entry points: the only module that reads the config and wires the stages together.

Each ``*_main`` is a console script (``nmt-data``, ``nmt-spm``, ...). A stage reads its input
artifact from ``run_dir`` (running the cheap, cached upstream stages when it is missing) and
writes its own artifact there.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import datasets
import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from nmt import data, evaluate, search, tokenizer, train
from nmt.batching import BatchSampler, collate
from nmt.config import register_configs
from nmt.model import build_model, count_parameters

log = logging.getLogger("nmt")

CONF_DIR = os.environ.get("NMT_CONF_DIR", str(Path(__file__).resolve().parent.parent / "conf"))


class _Fail(Exception):
    """Raised by a stage for a user error: printed as one line, exit status 1."""


def _kwargs(node: DictConfig, drop: tuple[str, ...] = ("name",)) -> dict:
    """A config group as plain keyword arguments (validated by its dataclass schema)."""
    values = asdict(OmegaConf.to_object(node))
    return {k: v for k, v in values.items() if k not in drop}


def _run_dir() -> Path:
    path = Path(HydraConfig.get().runtime.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _stage_data(cfg: DictConfig, run_dir: Path) -> dict:
    report = data.prepare_corpus(**_kwargs(cfg.data), cache_dir=cfg.cache_dir, out_dir=run_dir)
    log.info("%s", data.format_report(report))
    return report


def _stage_spm(cfg: DictConfig, run_dir: Path) -> dict:
    _stage_data(cfg, run_dir)
    report = tokenizer.prepare_tokenizer(
        **_kwargs(cfg.tokenizer), seed=cfg.seed, cache_dir=cfg.cache_dir, run_dir=run_dir
    )
    log.info("%s", tokenizer.format_report(report))
    return report


def data_task(cfg: DictConfig) -> None:
    """Data stage: write run_dir/data (the cleaned corpus in datasets format)."""
    _stage_data(cfg, _run_dir())


def spm_task(cfg: DictConfig) -> None:
    """Tokenizer stage: write run_dir/spm.model and run_dir/encoded."""
    _stage_spm(cfg, _run_dir())


def pick_device(name: str, threads: int | None = None) -> torch.device:
    """auto: CUDA when present, else CPU with all cores (or ``threads``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cpu":
        torch.set_num_threads(threads or os.cpu_count() or 1)
    return device


def _validator(
    cfg: DictConfig, model_device: torch.device, tok: tokenizer.Tokenizer, valid
) -> object:
    """validate(model) -> scores: greedy BLEU/chrF on detokenized text, and loss/perplexity."""
    src, tgt = cfg.data.src, cfg.data.tgt
    if cfg.train.valid_max_sentences:
        valid = valid.select(range(min(len(valid), cfg.train.valid_max_sentences)))
    refs = [row[tgt] for row in valid["translation"]]
    src_ids, tgt_ids = list(valid["src_ids"]), list(valid["tgt_ids"])
    loss_sampler = BatchSampler(
        src_lens=[len(s) for s in src_ids], tgt_lens=[len(t) for t in tgt_ids],
        max_tokens=cfg.batch.max_tokens, batch_size=cfg.batch.batch_size, pool_size=1,
        seed=0, shuffle=False,
    )  # fmt: skip
    loss_batches = [
        collate([src_ids[i] for i in b], [tgt_ids[i] for i in b], b)
        for b in loss_sampler.batches(0)
    ]
    del src

    def validate(model) -> dict:
        hyp_ids = search.decode_corpus(
            model, src_ids, max_sentences=cfg.search.max_sentences, device=model_device,
            max_len_a=cfg.search.max_len_a, max_len_b=cfg.search.max_len_b,
        )  # fmt: skip
        hyps = tok.decode_tgt(hyp_ids)
        scores = evaluate.score(hyps, refs)
        scores.update(train.validation_loss(model, loss_batches, model_device))
        return scores

    return validate


def train_task(cfg: DictConfig) -> float:
    """Train a model: data and spm stages (cached), then the loop; returns best valid BLEU."""
    run_dir = _run_dir()
    _stage_spm(cfg, run_dir)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    device = pick_device(cfg.device, cfg.train.threads)
    train.seed_everything(cfg.seed)
    tok = tokenizer.Tokenizer.from_dir(run_dir, cfg.data.src, cfg.data.tgt)
    encoded = tokenizer.load_encoded(run_dir)
    corpus_report = data.read_report(run_dir / data.ARTIFACT)
    train_split = encoded[corpus_report["train_split"]]
    valid = encoded[corpus_report["valid_split"]]
    try:
        model = build_model(
            **_kwargs(cfg.model), src_vocab_size=tok.src_vocab_size,
            tgt_vocab_size=tok.tgt_vocab_size, joint_vocab=tok.joint,
        )  # fmt: skip
        optimizer = train.build_optimizer(
            model, optimizer=cfg.optim.optimizer, lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay, betas=list(cfg.optim.betas),
        )  # fmt: skip
        schedule = train.Schedule(
            optimizer, schedule=cfg.optim.schedule, warmup_steps=cfg.optim.warmup_steps,
            decay_factor=cfg.optim.decay_factor, patience=cfg.optim.patience, min_lr=cfg.optim.min_lr,
        )  # fmt: skip
        src_ids, tgt_ids = list(train_split["src_ids"]), list(train_split["tgt_ids"])
        sampler = BatchSampler(
            src_lens=[len(s) for s in src_ids], tgt_lens=[len(t) for t in tgt_ids],
            **_kwargs(cfg.batch, drop=()), seed=cfg.seed,
        )  # fmt: skip
    except ValueError as e:
        raise _Fail(str(e)) from None
    log.info(
        "model %s + %s: %s parameters; %d training pairs, device %s (%d threads)",
        cfg.model.cell, cfg.model.attention, f"{count_parameters(model):,}", len(src_ids),
        device, torch.get_num_threads(),
    )  # fmt: skip
    meta = {
        "src": cfg.data.src, "tgt": cfg.data.tgt, "cell": cfg.model.cell,
        "attention": cfg.model.attention, "parameters": count_parameters(model),
        "spm_sha256": tok.sha256(), "torch": torch.__version__,
    }  # fmt: skip
    try:
        best = train.fit(
            model=model, src_ids=src_ids, tgt_ids=tgt_ids, sampler=sampler, optimizer=optimizer,
            schedule=schedule, validate=_validator(cfg, device, tok, valid), run_dir=run_dir,
            device=device, clip_norm=cfg.optim.clip_norm, label_smoothing=cfg.optim.label_smoothing,
            meta=meta, **{k: v for k, v in _kwargs(cfg.train, drop=("threads", "valid_max_sentences")).items()},
        )  # fmt: skip
    except train.Interrupted as e:
        print(str(e), file=sys.stderr)
        sys.exit(130)
    except train.TrainingError as e:
        raise _Fail(str(e)) from None
    log.info(
        "best valid BLEU %.2f chrF %.2f at step %d (%.1f min) %s",
        best["bleu"], best["chrf"], best["best_step"], best["minutes"], best["bleu_signature"],
    )  # fmt: skip
    return float(best["bleu"])


def _one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _check_overrides(config_name: str, args: list[str]) -> None:
    """Compose once up front so a bad override fails with one line instead of Hydra's page."""
    if any(a.startswith("-") for a in args) or any("MULTIRUN" in a for a in args):
        return  # --help, --cfg, -m ...: Hydra's own handling
    overrides = [a for a in args if not a.lstrip("+~").startswith("hydra")]
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            compose(config_name, overrides=overrides)
    except Exception as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)


def _entry(task: Callable[[DictConfig], object], config_name: str) -> None:
    register_configs()
    datasets.disable_progress_bars()  # stages here take seconds; the training loop has its own bar
    _check_overrides(config_name, sys.argv[1:])

    def guarded(cfg: DictConfig) -> object:
        try:
            return task(cfg)
        except (data.DataError, _Fail) as e:
            print(f"error: {_one_line(e)}", file=sys.stderr)
            sys.exit(1)

    guarded.__name__ = task.__name__.removesuffix("_task")
    hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(guarded)()


def data_main() -> None:
    _entry(data_task, "train")


def spm_main() -> None:
    _entry(spm_task, "train")


def train_main() -> None:
    _entry(train_task, "train")
