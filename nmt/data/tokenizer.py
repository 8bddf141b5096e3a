"""Tokenizer stage: SentencePiece trained on the training split, then every split encoded to ids.

Special ids are fixed (pad 0, unk 1, bos 2, eos 3) and pad/bos/eos are SentencePiece control
symbols, so no input text can produce them: they are only ever inserted by code. Identity
normalisation with byte fallback makes ``decode(encode(text)) == text`` and keeps every character
out of ``<unk>``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded where a dataset is built or read: it costs a second at every start
    import datasets

import sentencepiece as spm

from nmt.core.errors import first_line
from nmt.core.rundir import building_dir, cache_lock, copy_dir, copy_file, write_json
from nmt.core.specials import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from nmt.data.columns import Split, read_splits
from nmt.data.prepare import ARTIFACT as DATA_ARTIFACT
from nmt.data.prepare import DataError, load_corpus, read_report

log = logging.getLogger(__name__)

ARTIFACT = "encoded"  # run_dir/encoded: a saved DatasetDict with src_ids/tgt_ids + report.json


def train_spm(
    sentences: Iterable[str],
    *,
    vocab_size: int,
    model_type: str,
    character_coverage: float,
    byte_fallback: bool,
    normalization_rule_name: str,
    input_sentence_size: int,
    num_threads: int,
    seed: int,
) -> bytes:
    """Train a SentencePiece model from an iterator of sentences; return the serialized model."""
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        byte_fallback=byte_fallback,
        normalization_rule_name=normalization_rule_name,
        remove_extra_whitespaces=False,
        input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True,
        num_threads=num_threads,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_piece="<pad>",
        unk_piece="<unk>",
        bos_piece="<s>",
        eos_piece="</s>",
        # Small corpora (tests, other language pairs) may not support the full size.
        hard_vocab_limit=False,
        max_sentence_length=1 << 16,
        minloglevel=2,
    )
    return model.getvalue()


_PROCESSORS: dict[str, spm.SentencePieceProcessor] = {}


def load_processor(path: str | os.PathLike) -> spm.SentencePieceProcessor:
    """A SentencePiece processor, loaded once per file (by content hash)."""
    blob = Path(path).read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest not in _PROCESSORS:
        try:
            _PROCESSORS[digest] = spm.SentencePieceProcessor(model_proto=blob)
        except Exception as e:  # sentencepiece raises RuntimeError with a C++ trace
            first = first_line(e)
            raise DataError(f"{path}: not a SentencePiece model ({first[:120]})") from None
    return _PROCESSORS[digest]


class Tokenizer:
    """Source and target SentencePiece models (the same one when the vocabulary is joint)."""

    def __init__(self, *, src_model: str | os.PathLike, tgt_model: str | os.PathLike):
        self.src_model, self.tgt_model = Path(src_model), Path(tgt_model)
        self.src = load_processor(self.src_model)
        self.tgt = load_processor(self.tgt_model)
        self.joint = self.src_model == self.tgt_model
        for proc, path in ((self.src, self.src_model), (self.tgt, self.tgt_model)):
            ids = (proc.pad_id(), proc.unk_id(), proc.bos_id(), proc.eos_id())
            if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
                raise DataError(
                    f"{path}: special ids {ids}, expected (0, 1, 2, 3) (pad, unk, bos, eos)"
                )

    @classmethod
    def from_dir(cls, run_dir: str | os.PathLike, src: str, tgt: str) -> Tokenizer:
        """The tokenizer stage's models in a run directory."""
        run_dir = Path(run_dir)
        joint = run_dir / "spm.model"
        if joint.is_file():
            return cls(src_model=joint, tgt_model=joint)
        src_model, tgt_model = run_dir / f"spm.{src}.model", run_dir / f"spm.{tgt}.model"
        for path in (src_model, tgt_model):
            if not path.is_file():
                raise DataError(
                    f"{path}: no SentencePiece model; run the spm stage first (make spm)"
                )
        return cls(src_model=src_model, tgt_model=tgt_model)

    @property
    def src_vocab_size(self) -> int:
        return self.src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt.get_piece_size()

    def encode_src(self, texts: list[str]) -> list[list[int]]:
        return self.src.encode(texts)

    def encode_tgt(self, texts: list[str]) -> list[list[int]]:
        return self.tgt.encode(texts)

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        return self.tgt.decode(ids)

    def sha256(self) -> str:
        """One hash for the model files, stored beside checkpoints to catch mismatches."""
        digest = hashlib.sha256(self.src_model.read_bytes())
        if not self.joint:
            digest.update(self.tgt_model.read_bytes())
        return digest.hexdigest()


def _encode_batch(batch: dict, *, src: str, tgt: str, src_model: str, tgt_model: str) -> dict:
    # Only plain strings are captured, so datasets can fingerprint this function deterministically.
    pairs = batch["translation"]
    src_ids = load_processor(src_model).encode([p[src] for p in pairs])
    tgt_ids = load_processor(tgt_model).encode([p[tgt] for p in pairs])
    return {"src_ids": src_ids, "tgt_ids": tgt_ids}


def _texts(ds: datasets.Dataset, lang: str) -> Iterator[str]:
    for row in ds["translation"]:
        yield row[lang]


