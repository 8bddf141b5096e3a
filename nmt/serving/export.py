"""A trained model leaves its run directory: ``nmt-export run_dir=runs/X format=bundle
out=model.nmt`` writes the one file ``nmt.serving.bundle`` describes, which ``nmt-translate model=...``,
``Translator.from_file`` and the server load without the run directory or the corpus;
``format=onnx out=DIR`` writes the same files unpacked into a directory, with the ONNX graphs of
``nmt.serving.onnx_export`` (fp32 and int8) in ``DIR/onnx/`` and the manifest naming them.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from nmt.core.compose import read_run_config
from nmt.core.rundir import CONFIG_FILE, DONE_FILE, SEARCH_FILE, building_dir, write_json
from nmt.model.checkpoint import META_FILE, MODEL_FILE, save_checkpoint
from nmt.model.restore import restore
from nmt.serving.bundle import MANIFEST, BundleError, extract, file_sha256, pack


def _scores(run_dir: Path) -> list[dict]:
    """What the run's evaluations measured (eval/*/scores.json), with their signatures."""
    found = []
    for path in sorted(run_dir.glob("eval/*/scores.json")):
        scores = json.loads(path.read_text())
        if "split" not in scores:  # hyps=[...] comparisons
            continue
        keys = ("split", "checkpoint", "bleu", "chrf", "bleu_lt", "bleu_signature")
        found.append({k: scores[k] for k in (*keys, "chrf_signature", "search") if k in scores})
    return found


def check_out(out: str | os.PathLike, *, overwrite: bool) -> None:
    """Before anything is read or written: ``out`` may not lie inside a run directory (a
    run's own files would be replaced: its config.yaml, its weights), nor be one, and replaces an
    existing file or directory only when ``overwrite`` says so."""
    out = Path(out)
    for place in Path(os.path.abspath(out)).parents:
        if (place / CONFIG_FILE).is_file():
            raise BundleError(
                f"out={out} lies inside the run directory {place}, whose files it could replace; "
                "write it elsewhere (out=model.nmt)"
            )
    if out.is_dir() and (out / CONFIG_FILE).is_file() and not (out / MANIFEST).is_file():
        raise BundleError(f"out={out} is a run directory; write the export elsewhere")
    if out.exists() and not overwrite:
        raise BundleError(f"out={out} exists; add overwrite=true to replace it")


def write_bundle(run_dir: str | os.PathLike, out: str | os.PathLike, checkpoint: str) -> dict:
    """Write the model of ``run_dir`` (its ``checkpoint``: best, last, avg-last-N, avg-best-N)
    into the one file ``out``, atomically; returns the manifest."""
    from nmt import __version__
    from nmt.model.seq2seq import count_parameters

    run_dir, out = Path(run_dir), Path(out)
    if out.is_dir():
        raise BundleError(f"out={out} is a directory; name a file (model.nmt)")
    if not out.parent.is_dir():
        raise BundleError(f"out={out}: the directory {out.parent} does not exist")
    loaded = restore(run_dir, checkpoint)  # checks config, tokenizer and weights first
    model = read_run_config(run_dir / CONFIG_FILE).model
    done = json.loads((run_dir / DONE_FILE).read_text()) if (run_dir / DONE_FILE).is_file() else {}
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=out.parent) as tmp:
        staged = Path(tmp)
        meta = {"step": loaded.source["steps"][-1], "checkpoint": checkpoint}
        meta.update(steps=loaded.source["steps"], spm_sha256=loaded.tokenizer.sha256())
        save_checkpoint(staged / "best", loaded.model, meta)
        files = {CONFIG_FILE: run_dir / CONFIG_FILE}
        for spm_file in {loaded.tokenizer.src_model, loaded.tokenizer.tgt_model}:
            files[spm_file.name] = spm_file
        if (run_dir / SEARCH_FILE).is_file():
            files[SEARCH_FILE] = run_dir / SEARCH_FILE
        files[f"best/{MODEL_FILE}"] = staged / "best" / MODEL_FILE
        files[f"best/{META_FILE}"] = staged / "best" / META_FILE
        manifest = {
            "nmt": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": str(run_dir.resolve()),
            "src": loaded.src,
            "tgt": loaded.tgt,
            "cell": model.cell,
            "attention": model.attention,
            "conditional": model.conditional,
            "parameters": count_parameters(loaded.model),
            "checkpoint": checkpoint,
            "steps": loaded.source["steps"],
            "valid": {k: done[k] for k in ("bleu", "chrf", "bleu_signature") if k in done},
            "scores": _scores(run_dir),
        }
        return pack(files, manifest, out)


def write_onnx(run_dir: str | os.PathLike, out: str | os.PathLike, checkpoint: str) -> dict:
    """Write the model of ``run_dir`` into the directory ``out`` (replaced whole, atomically):
    the bundle's files unpacked, and ``onnx/`` with the encoder and step graphs in fp32 and int8;
    returns the manifest (its ``graphs``: each graph's file and sha256)."""
    from nmt.serving.onnx_export import ONNX_DIR, export_graphs

    out = Path(out)
    if out.is_file():
        raise BundleError(f"out={out} is a file; format=onnx writes a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    with building_dir(out) as staged, tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        manifest = write_bundle(run_dir, Path(tmp) / "model.nmt", checkpoint)
        extract(Path(tmp) / "model.nmt", staged)
        graphs = export_graphs(restore(staged, "best").model, staged / ONNX_DIR)
        manifest["graphs"] = {
            name: {"file": str(Path(path).relative_to(staged)), "sha256": file_sha256(Path(path))}
            for name, path in graphs.items()
        }
        write_json(staged / MANIFEST, manifest)
    return manifest
