"""Translation from a self-contained run directory: ``Translator.from_run_dir(...).translate(...)``.

The run directory supplies everything: ``config.yaml`` (the model's shape and the language pair),
``spm.model`` and ``best/`` or ``last/`` weights. Nothing in it is executed: the config is plain
YAML, the weights are safetensors. A missing or mismatched piece is a :class:`RunDirError`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from nmt.checkpoint import META_FILE, CheckpointError, find_checkpoint, load_weights
from nmt.errors import UserError
from nmt.model import Seq2Seq, build_model
from nmt.runtime import pick_device
from nmt.search import Hypothesis, check_options, decode_corpus
from nmt.tokenizer import Tokenizer

log = logging.getLogger(__name__)

SEARCH_KEYS = ("beam_size", "alpha", "max_len_a", "max_len_b", "min_len", "n_best",
               "coverage_penalty", "no_repeat_ngram")  # fmt: skip


class RunDirError(UserError):
    """The run directory lacks a piece, or its pieces do not belong together."""


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

    def __init__(self, *, model: Seq2Seq, tokenizer: Tokenizer, device: torch.device,
                 search: dict, max_sentences: int, max_tokens: int, max_src_len: int):  # fmt: skip
        self.model = model.to(device).eval()
        self.tokenizer, self.device = tokenizer, device
        unknown = set(search) - set(SEARCH_KEYS)
        if unknown:
            raise ValueError(f"unknown search options {sorted(unknown)}")
        self.search = search
        self.max_sentences, self.max_tokens, self.max_src_len = (
            max_sentences,
            max_tokens,
            max_src_len,
        )

    @classmethod
    def from_run_dir(cls, run_dir: str | os.PathLike, *, checkpoint: str = "best",
                     device: str = "auto", search: dict | None = None, max_sentences: int = 64,
                     max_tokens: int = 4000, max_src_len: int = 250) -> Translator:  # fmt: skip
        """Load config, tokenizer and weights from a run directory (``checkpoint``: best | last).

        ``search`` overrides the run's own search settings (keys of the ``search`` group).
        """
        run_dir = Path(run_dir)
        config_path = run_dir / "config.yaml"
        if not config_path.is_file():
            raise RunDirError(f"{config_path}: missing; is {run_dir} a training run directory?")
        cfg = OmegaConf.load(config_path)
        try:
            model_args = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "name"}
            src, tgt = cfg.data.src, cfg.data.tgt
            run_search = {k: cfg.search[k] for k in SEARCH_KEYS}
        except Exception as e:
            raise RunDirError(f"{config_path}: not an nmt run config ({e})") from None
        try:
            tok = Tokenizer.from_dir(run_dir, src, tgt)
        except ValueError as e:
            raise RunDirError(str(e)) from None
        if checkpoint not in ("best", "last"):
            raise RunDirError(f"checkpoint={checkpoint!r}: expected best or last")
        place = find_checkpoint(run_dir / checkpoint)
        if place is None:
            raise RunDirError(f"{run_dir / checkpoint}: no checkpoint; has the run trained yet?")
        meta = json.loads((place / META_FILE).read_text())
        if meta.get("spm_sha256") not in (None, tok.sha256()):
            raise RunDirError(
                f"{run_dir}: the SentencePiece model is not the one {place.name}/ was trained with"
            )
        model = build_model(**model_args, src_vocab_size=tok.src_vocab_size,
                            tgt_vocab_size=tok.tgt_vocab_size, joint_vocab=tok.joint)  # fmt: skip
        try:
            load_weights(model, place)
        except CheckpointError as e:
            raise RunDirError(str(e)) from None
        log.info(
            "loaded %s (step %s, %s %s->%s)", place, meta.get("step"), meta.get("cell"), src, tgt
        )
        search = {**run_search, **(search or {})}
        check_options(**search)
        return cls(model=model, tokenizer=tok, device=pick_device(device),
                   search=search, max_sentences=max_sentences,
                   max_tokens=max_tokens, max_src_len=max_src_len)  # fmt: skip

    def translate_full(self, texts: list[str]) -> list[Translation]:
        """Translate with everything kept: n-best, scores, attention, pieces. Empty in, empty out."""
        ids = self.tokenizer.encode_src(texts)
        truncated = [len(x) > self.max_src_len for x in ids]
        ids = [x[: self.max_src_len] for x in ids]
        todo = [i for i, x in enumerate(ids) if x]
        found = decode_corpus(
            self.model, [ids[i] for i in todo], device=self.device,
            max_sentences=self.max_sentences, max_tokens=self.max_tokens, **self.search,
        )  # fmt: skip
        n_best = self.search["n_best"]
        empty = [Hypothesis(tokens=[], log_prob=0.0, score=0.0)] * n_best
        hyps_of = dict(zip(todo, found, strict=True))
        out = []
        for i, x in enumerate(ids):
            hyps = hyps_of.get(i, empty)
            texts_i = [single_line(t) for t in self.tokenizer.decode_tgt([h.tokens for h in hyps])]
            pieces = self.tokenizer.src.id_to_piece(x) if x else []
            out.append(Translation(texts=texts_i, hyps=hyps, src_pieces=pieces,
                                   truncated=truncated[i]))  # fmt: skip
        return out

    def translate(self, texts: list[str]) -> list[str]:
        """The best translation of each text, one output per input, in order."""
        return [t.texts[0] if t.texts else "" for t in self.translate_full(texts)]

    def target_pieces(self, hyp: Hypothesis) -> list[str]:
        return self.tokenizer.tgt.id_to_piece(hyp.tokens) + ["</s>"]
