"""Sweeps on a tiny config, end to end: run names, the report a sweep writes, resuming, refusals,
parallel launchers, a raised budget."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import invoke

from nmt.data.prepare import load_corpus
from nmt.report.ablation import PLOTS
from nmt.scoring.metrics import paired_bootstrap

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def sweep(
    tmp: Path,
    corpus_dir: Path,
    *extra: str,
    cells: str = "gru,lstm",
    wait: bool = True,
    name_root: Path | None = None,
    bare: bool = False,
) -> subprocess.CompletedProcess | subprocess.Popen:
    """A tiny ablation_quick sweep. ``name_root``: pass data.root through the environment
    (NMT_DATA_DIR) so that it stays out of the run names, as a user's default would. ``bare``:
    no test decoding and no report (for tests of how runs start, stop and resume)."""
    env = dict(os.environ)
    root = [f"data.root={corpus_dir}"]
    if name_root is not None:
        env["NMT_DATA_DIR"], root = str(name_root), []
    args = [
        "experiment=ablation_quick",
        f"hydra.sweep.dir={tmp / 'sweep'}",
        *root,
        f"cache_dir={tmp / 'cache'}",
        "data.test_splits=[test_2016_flickr]",
        "tokenizer.vocab_size=600",
        "model.emb_dim=32",
        "model.enc_hidden=32",
        "model.dec_hidden=64",
        "batch.max_tokens=800",
        "train.valid_every=2",
        "train.threads=1",
        f"model={cells}",
        "model.attention=none",
        *(extra or ["train.max_steps=3"]),
        *(["final_eval=[]", "~hydra.callbacks.report"] if bare else []),
    ]
    command = [str(BIN / "nmt-train"), *args]
    if not wait:  # in a session of its own: a signal can reach the whole sweep, as from a shell
        return subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT, env=env
    )


@pytest.fixture(scope="session")  # built once per worker, however the tests interleave
def tiny_sweep(corpus_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    result = sweep(tmp, corpus_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, result


@pytest.mark.xdist_group("tiny_sweep")  # one worker builds the fixture
def test_sweep_names_runs_after_their_overrides(tiny_sweep):
    tmp, result = tiny_sweep
    runs = sorted(p for p in (tmp / "sweep").iterdir() if (p / "done.json").is_file())
    assert len(runs) == 2
    for run, cell in zip(runs, ("gru", "lstm"), strict=True):
        assert f"model={cell}" in run.name and "model.attention=none" in run.name
        assert "seed=1" in run.name and len(run.name) <= 200  # long lists are cut, with a hash
        assert "cache_dir" not in run.name and "experiment" not in run.name  # paths stay out
        done = json.loads((run / "done.json").read_text())
        assert done["status"] == "finished" and done["cell"] == cell and done["steps"] == 3
        assert (run / "eval" / "test_2016_flickr-best-beam5" / "hyps.txt").is_file()
    # One vocabulary for the whole sweep: trained once, the same file in every run.
    models = {(run / "spm.model").read_bytes() for run in runs}
    assert len(models) == 1
    assert (result.stdout + result.stderr).count("(cached)") >= 2


@pytest.mark.xdist_group("tiny_sweep")  # one worker builds the fixture
def test_sweep_writes_the_report(tiny_sweep):
    tmp, _ = tiny_sweep
    report = tmp / "sweep" / "report"
    text = (report / "report.md").read_text()
    assert "| gru | none |" in text and "| lstm | none |" in text
    assert "bs:1000" in text and "nrefs:1|case:mixed" in text  # sacreBLEU's signatures
    for name in PLOTS:
        assert (report / name).stat().st_size > 10_000, name  # a drawn PNG, not an empty file
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((report / "results.json").read_text())
    lstm = next(r for r in results["runs"] if r["cell"] == "lstm")
    # The p-value is sacreBLEU's paired bootstrap of these two runs' test translations.
    gru = next(r for r in results["runs"] if r["cell"] == "gru")
    hyps = {
        r["cell"]: (Path(r["path"]) / "eval" / "test_2016_flickr-best-beam5" / "hyps.txt")
        .read_text()
        .splitlines()
        for r in (gru, lstm)
    }
    refs = [r["de"] for r in load_corpus(Path(gru["path"]))[0]["test_2016_flickr"]["translation"]]
    expected = paired_bootstrap({"gru": hyps["gru"], "lstm": hyps["lstm"]}, refs, samples=1000)
    assert lstm["paired"]["bleu_p"] == expected["lstm"]["bleu_p"]
    assert lstm["paired"]["chrf_p"] == expected["lstm"]["chrf_p"]
    assert "bs:1000" in lstm["paired"]["signature"]
    assert {"encoder.l0.fwd.forget", "decoder.l0.forget"} <= set(lstm["analysis"]["gates"])
    assert sum(b["sentences"] for b in lstm["analysis"]["bleu_by_length"]) == 40


@pytest.mark.xdist_group("tiny_sweep")  # one worker builds the fixture
def test_report_script_on_chosen_runs(tiny_sweep, tmp_path):
    tmp, _ = tiny_sweep
    runs = sorted(p for p in (tmp / "sweep").iterdir() if (p / "done.json").is_file())
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "report.py"),
            *map(str, runs[:1]),
            "--out",
            str(tmp_path / "out"),
            "--bootstrap-samples",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| gru | none |" in result.stdout and "| lstm |" not in result.stdout
    assert result.stdout.startswith("# Cell ablation: 1 chosen run\n")  # not the run's name
    # Its figures are of the chosen run alone: PNGs, each another picture than the whole sweep's.
    whole = tmp / "sweep" / "report"
    for name in PLOTS:
        mine = (tmp_path / "out" / name).read_bytes()
        assert mine[:8] == b"\x89PNG\r\n\x1a\n" and len(mine) > 10_000, name
        assert mine != (whole / name).read_bytes(), name
    chosen = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert [r["path"] for r in chosen] == [str(runs[0])]
    missing = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report.py"), str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert missing.returncode == 1 and "no finished runs" in missing.stderr


def test_the_report_takes_the_sweeps_search_and_split(corpus_dir, tmp_path):
    """`make ablate ARGS="search=greedy"`: the runs are tested with greedy search, and the report
    reads those translations (it used to look for beam5 ones and fail after all the training)."""
    result = sweep(tmp_path, corpus_dir, "train.max_steps=2", "search=greedy", cells="gru")
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "sweep" / "report" / "report.md").read_text()
    assert "translated with `greedy`" in text and "test split `test_2016_flickr`" in text
    assert "| gru | none |" in text


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "last" / "model.safetensors")


def test_interrupted_sweep_resumes_where_it_stopped(corpus_dir, tmp_path):
    """Ctrl-C in a sweep saves a checkpoint and exits 130; run again, the sweep continues that
    run from its step to the same weights as a sweep never stopped, then skips it."""
    long = ["train.max_steps=30", "train.valid_every=5", "train.valid_max_sentences=5"]
    straight = sweep(tmp_path / "a", corpus_dir, *long, cells="gru", bare=True)
    assert straight.returncode == 0, straight.stderr[-3000:]
    (reference,) = [p for p in (tmp_path / "a" / "sweep").iterdir() if (p / "done.json").is_file()]

    job = sweep(tmp_path / "b", corpus_dir, *long, cells="gru", wait=False, bare=True)
    meta = tmp_path / "b" / "sweep" / reference.name / "last" / "meta.json"
    deadline = time.monotonic() + 300
    while not meta.is_file() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    job.send_signal(signal.SIGINT)
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 130, stderr[-3000:]
    run = meta.parent.parent
    stopped_at = json.loads(meta.read_text())["step"]
    assert 5 <= stopped_at < 30 and not (run / "done.json").exists()
    assert f"interrupted at step {stopped_at}; checkpoint saved" in stderr

    again = sweep(tmp_path / "b", corpus_dir, *long, cells="gru", bare=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"at step {stopped_at} (epoch" in again.stdout + again.stderr  # resumed there
    assert json.loads((run / "done.json").read_text())["steps"] == 30
    mine, theirs = weights(run), weights(reference)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)

    finished_at = (run / "done.json").stat().st_mtime_ns
    third = sweep(tmp_path / "b", corpus_dir, *long, cells="gru", bare=True)
    assert third.returncode == 0 and "finished before" in third.stdout + third.stderr
    assert (run / "done.json").stat().st_mtime_ns == finished_at


def test_a_stopped_sweep_leaves_no_worker_process_behind(corpus_dir, tmp_path):
    """SIGTERM to a sweep whose jobs run in joblib's worker processes: each job saves its
    checkpoint, and then no process of the sweep is left (its workers used to stay, orphaned
    and idle, for hours, holding memory and /dev/shm)."""
    long = ["train.max_steps=100000", "train.valid_every=5", "train.valid_max_sentences=5"]
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    job = sweep(tmp_path, corpus_dir, *long, *joblib, wait=False, bare=True)
    deadline = time.monotonic() + 300
    saved = []
    while len(saved) < 2 and job.poll() is None and time.monotonic() < deadline:
        saved = list((tmp_path / "sweep").glob("*/last/meta.json"))
        time.sleep(0.1)
    assert len(saved) == 2, "both jobs should have saved a checkpoint by now"
    os.killpg(job.pid, signal.SIGTERM)
    # A worker left behind holds the pipes open: the sweep's output never ends.
    _, stderr = job.communicate(timeout=120)
    left = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.killpg(job.pid, 0)  # any process of the sweep's session still there?
        except ProcessLookupError:
            left = []
            break
        time.sleep(0.2)
    assert left == [], "a process of the stopped sweep is still running"
    assert stderr.count("interrupted at step") == 2, stderr[-3000:]


def test_auto_resume_refuses_a_run_made_with_other_settings(corpus_dir, tmp_path):
    """The same run directory reached with another corpus (NMT_DATA_DIR is not in the name)
    is an error, not a finished run silently skipped."""
    first = sweep(
        tmp_path, corpus_dir, "train.max_steps=2", cells="gru", name_root=corpus_dir, bare=True
    )
    assert first.returncode == 0, first.stderr[-3000:]
    other = tmp_path / "other"
    shutil.copytree(corpus_dir, other)
    result = sweep(
        tmp_path, corpus_dir, "train.max_steps=2", cells="gru", name_root=other, bare=True
    )
    assert result.returncode == 1
    assert "trained with other settings" in result.stderr and "data.root" in result.stderr


@pytest.mark.xdist_group("tiny_sweep")  # one worker builds the fixture
def test_other_settings_are_other_runs_and_other_rows(tiny_sweep, corpus_dir):
    """A sweep with a changed setting never reuses a finished run, and the report keeps the two
    settings in separate rows instead of averaging them as if they were seeds."""
    tmp, _ = tiny_sweep
    again = sweep(tmp, corpus_dir, "train.max_steps=4", cells="gru")
    assert again.returncode == 0, again.stderr[-3000:]
    out = again.stdout + again.stderr
    assert "resumed from" not in out and "finished before" not in out
    text = (tmp / "sweep" / "report" / "report.md").read_text()
    assert "| gru | none (train.max_steps=3) |" in text
    assert "| gru | none (train.max_steps=4) |" in text
    assert "| lstm | none |" in text


def test_a_diverged_run_does_not_stop_the_sweep(corpus_dir, tmp_path):
    result = sweep(
        tmp_path, corpus_dir, "train.max_steps=3", "optim.lr=1e30", "train.max_bad_steps=1"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [p for p in (tmp_path / "sweep").iterdir() if (p / "done.json").is_file()]
    # Many overrides: names cut to fit the file system, with a hash that keeps them apart.
    assert len(runs) == 2 and all(len(p.name) <= 200 and "~" in p.name for p in runs)
    statuses = [json.loads((p / "done.json").read_text())["status"] for p in runs]
    assert statuses == ["failed", "failed"]
    assert "diverged" in (tmp_path / "sweep" / "report" / "report.md").read_text()


def test_a_failed_report_fails_the_sweep(corpus_dir, tmp_path):
    """Without the test translations (final_eval=[]) the report cannot be written: the sweep
    exits 1 with one line that says how to rebuild it, and the runs stay complete."""
    result = sweep(tmp_path, corpus_dir, "train.max_steps=2", "final_eval=[]", cells="gru")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "python scripts/report.py" in errors[0]
    assert len(list((tmp_path / "sweep").glob("*/done.json"))) == 1


def test_bad_override_in_a_sweep_is_one_line(tmp_path):
    result = subprocess.run(
        [
            str(BIN / "nmt-train"),
            "experiment=ablation_quick",
            "model=gru,lstm",
            "train.max_stpes=3",
            f"hydra.sweep.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "max_stpes" in result.stderr


def test_resume_mode_is_checked(tmp_path):
    result = invoke("nmt-train", f"run_dir={tmp_path / 'run'}", "train.resume=maybe")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: train.resume='maybe': expected true, false or auto"


def _log_span(run_dir: Path) -> tuple[str, str]:
    """The first and last timestamps of a run's log ('YYYY-MM-DD HH:MM:SS,mmm' sorts as text)."""
    stamps = re.findall(r"^\[([\d-]+ [\d:,]+)\]", (run_dir / "nmt.log").read_text(), re.M)
    return stamps[0], stamps[-1]


