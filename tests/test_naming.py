"""Run-directory names of sweep jobs (nmt.core.naming)."""

from __future__ import annotations

from nmt.core.naming import run_dirname


def test_run_names_cover_the_data_and_never_nest():
    a = run_dirname(
        ["model=gru", "data.root=/data/a", "seed=1", "cache_dir=/c", "train.resume=auto"]
    )
    b = run_dirname(["model=gru", "data.root=/data/b", "seed=1", "cache_dir=/d"])
    assert a != b and "/" not in a + b and a.startswith("data.root=#")
    assert a.endswith(",model=gru,seed=1") and "cache_dir" not in a and "resume" not in a
    # an ablation's plan (which cells, seeds, rates to tune) names no run: the run is the same
    planned = run_dirname(["model=gru", "seed=1", "ablation.tune.lrs=[0.1]", "ablation.jobs=2"])
    assert planned == "model=gru,seed=1"


def test_the_default_data_root_is_the_same_from_any_directory(monkeypatch, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from nmt.core import naming

    monkeypatch.delenv("NMT_DATA_DIR", raising=False)
    monkeypatch.setattr(naming, "CLONE_DATA", tmp_path / "no-clone")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert naming.data_dir("multi30k") == str(tmp_path / "xdg" / "nmt" / "multi30k")
    monkeypatch.delenv("XDG_DATA_HOME")
    assert naming.data_dir("multi30k") == str(Path.home() / ".local/share/nmt/multi30k")
    (tmp_path / "no-clone" / "multi30k").mkdir(parents=True)
    assert naming.data_dir("multi30k") == str(tmp_path / "no-clone" / "multi30k")
    monkeypatch.setenv("NMT_DATA_DIR", "/corpus")
    assert naming.data_dir("multi30k") == "/corpus"
    # The installed command from another directory: an absolute root, and where to put the files.
    env = {k: v for k, v in os.environ.items() if k != "NMT_DATA_DIR"}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "nmt-data"), "--cfg", "job", "--resolve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    root = Path(naming.__file__).resolve().parents[3] / "shared" / "data" / "multi30k"
    assert f"root: {root}\n" in shown.stdout, shown.stderr[-2000:]
