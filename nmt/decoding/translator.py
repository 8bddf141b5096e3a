"""The decoding floor's ``Translator``: a model, its tokenizer and its search, strings in and
translations out. It is built complete by ``nmt.loader`` (``Translator.from_run_dir`` and
``from_file`` of ``nmt.translate`` call it); it loads nothing itself.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import overload

import torch
from torch import nn

from nmt.core.runtime import autocast
from nmt.core.search_options import SearchOptions
from nmt.data.tokenizer import Tokenizer
from nmt.decoding.decode import decode_corpus
from nmt.decoding.gates import GatesRefused, GateTrace, trace
from nmt.decoding.search import Decodable, Hypothesis, Stop
from nmt.model.ensemble import Ensemble
from nmt.model.seq2seq import Seq2Seq


@dataclass
class Translation:
    """One input's result: n-best hypotheses (text and score), the source's pieces and ids (as
    decoded: truncated to ``max_src_len``)."""

    texts: list[str]
    hyps: list[Hypothesis]
    src_pieces: list[str]
    truncated: bool = False
    src_ids: list[int] = field(default_factory=list)
    gates: GateTrace | None = None  # Translator.gates of the best hypothesis, when asked


def single_line(text: str) -> str:
    """A translation as one line: byte-fallback pieces can decode to a newline or CR, which would
    split one output into two lines of a file (and misalign it with its source)."""
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


class Translator:
    """A loaded model, its tokenizer and search settings; translate lists of strings."""

    def __init__(
        self,
        *,
        model: Seq2Seq | Ensemble | Decodable,
        tokenizer: Tokenizer,
        device: torch.device,
        search: SearchOptions,
        max_sentences: int,
        max_tokens: int,
        max_src_len: int,
        precision: torch.dtype,
        src_lang: str = "",
        tgt_lang: str = "",
        sources: list[dict] | None = None,
        backend: tuple[str, str],
        parameters: int | None = None,
        manifest: dict | None = None,
        keep: tuple[tempfile.TemporaryDirectory, ...] = (),
    ):
        """``parameters``: the model's size (an onnxruntime model's: that of the PyTorch model it
        was exported from; None: counted here). ``sources``: per model (one, or each member of an
        ensemble) its run directory, checkpoint and the training steps of its weights, for the
        records of results. ``backend``: (backend, quantize) it decodes with. ``manifest``: a
        model file's. ``keep``: temporary directories the model reads from (a file unpacked,
        graphs exported for it), removed by :meth:`close`."""
        self.model = model.to(device).eval() if isinstance(model, nn.Module) else model
        if parameters is None:
            parameters = (
                sum(p.numel() for p in model.parameters()) if isinstance(model, nn.Module) else 0
            )
        self.parameters = parameters
        self.sources = sources or []
        self.manifest, self.backend, self._keep = manifest, backend, keep
        self.precision = precision
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.tokenizer, self.device = tokenizer, device
        self.search = search
        self.max_sentences, self.max_tokens, self.max_src_len = (
            max_sentences,
            max_tokens,
            max_src_len,
        )

    def close(self) -> None:
        """Remove the temporary directories this translator reads from (a model file unpacked,
        graphs exported on loading); also done when it is collected or the interpreter exits."""
        for kept in self._keep:
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
        (``nmt.decoding.search.Cancelled`` when it answers true); ``done``: told how many lines each batch
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
                Translation(
                    texts=texts_i, hyps=hyps, src_pieces=pieces, truncated=truncated[i], src_ids=x
                )
            )
        return out

    @overload
    def translate(self, texts: str, *, search: SearchOptions | None = None) -> str: ...
    @overload
    def translate(self, texts: list[str], *, search: SearchOptions | None = None) -> list[str]: ...

    def translate(
        self, texts: str | list[str], *, search: SearchOptions | None = None
    ) -> str | list[str]:
        """The best translation of each text, one output per input, in order (one string in,
        one string out); ``search``: these settings instead of the translator's own."""
        if isinstance(texts, str):
            return self.translate([texts], search=search)[0]
        return [t.texts[0] if t.texts else "" for t in self.translate_full(texts, search=search)]

    def target_pieces(self, hyp: Hypothesis) -> list[str]:
        return self.tokenizer.tgt.id_to_piece(hyp.tokens) + ["</s>"]

    def gates_refusal(self) -> str | None:
        """Why this translator cannot show its gates (one line), or None when it can."""
        backend = self.backend[0]
        if backend != "torch":
            return (
                f"gates: this model decodes with backend={backend}, whose graphs output no gates; "
                "load it with backend=torch to see them"
            )
        if isinstance(self.model, Ensemble):
            return (
                f"gates: an ensemble of {len(self.model.models)} models has no one set of gates; "
                "load one model to see them"
            )
        return None

    def gates(self, result: Translation) -> GateTrace | None:
        """What each gate did on ``result``'s best hypothesis (``nmt.decoding.gates``), in the
        decoding's precision; None for an empty input. :class:`GatesRefused` with
        :meth:`gates_refusal`'s line for a model whose gates cannot be traced."""
        refusal = self.gates_refusal()
        if refusal is not None:
            raise GatesRefused(refusal)
        if not result.src_ids or not result.hyps:
            return None
        hyp = result.hyps[0]
        with autocast(self.device, self.precision):
            return trace(
                self.model,
                result.src_ids,
                hyp.tokens,
                device=self.device,
                source=result.src_pieces + ["</s>"],
                target=self.target_pieces(hyp),
            )
