"""scripts/mutate.py stays true to the tree: every mutant's snippet is in its module exactly once
(a stale one measures nothing), and a stale one is reported before any mutant runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "mutate.py"


def mutate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_every_mutant_matches_the_tree_once():
    result = mutate("--check")
    assert result.returncode == 0, result.stderr
    assert "every snippet found once" in result.stdout


def load_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import mutate as script
    finally:
        sys.path.pop(0)
    return script


def test_a_stale_mutant_is_listed_before_anything_runs(tmp_path):
    script = load_script()
    stale = script.Mutant("decoding/search.py", "no such line in search.py", "", "a stale one")
    twice = script.Mutant("decoding/search.py", "import", "", "found many times")
    missing = script.Mutant(
        "decoding/search.py", "def beam_search(", "", "names a test", ("test_x.py",)
    )
    problems = script.snippet_problems([stale, twice, missing], ROOT / "tests")
    assert len(problems) == 3
    assert "'a stale one' found 0 times" in problems[0]
    assert "'found many times' found" in problems[1] and "found 1 times" not in problems[1]
    assert "names test_x.py, which does not exist" in problems[2]


def test_resume_skips_what_was_killed_and_reruns_the_rest(tmp_path):
    """--resume goes on from --out: a mutant killed there is not run again, one killed only by
    the timeout is, and every result is written as it comes."""
    tests = tmp_path / "tests"  # a suite that notices nothing: every mutant survives it
    tests.mkdir()
    script = load_script()
    mutants = [m for m in script.MUTANTS if m.module == "core/rundir.py"]
    named = {"test_rundir.py": {"test_nothing"}}  # and each test a mutant names, doing nothing
    for m in mutants:
        for test in m.tests:
            file, _, name = test.partition("::")
            named.setdefault(file, set()).add(name.split("[")[0] or "test_nothing")
    for file, names in named.items():
        (tests / file).write_text("".join(f"def {n}():\n    pass\n\n" for n in sorted(names)))
    out = tmp_path / "mutants.json"
    earlier = [
        {"module": m.module, "what": m.what, "killed": True, "seconds": 600.0} for m in mutants
    ]
    out.write_text(json.dumps(earlier))  # killed by the timeout alone: run again
    again = mutate("--modules", "rundir", "--tests", str(tests), "--out", str(out), "--resume")
    assert again.returncode == 1 and "SURVIVED" in again.stdout, again.stderr
    results = json.loads(out.read_text())
    assert [r["what"] for r in results] == [m.what for m in mutants]
    assert not any(r["killed"] for r in results)

    out.write_text(json.dumps([{**r, "killed": True, "seconds": 3.0} for r in results]))
    settled = mutate("--modules", "rundir", "--tests", str(tests), "--out", str(out), "--resume")
    assert settled.returncode == 0, settled.stderr
    assert f"{len(mutants)} mutants settled" in settled.stdout and "0 to run" in settled.stdout
    assert "SURVIVED" not in settled.stdout


def test_what_chooses_mutants_by_their_description_and_ids_may_be_parametrized():
    """--what runs only the mutants whose description contains it; a mutant may name one case of
    a parametrized test (its function is what must exist)."""
    script = load_script()
    chosen = [m for m in script.MUTANTS if m.module == "pipeline.py" and "train.threads" in m.what]
    assert len(chosen) == 1 and "[" in chosen[0].tests[0]
    result = mutate("--modules", "pipeline", "--what", "train.threads", "--check")
    assert result.returncode == 0, result.stderr
    assert "mutate: 1 mutants of 1 modules" in result.stdout
    gone = script.Mutant("pipeline.py", "def train_run(", "", "x", ("test_readme.py::nope[a b]",))
    (problem,) = script.snippet_problems([gone], ROOT / "tests")
    assert "names test_readme.py::nope[a b], which does not exist" in problem
