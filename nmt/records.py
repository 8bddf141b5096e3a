"""A sweep's records: what of its runs outlives their weights, to keep a sweep or move it.

A sweep of hours may outlive the machine it started on, and its run directories are mostly
weights and derived data (tens of MB a run at the small size). ``save`` copies into a records
directory, for every run of the sweep that ended (its ``done.json``; the tuning's runs included),
what cannot be rebuilt without training it again: its config, ``done.json``, metrics, log
(``nmt.log``: the sweep's clock) and evaluations (scores and translations), and, for a run the
report reads, the analysis that needs its weights (``report.runs.analyze_run``, computed before
the copy with the report's settings). Weights, the corpus and the encoded ids stay behind
(``LEFT_OUT``): a few hundred KB a run.

``restore`` copies the records back into a sweep directory and gives each run that was evaluated
on a split its corpus again from the data stage (cached, as for a training run), which the report
reads for sources and references. Rerunning the sweep's command then skips those runs (their
``done.json``, ``train.resume=auto``), trains the rest, and its report reads both alike.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from omegaconf import OmegaConf

from nmt.core.compose import compose, read_run_config
from nmt.core.errors import UserError
from nmt.core.rundir import CONFIG_FILE, DONE_FILE, TUNING_FILE, building_dir, copy_file
from nmt.pipeline import stage_data
from nmt.report.runs import analyze_run, load_run

log = logging.getLogger("nmt")

# What a record leaves out of a run directory: checkpoints, the corpus and ids the data stages
# rebuild, TensorBoard's events, the SentencePiece models.
LEFT_OUT = ("best", "last", "kept", "data", "encoded", "tb")
LEFT_OUT_FILES = ("spm*.model", "spm*.vocab", "*.safetensors")


def ended_runs(sweep_dir: Path) -> Iterator[Path]:
    """Every run directory under ``sweep_dir`` that ended (holds done.json), at any depth."""
    for done in sorted(Path(sweep_dir).rglob(DONE_FILE)):
        if not set(done.relative_to(sweep_dir).parts[:-1]) & set(LEFT_OUT):
            yield done.parent


def record_files(run_dir: Path) -> list[Path]:
    """The files of a run that its record keeps, relative to ``run_dir``."""
    kept = []
    for path in sorted(run_dir.rglob("*")):
        relative = path.relative_to(run_dir)
        if not path.is_file() or relative.parts[0] in LEFT_OUT:
            continue
        if any(relative.match(pattern) for pattern in LEFT_OUT_FILES):
            continue
        kept.append(relative)
    return kept


def _evaluated_on(run_dir: Path) -> str | None:
    """The split the report reads of a run (the first of its final_eval), if it has one."""
    config = OmegaConf.load(run_dir / CONFIG_FILE)
    splits = config.get("final_eval") or []
    return splits[0] if splits else None


def _analyze(run_dir: Path, device: str) -> None:
    """The report's cached analysis of a finished, evaluated run, while its weights are here."""
    split = _evaluated_on(run_dir)
    done = json.loads((run_dir / DONE_FILE).read_text())
    if split is None or done.get("status") != "finished":
        return
    config = OmegaConf.load(run_dir / CONFIG_FILE)
    settings = compose("report")
    run = load_run(run_dir, split, config.search.name)
    analyze_run(run, split, config.search.name, tuple(settings.buckets), device)


def _same(a: Path, b: Path) -> bool:
    return b.is_file() and a.read_bytes() == b.read_bytes()


def save(sweep_dir: Path, dest: Path, *, device: str | None = None) -> list[Path]:
    """Copy the records of every ended run of ``sweep_dir`` into ``dest`` (the same relative
    paths), and its tuning.json; return the runs copied. A run whose record in ``dest`` has the
    same done.json is left as it is; each run's record is replaced whole, atomically.
    ``device``: where the analysis' gate statistics run (default: conf/report.yaml's)."""
    sweep_dir, dest = Path(sweep_dir), Path(dest)
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir}: no such sweep directory")
    device = device or compose("report").device
    copied = []
    for run_dir in ended_runs(sweep_dir):
        target = dest / run_dir.relative_to(sweep_dir)
        if _same(run_dir / DONE_FILE, target / DONE_FILE):
            continue
        _analyze(run_dir, device)
        with building_dir(target) as tmp:
            for relative in record_files(run_dir):
                (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run_dir / relative, tmp / relative)
        copied.append(run_dir)
        log.info("records: %s", target)
    if (sweep_dir / TUNING_FILE).is_file():
        dest.mkdir(parents=True, exist_ok=True)
        copy_file(sweep_dir / TUNING_FILE, dest / TUNING_FILE)
    return copied


def restore(records: Path, sweep_dir: Path) -> list[Path]:
    """Copy the runs recorded in ``records`` into ``sweep_dir``, each evaluated run with its
    corpus rebuilt; return the runs restored. A run that ``sweep_dir`` already holds (its
    done.json) is left as it is."""
    records, sweep_dir = Path(records), Path(sweep_dir)
    runs = list(ended_runs(records)) if records.is_dir() else []
    if not runs:
        raise UserError(f"{records}: no run records (directories with {DONE_FILE})")
    restored = []
    for record in runs:
        target = sweep_dir / record.relative_to(records)
        if (target / DONE_FILE).is_file():
            continue
        with building_dir(target) as tmp:
            shutil.copytree(record, tmp, dirs_exist_ok=True)
            if _evaluated_on(tmp) is not None:
                stage_data(read_run_config(tmp / CONFIG_FILE), tmp)
        restored.append(target)
        log.info("restored: %s", target)
    if (records / TUNING_FILE).is_file() and not (sweep_dir / TUNING_FILE).is_file():
        copy_file(records / TUNING_FILE, sweep_dir / TUNING_FILE)
    return restored
