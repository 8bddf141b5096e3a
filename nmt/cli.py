"""Hydra entry points: the only module that reads the config and wires the stages together.

Each ``*_main`` is a console script (``nmt-data``, ``nmt-spm``, ...). A stage reads its input
artifact from ``run_dir`` (running the cheap, cached upstream stages when it is missing) and
writes its own artifact there.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import select
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

import datasets
import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from nmt import data, evaluate, search, tokenizer, train
from nmt.batching import BatchSampler, collate
from nmt.checkpoint import find_checkpoint
from nmt.config import NAME_EXCLUDE, register_configs
from nmt.model import build_model, count_parameters
from nmt.optim import Schedule, build_optimizer
from nmt.rundir import CONFIG_FILE, DONE_FILE, write_json, write_text
from nmt.runtime import describe_device, pick_device, seed_everything
from nmt.translate import RunDirError, Translator
from nmt.visualize import plot_attention

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
        **_kwargs(cfg.tokenizer), cache_dir=cfg.cache_dir, run_dir=run_dir
    )
    log.info("%s", tokenizer.format_report(report))
    return report


def data_task(cfg: DictConfig) -> None:
    """Data stage: write run_dir/data (the cleaned corpus in datasets format)."""
    _stage_data(cfg, _run_dir())


def spm_task(cfg: DictConfig) -> None:
    """Tokenizer stage: write run_dir/spm.model and run_dir/encoded."""
    _stage_spm(cfg, _run_dir())


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
        # Validation decodes greedily whatever search group is chosen: cheap and comparable.
        found = search.decode_corpus(
            model, src_ids, device=model_device, max_sentences=cfg.search.max_sentences,
            beam_size=1, alpha=0.0, max_len_a=cfg.search.max_len_a, max_len_b=cfg.search.max_len_b,
            min_len=0, n_best=1, coverage_penalty=0.0, no_repeat_ngram=0,
        )  # fmt: skip
        hyps = tok.decode_tgt([h[0].tokens for h in found])
        scores = evaluate.score(hyps, refs)
        scores.update(train.validation_loss(model, loss_batches, model_device))
        return scores

    return validate


def _resume_mode(value: object) -> str:
    mode = str(value).lower()
    if mode not in ("true", "false", "auto"):
        raise _Fail(f"train.resume={value!r}: expected true, false or auto")
    return mode


def _in_sweep() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def train_task(cfg: DictConfig) -> float:
    """Train a model: data and spm stages (cached), the loop, then ``final_eval``; returns best
    valid BLEU. Writes ``done.json`` (the results) when it ends, so a rerun with
    ``train.resume=auto`` skips a finished run and continues an unfinished one."""
    run_dir = _run_dir()
    mode = _resume_mode(cfg.train.resume)
    done = run_dir / DONE_FILE
    if mode == "auto":
        _check_same_run(cfg, run_dir)
    if mode == "auto" and done.is_file():
        result = json.loads(done.read_text())
        log.info("%s: finished before (%s); skipped. Delete the directory to train it again",
                 run_dir, result.get("status"))  # fmt: skip
        return float(result.get("bleu", float("nan")))
    resume = mode == "true" or (mode == "auto" and find_checkpoint(run_dir / "last") is not None)
    _check_search(cfg.search)
    _stage_spm(cfg, run_dir)
    corpus_report = data.read_report(run_dir / data.ARTIFACT)
    absent = [split for split in cfg.final_eval if split not in corpus_report["sizes"]]
    if absent:  # known now, not after an hour of training
        raise _Fail(
            f"final_eval names {absent}, which the data of this run does not have (it has "
            f"{list(corpus_report['sizes'])}); fix final_eval or data.test_splits"
        )
    write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    device = pick_device(cfg.device, cfg.train.threads)
    seed_everything(cfg.seed)
    tok = tokenizer.Tokenizer.from_dir(run_dir, cfg.data.src, cfg.data.tgt)
    encoded = tokenizer.load_encoded(run_dir)
    train_split = encoded[corpus_report["train_split"]]
    valid = encoded[corpus_report["valid_split"]]
    try:
        model = build_model(
            **_kwargs(cfg.model), src_vocab_size=tok.src_vocab_size,
            tgt_vocab_size=tok.tgt_vocab_size, joint_vocab=tok.joint,
        )  # fmt: skip
        optimizer = build_optimizer(
            model, optimizer=cfg.optim.optimizer, lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay, betas=list(cfg.optim.betas),
        )  # fmt: skip
        schedule = Schedule(
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
        "hardware": describe_device(device),
    }  # fmt: skip
    try:
        best = train.fit(
            model=model, src_ids=src_ids, tgt_ids=tgt_ids, sampler=sampler, optimizer=optimizer,
            schedule=schedule, validate=_validator(cfg, device, tok, valid), run_dir=run_dir,
            device=device, clip_norm=cfg.optim.clip_norm, label_smoothing=cfg.optim.label_smoothing,
            meta=meta, resume=resume,
            **_kwargs(cfg.train, drop=("threads", "valid_max_sentences", "resume")),
        )  # fmt: skip
    except train.Interrupted as e:
        print(str(e), file=sys.stderr)
        sys.exit(130)
    except train.TrainingError as e:
        if not _in_sweep():
            raise _Fail(str(e)) from None
        # One diverged run must not end a sweep: record it (the report lists it) and go on.
        log.error("%s: %s", run_dir, e)
        write_json(done, {**meta, "status": "failed", "error": str(e)})
        return float("nan")
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    log.info(
        "best valid BLEU %.2f chrF %.2f at step %d; %d steps in %.1f min, %.0f target tokens/s "
        "(validation time included), peak RSS %.2f GiB | %s",
        best["bleu"], best["chrf"], best["best_step"], best["steps"], best["minutes"],
        best["tokens_per_s"], peak_gib, best["bleu_signature"],
    )  # fmt: skip
    if cfg.final_eval:
        translator = _translator(cfg, run_dir=run_dir, checkpoint="best")
        corpus, _ = data.load_corpus(run_dir)
        for split in cfg.final_eval:
            _eval_split(translator, corpus, split, run_dir, "best", cfg.search, attention_plots=0)
    # ru_maxrss is the process's: in a sweep whose jobs share a process, the largest run so far.
    write_json(done, {**meta, **best, "status": "finished",
                       "process_peak_rss_gib": round(peak_gib, 3)})  # fmt: skip
    return float(best["bleu"])


def _flat(node: object, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.removesuffix("."): node}


def _check_same_run(cfg: DictConfig, run_dir: Path) -> None:
    """train.resume=auto must not skip or continue a run made with other settings (another
    data.root, an edited preset): compare with the run's config.yaml, keys that cannot change
    results aside."""
    saved_path = run_dir / CONFIG_FILE
    if not saved_path.is_file():
        return
    neutral = (*NAME_EXCLUDE, "train.threads")
    now = _flat(OmegaConf.to_container(cfg, resolve=True))
    saved = _flat(OmegaConf.to_container(OmegaConf.load(saved_path)))
    differ = sorted(
        key for key in now.keys() | saved.keys()
        if key not in neutral and now.get(key) != saved.get(key)
    )  # fmt: skip
    if differ:
        key = differ[0]
        raise _Fail(
            f"{run_dir}: trained with other settings ({len(differ)} keys differ, e.g. {key}: "
            f"{saved.get(key)!r} there, {now.get(key)!r} now); train.resume=auto will not reuse "
            "it. Choose another run_dir or hydra.sweep.dir"
        )


def _check_search(node: DictConfig) -> None:
    try:
        search.check_options(**_kwargs(node, drop=("name", "max_sentences")))
    except ValueError as e:
        raise _Fail(str(e)) from None


def _translator(cfg: DictConfig, run_dir: Path | None = None, checkpoint: str | None = None,
                ) -> Translator:  # fmt: skip
    """The run's model with cfg.search; the translate/eval keys or, after training, defaults."""
    _check_search(cfg.search)
    options = _kwargs(cfg.search, drop=("name", "max_sentences"))
    return Translator.from_run_dir(
        run_dir or cfg.run_dir, checkpoint=checkpoint or cfg.checkpoint, device=cfg.device,
        search=options, max_sentences=cfg.search.max_sentences,
        max_tokens=cfg.get("max_tokens", 4000), max_src_len=cfg.get("max_src_len", 250),
    )  # fmt: skip