def test_submitit_local_runs_two_jobs_at_once_on_one_cache(corpus_dir, tmp_path):
    """The submitit launcher's local executor (SLURM's code path without a cluster): two runs
    at the same time, both on an empty stage cache that each builds only once."""
    extra = (
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "~hydra.callbacks.report",  # the report has tests of its own
        "train.max_steps=3",
    )
    result = sweep(tmp_path, corpus_dir, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    done = sorted((tmp_path / "sweep").glob("*/done.json"))
    assert len(done) == 2
    assert all(json.loads(p.read_text())["status"] == "finished" for p in done)
    (a_start, a_end), (b_start, b_end) = (_log_span(p.parent) for p in done)
    assert a_start < b_end and b_start < a_end  # the two runs overlapped in time
    assert len({(p.parent / "spm.model").read_bytes() for p in done}) == 1
    for stage in ("data", "spm"):
        entries = [p for p in (tmp_path / "cache" / stage).iterdir() if p.is_dir()]
        assert len(entries) == 1, entries
    assert list((tmp_path / "sweep").glob(".submitit/*/*_log.out"))


def test_a_raised_budget_continues_a_run_that_stopped_at_it(corpus_dir, tmp_path):
    """train.resume=auto with a larger train.max_steps continues a run that stopped at the old
    budget, to the weights of a run trained to the new one at once; a lowered budget is
    refused, and a run at its budget is skipped."""
    from safetensors.torch import load_file

    common = [
        f"data.root={corpus_dir}",
        f"cache_dir={tmp_path / 'cache'}",
        "data.test_splits=[test_2016_flickr]",
        "tokenizer.vocab_size=600",
        "model.emb_dim=16",
        "model.enc_hidden=16",
        "model.dec_hidden=32",
        "batch.max_tokens=400",
        "train.valid_every=3",
        "train.valid_max_sentences=8",
        "train.progress=false",
        "train.tensorboard=false",
        "train.max_minutes=0",
        "train.threads=1",
        "train.resume=auto",
    ]

    def train(run_dir: Path, steps: int) -> tuple[int, str]:
        done = invoke("nmt-train", f"run_dir={run_dir}", *common, f"train.max_steps={steps}")
        return done.returncode, done.stdout + done.stderr

    def result(run_dir: Path) -> dict:
        return json.loads((run_dir / "done.json").read_text())

    assert train(tmp_path / "a", 3)[0] == 0 and result(tmp_path / "a")["stop_reason"] == "max_steps"
    code, out = train(tmp_path / "a", 6)
    assert code == 0 and "continuing to the raised budget" in out, out[-3000:]
    assert result(tmp_path / "a")["steps"] == 6
    assert train(tmp_path / "b", 6)[0] == 0
    a, b = (load_file(tmp_path / d / "last" / "model.safetensors") for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in b)
    code, out = train(tmp_path / "a", 6)
    assert code == 0 and "finished before" in out
    code, out = train(tmp_path / "a", 4)
    assert code == 1 and "trained with other settings" in out and "train.max_steps" in out
