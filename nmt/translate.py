"""Translation from a self-contained run directory: ``Translator.from_run_dir(...).translate(...)``.

The run directory supplies everything: ``config.yaml`` (the model's shape and the language pair),
``spm.model`` and ``best/`` or ``last/`` weights. Nothing in it is executed: the config is plain
YAML, the weights are safetensors. A missing or mismatched piece is a :class:`RunDirError`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import torch
from omegaconf import DictConfig
from torch import nn

from nmt.bundle import extract, read_export_dir
from nmt.compose import compose
from nmt.decode import decode_corpus
from nmt.ensemble import Ensemble
from nmt.model import Seq2Seq
from nmt.onnx_export import refusal
from nmt.ort import check_backend, onnx_model, resolve_backend
from nmt.restore import RunDirError, restore
from nmt.runtime import autocast, pick_device, pick_precision
from nmt.search import Hypothesis, Stop
from nmt.search_options import SearchOptions
from nmt.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class Translation:
    """One input's result: n-best hypotheses (text and score) and the source/target pieces."""

    texts: list[str]
    hyps: list[Hypothesis]
    src_pieces: list[str]
    truncated: bool = False


def single_line(text: str) -> str:
    """A translation as one line: byte-fallback pieces can decode to a newline or CR, which would
    split one output into two lines of a file (and misalign it with its source)."""
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


