"""What every result records of where it came from (nmt.core.provenance), and that recording it
loads no torch: a refused command answers before the stages load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nmt.core import provenance

ROOT = Path(__file__).resolve().parents[1]


def test_a_result_records_the_command_as_typed_and_the_commit(monkeypatch):
    monkeypatch.setattr(provenance, "_command", [])
    provenance.record_command(["/venv/bin/nmt-train", "model.cell=tanh", "run_dir=a b"])
    made = provenance.provenance()
    assert made["command"] == "nmt-train model.cell=tanh 'run_dir=a b'"
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert made["commit"].removesuffix("+dirty") == head
    assert made["date"][:2] == "20" and made["date"].endswith("+00:00")


def test_the_commands_module_and_what_it_records_import_no_torch():
    code = (
        "import sys, nmt.cli, nmt.core.provenance, nmt.resume; "
        "print(sorted(m for m in ('torch', 'onnx', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
