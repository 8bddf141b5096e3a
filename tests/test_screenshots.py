"""scripts/screenshots.py: nmt-serve started for two run directories (compare=[...]), its page
in headless Chromium, the screenshots docs/serving.md shows and the record of where they came
from."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image

from nmt.translate import Translator

ROOT = Path(__file__).resolve().parents[1]


def test_screenshots_of_two_models(tiny_run, tiny_run_b, tmp_path):
    # The second one where a sweep puts its runs: a directory named after its overrides.
    sweep_run = tmp_path / "model.attention=bahdanau,model=gru,seed=1" / tiny_run_b.name
    shutil.copytree(tiny_run_b, sweep_run)
    out = tmp_path / "shots"
    command = [sys.executable, str(ROOT / "scripts" / "screenshots.py"), "--run-dir", str(tiny_run)]
    command += ["--compare", str(sweep_run), "--out", str(out), "--text", "A dog runs."]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads((out / "screenshots.json").read_text())
    assert record["screenshots"] == {
        name: f"{name}.png" for name in ("attention", "gates", "units", "side_by_side")
    }
    for name in record["screenshots"].values():
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 50 and image.shape[1] > 100  # a picture of something
    side = matplotlib.image.imread(out / "side_by_side.png")
    assert side.shape[1] > matplotlib.image.imread(out / "attention.png").shape[1]
    assert [m["name"] for m in record["models"]] == ["run", "run (2)"]  # both named "run"
    assert record["commit"] and record["machine"] and record["command"].startswith("python")
    for model, run in zip(record["models"], (tiny_run, sweep_run), strict=True):
        translator = Translator.from_run_dir(run, backend="torch", precision="fp32")
        assert record["translations"][model["name"]] == translator.translate("A dog runs.")
