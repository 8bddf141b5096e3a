"""Where a corpus comes from and how its files are read: a local directory of
``<split>.<lang>[.gz]`` files (or ``<split>.tsv[.gz]`` / ``<split>.jsonl[.gz]``), the official
Multi30k URLs (downloaded once into the cache, under a lock), or a Hugging Face Hub dataset.
Every input problem is a :class:`DataError` whose one-line message names the file and line.
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
from dataclasses import dataclass, field
from pathlib import Path

from nmt.core.errors import UserError, first_line
from nmt.core.rundir import cache_lock

log = logging.getLogger(__name__)

# Test splits of the official Multi30k release, tried in turn when data.source=url and
# data.test_splits is null (a pair that lacks one, such as en-cs for 2017, answers 404).
URL_TEST_SPLITS = ("test_2016_flickr", "test_2017_flickr", "test_2017_mscoco", "test_2018_flickr")


class DataError(UserError):
    """A problem with input data; the message is one line naming the file (and line)."""


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
    import datasets

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


def all_split_files(
    root: Path,
    src: str,
    tgt: str,
    train_split: str,
    valid_split: str,
    test_splits: list[str] | None,
) -> tuple[list[str], dict[str, tuple]]:
    """(test splits, {split: (format, files)}) under root; ``test_splits`` null: every test split
    the pair has. A split without files is a DataError that says which ones there are."""
    if test_splits is None:
        test_splits = find_test_splits(root, src, tgt)
    for split in test_splits:
        if not _has_pair(root, split, src, tgt):
            side = src if _existing(root, f"{split}.{tgt}") else tgt
            raise DataError(
                f"{root / f'{split}.{side}'}[.gz]: missing file (nor {split}.tsv or "
                f"{split}.jsonl), and data.test_splits names {split!r}. Test splits here "
                f"for {src}-{tgt}: {find_test_splits(root, src, tgt)}; set "
                "data.test_splits=[...] to some of them, or null for all of them"
            )
    files = {}
    for split in [train_split, valid_split, *test_splits]:
        found = split_files(root, split, src, tgt)
        if found is None:
            raise DataError(
                f"{root / f'{split}.{src}'}[.gz]: missing file (nor {split}.tsv or "
                f"{split}.jsonl); set data.root or NMT_DATA_DIR to the corpus directory"
            )
        files[split] = found
    return test_splits, files


def resolve_root(root: str) -> Path:
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DataError(
            f"{path}: data directory not found; put the corpus's <split>.<lang>[.gz] files there "
            "(Multi30k: https://github.com/multi30k/dataset, data/task1/raw), or point data.root "
            "(or NMT_DATA_DIR) at a directory of them, or use data.source=url / data.source=hub "
            "when online"
        )
    return path


def locate(
    source: str,
    *,
    root: str,
    url: str,
    cache_dir: Path,
    src: str,
    tgt: str,
    splits: list[str],
    test_splits: list[str] | None,
) -> Path:
    """The directory holding the split files: data.root, or the download cache of data.url."""
    if source == "local":
        return resolve_root(root)
    if source != "url":
        raise DataError(f"data.source={source!r}: expected local, url or hub")
    root_path = cache_dir / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:12]
    for split in [*splits, *(test_splits or [])]:
        download_split(url, root_path, split, (src, tgt))
    if test_splits is None:
        for split in URL_TEST_SPLITS:
            download_split(url, root_path, split, (src, tgt), missing_ok=True)
    return root_path


@dataclass(frozen=True)
class Located:
    """Where a corpus's splits are: files under a directory (``data.source=local`` or ``url``) or
    a Hub dataset (``hub``). What the data stage asks of a source, whichever it is."""

    test_splits: list[str] | None  # None: the Hub's test splits, known once it is read
    files: dict[str, tuple[str, list[Path]]] = field(default_factory=dict)  # split: (format, paths)
    hub_id: str | None = None

    def inputs(self) -> list[Path]:
        """The files whose size and time key the data stage's cache (none for the Hub)."""
        return [p for _, paths in self.files.values() for p in paths]

    def describe(self) -> str:
        """The source in the stage's report: the Hub id, or the directory of the files."""
        return self.hub_id or str(next(iter(self.files.values()))[1][0].parent)

    def where(self, split: str) -> str:
        """A split's place in an error message: its first file, or hub_id:split."""
        return str(self.files[split][1][0]) if split in self.files else f"{self.hub_id}:{split}"

    def read(
        self, *, splits: list[str], src: str, tgt: str, tsv_columns: list[str] | None
    ) -> dict[str, list[tuple[str, str]]]:
        """Every split's pairs: ``splits`` (training, validation), then the test splits."""
        if self.hub_id:
            return load_hub(self.hub_id, splits, self.test_splits, src, tgt)
        pairs = {}
        for split, (fmt, paths) in self.files.items():
            if fmt == "text":
                pairs[split] = read_parallel(*paths)
            elif fmt == "tsv":
                pairs[split] = read_tsv(paths[0], tsv_columns or [src, tgt], src, tgt)
            else:
                pairs[split] = read_jsonl(paths[0], src, tgt)
        return pairs


def find_corpus(
    source: str,
    *,
    root: str,
    url: str,
    hub_id: str | None,
    cache_dir: Path,
    src: str,
    tgt: str,
    splits: list[str],
    test_splits: list[str] | None,
) -> Located:
    """The corpus of ``data.source``: local files under data.root, the files of data.url
    (downloaded into the cache), or the Hub dataset data.hub_id (read when the stage builds)."""
    if source == "hub":
        if not hub_id:
            raise DataError("data.source=hub needs data.hub_id=<owner/name>")
        return Located(test_splits=test_splits, hub_id=hub_id)
    root_path = locate(
        source,
        root=root,
        url=url,
        cache_dir=cache_dir,
        src=src,
        tgt=tgt,
        splits=splits,
        test_splits=test_splits,
    )
    test_splits, files = all_split_files(root_path, src, tgt, *splits, test_splits)
    return Located(test_splits=test_splits, files=files)
