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

import pyarrow as pa

from nmt.sources import DataError


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

    def select(self, rows: range) -> Split:
        """The rows of a contiguous, increasing range (``range(n)``: the first n)."""
        if rows.step != 1:
            raise ValueError("select takes a contiguous range")
        start, stop = max(rows.start, 0), min(rows.stop, len(self))
        return Split(self.table.slice(start, max(stop - start, 0)))


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
