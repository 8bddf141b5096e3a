from __future__ import annotations

import gzip
import json

import pytest
from conftest import write_lines

from nmt.data import DataError, clean_pairs, load_corpus, prepare_corpus, read_lines


def prepare(root, tmp_path, **overrides):
    kwargs = dict(
        src="en", tgt="de", source="local", root=str(root), url="http://127.0.0.1:9/none",
        hub_id=None, tsv_columns=None, train_split="train", valid_split="val",
        test_splits=["test_2016_flickr"], max_len=80, max_ratio=3.0, normalize_whitespace=True,
        cache_dir=tmp_path / "cache", out_dir=tmp_path / "run",
    )  # fmt: skip
    kwargs.update(overrides)
    return prepare_corpus(**kwargs)


def tiny(root, split="train", src=("a b", "c d"), tgt=("x y", "z w")):
    write_lines(root / f"{split}.en", list(src))
    write_lines(root / f"{split}.de", list(tgt))


def test_reads_multi30k_slice(corpus_dir, tmp_path):
    report = prepare(corpus_dir, tmp_path)
    corpus, saved = load_corpus(tmp_path / "run")
    assert saved["key"] == report["key"]
    assert report["clean"]["read"] == 600
    assert len(corpus["val"]) == 60 and len(corpus["test_2016_flickr"]) == 40
    assert corpus["val"][0]["translation"]["en"].startswith("A group of men")
    assert set(corpus["train"].features["translation"].languages) == {"en", "de"}


def test_second_run_is_cached(corpus_dir, tmp_path):
    first = prepare(corpus_dir, tmp_path)
    second = prepare(corpus_dir, tmp_path, out_dir=tmp_path / "other_run")
    assert not first["cached"] and second["cached"]
    assert (tmp_path / "other_run" / "data" / "report.json").is_file()


def test_any_direction(corpus_dir, tmp_path):
    report = prepare(corpus_dir, tmp_path, src="fr", tgt="en")
    corpus, _ = load_corpus(tmp_path / "run")
    assert report["src"] == "fr"
    assert set(corpus["train"][0]["translation"]) == {"fr", "en"}


def test_missing_file_names_it(tmp_path):
    tiny(tmp_path / "d")
    with pytest.raises(DataError, match=r"val\.en\[\.gz\]: missing file"):
        prepare(tmp_path / "d", tmp_path, test_splits=[])


def test_one_side_missing(tmp_path):
    tiny(tmp_path / "d")
    tiny(tmp_path / "d", "val")
    (tmp_path / "d" / "val.de").unlink()
    with pytest.raises(DataError, match=r"val\.de\[\.gz\]: missing file"):
        prepare(tmp_path / "d", tmp_path, test_splits=[])


def test_missing_root_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: data directory not found; point data.root"):
        prepare(tmp_path / "nowhere", tmp_path)


def test_mismatched_line_counts(tmp_path):
    tiny(tmp_path / "d", "val")
    write_lines(tmp_path / "d" / "train.en", ["a", "b", "c"])
    write_lines(tmp_path / "d" / "train.de", ["x", "y"])
    with pytest.raises(DataError, match=r"train\.en: 3 lines but .*train\.de has 2"):
        prepare(tmp_path / "d", tmp_path, test_splits=[])


def test_invalid_utf8_names_line_and_byte(tmp_path):
    path = tmp_path / "bad.de"
    path.write_bytes(b"gut\nauch gut\nschl\xc3cht\n")
    with pytest.raises(
        DataError, match=r"bad\.de:3: invalid UTF-8 at byte 17 of the file \(byte 4 of the line\)"
    ):
        read_lines(path)


def test_invalid_utf8_in_gzip(tmp_path):
    path = tmp_path / "bad.de.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"ok\n\xff\n")
    with pytest.raises(DataError, match=r"bad\.de\.gz:2: invalid UTF-8"):
        read_lines(path)


def test_empty_corpus(tmp_path):
    tiny(tmp_path / "d", "val")
    (tmp_path / "d" / "train.en").write_text("")
    (tmp_path / "d" / "train.de").write_text("")
    with pytest.raises(DataError, match=r"train\.en: empty corpus"):
        prepare(tmp_path / "d", tmp_path, test_splits=[])


