from __future__ import annotations

import subprocess
import sys

import datasets
import pytest
from conftest import tiny_args, train_tiny

from nmt.data.columns import read_splits
from nmt.data.sources import DataError


def saved(tmp_path):
    rows = {
        "translation": [{"en": f"a dog {i}", "de": f"ein Hund {i}"} for i in range(7)],
        "src_ids": [list(range(i + 1)) for i in range(7)],
        "tgt_ids": [[i] * (i % 3 + 1) for i in range(7)],
    }
    corpus = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows).select([6, 0, 3, 1, 2, 5, 4]),
            "val": datasets.Dataset.from_dict({k: v[:2] for k, v in rows.items()}),
        }
    )
    corpus.save_to_disk(str(tmp_path / "encoded"), num_shards={"train": 2, "val": 1})
    return tmp_path / "encoded"


def test_saved_splits_read_as_datasets_reads_them(tmp_path):
    place = saved(tmp_path)
    ours, theirs = read_splits(place), datasets.load_from_disk(str(place))
    assert list(ours) == ["train", "val"]  # the saved order
    for name, split in theirs.items():
        assert len(ours[name]) == len(split) and ours[name].column_names == split.column_names
        for column in split.column_names:
            assert ours[name][column] == split[column]
        assert [ours[name][i] for i in range(len(split))] == list(split)
    train = ours["train"]
    assert train[-1] == theirs["train"][6] and train[0]["src_ids"] == list(range(7))
    first = train.select(range(3))
    assert first["tgt_ids"] == theirs["train"].select(range(3))["tgt_ids"]
    assert len(train.select(range(100))) == 7  # past the end: what there is, as validation asks
    with pytest.raises(IndexError):
        train[7]


def test_a_column_of_sequences_held_flat_reads_as_its_lists(tmp_path):
    """``Split.ragged``: the token ids of every row, of a selected range (its offsets start past
    zero) and of a split saved in two files, as ``split[column]`` lists them."""
    train = read_splits(saved(tmp_path))["train"]
    for split in (train, train.select(range(2, 6)), train.select(range(0))):
        for column in ("src_ids", "tgt_ids"):
            ragged, rows = split.ragged(column), split[column]
            assert len(ragged) == len(rows) and [ragged[i] for i in range(len(rows))] == rows
            assert ragged.lengths() == [len(row) for row in rows]
    ragged = train.ragged("src_ids")
    assert ragged.values.dtype == "int32" and ragged[-1] == train["src_ids"][-1]
    with pytest.raises(IndexError):
        ragged[7]


def test_a_damaged_split_is_one_line_that_names_it(tmp_path):
    place = saved(tmp_path)
    (place / "val" / "data-00000-of-00001.arrow").write_bytes(b"not arrow")
    with pytest.raises(DataError, match=str(place)):
        read_splits(place)


def test_training_from_cached_stages_never_imports_datasets(corpus_dir, tiny_cache, tmp_path):
    """nmt-train whose data and spm stages are in the cache, to its final evaluation: nothing of
    ``datasets`` (~100 MiB a process keeps to its end) is imported, nor pandas (pyarrow's
    ``to_numpy`` would bring it: ~40 MiB)."""
    args = [f"run_dir={tmp_path / 'run'}", *tiny_args(corpus_dir, tiny_cache)]
    args += ["train.max_steps=4", "train.valid_every=4", "final_eval=[test_2016_flickr]"]
    train_tiny(tmp_path / "cached", corpus_dir, tiny_cache, "train.max_steps=1")  # fills the cache
    script = f"""
import sys
sys.argv = ["nmt-train", *{args!r}]
from nmt.cli import train_main
try:
    train_main()
finally:
    print(sorted(name for name in sys.modules if name.split(".")[0] in ("datasets", "pandas")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "run" / "eval" / "test_2016_flickr-best-greedy" / "hyps.txt").is_file()
