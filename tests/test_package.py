"""The package as a user installs it: a wheel in a fresh virtual environment outside the clone,
whose commands find their configs inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import tiny_args

ROOT = Path(__file__).resolve().parents[1]
# The new environment sees only the wheel and the dependencies, never this source tree.
CLEAN = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_a_wheel_installed_elsewhere_trains(corpus_dir, tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("nmt_cells-*.whl")
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300
    )
    # The dependencies already installed here stay visible (no download, no second torch), and
    # with them pip and a setuptools recent enough to build the package.
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        env=CLEAN,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    version = subprocess.run(
        [str(venv / "bin" / "nmt-train"), "--version"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
    )
    assert version.returncode == 0 and version.stdout.startswith("nmt "), version.stderr
    trained = subprocess.run(
        [str(venv / "bin" / "nmt-train"), "run_dir=run", *tiny_args(corpus_dir, tmp_path / "c")]
        + ["train.max_steps=2", "train.valid_every=2"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        timeout=300,
        env=CLEAN,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (elsewhere / "run" / "done.json").is_file()
    where = subprocess.run(
        [str(python), "-c", "import nmt.cli; print(nmt.cli.CONF_DIR)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=CLEAN,
    ).stdout.strip()
    assert Path(where) == Path(purelib) / "nmt" / "conf"  # the package's own, not the clone's
    # The README's two commands, offline and without dependencies (the visible ones stand in for
    # them): torch first (here: already there), then the package from the source tree.
    for command in (["torch==2.13.0"], [str(ROOT), "--no-build-isolation"]):
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps", *command],
            capture_output=True,
            text=True,
            cwd=elsewhere,
            env=CLEAN,
            timeout=300,
        )
        assert installed.returncode == 0, installed.stderr[-2000:]
    again = subprocess.run(
        [str(venv / "bin" / "nmt-translate"), "run_dir=run"],
        input="A dog runs.\n",
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=CLEAN,
        timeout=300,
    )
    assert again.returncode == 0 and len(again.stdout.splitlines()) == 1, again.stderr[-2000:]
