"""Data stage: a parallel corpus -> a cleaned ``datasets.DatasetDict`` of ``{"translation": {src, tgt}}``.

Sources, in the order a user meets them: a local directory of ``<split>.<lang>[.gz]`` files (or
``<split>.tsv[.gz]`` / ``<split>.jsonl[.gz]``), the official Multi30k URLs, or a Hugging Face Hub
dataset. Every input problem is a :class:`DataError` whose one-line message names the file and line.
Only the training split is cleaned; validation and test splits keep every line, so scores are
computed against the full references.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets

from nmt.errors import UserError, first_line
from nmt.rundir import building_dir, cache_lock, copy_dir, write_json

log = logging.getLogger(__name__)

ARTIFACT = "data"  # run_dir/data: DatasetDict (save_to_disk) + report.json
SCHEMA_VERSION = 2
# Test splits of the official Multi30k release, tried in turn when data.source=url and
# data.test_splits is null (a pair that lacks one, such as en-cs for 2017, answers 404).
URL_TEST_SPLITS = ("test_2016_flickr", "test_2017_flickr", "test_2017_mscoco", "test_2018_flickr")


class DataError(UserError):
    """A problem with input data; the message is one line naming the file (and line)."""


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
# Reading files


def _open_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None


def read_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 text file (optionally gzipped), split on ``\\n`` only.

    A stray ``\\r``, U+2028 or form feed inside a line stays data, as it would with
    ``open(..., newline="\\n")``; one trailing ``\\r`` (CRLF files) is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing file")
    raw = _open_bytes(path)
    chunks = raw.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()
    lines, offset = [], 0
    for number, chunk in enumerate(chunks, start=1):
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}:{number}: invalid UTF-8 at byte {offset + e.start} of the file "
                f"(byte {e.start} of the line)"
            ) from None
        lines.append(text[:-1] if text.endswith("\r") else text)
        offset += len(chunk) + 1
    return lines


def read_parallel(src_path: Path, tgt_path: Path) -> list[tuple[str, str]]:
    """Aligned line pairs of two files; different line counts are an error."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"{src_path}: {len(src)} lines but {tgt_path} has {len(tgt)}; "
            "parallel files must have the same number of lines"
        )
    return list(zip(src, tgt, strict=True))


def read_tsv(path: Path, columns: list[str], src: str, tgt: str) -> list[tuple[str, str]]:
    """Pairs from a tab-separated file whose columns are the languages ``columns``."""
    for lang in (src, tgt):
        if lang not in columns:
            raise DataError(f"{path}: language {lang!r} is not among data.tsv_columns={columns}")
    i, j = columns.index(src), columns.index(tgt)
    pairs = []
    for number, line in enumerate(read_lines(path), start=1):
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise DataError(
                f"{path}:{number}: expected {len(columns)} tab-separated fields "
                f"({', '.join(columns)}), found {len(fields)}"
            )
        pairs.append((fields[i], fields[j]))
    return pairs


