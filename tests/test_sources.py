"""Reading corpus files: UTF-8 errors with file, line and byte; TSV/JSONL rows; finding splits."""

from __future__ import annotations

import gzip

import pytest
from conftest import write_lines

from nmt.data.sources import (
    DataError,
    find_test_splits,
    read_jsonl,
    read_lines,
    read_tsv,
    split_files,
)


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


def test_lines_split_on_newline_only(tmp_path):
    path = tmp_path / "odd.en"
    path.write_bytes("a\rb\nc\u2028d\x0ce\nlast-no-newline".encode())
    assert read_lines(path) == ["a\rb", "c\u2028d\x0ce", "last-no-newline"]
    path.write_bytes(b"crlf\r\nfile\r\n")
    assert read_lines(path) == ["crlf", "file"]


def test_tsv_and_jsonl_rows_name_their_line(tmp_path):
    tsv = write_lines(tmp_path / "train.tsv", ["a\tx", "b\ty\tz"])
    with pytest.raises(DataError, match=r"train\.tsv:2: expected 2 tab-separated fields"):
        read_tsv(tsv, ["en", "de"], "en", "de")
    assert read_tsv(write_lines(tmp_path / "ok.tsv", ["a\tx"]), ["de", "en"], "en", "de") == [
        ("x", "a")
    ]
    jsonl = write_lines(
        tmp_path / "train.jsonl",
        ['{"translation": {"en": "a", "de": "x"}}', '{"en": "b", "de": "y"}', '{"en": 1}'],
    )
    with pytest.raises(DataError, match=r"train\.jsonl:3: expected string fields 'en' and 'de'"):
        read_jsonl(jsonl, "en", "de")
    jsonl.write_text('{"translation": {"en": "a", "de": "x"}}\n{"en": "b", "de": "y"}\n')
    assert read_jsonl(jsonl, "en", "de") == [("a", "x"), ("b", "y")]


def test_test_splits_are_those_with_both_sides_in_any_format(tmp_path):
    for name in ("test_a.en", "test_b.en", "test_c.tsv", "val.en", "val.de"):
        write_lines(tmp_path / name, ["x"])
    with gzip.open(tmp_path / "test_a.de.gz", "wt") as f:
        f.write("x\n")
    assert find_test_splits(tmp_path, "en", "de") == ["test_a", "test_c"]
    assert split_files(tmp_path, "test_a", "en", "de") == (
        "text",
        [tmp_path / "test_a.en", tmp_path / "test_a.de.gz"],
    )
    assert split_files(tmp_path, "test_c", "en", "de") == ("tsv", [tmp_path / "test_c.tsv"])
    assert split_files(tmp_path, "nothing", "en", "de") is None
    with pytest.raises(DataError, match=r"test_b\.de\[\.gz\]: missing file"):
        split_files(tmp_path, "test_b", "en", "de")
