"""docs/results.md and the README's summary are what scripts/results.py writes from the
collected artifacts (docs/results.json), and the script collects them from real run directories;
the README's answer to the cell question is what scripts/report.py wrote from its report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import report  # noqa: E402
import results  # noqa: E402

GATES = (
    ROOT / "docs" / "ablation_gates"
)  # the published report of make ablate experiment=ablation_gates


def test_the_pages_are_written_from_the_collected_artifacts():
    collected = json.loads(results.JSON.read_text())
    assert collected["runs"], "docs/results.json holds no run"
    assert results.PAGE.read_text() == results.render_page(collected)
    readme = results.README.read_text()
    assert results.with_summary(readme, results.render_summary(collected)) == readme
    for run in collected["runs"].values():  # every figure says where it came from
        assert run["done"]["provenance"]["command"].startswith("nmt-train")
        assert all(ev["provenance"]["command"].startswith("nmt-") for ev in run["evals"])


def test_the_readmes_answer_is_what_the_report_wrote():
    """Never retyped: the README's block is answer_block of the published report's results.json,
    and while no report is published the README claims no answer."""
    readme = results.README.read_text()
    if not (GATES / "results.json").is_file():
        assert report.CELLS_BEGIN not in readme and report.CELLS_END not in readme
        return
    written = json.loads((GATES / "results.json").read_text())
    block = report.answer_block(written, GATES / "report.md", results.README)
    assert readme.count(report.CELLS_BEGIN) == 1 and block in readme


def test_make_results_collects_run_directories(tiny_run, tmp_path):
    run_dir = tmp_path / "tiny-en-de"
    shutil.copytree(tiny_run, run_dir)
    bin_dir = Path(sys.executable).parent
    evaluated = subprocess.run(
        [
            str(bin_dir / "nmt-eval"),
            f"run_dir={run_dir}",
            "split=test_2016_flickr",
            "search=greedy",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    scores = json.loads(
        (run_dir / "eval" / "test_2016_flickr-best-greedy" / "scores.json").read_text()
    )
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    out = [
        "--json",
        tmp_path / "r.json",
        "--page",
        tmp_path / "r.md",
        "--readme",
        tmp_path / "README.md",
    ]
    flags = " ".join(str(o) for o in out)
    env = {**os.environ, "VENV": str(bin_dir.parent)}
    made = subprocess.run(
        ["make", "--no-print-directory", "results", f"RUNS={run_dir}", f"ARGS={flags}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    page = (tmp_path / "r.md").read_text()
    row = next(line for line in page.splitlines() if "| test_2016_flickr |" in line)
    assert f"| {scores['bleu']:.2f} | {scores['chrf']:.2f} | {scores['bleu_lt']:.2f} |" in row
    assert scores["bleu_signature"] in page and scores["bleu_lt_signature"] in page
    assert f"`{scores['provenance']['command']}`" in page
    assert scores["provenance"]["command"].startswith("nmt-eval run_dir=")
    summary = (tmp_path / "README.md").read_text().split(results.BEGIN)[1].split(results.END)[0]
    assert "| en→de | gru + bahdanau |" in summary and f"| {scores['bleu']:.2f} |" in summary
    again = results.main([*map(str, out), "--drop", "tiny-en-de"])
    assert again == 0 and json.loads((tmp_path / "r.json").read_text())["runs"] == {}
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    refused = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "results.py"), str(unfinished), *map(str, out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"error: {unfinished / 'done.json'}: missing; is {unfinished} a finished training run?"
    )