def test_lines_split_on_newline_only(tmp_path):
    path = tmp_path / "odd.en"
    path.write_bytes("a\rb\nc\u2028d\x0ce\nlast-no-newline".encode())
    assert read_lines(path) == ["a\rb", "c\u2028d\x0ce", "last-no-newline"]
    path.write_bytes(b"crlf\r\nfile\r\n")
    assert read_lines(path) == ["crlf", "file"]


def test_cleaning_counts_each_reason():
    pairs = [
        ("a  dog", "ein\tHund"),  # whitespace normalized, kept
        ("", "leer"),  # empty
        ("w " * 81, "w"),  # too long
        ("one two three four", "eins"),  # ratio 4 > 3
        ("fine", "gut"),
    ]
    kept, report = clean_pairs(pairs, max_len=80, max_ratio=3.0, normalize_whitespace=True)
    assert kept == [("a dog", "ein Hund"), ("fine", "gut")]
    assert (report.read, report.kept, report.empty, report.too_long, report.bad_ratio) == (
        5,
        2,
        1,
        1,
        1,
    )
    assert report.whitespace_normalized == 2  # "a  dog" and the 81-word line's trailing space


def test_valid_and_test_keep_every_line(tmp_path):
    tiny(tmp_path / "d")
    tiny(tmp_path / "d", "val", src=("", "x  y", "a " * 200), tgt=("", "u", "b"))
    prepare(tmp_path / "d", tmp_path, test_splits=[])
    corpus, _ = load_corpus(tmp_path / "run")
    assert [r["en"] for r in corpus["val"]["translation"]] == ["", "x  y", "a " * 200]


def test_tsv_and_jsonl_match_text_files(corpus_dir, tmp_path):
    prepare(corpus_dir, tmp_path, test_splits=[])
    reference, _ = load_corpus(tmp_path / "run")
    for fmt in ("tsv", "jsonl"):
        root = tmp_path / fmt
        for split in ("train", "val"):
            rows = reference[split]["translation"]
            if fmt == "tsv":  # columns de, en: the order comes from data.tsv_columns
                write_lines(root / f"{split}.tsv", [f"{r['de']}\t{r['en']}" for r in rows])
            else:
                write_lines(root / f"{split}.jsonl", [json.dumps({"translation": r}) for r in rows])
        columns = ["de", "en"] if fmt == "tsv" else None
        prepare(root, tmp_path / fmt, test_splits=[], tsv_columns=columns)
        corpus, _ = load_corpus(tmp_path / fmt / "run")
        for split in ("train", "val"):
            assert corpus[split]["translation"] == reference[split]["translation"], fmt


def test_tsv_bad_field_count(tmp_path):
    write_lines(tmp_path / "d" / "val.tsv", ["a\tb"])
    write_lines(tmp_path / "d" / "train.tsv", ["a\tb", "only-one"])
    with pytest.raises(DataError, match=r"train\.tsv:2: expected 2 tab-separated fields"):
        prepare(tmp_path / "d", tmp_path, test_splits=[])


def test_jsonl_bad_line(tmp_path):
    write_lines(tmp_path / "d" / "val.jsonl", ['{"en": "a", "de": "b"}'])
    write_lines(tmp_path / "d" / "train.jsonl", ['{"en": "a", "de": "b"}', "{oops"])
    with pytest.raises(DataError, match=r"train\.jsonl:2: invalid JSON"):
        prepare(tmp_path / "d", tmp_path, test_splits=[])


def test_url_offline_fails_with_one_line(tmp_path):
    with pytest.raises(DataError, match=r"cannot download .*offline\? Put the files") as e:
        prepare(tmp_path, tmp_path, source="url")
    assert "\n" not in str(e.value)


def test_hub_offline_fails_with_one_line(tmp_path):
    with pytest.raises(DataError, match=r"cannot be loaded .*Use local files") as e:
        prepare(tmp_path, tmp_path, source="hub", hub_id="bentrevett/multi30k")
    assert "\n" not in str(e.value)
