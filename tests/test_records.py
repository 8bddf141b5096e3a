"""A sweep's records (nmt/records.py, scripts/records.py): kept without weights, restored for the
sweep to go on without training again, and read by the report as the runs were."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ablate

ROOT = Path(__file__).resolve().parents[1]


def records(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "records.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _bleu_by_row(results: Path) -> dict:
    rows = json.loads(results.read_text())["rows"]
    return {(r["cell"], r["variant"]): r["test_bleu"]["mean"] for r in rows}


@pytest.mark.xdist_group("tiny_ablation")  # one worker builds the fixture
def test_a_sweep_saved_without_weights_and_restored_goes_on_without_training(
    tiny_ablation, corpus_dir, tmp_path
):
    finished, _ = tiny_ablation
    sweep_dir = tmp_path / "sweep"  # as runs are before the report: not yet analysed
    shutil.copytree(finished, sweep_dir)
    for analysis in sweep_dir.rglob("analysis.json"):
        analysis.unlink()
    kept = tmp_path / "records"
    saved = records("save", str(sweep_dir), str(kept))
    assert saved.returncode == 0, saved.stderr[-3000:]
    ended = sorted(p.parent.relative_to(sweep_dir) for p in sweep_dir.rglob("done.json"))
    assert sorted(p.parent.relative_to(kept) for p in kept.rglob("done.json")) == ended
    assert any(p.parts[0] == "tune" for p in ended) and any(p.parts[0] != "tune" for p in ended)
    assert (kept / "tuning.json").read_bytes() == (sweep_dir / "tuning.json").read_bytes()
    for run in ended:
        files = {p.relative_to(kept / run).parts[0] for p in (kept / run).rglob("*")}
        assert {"config.yaml", "done.json", "nmt.log", "metrics.csv"} <= files
        assert not files & {"best", "last", "data", "encoded", "tb", "spm.model"}
        if run.parts[0] != "tune":  # evaluated: its translations and the report's analysis
            assert {"eval", "analysis.json"} <= files
    assert not list(kept.rglob("*.safetensors")) and not list(kept.rglob("*.arrow"))
    again = records("save", str(sweep_dir), str(kept))
    assert again.returncode == 0 and "saved 0 new run record(s)" in again.stderr

    # A new machine: the records back in a sweep directory, the sweep's command run again.
    elsewhere = tmp_path / "elsewhere"
    back = records("restore", str(kept), str(elsewhere / "sweep"))
    assert back.returncode == 0, back.stderr[-3000:]
    assert f"restored {len(ended)} run(s)" in back.stderr
    before = {p: p.stat().st_mtime for p in (elsewhere / "sweep").rglob("done.json")}
    rerun = ablate(elsewhere, corpus_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # nothing trained again, the tuning included: no weights, every done.json as it was
    assert not list((elsewhere / "sweep").rglob("*.safetensors"))
    assert {p: p.stat().st_mtime for p in (elsewhere / "sweep").rglob("done.json")} == before
    assert _bleu_by_row(elsewhere / "sweep" / "report" / "results.json") == _bleu_by_row(
        sweep_dir / "report" / "results.json"
    )
    twice = records("restore", str(kept), str(elsewhere / "sweep"))
    assert twice.returncode == 0 and "restored 0 run(s)" in twice.stderr


def test_restoring_nothing_says_so_in_one_line(tmp_path):
    refused = records("restore", str(tmp_path / "none"), str(tmp_path / "sweep"))
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert line == f"error: {tmp_path / 'none'}: no run records (directories with done.json)"
    missing = records("save", str(tmp_path / "none"), str(tmp_path / "kept"))
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: {tmp_path / 'none'}: no such sweep directory"