def read_chunks(stream: BinaryIO, max_lines: int) -> Iterator[list[bytes]]:
    """Lines (without newline) in chunks: as many as are already readable, up to max_lines.

    A line typed on a terminal is yielded at once; a large file streams in bounded chunks.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None:  # no descriptor to poll: plain chunks
        chunk = []
        for line in stream:
            chunk.append(line.removesuffix(b"\n"))
            if len(chunk) >= max_lines:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    pending, lines = b"", []
    while True:
        if lines and (len(lines) >= max_lines or not select.select([fd], [], [], 0)[0]):
            yield lines[:max_lines]
            lines = lines[max_lines:]
            continue
        data_ = os.read(fd, 1 << 16)
        if not data_:
            if pending:
                lines.append(pending)
            while lines:
                yield lines[:max_lines]
                lines = lines[max_lines:]
            return
        pending += data_
        *complete, pending = pending.split(b"\n")
        lines.extend(complete)


def translate_task(cfg: DictConfig) -> None:
    """Translate stdin or input=FILE to stdout or output=FILE: exactly one line per input line."""
    try:
        translator = _translator(cfg)
    except RunDirError as e:
        raise _Fail(str(e)) from None
    name = cfg.input or "<stdin>"
    try:
        source = open(cfg.input, "rb") if cfg.input else sys.stdin.buffer  # noqa: SIM115
    except OSError as e:
        raise _Fail(f"{cfg.input}: cannot read ({e.strerror})") from None
    out_path = Path(cfg.output) if cfg.output else None
    tmp = out_path.with_name(out_path.name + ".part") if out_path else None
    sink = open(tmp, "w", encoding="utf-8", newline="\n") if tmp else sys.stdout  # noqa: SIM115
    n_best, line_no, written = cfg.search.n_best, 0, 0
    try:
        for chunk in read_chunks(source, cfg.buffer_lines):
            texts = []
            for raw in chunk:
                line_no += 1
                try:
                    texts.append(raw.removesuffix(b"\r").decode("utf-8"))
                except UnicodeDecodeError as e:
                    message = f"{name}:{line_no}: invalid UTF-8 at byte {e.start} of the line"
                    if cfg.strict:
                        raise _Fail(message) from None
                    print(f"warning: {message}; writing an empty line", file=sys.stderr)
                    texts.append("")
            first = line_no - len(chunk) + 1
            for offset, result in enumerate(translator.translate_full(texts)):
                if result.truncated:
                    print(f"warning: {name}:{first + offset}: longer than {cfg.max_src_len} "
                          "pieces; translated its beginning only", file=sys.stderr)  # fmt: skip
                if n_best == 1:
                    sink.write(result.texts[0] + "\n")
                else:
                    for text, hyp in zip(result.texts, result.hyps, strict=True):
                        sink.write(f"{text}\t{hyp.score:.4f}\n")
                written += 1
            sink.flush()
    finally:
        if cfg.input:
            source.close()
        if tmp:
            sink.close()
    if written != line_no:  # cannot happen by construction; never hand over a misaligned file
        raise _Fail(f"{name}: read {line_no} lines but wrote {written}")
    if out_path:
        os.replace(tmp, out_path)
        log.info("wrote %d lines to %s", written, out_path)


def eval_task(cfg: DictConfig) -> dict:
    """Score a split: translate it with the run's model, or score given hypothesis files."""
    run_dir = Path(cfg.run_dir)
    corpus, report = data.load_corpus(run_dir)
    if cfg.split not in corpus:
        raise _Fail(
            f"split {cfg.split!r} is not in {run_dir / data.ARTIFACT} (has {', '.join(corpus)})"
        )
    refs = [r[report["tgt"]] for r in corpus[cfg.split]["translation"]]
    if cfg.hyps:
        repeated = sorted({p for p in cfg.hyps if list(cfg.hyps).count(p) > 1})
        if repeated:
            raise _Fail(f"hyps names {', '.join(repeated)} more than once; compare different files")
        systems = {}
        for path in cfg.hyps:
            hyps = data.read_lines(path)
            if len(hyps) != len(refs):
                raise _Fail(
                    f"{path}: {len(hyps)} lines but split {cfg.split} has {len(refs)} references"
                )
            systems[path] = hyps
        results = {
            path: evaluate.score(h, refs, ter=True, lowercase=True) for path, h in systems.items()
        }
        for path, scores in results.items():
            print(_summary(path, cfg.split, scores))
        if len(systems) > 1:
            paired = evaluate.paired_bootstrap(systems, refs, samples=cfg.bootstrap_samples)
            baseline = cfg.hyps[0]
            for path in cfg.hyps[1:]:
                r = paired[path]
                print(f"{path} vs {baseline}: BLEU {r['bleu']:.2f} (p = {r['bleu_p']:.4f}), "
                      f"chrF {r['chrf']:.2f} (p = {r['chrf_p']:.4f}) | paired bootstrap, "
                      f"{cfg.bootstrap_samples} samples")  # fmt: skip
            results["paired_bootstrap"] = paired
        write_json(run_dir / "eval" / f"{cfg.split}-files" / "scores.json", results)
        return results
    try:
        translator = _translator(cfg)
    except RunDirError as e:
        raise _Fail(str(e)) from None
    return _eval_split(translator, corpus, cfg.split, run_dir, cfg.checkpoint, cfg.search,
                       attention_plots=cfg.attention_plots)  # fmt: skip


