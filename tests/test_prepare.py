from __future__ import annotations

import gzip
import json

import pytest
from conftest import write_lines

from nmt.data.prepare import DataError, clean_pairs, load_corpus, prepare_corpus


def prepare(root, tmp_path, **overrides):
    kwargs = dict(
        src="en",
        tgt="de",
        source="local",
        root=str(root),
        url="http://127.0.0.1:9/none",
        hub_id=None,
        tsv_columns=None,
        train_split="train",
        valid_split="val",
        test_splits=["test_2016_flickr"],
        max_len=80,
        max_ratio=3.0,
        normalize_whitespace=True,
        cache_dir=tmp_path / "cache",
        out_dir=tmp_path / "run",
    )
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
    with pytest.raises(DataError, match=r"nowhere: data directory not found; put the corpus.s"):
        prepare(tmp_path / "nowhere", tmp_path)


def test_mismatched_line_counts(tmp_path):
    tiny(tmp_path / "d", "val")
    write_lines(tmp_path / "d" / "train.en", ["a", "b", "c"])
    write_lines(tmp_path / "d" / "train.de", ["x", "y"])
    with pytest.raises(DataError, match=r"train\.en: 3 lines but .*train\.de has 2"):
        prepare(tmp_path / "d", tmp_path, test_splits=[])


def test_empty_corpus(tmp_path):
    tiny(tmp_path / "d", "val")
    (tmp_path / "d" / "train.en").write_text("")
    (tmp_path / "d" / "train.de").write_text("")
    with pytest.raises(DataError, match=r"train\.en: empty corpus"):
        prepare(tmp_path / "d", tmp_path, test_splits=[])


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
    # One field too many is as wrong as one too few (a stray tab shifts the target).
    write_lines(tmp_path / "d" / "train.tsv", ["a\tb", "a\tb\tc"])
    with pytest.raises(DataError, match=r"train\.tsv:2: expected 2 .*found 3"):
        prepare(tmp_path / "d", tmp_path, test_splits=[])


def test_tsv_columns_must_name_both_languages(tmp_path):
    write_lines(tmp_path / "d" / "val.tsv", ["a\tb"])
    write_lines(tmp_path / "d" / "train.tsv", ["a\tb"])
    with pytest.raises(DataError, match=r"language 'de' is not among data.tsv_columns"):
        prepare(tmp_path / "d", tmp_path, test_splits=[], tsv_columns=["en", "fr"])


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


def four_languages(root):
    """Multi30k's layout in small: Czech has test_2016_flickr but no test_2017_flickr."""
    for split in ("train", "val", "test_2016_flickr", "test_2017_flickr"):
        for lang in ("en", "de", "cs"):
            if (split, lang) != ("test_2017_flickr", "cs"):
                write_lines(root / f"{split}.{lang}", ["x y", "z w"])
    return root


def test_default_test_splits_are_those_the_pair_has(tmp_path):
    root = four_languages(tmp_path / "d")
    de = prepare(root, tmp_path, test_splits=None)
    assert de["test_splits"] == ["test_2016_flickr", "test_2017_flickr"]
    cs = prepare(root, tmp_path, tgt="cs", test_splits=None, out_dir=tmp_path / "cs")
    assert cs["test_splits"] == ["test_2016_flickr"]
    assert set(load_corpus(tmp_path / "cs")[0]) == {"train", "val", "test_2016_flickr"}


def test_a_named_split_that_is_missing_fails_before_reading(tmp_path):
    root = four_languages(tmp_path / "d")
    with pytest.raises(DataError) as e:
        prepare(root, tmp_path, tgt="cs", test_splits=["test_2016_flickr", "test_2017_flickr"])
    message = str(e.value)
    assert "test_2017_flickr.cs[.gz]: missing file" in message and "data.test_splits" in message
    assert "['test_2016_flickr']" in message and "\n" not in message
    assert not (tmp_path / "cache").exists()  # nothing was read or cached


def serve(directory):
    """A real HTTP server on loopback serving directory; returns (server, base URL)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/data/task1/raw"


def test_url_source_downloads_once_and_skips_tests_the_pair_lacks(tmp_path):
    raw = tmp_path / "www" / "data" / "task1" / "raw"
    raw.mkdir(parents=True)
    for path in four_languages(tmp_path / "plain").iterdir():
        with gzip.open(raw / f"{path.name}.gz", "wb") as f:
            f.write(path.read_bytes())
    server, url = serve(tmp_path / "www")
    try:
        report = prepare(tmp_path, tmp_path, source="url", url=url, tgt="cs", test_splits=None)
        assert report["test_splits"] == ["test_2016_flickr"] and report["sizes"]["train"] == 2
        downloads = next((tmp_path / "cache" / "downloads").iterdir())
        assert sorted(p.name for p in downloads.glob("*.gz")) == [
            "test_2016_flickr.cs.gz",
            "test_2016_flickr.en.gz",
            "test_2017_flickr.en.gz",
            "train.cs.gz",
            "train.en.gz",
            "val.cs.gz",
            "val.en.gz",
        ]
        with pytest.raises(
            DataError, match=r"test_2017_flickr\.cs\.gz: cannot download \(HTTP 404"
        ):
            prepare(
                tmp_path,
                tmp_path,
                source="url",
                url=url,
                tgt="cs",
                test_splits=["test_2017_flickr"],
            )
    finally:
        server.shutdown()
        server.server_close()
    # Downloaded once: with the server gone the cached files serve a second run.
    again = prepare(
        tmp_path,
        tmp_path,
        source="url",
        url=url,
        tgt="cs",
        test_splits=None,
        out_dir=tmp_path / "again",
    )
    assert again["cached"] and again["key"] == report["key"]


def test_hub_source_loads_a_translation_dataset(corpus_dir, tmp_path):
    """The Hub path through datasets.load_dataset, on a dataset repository made locally."""
    repo = tmp_path / "hub" / "multi30k"
    for split, name in (("train", "train"), ("val", "validation"), ("test_2016_flickr", "test")):
        en = (corpus_dir / f"{split}.en").read_text().splitlines()
        de = (corpus_dir / f"{split}.de").read_text().splitlines()
        write_lines(
            repo / f"{name}.jsonl",
            [json.dumps({"en": a, "de": b}) for a, b in zip(en, de, strict=True)],
        )
    report = prepare(
        tmp_path,
        tmp_path,
        source="hub",
        hub_id=str(repo),
        valid_split="validation",
        test_splits=None,
    )
    assert report["test_splits"] == ["test"]
    assert report["sizes"] == {"train": 600, "validation": 60, "test": 40}
    corpus, _ = load_corpus(tmp_path / "run")
    assert (
        corpus["test"][0]["translation"]["de"]
        == (corpus_dir / "test_2016_flickr.de").read_text().splitlines()[0]
    )


def test_nmt_data_dir_points_the_stage_at_the_corpus(corpus_dir, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "NMT_DATA_DIR": str(corpus_dir)}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "nmt-data"),
            f"run_dir={tmp_path / 'run'}",
            f"cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    assert report["source"] == str(corpus_dir.resolve()) and report["sizes"]["train"] == 600
