"""Loading a model to translate with: a run directory, a one-file bundle or an exported
directory → the model (PyTorch, an ensemble, or onnxruntime's graphs), its tokenizer, its
settings and its backend, as a complete :class:`nmt.decoding.translator.Translator`.

The one place that turns where a model is into a model. ``load`` takes plain arguments;
``from_config`` reads them from a composed ``translate``/``eval``/``tune_search`` config (the
commands') or conf/translate.yaml with a Python caller's changes (``nmt.translate``). ONNX graphs
are made here, once, when the translator is built: kept in the run directory's cache for a run
directory, in a temporary directory the translator owns for a file; never while translating.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import TypeVar

import torch
from omegaconf import DictConfig
from torch import nn

from nmt.core.compose import compose
from nmt.core.runtime import pick_device, pick_precision
from nmt.core.search_options import SearchOptions
from nmt.decoding.translator import Translator
from nmt.model.ensemble import Ensemble
from nmt.model.restore import RestoredModel, RunDirError, restore
from nmt.serving.bundle import extract, read_export_dir
from nmt.serving.onnx_export import refusal
from nmt.serving.ort import check_backend, onnx_model, resolve_backend

T = TypeVar("T", bound=Translator)


def load(
    *,
    run_dir: str | os.PathLike | None = None,
    model_file: str | os.PathLike | None = None,
    checkpoint: str,
    device: str,
    precision: str,
    backend: str,
    quantize: str,
    search: SearchOptions,
    max_sentences: int,
    max_tokens: int,
    max_src_len: int,
    ensemble: list[str] | tuple[str, ...] | None = None,
    cls: type[T] = Translator,
) -> T:
    """The translator of one model: ``run_dir`` a run directory, or ``model_file`` a file or
    directory written by ``nmt-export``; ``ensemble`` more run directories decoding with it."""
    check_backend(backend, quantize, ensemble=bool(ensemble))
    keep: list[tempfile.TemporaryDirectory] = []
    manifest = None
    if model_file:
        if run_dir:
            raise RunDirError(f"run_dir={run_dir} and model={model_file}: name one model")
        if Path(model_file).is_dir():  # nmt-export format=onnx: the files, unpacked
            manifest = read_export_dir(model_file)
            run_dir = model_file
        else:
            # The file unpacked and checked (nmt.serving.bundle) into a directory that lives as long as
            # the translator; the model loads from there, so search=tuned reads its own choice.
            unpacked = tempfile.TemporaryDirectory(prefix="nmt-model-")
            keep.append(unpacked)
            manifest = extract(model_file, unpacked.name)
            run_dir = unpacked.name
    elif not run_dir:
        raise RunDirError("no model: name a run directory (run_dir=runs/X) or a file (model=FILE)")
    loaded = restore(run_dir, checkpoint)
    if model_file and not Path(model_file).is_dir():
        loaded.source = {**loaded.source, "run_dir": None, "model": str(model_file)}
    model, sources = _with_ensemble(loaded, run_dir, checkpoint, ensemble)
    chosen = pick_device(device)
    dtype = pick_precision(precision, chosen)
    decided = resolve_backend(
        backend, quantize, device=chosen, ensemble=bool(ensemble),
        refused=None if ensemble else refusal(model),
    )  # fmt: skip
    parameters = sum(p.numel() for p in model.parameters())
    if decided[0] == "onnxruntime":  # a run directory keeps its graphs; a file's are temporary
        model, exported = onnx_model(
            model, Path(run_dir), checkpoint, keep=not model_file, quantize=decided[1]
        )
        if exported is not None:
            keep.append(exported)
        dtype = torch.float32  # the graphs compute in fp32 (int8 products inside)
    return cls(
        model=model,
        tokenizer=loaded.tokenizer,
        device=chosen,
        precision=dtype,
        search=search,
        max_sentences=max_sentences,
        max_tokens=max_tokens,
        max_src_len=max_src_len,
        src_lang=loaded.src,
        tgt_lang=loaded.tgt,
        sources=sources,
        parameters=parameters,
        backend=decided,
        manifest=manifest,
        keep=tuple(keep),
    )


def _with_ensemble(
    loaded: RestoredModel, run_dir, checkpoint: str, others
) -> tuple[nn.Module, list[dict]]:
    """The restored model alone, or with the models of ``others`` as one ensemble; each member
    must share its vocabulary and language pair."""
    if not others:
        return loaded.model, [loaded.source]
    members, sources = [loaded.model], [loaded.source]
    for other in others:
        more = restore(other, checkpoint)
        if more.tokenizer.sha256() != loaded.tokenizer.sha256():
            raise RunDirError(
                f"{other}: its SentencePiece model is not {run_dir}'s; the models of an "
                "ensemble must share one vocabulary"
            )
        if (more.src, more.tgt) != (loaded.src, loaded.tgt):
            raise RunDirError(
                f"{other}: translates {more.src}->{more.tgt}, {run_dir} {loaded.src}->{loaded.tgt}"
            )
        members.append(more.model)
        sources.append(more.source)
    return Ensemble(members), sources


def from_config(
    cfg: DictConfig,
    *,
    run_dir: str | os.PathLike | None = None,
    checkpoint: str | None = None,
    search: SearchOptions | None = None,
    cls: type[T] = Translator,
) -> T:
    """The translator a composed ``translate``/``eval``/``tune_search`` config describes:
    ``run_dir=`` a run directory, or ``model=`` a file exported from one. ``run_dir``,
    ``checkpoint``, ``search``: these instead of the config's."""
    search = search or SearchOptions.from_config(cfg.search)  # checked before the model loads
    return load(
        run_dir=run_dir or cfg.run_dir or None,
        model_file=cfg.get("model_file") or None,
        checkpoint=checkpoint or cfg.checkpoint,
        device=cfg.device,
        precision=cfg.precision,
        backend=cfg.backend,
        quantize=cfg.quantize,
        search=search,
        max_sentences=cfg.search.max_sentences,
        max_tokens=cfg.max_tokens,
        max_src_len=cfg.max_src_len,
        ensemble=tuple(str(e) for e in cfg.ensemble or ()),
        cls=cls,
    )


