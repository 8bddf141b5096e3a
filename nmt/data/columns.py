"""Splits a stage saved with ``datasets`` (``save_to_disk``), read back with pyarrow alone.

Training reads token ids and reference texts, not the library that wrote them: importing
``datasets`` costs a process ~100 MiB that it keeps to the end (pandas, fsspec, the Hub client),
pyarrow alone ~25 (``python -c "import torch, datasets"`` against ``... pyarrow``, peak RSS). The
layout read here is ``save_to_disk``'s: ``dataset_dict.json`` names the splits, each split's
``state.json`` its Arrow stream files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from nmt.data.sources import DataError


class Ragged:
    """A column of integer sequences held flat, as Arrow lays out a list column: one array of
    every value and one of offsets. ``ragged[i]`` is sequence i as a list, ``len(ragged)`` the
    number of sequences. Training's 29k sentence pairs as Python lists of ints cost ~38 MiB of
    a process's memory to its end; flat, 4 bytes a token (~3.5 MiB)."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values, self.offsets = values, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> list[int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} of {len(self)}")
        i %= len(self)
        return self.values[self.offsets[i] : self.offsets[i + 1]].tolist()

    def lengths(self) -> list[int]:
        return np.diff(self.offsets).tolist()


class Split:
    """One saved split: ``len(split)``, ``split["column"]`` (a list), ``split[i]`` (a row's
    dict), ``split.select(range(n))``; the subset of ``datasets.Dataset`` that training uses."""

    def __init__(self, table: pa.Table):
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def column_names(self) -> list[str]:
        return self.table.column_names

    def __getitem__(self, key: str | int):
        if isinstance(key, str):
            return self.table.column(key).to_pylist()
        if not -len(self) <= key < len(self):
            raise IndexError(f"row {key} of a split of {len(self)}")
        return self.table.slice(key % len(self), 1).to_pylist()[0]

    def ragged(self, column: str) -> Ragged:
        """A list-of-integers column held flat (``split[column]`` makes a list per row)."""
        array = self.table.column(column).combine_chunks()
        offsets = _numbers(array.offsets).astype(np.int64)
        values = _numbers(array.values)[offsets[0] : offsets[-1]]
        small = values.size == 0 or (values.min() >= 0 and values.max() < 2**31)
        return Ragged(values.astype(np.int32 if small else np.int64), offsets - offsets[0])

    def select(self, rows: range) -> Split:
        """The rows of a contiguous, increasing range (``range(n)``: the first n)."""
        if rows.step != 1:
            raise ValueError("select takes a contiguous range")
        start, stop = max(rows.start, 0), min(rows.stop, len(self))
        return Split(self.table.slice(start, max(stop - start, 0)))


def _numbers(array: pa.Array) -> np.ndarray:
    """A primitive Arrow array without nulls as numpy, read from its buffer (``to_numpy``
    imports pandas: ~40 MiB for the rest of the process)."""
    dtype = np.dtype(str(array.type))
    return np.frombuffer(
        array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize
    )


def split_names(place: Path) -> list[str]:
    """The names of the splits under ``place`` (a ``DatasetDict.save_to_disk`` directory), read
    from its index alone."""
    try:
        return list(json.loads((place / "dataset_dict.json").read_text())["splits"])
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{place}: cannot read the saved splits ({error})") from None


def read_splits(place: Path) -> dict[str, Split]:
    """Every split under ``place`` (a ``DatasetDict.save_to_disk`` directory), in its order."""
    try:
        names = json.loads((place / "dataset_dict.json").read_text())["splits"]
        splits = {}
        for name in names:
            state = json.loads((place / name / "state.json").read_text())
            if state.get("_indices_data_files"):  # save_to_disk writes flat tables; be sure
                raise DataError(f"{place / name}: an indices mapping; save it flattened")
            tables = []
            for entry in state["_data_files"]:
                with pa.OSFile(
                    str(place / name / entry["filename"])
                ) as source:  # read in, not mapped
                    tables.append(pa.ipc.open_stream(source).read_all())
            splits[name] = Split(pa.concat_tables(tables))
    except (OSError, ValueError, KeyError, pa.ArrowInvalid) as error:
        raise DataError(f"{place}: cannot read the saved splits ({error})") from None
    return splits
