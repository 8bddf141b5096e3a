"""Data stage: a parallel corpus -> a cleaned ``datasets.DatasetDict`` of ``{"translation": {src, tgt}}``.

Locate the files (``sources.py``: local, URL or Hub), read every split, clean the training split,
cache the result. Only the training split is cleaned; validation and test splits keep every line, so scores are
computed against the full references.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded where a dataset is built or read: it costs a second at every start
    import datasets

from nmt.core.rundir import building_dir, cache_lock, copy_dir, write_json
from nmt.data.sources import DataError, Located, find_corpus, read_lines

__all__ = ["DataError", "clean_pairs", "load_corpus", "prepare_corpus", "read_lines"]

log = logging.getLogger(__name__)

ARTIFACT = "data"  # run_dir/data: DatasetDict (save_to_disk) + report.json
SCHEMA_VERSION = 2


@dataclass
class CleanReport:
    """What cleaning did to the training split, as counts."""

    read: int = 0
    kept: int = 0
    empty: int = 0
    too_long: int = 0
    bad_ratio: int = 0
    whitespace_normalized: int = 0


# ---------------------------------------------------------------------------------------------
# Cleaning


def clean_pairs(
    pairs: list[tuple[str, str]], *, max_len: int, max_ratio: float, normalize_whitespace: bool
) -> tuple[list[tuple[str, str]], CleanReport]:
    """Drop empty, over-long and length-ratio-outlier pairs (never one side alone)."""
    report = CleanReport(read=len(pairs))
    kept = []
    for src, tgt in pairs:
        if normalize_whitespace:
            new_src, new_tgt = " ".join(src.split()), " ".join(tgt.split())
            if (new_src, new_tgt) != (src, tgt):
                report.whitespace_normalized += 1
            src, tgt = new_src, new_tgt
        n_src, n_tgt = len(src.split()), len(tgt.split())
        if n_src == 0 or n_tgt == 0:
            report.empty += 1
        elif max(n_src, n_tgt) > max_len:
            report.too_long += 1
        elif max(n_src, n_tgt) > max_ratio * min(n_src, n_tgt):
            report.bad_ratio += 1
        else:
            kept.append((src, tgt))
    report.kept = len(kept)
    return kept, report


# ---------------------------------------------------------------------------------------------
# The stage


def to_dataset(pairs: list[tuple[str, str]], src: str, tgt: str) -> datasets.Dataset:
    """A ``datasets.Dataset`` with one ``translation`` column, as Hub translation datasets have."""
    import datasets

    features = datasets.Features({"translation": datasets.Translation(languages=[src, tgt])})
    rows = [{src: s, tgt: t} for s, t in pairs]
    return datasets.Dataset.from_dict({"translation": rows}, features=features)


def _fingerprint(settings: dict, files: list[Path]) -> str:
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps({"v": SCHEMA_VERSION, "settings": settings, "files": stats}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_corpus(
    *,
    src: str,
    tgt: str,
    source: str,
    root: str,
    url: str,
    hub_id: str | None,
    tsv_columns: list[str] | None,
    train_split: str,
    valid_split: str,
    test_splits: list[str] | None,
    max_len: int,
    max_ratio: float,
    normalize_whitespace: bool,
    cache_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
) -> dict:
    """Read, validate and clean a corpus; write ``out_dir/data``; return the stage report.

    ``test_splits`` null means every test split the source has for this pair; a named split that
    is missing is an error before anything is read. The result is cached under
    ``cache_dir/data/<key>``, keyed by these settings and the input files' size and mtime, so
    repeating the stage copies instead of re-reading.
    """
    if src == tgt:
        raise DataError(f"data.src and data.tgt are both {src!r}")
    settings = dict(
        src=src,
        tgt=tgt,
        source=source,
        hub_id=hub_id,
        tsv_columns=tsv_columns,
        splits=[train_split, valid_split],
        test_splits=test_splits,
        max_len=max_len,
        max_ratio=max_ratio,
        normalize_whitespace=normalize_whitespace,
    )
    cache_dir = Path(cache_dir)
    located = find_corpus(
        source,
        root=root,
        url=url,
        hub_id=hub_id,
        cache_dir=cache_dir,
        src=src,
        tgt=tgt,
        splits=[train_split, valid_split],
        test_splits=test_splits,
    )
    key = _fingerprint(settings, located.inputs())
    build = dict(
        located=located,
        src=src,
        tgt=tgt,
        train_split=train_split,
        valid_split=valid_split,
        tsv_columns=tsv_columns,
        max_len=max_len,
        max_ratio=max_ratio,
        normalize_whitespace=normalize_whitespace,
    )
    return _cached(key, build, cache_dir, Path(out_dir) / ARTIFACT)


def _cached(key: str, build: dict, cache_dir: Path, out: Path) -> dict:
    """The corpus of ``key`` copied to out: from the cache, or built (``_build(**build)``) into
    it. Parallel jobs of a sweep share the cache: one builds the entry, the others wait and copy
    it."""
    cached = cache_dir / ARTIFACT / key
    report = read_report(out)
    if report and report["key"] == key:
        return {**report, "cached": True}
    with cache_lock(cached):
        report = read_report(cached)
        if report and report["key"] == key:
            report["cached"] = True
        else:
            corpus, report = _build(**build)
            report = {"key": key, **report}
            with building_dir(cached) as tmp:
                corpus.save_to_disk(str(tmp))
                write_json(tmp / "report.json", report)
            report["cached"] = False
    copy_dir(cached, out)
    return report


def _build(
    *,
    located: Located,
    src: str,
    tgt: str,
    train_split: str,
    valid_split: str,
    tsv_columns: list[str] | None,
    max_len: int,
    max_ratio: float,
    normalize_whitespace: bool,
) -> tuple[datasets.DatasetDict, dict]:
    """Read every split, clean the training split: the corpus and its report (without key)."""
    pairs_by_split = located.read(
        splits=[train_split, valid_split], src=src, tgt=tgt, tsv_columns=tsv_columns
    )
    test_splits = [s for s in pairs_by_split if s not in (train_split, valid_split)]
    for split, pairs in pairs_by_split.items():
        if not pairs:
            raise DataError(f"{located.where(split)}: empty corpus (no lines)")

    kept, clean = clean_pairs(
        pairs_by_split[train_split],
        max_len=max_len,
        max_ratio=max_ratio,
        normalize_whitespace=normalize_whitespace,
    )
    if not kept:
        raise DataError(f"split {train_split}: no pair survived cleaning ({asdict(clean)})")
    pairs_by_split[train_split] = kept
    import datasets

    corpus = datasets.DatasetDict(
        {split: to_dataset(pairs, src, tgt) for split, pairs in pairs_by_split.items()}
    )
    report = {
        "src": src,
        "tgt": tgt,
        "source": located.describe(),
        "train_split": train_split,
        "valid_split": valid_split,
        "test_splits": list(test_splits),
        "clean": asdict(clean),
        "sizes": {split: len(ds) for split, ds in corpus.items()},
    }
    return corpus, report


def read_report(place: Path) -> dict | None:
    try:
        return json.loads((place / "report.json").read_text())
    except (OSError, ValueError):
        return None


def load_corpus(run_dir: str | os.PathLike) -> tuple[datasets.DatasetDict, dict]:
    """The data stage's artifact in a run directory, loaded in memory, and its report."""
    place = Path(run_dir) / ARTIFACT
    report = read_report(place)
    if report is None:
        raise DataError(f"{place}: no prepared data; run the data stage first (make data)")
    import datasets

    return datasets.load_from_disk(str(place), keep_in_memory=True), report


def format_report(report: dict) -> str:
    """Human-readable summary of the data stage."""
    c = report["clean"]
    lines = [
        f"data {report['src']}->{report['tgt']} from {report['source']}"
        + (" (cached)" if report.get("cached") else ""),
        f"  {report['train_split']}: {c['read']} pairs read, {c['kept']} kept; dropped "
        f"{c['empty']} empty, {c['too_long']} too long, {c['bad_ratio']} length-ratio outliers; "
        f"{c['whitespace_normalized']} whitespace-normalized",
    ]
    for split, n in report["sizes"].items():
        if split != report["train_split"]:
            lines.append(f"  {split}: {n} pairs (all kept)")
    return "\n".join(lines)