def compared(cfg: DictConfig) -> dict[str, Translator]:
    """The models ``nmt-serve`` shows side by side, by name: the config's own (``run_dir=`` or
    ``model=``), then each of ``compare`` (a run directory, or a file or directory
    ``nmt-export`` wrote), every one with the config's other settings. A name is the place's last
    part (``runs/gru`` -> ``gru``), numbered where two are the same."""
    places = [cfg.get("model_file") or cfg.run_dir, *(str(p) for p in cfg.compare or ())]
    missing = [place for place in places[1:] if not Path(place).exists()]
    if missing:  # before any model loads
        raise RunDirError(
            f"compare=[{','.join(places[1:])}]: {missing[0]} does not exist (name a run "
            "directory, or a file or directory nmt-export wrote)"
        )
    models: dict[str, Translator] = {}
    try:
        for i, place in enumerate(places):
            one = copy.deepcopy(cfg)
            if i > 0:  # a run directory has its config; anything else nmt-export wrote
                is_run = (Path(place) / "config.yaml").is_file()
                one.run_dir, one.model_file = (place, None) if is_run else (None, place)
                one.ensemble = []
            translator = from_config(one)
            name = Path(str(place)).name or str(place)
            if name in models:
                name = f"{name} ({i + 1})"
            models[name] = translator
    except BaseException:
        for translator in models.values():
            translator.close()
        raise
    return models


def translate_config(search, given: dict) -> tuple[DictConfig, SearchOptions | None]:
    """conf/translate.yaml with a Python caller's arguments (None: the YAML's value); ``search``
    a preset's name, a dict of the group's keys over the default preset, or SearchOptions."""
    cfg = compose("translate", [f"search={search}"] if isinstance(search, str) else [])
    keys = ("checkpoint", "device", "precision", "ensemble", "max_tokens", "max_src_len")
    keys += ("backend", "quantize")
    for key in keys:
        value = given.get(key)
        if value is not None:
            # checked against the schema's type
            cfg[key] = [str(e) for e in value] if key == "ensemble" else value
    if isinstance(search, dict):
        return cfg, SearchOptions.from_config(cfg.search).replace(**search)
    return cfg, search if isinstance(search, SearchOptions) else None
