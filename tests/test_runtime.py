"""Where a run computes and what it records (nmt.runtime): the precision auto chooses, and the
provenance every result carries."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from nmt import runtime

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("flags", "chosen"),
    [
        ({"avx2"}, torch.float32),
        ({"avx2", "amx_bf16"}, torch.bfloat16),
        ({"avx512_bf16"}, torch.bfloat16),
    ],
)
def test_auto_is_bf16_only_where_the_cpu_multiplies_it(monkeypatch, flags, chosen):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    assert runtime.pick_precision("auto", torch.device("cpu")) == chosen
    assert runtime.pick_precision("fp32", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="precision='fp16': expected one of auto, fp32, bf16"):
        runtime.pick_precision("fp16", torch.device("cpu"))


def test_a_result_records_the_command_as_typed_and_the_commit(monkeypatch):
    monkeypatch.setattr(runtime, "_command", [])
    runtime.record_command(["/venv/bin/nmt-train", "model.cell=tanh", "run_dir=a b"])
    made = runtime.provenance()
    assert made["command"] == "nmt-train model.cell=tanh 'run_dir=a b'"
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert made["commit"].removesuffix("+dirty") == head
    assert made["date"][:2] == "20" and made["date"].endswith("+00:00")