class Translator:
    """A loaded model, its tokenizer and search settings; translate lists of strings."""

    def __init__(
        self,
        *,
        model: Seq2Seq | Ensemble,
        tokenizer: Tokenizer,
        device: torch.device,
        search: SearchOptions,
        max_sentences: int,
        max_tokens: int,
        max_src_len: int,
        src_lang: str = "",
        tgt_lang: str = "",
        precision: torch.dtype,
        sources: list[dict] | None = None,
    ):
        self.model = model.to(device).eval()
        # The model's size (an onnxruntime model's: that of the PyTorch model it was exported from).
        self.parameters = (
            sum(p.numel() for p in model.parameters()) if isinstance(model, nn.Module) else 0
        )
        # Per model (one, or each member of an ensemble): run directory, checkpoint and the
        # training steps of its weights (several for an average), for the records of results.
        self.sources = sources or []
        # A model loaded from one file: where it was unpacked (kept while the translator lives),
        # and the file's manifest.
        self.unpacked: tempfile.TemporaryDirectory | None = None
        self.manifest: dict | None = None
        # backend=onnxruntime: where graphs exported at load time live, and (backend, quantize).
        self.exported: tempfile.TemporaryDirectory | None = None
        self.backend = ("torch", "none")
        self.precision = precision
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.tokenizer, self.device = tokenizer, device
        self.search = search
        self.max_sentences, self.max_tokens, self.max_src_len = (
            max_sentences,
            max_tokens,
            max_src_len,
        )

    @classmethod
    def from_run_dir(
        cls,
        run_dir: str | os.PathLike,
        *,
        search: str | dict | SearchOptions | None = None,
        checkpoint: str | None = None,
        device: str | None = None,
        precision: str | None = None,
        ensemble: list[str | os.PathLike] | tuple | None = None,
        max_tokens: int | None = None,
        max_src_len: int | None = None,
        backend: str | None = None,
        quantize: str | None = None,
    ) -> Translator:
        """A run directory's model, decoding exactly as ``nmt-translate run_dir=...`` does: every
        argument left out takes its value from conf/translate.yaml, the command's own config
        (checkpoint best, precision auto, search beam5, ...).

        ``search``: a preset of conf/search/ (``"greedy"``, ``"beam5"``, ``"tuned"``), a dict of
        keys of the ``search`` group over the default preset (``{"beam_size": 12}``), or
        :class:`SearchOptions`. ``checkpoint``: best, last, or avg-last-N / avg-best-N (the mean
        of the N most recent or best kept checkpoints). ``ensemble``: more run directories whose
        models decode together with this one's (``nmt.ensemble``); they must have its
        SentencePiece model and language pair. ``backend``: ``"torch"`` or ``"onnxruntime"`` (the
        model's ONNX graphs, exported as it loads), ``quantize``: ``"int8"`` with onnxruntime.
        """
        cfg, options = cls._settings(search, locals())
        cfg.run_dir = str(run_dir)
        return cls.from_config(cfg, search=options)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        *,
        search: str | dict | SearchOptions | None = None,
        checkpoint: str | None = None,
        device: str | None = None,
        precision: str | None = None,
        ensemble: list[str | os.PathLike] | tuple | None = None,
        max_tokens: int | None = None,
        max_src_len: int | None = None,
        backend: str | None = None,
        quantize: str | None = None,
    ) -> Translator:
        """A model exported by ``nmt-export``: one file (``format=bundle``) or a directory with
        its ONNX graphs (``format=onnx``), decoding as ``nmt-translate model=PATH`` does; the
        settings as in :meth:`from_run_dir` (``"tuned"``: the search tuned for it, which the file
        carries). No run directory or corpus needed."""
        cfg, options = cls._settings(search, locals())
        cfg.model_file = str(path)
        return cls.from_config(cfg, search=options)

    @staticmethod
    def _settings(search, given: dict) -> tuple[DictConfig, SearchOptions | None]:
        """conf/translate.yaml with the arguments given (None: the YAML's value)."""
        cfg = compose("translate", [f"search={search}"] if isinstance(search, str) else [])
        keys = ("checkpoint", "device", "precision", "ensemble", "max_tokens", "max_src_len")
        keys += ("backend", "quantize")
        for key in keys:
            value = given[key]
            if value is not None:
                # checked against the schema's type
                cfg[key] = [str(e) for e in value] if key == "ensemble" else value
        if isinstance(search, dict):
            return cfg, SearchOptions.from_config(cfg.search).replace(**search)
        return cfg, search if isinstance(search, SearchOptions) else None

    @classmethod
    def from_config(
        cls,
        cfg: DictConfig,
        *,
        run_dir: str | os.PathLike | None = None,
        checkpoint: str | None = None,
        search: SearchOptions | None = None,
    ) -> Translator:
        """The translator a composed ``translate``/``eval``/``tune_search`` config describes (the
        commands build theirs here, and so do :meth:`from_run_dir` and :meth:`from_file`):
        ``run_dir=`` a run directory, or ``model=`` a file exported from one."""
        unpacked, manifest = None, None
        check_backend(cfg.backend, cfg.quantize, ensemble=bool(cfg.ensemble))
        if cfg.get("model_file"):
            if cfg.run_dir:
                raise RunDirError(
                    f"run_dir={cfg.run_dir} and model={cfg.model_file}: name one model"
                )
            cfg = cfg.copy()
            if Path(cfg.model_file).is_dir():  # nmt-export format=onnx: the files, unpacked
                manifest = read_export_dir(cfg.model_file)
                cfg.run_dir = cfg.model_file
            else:
                # The file unpacked and checked (nmt.bundle) into a directory that lives as long
                # as the translator; run_dir points there, so search=tuned reads its own choice.
                unpacked = tempfile.TemporaryDirectory(prefix="nmt-model-")
                manifest = extract(cfg.model_file, unpacked.name)
                cfg.run_dir = unpacked.name
        elif not cfg.run_dir:
            raise RunDirError(
                "no model: name a run directory (run_dir=runs/X) or a file (model=FILE)"
            )
        run_dir = run_dir or cfg.run_dir
        checkpoint = checkpoint or cfg.checkpoint
        search = search or SearchOptions.from_config(cfg.search)  # checked before the model loads
        loaded = restore(run_dir, checkpoint)
        if unpacked is not None:
            loaded.source = {**loaded.source, "run_dir": None, "model": str(cfg.model_file)}
        model: nn.Module = loaded.model
        sources = [loaded.source]
        if cfg.ensemble:
            members = [loaded.model]
            for other in cfg.ensemble:
                more = restore(other, checkpoint)
                if more.tokenizer.sha256() != loaded.tokenizer.sha256():
                    raise RunDirError(
                        f"{other}: its SentencePiece model is not {run_dir}'s; the models of an "
                        "ensemble must share one vocabulary"
                    )
                if (more.src, more.tgt) != (loaded.src, loaded.tgt):
                    raise RunDirError(
                        f"{other}: translates {more.src}->{more.tgt}, {run_dir} "
                        f"{loaded.src}->{loaded.tgt}"
                    )
                members.append(more.model)
                sources.append(more.source)
            model = Ensemble(members)
        chosen = pick_device(cfg.device)
        precision = pick_precision(cfg.precision, chosen)
        backend = resolve_backend(
            cfg.backend, cfg.quantize, device=chosen, ensemble=bool(cfg.ensemble),
            refused=None if cfg.ensemble else refusal(model),
        )  # fmt: skip
        exported, parameters = None, sum(p.numel() for p in model.parameters())
        if backend[0] == "onnxruntime":  # a run directory keeps its graphs; a file's are temporary
            from_file = unpacked is not None or bool(cfg.get("model_file"))
            model, exported = onnx_model(
                model, Path(run_dir), checkpoint, keep=not from_file, quantize=backend[1]
            )
            precision = torch.float32  # the graphs compute in fp32 (int8 products inside)
        translator = cls(
            model=model,
            tokenizer=loaded.tokenizer,
            device=chosen,
            precision=precision,
            search=search,
            max_sentences=cfg.search.max_sentences,
            max_tokens=cfg.max_tokens,
            max_src_len=cfg.max_src_len,
            src_lang=loaded.src,
            tgt_lang=loaded.tgt,
            sources=sources,
        )
        translator.unpacked, translator.manifest = unpacked, manifest
        translator.exported, translator.backend = exported, backend
        translator.parameters = parameters
        return translator

    def close(self) -> None:
        """Remove the temporary directories this translator made (a model file unpacked, graphs
        exported on loading); also done when it is collected or the interpreter exits."""
        for kept in (self.unpacked, self.exported):
            if kept is not None:
                kept.cleanup()

    @overload
    def translate_full(
        self, texts: str, *, search: SearchOptions | None = None, stop: Stop | None = None
    ) -> Translation: ...
    @overload
    def translate_full(
        self, texts: list[str], *, search: SearchOptions | None = None, stop: Stop | None = None
    ) -> list[Translation]: ...

    def translate_full(
        self,
        texts: str | list[str],
        *,
        search: SearchOptions | None = None,
        stop: Stop | None = None,
        done: Callable[[int], object] | None = None,
    ) -> Translation | list[Translation]:
        """Translate with everything kept: n-best, scores, attention, pieces. Empty in, empty out;
        one text in, one :class:`Translation` out. ``search``: these settings instead of the
        translator's own (one request's, in the service); ``stop``: asked between decoding steps
        (``nmt.search.Cancelled`` when it answers true); ``done``: told how many lines each batch
        decided (a progress bar's update)."""
        if isinstance(texts, str):
            return self.translate_full([texts], search=search, stop=stop, done=done)[0]
        search = self.search if search is None else search
        ids = self.tokenizer.encode_src(texts)
        truncated = [len(x) > self.max_src_len for x in ids]
        ids = [x[: self.max_src_len] for x in ids]
        todo = [i for i, x in enumerate(ids) if x]
        with autocast(self.device, self.precision):
            found = decode_corpus(
                self.model,
                [ids[i] for i in todo],
                search,
                device=self.device,
                max_sentences=self.max_sentences,
                max_tokens=self.max_tokens,
                stop=stop,
                done=done,
            )
        n_best = search.n_best
        empty = [Hypothesis(tokens=[], log_prob=0.0, score=0.0)] * n_best
        hyps_of = dict(zip(todo, found, strict=True))
        out = []
        for i, x in enumerate(ids):
            hyps = hyps_of.get(i, empty)
            texts_i = [single_line(t) for t in self.tokenizer.decode_tgt([h.tokens for h in hyps])]
            pieces = self.tokenizer.src.id_to_piece(x) if x else []
            out.append(
                Translation(texts=texts_i, hyps=hyps, src_pieces=pieces, truncated=truncated[i])
            )
        return out

    @overload
    def translate(self, texts: str) -> str: ...
    @overload
    def translate(self, texts: list[str]) -> list[str]: ...

    def translate(self, texts: str | list[str]) -> str | list[str]:
        """The best translation of each text, one output per input, in order (one string in,
        one string out)."""
        if isinstance(texts, str):
            return self.translate([texts])[0]
        return [t.texts[0] if t.texts else "" for t in self.translate_full(texts)]

    def target_pieces(self, hyp: Hypothesis) -> list[str]:
        return self.tokenizer.tgt.id_to_piece(hyp.tokens) + ["</s>"]
