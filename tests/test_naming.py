"""Run-directory names of sweep jobs (nmt.naming)."""

from __future__ import annotations

from nmt.naming import run_dirname


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