def prepare_tokenizer(
    *,
    joint: bool,
    model_type: str,
    vocab_size: int,
    character_coverage: float,
    byte_fallback: bool,
    normalization_rule_name: str,
    input_sentence_size: int,
    num_threads: int,
    seed: int,
    cache_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
) -> dict:
    """Train SentencePiece on the run's training split, encode every split; return the report.

    Writes ``spm.model`` (or ``spm.<lang>.model`` per language) and ``encoded/`` into run_dir;
    cached under ``cache_dir/spm/<key>`` keyed by the data key and these settings.
    """
    run_dir = Path(run_dir)
    data_report = read_report(run_dir / DATA_ARTIFACT)
    if data_report is None:
        load_corpus(run_dir)  # its error: no prepared data
    src, tgt = data_report["src"], data_report["tgt"]
    options = dict(
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        byte_fallback=byte_fallback,
        normalization_rule_name=normalization_rule_name,
        input_sentence_size=input_sentence_size,
        num_threads=num_threads,
        seed=seed,
    )
    settings = {"data": data_report["key"], "joint": joint, **options}
    settings.pop("num_threads")
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    cached = Path(cache_dir) / "spm" / key
    model_names = ["spm.model"] if joint else [f"spm.{src}.model", f"spm.{tgt}.model"]

    report = read_report(run_dir / ARTIFACT)
    if report and report["key"] == key and all((run_dir / m).is_file() for m in model_names):
        return {**report, "cached": True}
    # Parallel jobs of a sweep share the cache: one trains the entry, the others wait and copy it.
    with cache_lock(cached):
        report = read_report(cached / ARTIFACT)
        if report and report["key"] == key and all((cached / m).is_file() for m in model_names):
            report["cached"] = True
        else:
            with building_dir(cached) as tmp:
                report = _train_and_encode(
                    load_corpus(run_dir)[0], data_report, tmp, key=key, joint=joint, options=options
                )
            report["cached"] = False
    for name in model_names:
        copy_file(cached / name, run_dir / name)
    copy_dir(cached / ARTIFACT, run_dir / ARTIFACT)
    return report


def _train_and_encode(
    corpus: datasets.DatasetDict,
    data_report: dict,
    out: Path,
    *,
    key: str,
    joint: bool,
    options: dict,
) -> dict:
    """Train the model(s) into out, encode every split into out/encoded; return the report."""
    src, tgt = data_report["src"], data_report["tgt"]
    train = corpus[data_report["train_split"]]
    if joint:
        both = (s for lang in (src, tgt) for s in _texts(train, lang))
        (out / "spm.model").write_bytes(train_spm(both, **options))
        models = {src: out / "spm.model", tgt: out / "spm.model"}
    else:
        models = {}
        for lang in (src, tgt):
            models[lang] = out / f"spm.{lang}.model"
            models[lang].write_bytes(train_spm(_texts(train, lang), **options))
    tokenizer = Tokenizer(src_model=models[src], tgt_model=models[tgt])

    encoded = corpus.map(
        _encode_batch,
        batched=True,
        batch_size=2000,
        fn_kwargs=dict(src=src, tgt=tgt, src_model=str(models[src]), tgt_model=str(models[tgt])),
        desc="encode",
    )
    report = {
        "key": key,
        "joint": joint,
        "model_type": options["model_type"],
        "src_vocab_size": tokenizer.src_vocab_size,
        "tgt_vocab_size": tokenizer.tgt_vocab_size,
        "splits": {},
    }
    for split, ds in encoded.items():
        stats = {"sentences": len(ds)}
        for side, lang in (("src", src), ("tgt", tgt)):
            ids = ds[f"{side}_ids"]
            stats[f"{side}_tokens"] = sum(map(len, ids))
            stats[f"{side}_unk"] = sum(seq.count(UNK_ID) for seq in ids)
            proc = tokenizer.src if side == "src" else tokenizer.tgt
            stats[f"{side}_roundtrip_errors"] = sum(
                text != back for text, back in zip(_texts(ds, lang), proc.decode(ids), strict=True)
            )
        report["splits"][split] = stats
    encoded.save_to_disk(str(out / ARTIFACT))
    write_json(out / ARTIFACT / "report.json", report)
    return report


def load_encoded(run_dir: str | os.PathLike) -> dict[str, Split]:
    """The tokenizer stage's encoded splits in a run directory, in memory (without importing
    ``datasets``: a training process does not keep its ~100 MiB; ``nmt.data.columns``)."""
    place = Path(run_dir) / ARTIFACT
    if not (place / "report.json").is_file():
        raise DataError(f"{place}: no encoded data; run the spm stage first (make spm)")
    return read_splits(place)


def format_report(report: dict) -> str:
    """Human-readable summary of the tokenizer stage."""
    kind = "joint" if report["joint"] else "separate"
    sizes = (
        f"{report['src_vocab_size']}"
        if report["joint"]
        else f"{report['src_vocab_size']} / {report['tgt_vocab_size']}"
    )
    lines = [
        f"spm {kind} {report['model_type']} vocabulary {sizes}"
        + (" (cached)" if report.get("cached") else "")
    ]
    for split, s in report["splits"].items():
        lines.append(
            f"  {split}: {s['sentences']} sentences, {s['src_tokens']} src / {s['tgt_tokens']} tgt "
            f"tokens, <unk> {s['src_unk']}/{s['tgt_unk']}, round-trip errors "
            f"{s['src_roundtrip_errors']}/{s['tgt_roundtrip_errors']}"
        )
    return "\n".join(lines)
