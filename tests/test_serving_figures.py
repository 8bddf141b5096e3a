"""docs/serving.md's decoding and load figures are what scripts/serving_figures.py writes from
docs/serving.json, and the script takes them from a real bench.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import serving_figures  # noqa: E402


def test_the_page_block_is_written_from_the_kept_figures():
    figures = json.loads(serving_figures.JSON.read_text())
    assert {"backends", "serve"} <= set(figures)
    page = serving_figures.PAGE.read_text()
    assert serving_figures.block(figures) in page
    for section in figures.values():  # where each came from
        assert section["provenance"]["command"].startswith("bench.py")
        assert section["provenance"]["commit"]


def test_the_script_takes_a_bench_reports_sections(tmp_path):
    report = {
        "provenance": {"command": "scripts/bench.py --what backends", "commit": "abc1234",
                       "nmt": "0.1.0", "date": "2026-12-03T12:00:00+00:00"},
        "cpu": "Some CPU", "cpu_threads": 2, "torch": "2.13.0", "cpu_kind": "avx2",
        "backends": {
            "run_dir": "runs/R", "threads": 2, "bleu_signature": "nrefs:1|tok:13a",
            "variants": {
                "torch_fp32": {
                    "forced20_greedy_sentences_per_s": 100.0,
                    "forced20_greedy_generated_tokens_per_s": 2000.0,
                    "forced20_beam5_sentences_per_s": 20.0,
                    "forced20_beam5_generated_tokens_per_s": 400.0,
                    "test_2016_flickr_bleu": 37.4, "test_2016_flickr_chrf": 62.5,
                    "test_2017_flickr_bleu": 30.1, "test_2017_flickr_chrf": 57.1,
                },
                "torch_bf16": {"skipped": "bf16 is not native on this CPU"},
            },
        },
    }  # fmt: skip
    (tmp_path / "bench.json").write_text(json.dumps(report))
    page = tmp_path / "serving.md"
    page.write_text(f"# x\n\n{serving_figures.BEGIN}\nold\n{serving_figures.END}\nafter\n")
    made = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "serving_figures.py"), str(tmp_path / "bench.json"),
         "--json", str(tmp_path / "s.json"), "--page", str(page)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    text = page.read_text()
    assert "old" not in text and text.endswith(f"{serving_figures.END}\nafter\n")
    assert "| PyTorch fp32 | 100.0 | 2,000 | 20.0 | 400 | 37.40 / 62.50 | 30.10 / 57.10 |" in text
    assert "| PyTorch bf16 | bf16 is not native on this CPU |" in text
    assert "at commit `abc1234`, 2026-12-03, on Some CPU (avx2, 2 threads" in text
    kept = json.loads((tmp_path / "s.json").read_text())
    assert kept["backends"]["backends"]["run_dir"] == "runs/R"
