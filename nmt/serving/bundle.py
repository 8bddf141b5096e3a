"""The one-file model format (``nmt-export format=bundle``, written by ``nmt.serving.export``).

The file is a zip archive holding the smallest run directory a model translates from: its
``config.yaml``, the SentencePiece model(s), the weights as ``best/model.safetensors`` (the best
checkpoint, an average of kept ones, or the last) with ``best/meta.json``, the search
``nmt-tune-search`` chose (``search.json``) when there is one, and ``manifest.json``: the pair, the
cell, the parameters, the training steps, the scores with their signatures, the toolkit version,
and the sha256 of every other member. Reading one checks all of it before anything is used; no
member is ever unpickled (the weights are safetensors, the rest JSON, YAML and SentencePiece), and
a file that is not a bundle, is damaged or holds anything else is a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

from nmt.core.errors import UserError

FORMAT, VERSION = "nmt-model", 1
MANIFEST = "manifest.json"
# Every member a bundle may hold; anything else (an absolute path, "..", a stray file) is refused.
MEMBERS = re.compile(
    r"(manifest\.json|config\.yaml|search\.json|spm\.model|spm\.[a-z]{2,3}\.model"
    r"|best/model\.safetensors|best/meta\.json)"
)
GRAPHS = re.compile(r"onnx/(encoder|step)(\.int8)?\.onnx")  # an export directory's graphs
MAX_BYTES = 4 << 30  # a member larger than this is not one of ours (and no zip bomb is expanded)


class BundleError(UserError):
    """A file that is not an nmt model bundle, or a damaged one; the message says which."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(files: dict[str, Path], manifest: dict, out: Path) -> dict:
    """Write ``files`` (member name -> path) and the manifest, with each member's sha256 added,
    into the zip ``out``, atomically (a temporary file beside it, renamed in)."""
    manifest = {"format": FORMAT, "version": VERSION, **manifest}
    manifest["sha256"] = {name: file_sha256(path) for name, path in files.items()}
    part = out.with_name(f".{out.name}.part")
    try:
        with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2))
            for name, path in files.items():
                archive.write(path, name)
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
    return manifest


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a bundle, checked: its format and version, and that the archive holds
    exactly the members it lists, nothing else."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise BundleError(f"{path}: not an nmt model file ({e})") from None
    with archive:
        names = archive.namelist()
        if MANIFEST not in names:
            raise BundleError(f"{path}: not an nmt model file (no {MANIFEST})")
        try:
            manifest = json.loads(archive.read(MANIFEST))
        except (ValueError, zipfile.BadZipFile) as e:
            raise BundleError(f"{path}: {MANIFEST} is damaged ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: not an nmt model file (format {manifest.get('format')!r})")
    if manifest.get("version") != VERSION:
        raise BundleError(
            f"{path}: bundle version {manifest.get('version')}; this nmt reads version {VERSION}"
        )
    listed = set(manifest.get("sha256", {})) | {MANIFEST}
    stray = sorted(set(names) ^ listed)
    if stray:
        raise BundleError(f"{path}: holds {stray[0]!r}, which its manifest does not list")
    return manifest


def extract(path: str | os.PathLike, into: str | os.PathLike) -> dict:
    """Unpack a bundle into the directory ``into`` (a run directory a Translator loads from),
    every member checked against the manifest's name pattern, size and sha256; the manifest."""
    path, into = Path(path), Path(into)
    manifest = read_manifest(path)
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename
            if not MEMBERS.fullmatch(name) or info.file_size > MAX_BYTES:
                raise BundleError(f"{path}: holds {name!r}, which no nmt model file holds")
            if name == MANIFEST:
                continue
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            try:
                with archive.open(info) as member, open(target, "wb") as f:
                    for block in iter(lambda m=member: m.read(1 << 20), b""):
                        digest.update(block)
                        f.write(block)
            except (zipfile.BadZipFile, OSError) as e:
                raise BundleError(f"{path}: {name} is damaged ({e})") from None
            if digest.hexdigest() != manifest["sha256"][name]:
                raise BundleError(f"{path}: {name} is damaged (its sha256 is not the manifest's)")
    return manifest


def read_export_dir(path: str | os.PathLike) -> dict:
    """The manifest of a directory ``nmt-export format=onnx`` wrote, checked like a bundle's:
    its format and version, and every file it lists (the graphs included) by sha256."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: not an nmt model directory (no {MANIFEST})") from None
    except ValueError as e:
        raise BundleError(f"{path / MANIFEST}: damaged ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: not an nmt model directory")
    if manifest.get("version") != VERSION:
        raise BundleError(
            f"{path}: model version {manifest.get('version')}; this nmt reads version {VERSION}"
        )
    listed = dict(manifest.get("sha256", {}))
    listed.update({g["file"]: g["sha256"] for g in manifest.get("graphs", {}).values()})
    for name, digest in listed.items():
        member = path / name
        if not MEMBERS.fullmatch(name) and not GRAPHS.fullmatch(name):
            raise BundleError(f"{path}: lists {name!r}, which no nmt model holds")
        if not member.is_file():
            raise BundleError(f"{member}: missing (listed in {MANIFEST})")
        if file_sha256(member) != digest:
            raise BundleError(f"{member}: damaged (its sha256 is not the manifest's)")
    return manifest
