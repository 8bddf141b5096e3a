"""scripts/mutate.py stays true to the tree: every mutant's snippet is in its module exactly once
(a stale one measures nothing), and a stale one is reported before any mutant runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "mutate.py"


def mutate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_every_mutant_matches_the_tree_once():
    result = mutate("--check")
    assert result.returncode == 0, result.stderr
    assert "every snippet found once" in result.stdout


def test_a_stale_mutant_is_listed_before_anything_runs(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import mutate as script
    finally:
        sys.path.pop(0)
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
