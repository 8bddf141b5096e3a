from __future__ import annotations

import pytest
from conftest import MULTI30K, multi30k_lines
from test_prepare import prepare

from nmt.data.prepare import load_corpus
from nmt.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Tokenizer,
    load_encoded,
    prepare_tokenizer,
    train_spm,
)

OPTIONS = dict(
    vocab_size=1000,
    model_type="unigram",
    character_coverage=1.0,
    byte_fallback=True,
    normalization_rule_name="identity",
    input_sentence_size=0,
    num_threads=2,
    seed=1,
)


@pytest.fixture(scope="session")  # built once per worker, however the tests interleave
def run_dir(corpus_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spm")
    prepare(corpus_dir, tmp)
    prepare_tokenizer(joint=True, **OPTIONS, cache_dir=tmp / "cache", run_dir=tmp / "run")
    return tmp / "run"


def test_roundtrip_every_training_sentence(run_dir):
    tok = Tokenizer.from_dir(run_dir, "en", "de")
    corpus, _ = load_corpus(run_dir)
    for lang in ("en", "de"):
        texts = [row[lang] for row in corpus["train"]["translation"]]
        ids = tok.encode_src(texts)
        assert tok.decode_tgt(ids) == texts


def test_no_multi30k_character_is_unk(run_dir):
    # Every character of every Multi30k file, in any language, even ones the model never saw.
    chars = set()
    for path in sorted(MULTI30K.glob("*.gz")):
        split, lang = path.name.split(".")[:2]
        for line in multi30k_lines(split, lang):
            chars.update(line)
    tok = Tokenizer.from_dir(run_dir, "en", "de")
    assert len(chars) > 100
    unk = [c for c in sorted(chars) if UNK_ID in tok.encode_src([c])[0]]
    assert unk == []


def test_special_ids_fixed_and_not_injectable(run_dir):
    tok = Tokenizer.from_dir(run_dir, "en", "de")
    assert (tok.src.pad_id(), tok.src.unk_id(), tok.src.bos_id(), tok.src.eos_id()) == (0, 1, 2, 3)
    ids = tok.encode_src(["<s> </s> <pad> <unk> a dog"])[0]
    assert not {PAD_ID, BOS_ID, EOS_ID, UNK_ID} & set(ids)
    assert tok.decode_tgt([ids]) == ["<s> </s> <pad> <unk> a dog"]


def test_encoded_splits_match_text(run_dir):
    tok = Tokenizer.from_dir(run_dir, "en", "de")
    encoded = load_encoded(run_dir)
    assert set(encoded) == {"train", "val", "test_2016_flickr"}
    row = encoded["val"][3]
    assert tok.decode_tgt([row["src_ids"], row["tgt_ids"]]) == [
        row["translation"]["en"],
        row["translation"]["de"],
    ]


def test_report_counts_and_cache(run_dir, corpus_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spm2")
    prepare(corpus_dir, tmp)
    report = prepare_tokenizer(joint=True, **OPTIONS, cache_dir=tmp / "cache", run_dir=tmp / "run")
    prepare(corpus_dir, tmp, out_dir=tmp / "run2")
    again = prepare_tokenizer(joint=True, **OPTIONS, cache_dir=tmp / "cache", run_dir=tmp / "run2")
    assert not report["cached"] and again["cached"]
    train = report["splits"]["train"]
    assert train["sentences"] == 600 and train["src_unk"] == 0
    assert train["src_roundtrip_errors"] == 0 and train["tgt_roundtrip_errors"] == 0
    assert 0 < report["src_vocab_size"] <= 1000
    assert (tmp / "run2" / "spm.model").is_file()
    # Another vocabulary size, or other data, is another cache entry, never the one above.
    prepare(corpus_dir, tmp, out_dir=tmp / "run3")
    smaller = {**OPTIONS, "vocab_size": 500}
    other = prepare_tokenizer(joint=True, **smaller, cache_dir=tmp / "cache", run_dir=tmp / "run3")
    assert not other["cached"] and other["src_vocab_size"] == 500
    prepare(corpus_dir, tmp, out_dir=tmp / "run4", max_len=10)
    shorter = prepare_tokenizer(
        joint=True, **OPTIONS, cache_dir=tmp / "cache", run_dir=tmp / "run4"
    )
    assert not shorter["cached"]


def model_type(path) -> str:
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)


def test_separate_bpe_vocabularies(corpus_dir, tmp_path):
    """tokenizer=separate8k with BPE: one BPE model per language, each trained on its side."""
    prepare(corpus_dir, tmp_path)
    options = {**OPTIONS, "model_type": "bpe", "vocab_size": 600}
    report = prepare_tokenizer(
        joint=False, **options, cache_dir=tmp_path / "cache", run_dir=tmp_path / "run"
    )
    run = tmp_path / "run"
    assert not (run / "spm.model").exists() and report["model_type"] == "bpe"
    assert model_type(run / "spm.en.model") == model_type(run / "spm.de.model") == "BPE"
    tok = Tokenizer.from_dir(run, "en", "de")
    assert not tok.joint
    en, de = tok.src.id_to_piece, tok.tgt.id_to_piece
    en_pieces = {en(i) for i in range(tok.src_vocab_size)}
    de_pieces = {de(i) for i in range(tok.tgt_vocab_size)}
    assert "▁und" in de_pieces and "▁und" not in en_pieces
    assert "▁the" in en_pieces and "▁the" not in de_pieces
    assert tok.encode_src(["the dog"]) != tok.encode_tgt(["the dog"])
    # The joint model of the same settings is a different, single file.
    prepare(corpus_dir, tmp_path, out_dir=tmp_path / "j")
    prepare_tokenizer(joint=True, **options, cache_dir=tmp_path / "cache", run_dir=tmp_path / "j")
    assert model_type(tmp_path / "j" / "spm.model") == "BPE"


def test_unigram_is_the_default_model_type(run_dir):
    assert model_type(run_dir / "spm.model") == "UNIGRAM"


def test_train_spm_is_deterministic():
    text = multi30k_lines("train", "en", 300)
    assert train_spm(text, **{**OPTIONS, "vocab_size": 400}) == train_spm(
        text, **{**OPTIONS, "vocab_size": 400}
    )
