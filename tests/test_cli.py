from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / tool), *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_data_then_spm_into_one_run_dir(corpus_dir, tmp_path):
    common = [
        f"run_dir={tmp_path / 'run'}",
        f"data.root={corpus_dir}",
        f"cache_dir={tmp_path / 'c'}",
    ]
    common += ["data.test_splits=[test_2016_flickr]", "tokenizer.vocab_size=800"]
    first = run("nmt-data", *common)
    assert first.returncode == 0, first.stderr
    out = first.stdout + first.stderr
    assert "train: 600 pairs read, 600 kept" in out
    spm = run("nmt-spm", *common)
    assert spm.returncode == 0, spm.stderr
    out = spm.stdout + spm.stderr
    assert "(cached)" in out  # the data stage is not redone
    assert "spm joint unigram vocabulary" in out and "<unk> 0/0" in out
    for artifact in ("data/report.json", "spm.model", "encoded/report.json", ".hydra/config.yaml"):
        assert (tmp_path / "run" / artifact).exists(), artifact
    again = run("nmt-spm", *common)
    assert again.returncode == 0 and (again.stdout + again.stderr).count("(cached)") == 2


def test_bad_data_root_is_one_line(tmp_path):
    result = run("nmt-data", f"run_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'missing'}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "data directory not found" in lines[0]


def test_help_lists_groups():
    result = run("nmt-data", "--help")
    assert result.returncode == 0
    assert "gru, gru_cho, lstm, tanh" in result.stdout and "run_dir:" in result.stdout


def test_train_smoke_two_steps(corpus_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = [
        f"run_dir={run_dir}", f"data.root={corpus_dir}", f"cache_dir={tmp_path / 'c'}",
        "data.test_splits=[]", "tokenizer.vocab_size=600", "model.emb_dim=32",
        "model.enc_hidden=32", "model.dec_hidden=64", "train.max_steps=2", "train.valid_every=1",
        "train.progress=false", "batch.max_tokens=600", "train.threads=1", "train.log_every=1",
    ]  # fmt: skip
    result = run("nmt-train", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout + result.stderr
    assert "training stopped (max_steps) at step 2" in out
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in out
    for artifact in ("config.yaml", "spm.model", "best/model.safetensors", "last/train_state.pt",
                     "metrics.csv", "train_metrics.csv"):  # fmt: skip
        assert (run_dir / artifact).is_file(), artifact
    again = run("nmt-train", *args)
    assert again.returncode == 1 and "train.resume=true" in again.stderr
    resumed = run("nmt-train", *args[:-5], "train.max_steps=3", "train.resume=true",
                  "train.progress=false", "batch.max_tokens=600", "train.valid_every=1")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