def read_jsonl(path: Path, src: str, tgt: str) -> list[tuple[str, str]]:
    """Pairs from JSON lines ``{"translation": {src: ..., tgt: ...}}`` or ``{src: ..., tgt: ...}``."""
    pairs = []
    for number, line in enumerate(read_lines(path), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: invalid JSON: {e.msg}") from None
        if isinstance(record, dict) and isinstance(record.get("translation"), dict):
            record = record["translation"]
        if not isinstance(record, dict) or not all(
            isinstance(record.get(k), str) for k in (src, tgt)
        ):
            raise DataError(f"{path}:{number}: expected string fields {src!r} and {tgt!r}")
        pairs.append((record[src], record[tgt]))
    return pairs


# ---------------------------------------------------------------------------------------------
# Finding a split's files


def _existing(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def split_files(root: Path, split: str, src: str, tgt: str) -> tuple[str, list[Path]] | None:
    """(format, files) of one split under root, or None when the split has no files at all."""
    src_path, tgt_path = _existing(root, f"{split}.{src}"), _existing(root, f"{split}.{tgt}")
    if src_path and tgt_path:
        return "text", [src_path, tgt_path]
    if src_path or tgt_path:
        missing = root / f"{split}.{tgt if src_path else src}"
        raise DataError(f"{missing}[.gz]: missing file (its parallel side exists)")
    for fmt in ("tsv", "jsonl"):
        path = _existing(root, f"{split}.{fmt}")
        if path:
            return fmt, [path]
    return None


def download_split(
    url: str, cache: Path, split: str, langs: tuple[str, str], *, missing_ok: bool = False
) -> bool:
    """Fetch ``<url>/<split>.<lang>.gz`` into cache unless already there; False when the server
    has no such file and ``missing_ok`` (a test split this language pair lacks)."""
    cache.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        target = cache / f"{split}.{lang}.gz"
        absent = target.with_suffix(".gz.absent")  # a 404 remembered: asked once, not per run
        with cache_lock(target):
            if target.is_file():
                continue
            if missing_ok and absent.is_file():
                return False
            address = f"{url.rstrip('/')}/{split}.{lang}.gz"
            tmp = target.with_suffix(f".gz.{os.getpid()}.part")
            try:
                with urllib.request.urlopen(address, timeout=30) as response, open(tmp, "wb") as f:
                    shutil.copyfileobj(response, f)
            except urllib.error.HTTPError as e:
                tmp.unlink(missing_ok=True)
                if e.code == 404 and missing_ok:
                    absent.touch()
                    return False
                raise DataError(f"{address}: cannot download (HTTP {e.code} {e.reason})") from None
            except (urllib.error.URLError, OSError) as e:
                tmp.unlink(missing_ok=True)
                raise DataError(
                    f"{address}: cannot download ({getattr(e, 'reason', e)}); offline? Put the "
                    "files in a directory and set data.source=local data.root=DIR (or NMT_DATA_DIR)"
                ) from None
            os.replace(tmp, target)
        log.info("downloaded %s", address)
    return True


def find_test_splits(root: Path, src: str, tgt: str) -> list[str]:
    """Splits named ``test*`` under root that hold both sides of the pair (any format)."""
    names = set()
    for path in root.glob("test*"):
        name = path.name.removesuffix(".gz")
        for suffix in (f".{src}", ".tsv", ".jsonl"):
            if name.endswith(suffix):
                names.add(name.removesuffix(suffix))
    return sorted(n for n in names if _has_pair(root, n, src, tgt))


def _has_pair(root: Path, split: str, src: str, tgt: str) -> bool:
    text = _existing(root, f"{split}.{src}") and _existing(root, f"{split}.{tgt}")
    return bool(text or _existing(root, f"{split}.tsv") or _existing(root, f"{split}.jsonl"))


def load_hub(
    hub_id: str, splits: list[str], test_splits: list[str] | None, src: str, tgt: str
) -> dict[str, list]:
    """Pairs of each split of a Hub translation dataset (``translation`` struct or flat columns);
    ``test_splits`` null takes every split whose name starts with ``test``."""
    try:
        hub = datasets.load_dataset(hub_id)
    except Exception as e:  # offline, unknown id, script dataset: all end the stage the same way
        first = first_line(e)
        raise DataError(
            f"hub dataset {hub_id!r} cannot be loaded ({first}); offline? "
            "Use local files: data.source=local data.root=DIR"
        ) from None
    if test_splits is None:
        test_splits = sorted(s for s in hub if s.startswith("test"))
    out = {}
    for split in [*splits, *test_splits]:
        if split not in hub:
            raise DataError(f"hub dataset {hub_id!r} has no split {split!r} (has {list(hub)})")
        table = hub[split]
        if "translation" in table.column_names:
            rows = table["translation"]
            out[split] = [(r[src], r[tgt]) for r in rows]
        elif src in table.column_names and tgt in table.column_names:
            out[split] = list(zip(table[src], table[tgt], strict=True))
        else:
            raise DataError(
                f"hub dataset {hub_id!r} split {split!r}: no 'translation' column nor "
                f"columns {src!r}/{tgt!r} (has {table.column_names})"
            )
    return out


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
    features = datasets.Features({"translation": datasets.Translation(languages=[src, tgt])})
    rows = [{src: s, tgt: t} for s, t in pairs]
    return datasets.Dataset.from_dict({"translation": rows}, features=features)


def _fingerprint(settings: dict, files: list[Path]) -> str:
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps({"v": SCHEMA_VERSION, "settings": settings, "files": stats}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _resolve_root(root: str) -> Path:
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DataError(
            f"{path}: data directory not found; point data.root (or NMT_DATA_DIR) at a directory "
            "of <split>.<lang>[.gz] files, or use data.source=url / data.source=hub when online"
        )
    return path


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
        src=src, tgt=tgt, source=source, hub_id=hub_id, tsv_columns=tsv_columns,
        splits=[train_split, valid_split], test_splits=test_splits, max_len=max_len,
        max_ratio=max_ratio, normalize_whitespace=normalize_whitespace,
    )  # fmt: skip
    cache_dir = Path(cache_dir)

    if source == "hub":
        if not hub_id:
            raise DataError("data.source=hub needs data.hub_id=<owner/name>")
        key, files = _fingerprint(settings, []), {}
    else:
        root_path = _locate(source, root=root, url=url, cache_dir=cache_dir, src=src, tgt=tgt,
                            splits=[train_split, valid_split], test_splits=test_splits)  # fmt: skip
        if test_splits is None:
            test_splits = find_test_splits(root_path, src, tgt)
        files = {}
        for split in test_splits:
            if not _has_pair(root_path, split, src, tgt):
                side = src if _existing(root_path, f"{split}.{tgt}") else tgt
                raise DataError(
                    f"{root_path / f'{split}.{side}'}[.gz]: missing file (nor {split}.tsv or "
                    f"{split}.jsonl), and data.test_splits names {split!r}. Test splits here "
                    f"for {src}-{tgt}: {find_test_splits(root_path, src, tgt)}; set "
                    "data.test_splits=[...] to some of them, or null for all of them"
                )
        for split in [train_split, valid_split, *test_splits]:
            found = split_files(root_path, split, src, tgt)
            if found is None:
                raise DataError(
                    f"{root_path / f'{split}.{src}'}[.gz]: missing file (nor {split}.tsv or "
                    f"{split}.jsonl); set data.root or NMT_DATA_DIR to the corpus directory"
                )
            files[split] = found
        key = _fingerprint(settings, [p for _, paths in files.values() for p in paths])

    out = Path(out_dir) / ARTIFACT
    cached = cache_dir / ARTIFACT / key
    report = read_report(out)
    if report and report["key"] == key:
        return {**report, "cached": True}
    # Parallel jobs of a sweep share the cache: one builds the entry, the others wait and copy it.
    with cache_lock(cached):
        report = read_report(cached)
        if report and report["key"] == key:
            report["cached"] = True
        else:
            corpus, report = _build(
                source=source, files=files, hub_id=hub_id, src=src, tgt=tgt,
                train_split=train_split, valid_split=valid_split, test_splits=test_splits,
                tsv_columns=tsv_columns, max_len=max_len, max_ratio=max_ratio,
                normalize_whitespace=normalize_whitespace,
            )  # fmt: skip
            report = {"key": key, **report}
            with building_dir(cached) as tmp:
                corpus.save_to_disk(str(tmp))
                write_json(tmp / "report.json", report)
            report["cached"] = False
    copy_dir(cached, out)
    return report


def _locate(source: str, *, root: str, url: str, cache_dir: Path, src: str, tgt: str,
            splits: list[str], test_splits: list[str] | None) -> Path:  # fmt: skip
    """The directory holding the split files: data.root, or the download cache of data.url."""
    if source == "local":
        return _resolve_root(root)
    if source != "url":
        raise DataError(f"data.source={source!r}: expected local, url or hub")
    root_path = cache_dir / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:12]
    for split in [*splits, *(test_splits or [])]:
        download_split(url, root_path, split, (src, tgt))
    if test_splits is None:
        for split in URL_TEST_SPLITS:
            download_split(url, root_path, split, (src, tgt), missing_ok=True)
    return root_path


def _build(*, source: str, files: dict, hub_id: str | None, src: str, tgt: str, train_split: str,
           valid_split: str, test_splits: list[str] | None, tsv_columns: list[str] | None,
           max_len: int, max_ratio: float, normalize_whitespace: bool,
           ) -> tuple[datasets.DatasetDict, dict]:  # fmt: skip
    """Read every split, clean the training split: the corpus and its report (without key)."""
    if source == "hub":
        pairs_by_split = load_hub(hub_id, [train_split, valid_split], test_splits, src, tgt)
        test_splits = [s for s in pairs_by_split if s not in (train_split, valid_split)]
    else:
        pairs_by_split = {}
        for split, (fmt, paths) in files.items():
            if fmt == "text":
                pairs_by_split[split] = read_parallel(*paths)
            elif fmt == "tsv":
                pairs_by_split[split] = read_tsv(paths[0], tsv_columns or [src, tgt], src, tgt)
            else:
                pairs_by_split[split] = read_jsonl(paths[0], src, tgt)
    for split, pairs in pairs_by_split.items():
        if not pairs:
            where = files[split][1][0] if split in files else f"{hub_id}:{split}"
            raise DataError(f"{where}: empty corpus (no lines)")

    kept, clean = clean_pairs(
        pairs_by_split[train_split],
        max_len=max_len,
        max_ratio=max_ratio,
        normalize_whitespace=normalize_whitespace,
    )
    if not kept:
        raise DataError(f"split {train_split}: no pair survived cleaning ({asdict(clean)})")
    pairs_by_split[train_split] = kept
    corpus = datasets.DatasetDict(
        {split: to_dataset(pairs, src, tgt) for split, pairs in pairs_by_split.items()}
    )
    report = {
        "src": src,
        "tgt": tgt,
        "source": hub_id if source == "hub" else str(next(iter(files.values()))[1][0].parent),
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