def _eval_split(translator: Translator, corpus, split: str, run_dir: Path, checkpoint: str,
                search_cfg: DictConfig, attention_plots: int) -> dict:  # fmt: skip
    """Translate a split, score it, write eval/<split>-<checkpoint>-<search>/{hyps.txt,scores.json}."""
    if split not in corpus:
        raise _Fail(
            f"split {split!r} is not in {run_dir / data.ARTIFACT} (has {', '.join(corpus)})"
        )
    report = data.read_report(run_dir / data.ARTIFACT)
    src_lang, tgt_lang = report["src"], report["tgt"]
    rows = corpus[split]["translation"]
    sources, refs = [r[src_lang] for r in rows], [r[tgt_lang] for r in rows]
    start = time.perf_counter()
    results = translator.translate_full(sources)
    seconds = time.perf_counter() - start
    hyps = [r.texts[0] for r in results]
    scores = evaluate.score(hyps, refs, ter=True, lowercase=True)
    out_dir = run_dir / "eval" / f"{split}-{checkpoint}-{search_cfg.name}"
    write_text(out_dir / "hyps.txt", "".join(h + "\n" for h in hyps))
    scores.update(
        split=split, src=src_lang, tgt=tgt_lang, checkpoint=checkpoint,
        search=OmegaConf.to_container(search_cfg), seconds=round(seconds, 2),
        sentences_per_s=round(len(hyps) / seconds, 1),
        generated_tokens_per_s=round(sum(len(r.hyps[0].tokens) + 1 for r in results) / seconds, 1),
    )  # fmt: skip
    write_json(out_dir / "scores.json", scores)
    for i, result in enumerate(results[:attention_plots]):
        hyp = result.hyps[0]
        if hyp.attn is not None:
            plot_attention(hyp.attn, result.src_pieces, translator.target_pieces(hyp),
                           out_dir / "attention" / f"{i:04d}.png", title=result.texts[0][:80])  # fmt: skip
    print(_summary(f"{run_dir.name} {search_cfg.name}", split, scores))
    log.info("wrote %s (%.1f s, %.1f sentences/s)", out_dir, seconds, len(hyps) / seconds)
    return scores


def _summary(name: str, split: str, s: dict) -> str:
    return (f"{name} {split}: BLEU {s['bleu']:.2f} chrF {s['chrf']:.2f} TER {s['ter']:.2f} "
            f"(BLEU lowercased {s['bleu_lc']:.2f}) | {s['bleu_signature']}")  # fmt: skip


def _one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _check_overrides(config_name: str, args: list[str]) -> None:
    """Compose once up front so a bad override fails with one line instead of Hydra's page."""
    if any(a.startswith("-") for a in args) or any("MULTIRUN" in a for a in args):
        return  # --help, --cfg, -m ...: Hydra's own handling
    overrides = [a for a in args if not a.lstrip("+~").startswith("hydra")]
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        # Sweeps (model=gru,lstm) are checked by Hydra itself, against the presets' hydra.mode.
        parsed = OverridesParser.create().parse_overrides(overrides)
        overrides = [o.input_line for o in parsed if not o.is_sweep_override()]
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
        except (data.DataError, _Fail, RunDirError) as e:
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


def translate_main() -> None:
    _entry(translate_task, "translate")


def eval_main() -> None:
    _entry(eval_task, "eval")
