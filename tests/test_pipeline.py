"""A training run's policy (nmt.resume, nmt.pipeline): what a command may do to a run directory that already
holds a run, and what a failure leaves behind. Real nmt-train processes, real files."""

from __future__ import annotations

import csv
import hashlib
import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from conftest import invoke, tiny_args

from nmt.model.checkpoint import find_checkpoint, load_train_state

BIN = Path(sys.executable).parent
# Big enough for every file of a tiny run but the training state of last/ (about 720 kB).
FILE_LIMIT = 600_000


def run(tool: str, *args: str, stdin: str | None = None, **kw) -> subprocess.CompletedProcess:
    if not kw:  # in this process: the commands' words and files
        return invoke(tool, *args, stdin=stdin)
    return subprocess.run(  # a limit on the files a process writes (preexec_fn) is its own
        [str(BIN / tool), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        **kw,
    )


def hashes(run_dir: Path) -> dict[str, str]:
    """sha256 of every file under run_dir, by relative path."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


def small_files_only() -> None:
    """In the child: writes past FILE_LIMIT fail with EFBIG (no SIGXFSZ), as on a full quota."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def tiny_files_only() -> None:
    """In the child: writes past 1,000 bytes fail with EFBIG (every data file is larger)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def no_leftovers(run_dir: Path) -> None:
    left = [p for p in run_dir.rglob("*") if p.name.endswith((".tmp", ".part", ".old"))]
    assert not left, left


def test_refused_commands_leave_a_finished_run_as_it_was(tiny_run, corpus_dir, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    before = hashes(run_dir)
    base = [f"run_dir={run_dir}", *tiny_args(corpus_dir, tmp_path / "cache")]
    refusals = {
        "another cell": (["model=lstm"], "train.resume=true"),
        "another tokenizer": (["tokenizer.vocab_size=500"], "train.resume=true"),
        "the same settings, train.resume=false": ([], "another run_dir"),
        "resume with another tokenizer": (
            ["train.resume=true", "tokenizer.vocab_size=500"],
            "tokenizer.vocab_size: 600 there, 500 now",
        ),
    }
    for what, (extra, says) in refusals.items():
        line = one_error_line(run("nmt-train", *base, *extra))
        assert str(run_dir) in line and says in line, (what, line)
        assert hashes(run_dir) == before, what
    translated = run("nmt-translate", f"run_dir={run_dir}", stdin="A dog runs.\n")
    assert translated.returncode == 0, translated.stderr[-2000:]
    assert len(translated.stdout.splitlines()) == 1


def test_a_run_dir_that_is_a_file_is_one_line(corpus_dir, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a run\n")
    args = tiny_args(corpus_dir, tmp_path / "cache")
    assert "is a file, not a directory" in one_error_line(
        run("nmt-train", f"run_dir={afile}", *args)
    )
    line = one_error_line(run("nmt-spm", f"run_dir={afile / 'sub'}", *args))
    assert f"lies under {afile}" in line
    assert afile.read_text() == "not a run\n"


def test_a_checkpoint_that_cannot_be_written_loses_nothing(tiny_run, corpus_dir, tmp_path):
    """A write that fails mid-file (EFBIG from a file-size limit, as a full quota gives): one line
    naming the checkpoint, no half-written directory, last/ as it was and resumable."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    args = [f"run_dir={run_dir}", *tiny_args(corpus_dir, tmp_path / "cache"), "train.resume=true"]
    failed = run("nmt-train", *args, "train.max_steps=60", preexec_fn=small_files_only)
    line = one_error_line(failed)
    assert (
        f"{run_dir / 'last'}: could not write the checkpoint" in line and "File too large" in line
    )
    no_leftovers(run_dir)
    last = find_checkpoint(run_dir / "last")
    assert last == run_dir / "last" and json.loads((last / "meta.json").read_text())["step"] == 30
    assert load_train_state(last / "train_state.pt")["progress"]["step"] == 30
    resumed = run("nmt-train", *args, "train.max_steps=60")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert json.loads((run_dir / "done.json").read_text())["steps"] == 60
    # The failed attempt validated at step 60 before its checkpoint failed: that row went when the
    # run resumed from step 30, and came back once.
    for name, want in (("metrics.csv", [30, 60]), ("train_metrics.csv", [50])):
        with open(run_dir / name, newline="") as f:
            assert [int(row["step"]) for row in csv.DictReader(f)] == want, name


def test_a_fresh_run_on_a_full_disk_is_one_line_naming_a_file(corpus_dir, tmp_path):
    """The stage cache copied into the run directory under a file-size limit: the first file that
    could not be written and what to do, not the list of every failure that shutil gives."""
    run_dir = tmp_path / "run"
    cache = tmp_path / "cache"
    made = run("nmt-data", f"run_dir={tmp_path / 'first'}", *tiny_args(corpus_dir, cache))
    assert made.returncode == 0, made.stderr[-2000:]  # the cache, made without a limit
    args = [f"run_dir={run_dir}", *tiny_args(corpus_dir, cache)]
    line = one_error_line(run("nmt-data", *args, preexec_fn=tiny_files_only))
    assert str(run_dir) in line and ": File too large" in line and "(ulimit -f, a quota)" in line
    assert "[(" not in line and "Errno" not in line


def test_a_sweep_records_a_run_whose_checkpoint_could_not_be_written(corpus_dir, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        *tiny_args(corpus_dir, tmp_path / "cache"),
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=gru",
    ]
    result = run("nmt-train", *args, preexec_fn=small_files_only)
    assert result.returncode == 0, result.stderr[-3000:]
    done = json.loads((sweep_dir / "gru" / "done.json").read_text())
    assert done["status"] == "failed" and "File too large" in done["error"], done
    no_leftovers(sweep_dir)
