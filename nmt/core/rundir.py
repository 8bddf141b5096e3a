"""Artifact names and safe writes: atomic files and directories, and a locked shared cache.

Every file a stage hands to another is written under a unique temporary name beside its target
and renamed into place, so a reader sees the old artifact or the new one, never half of one. The
stage cache (``cache_dir``) is shared by every run of a machine, sweep jobs in parallel included:
an entry is built under a lock (``filelock``), and a job that waited finds it complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

DONE_FILE = "done.json"  # a run's results; its presence means the run ended
CONFIG_FILE = "config.yaml"  # the resolved config of a training run
TUNING_FILE = "tuning.json"  # an ablation sweep's tuned learning rates (nmt-ablate)
SEARCH_FILE = "search.json"  # a run's search settings chosen on validation (nmt-tune-search)
# A checkpoint is a directory (best/, last/) of the weights and what they are.
MODEL_FILE, META_FILE = "model.safetensors", "meta.json"


def umask() -> int:
    """The process's umask, read without changing it where Linux tells (os.umask sets it, for a
    moment, under every other thread too)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_beside(target: Path, directory: bool = False) -> Path:
    """A fresh, unique name in target's directory (same file system, so rename is atomic), with
    the permissions a plain ``open`` or ``mkdir`` would give it (mkstemp's 0600 and mkdtemp's 0700
    would leave every artifact unreadable to the machine's other users)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}."
    if directory:
        path = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
        os.close(fd)
        path = Path(name)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())
    return path


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (UTF-8, ``\\n`` line ends)."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, value: object) -> None:
    """Write a JSON file atomically."""
    write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def replace_dir(build: Path, target: Path) -> None:
    """Move a finished directory into target's place (the old one, if any, goes after)."""
    old = None
    if target.exists():
        old = _temp_beside(target, directory=True)
        old.rmdir()
        os.replace(target, old)
    os.replace(build, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def building_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh directory to fill; on success it replaces target, on failure it goes."""
    target = Path(target)
    tmp = _temp_beside(target, directory=True)
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def copy_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a directory atomically (dst is replaced whole)."""
    with building_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a file atomically."""
    dst = Path(dst)
    tmp = _temp_beside(dst)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cache_lock(entry: str | os.PathLike) -> FileLock:
    """The lock of one cache entry: held while the entry is checked and, if missing, built."""
    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(entry.with_name(entry.name + ".lock")))


def find_checkpoint(place: Path) -> Path | None:
    """The complete checkpoint at place, or the previous one if a save died mid-rename."""
    for candidate in (place, place.with_name(place.name + ".old")):
        if (candidate / META_FILE).is_file() and (candidate / MODEL_FILE).is_file():
            return candidate
    return None
