"""Ablations: gate statistics, BLEU by length, the sweep machinery and the report."""

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
from conftest import tiny_model, toy_pairs
from sacrebleu.metrics import BLEU

from nmt.analysis import bleu_by_length, gate_statistics, length_buckets
from nmt.batching import collate
from nmt.cells import CELLS
from nmt.config import run_dirname
from nmt.data import load_corpus
from nmt.evaluate import paired_bootstrap
from nmt.report import PLOTS, Run, build_rows, markdown_table
from nmt.rnn import Recurrent
from nmt.translate import single_line

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cell", CELLS)
def test_stepped_encoder_reads_the_fused_weights(cell):
    """Gate statistics step the gate equations with the encoder's weights; the outputs of that
    loop equal the (fused, packed) forward's, so the weights are read the right way round."""
    torch.manual_seed(0)
    rnn = Recurrent(
        cell=cell, input_size=5, hidden_size=6, layers=2, bidirectional=True, dropout=0.0
    ).eval()
    x, lens = torch.randn(3, 7, 5), torch.tensor([7, 4, 1])
    expected, final = rnn(x, lens)
    stepped, stepped_final = rnn._loop(x, lens)
    torch.testing.assert_close(stepped, expected, atol=1e-5, rtol=1e-4)
    for a, b in zip(stepped_final, final, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    sums = rnn.gate_sums(x, lens)
    gates = {g for _, _, g in sums}
    expect = {
        "gru": {"reset", "update"},
        "gru_cho": {"reset", "update"},
        "lstm": {"input", "forget", "output"},
        "tanh": set(),
    }[cell]
    assert gates == expect
    for (layer, d, _), (total, count) in sums.items():
        assert layer in (0, 1) and d in (0, 1)
        assert count == int(lens.sum()) * 6  # real positions only, every unit
        assert 0.0 < total / count < 1.0


def test_gate_statistics_of_a_model():
    src, tgt = toy_pairs(6)
    batch = collate(src, tgt, list(range(6)))
    stats = gate_statistics(tiny_model("lstm", dec_layers=2), [batch], torch.device("cpu"))
    assert set(stats) == {
        f"{part}.{g}"
        for part in ("encoder.l0.fwd", "encoder.l0.bwd", "decoder.l0", "decoder.l1")
        for g in ("input", "forget", "output")
    }
    # The forget-gate bias starts at 1: an untrained LSTM keeps most of its memory.
    assert all(v > 0.6 for k, v in stats.items() if k.endswith("forget"))
    assert all(0.3 < v < 0.7 for k, v in stats.items() if not k.endswith("forget"))
    model = tiny_model("gru")
    assert {k.rsplit(".", 1)[1] for k in gate_statistics(model, [batch], torch.device("cpu"))} == {
        "reset",
        "update",
    }
    assert all(layer.recorder is None for layer in model.decoder.rnn.layers)
    assert gate_statistics(tiny_model("tanh"), [batch], torch.device("cpu")) == {}


def test_bleu_by_length_partitions_the_test_set():
    assert [label for *_, label in length_buckets((10, 15, 20))] == [
        "1-10",
        "11-15",
        "16-20",
        "21+",
    ]
    sources = ["a " * n for n in (3, 9, 12, 18, 30, 14)]
    refs = ["the cat sat on the mat", "a dog", "two men", "a red car", "blue sky", "a b c d"]
    hyps = ["the cat sat on a mat", "a dog", "two women", "a red car", "sky", "a b c"]
    rows = bleu_by_length(sources, hyps, refs)
    assert [r["sentences"] for r in rows] == [2, 2, 1, 1]
    picked = [2, 5]  # 12 and 14 words
    expected = BLEU().corpus_score([hyps[i] for i in picked], [[refs[i] for i in picked]]).score
    assert rows[1]["bleu"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="5 hypotheses"):
        bleu_by_length(sources, hyps[:5], refs)


def test_translations_stay_on_one_line():
    assert single_line("ein\nHund\r\nläuft\r") == "ein Hund läuft "


def test_table_marks_diverged_rows():
    def run(cell, status, **done):
        return Run(
            path=Path(f"/x/{cell}"),
            config={"model": {"cell": cell, "attention": "none"}, "seed": 1},
            done={"status": status, "parameters": 10, **done},
        )

    ok = run(
        "gru",
        "finished",
        train_tokens_per_s=100.0,
        steps=3,
        minutes=1.0,
        bleu=1.0,
        best_step=3,
        enc_hidden=8,
        dec_hidden=16,
        stop_reason="early_stopping",
    )
    ok.test = {"bleu": 2.0, "chrf": 20.0}
    rows = build_rows([run("tanh", "failed"), ok], {})
    table = markdown_table(rows, "gru")
    assert "| tanh | none | 10 | – | diverged |" in table
    assert "| gru | none | 10 | 8/16 | 100 | 3 | 1/1 |" in table and "(baseline)" in table
    # A cell with a diverged seed beside a finished one: its row counts both, averages one.
    seed2 = run("gru", "failed")
    seed2.config["seed"] = 2
    (row,) = build_rows([ok, seed2], {})
    assert (row["runs"], row["failed"], row["steps"]) == (2, 1, 3)
    assert "| 3 | 1/1 |" in markdown_table([row], "gru")
    done = {k: v for k, v in ok.done.items() if k not in ("status", "parameters")}
    seed3 = run("gru", "finished", **{**done, "steps": 5, "stop_reason": "max_epochs"})
    seed3.config["seed"], seed3.test = 3, {"bleu": 4.0, "chrf": 22.0}
    (row,) = build_rows([ok, seed2, seed3], {})
    assert (row["runs"], row["failed"], row["steps"], row["test_bleu"]["mean"]) == (3, 1, 4, 3.0)
    # Both ways validation ends a run count as early stops; a limit does not.
    for reason, counted in [("lr_decayed", "1/1"), ("max_epochs", "0/1")]:
        ok.done["stop_reason"] = reason
        assert f"| 3 | {counted} |" in markdown_table(build_rows([ok], {}), "gru")


# --------------------------------------------------------------------------------------------
# The sweep on a tiny config, end to end


def sweep(
    tmp: Path,
    corpus_dir: Path,
    *extra: str,
    cells: str = "gru,lstm",
    wait: bool = True,
    name_root: Path | None = None,
) -> subprocess.CompletedProcess | subprocess.Popen:
    """A tiny ablation_quick sweep. ``name_root``: pass data.root through the environment
    (NMT_DATA_DIR) so that it stays out of the run names, as a user's default would."""
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
    ]
    command = [str(BIN / "nmt-train"), *args]
    if not wait:
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT, env=env
    )


@pytest.fixture(scope="module")
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
    assert all((tmp_path / "out" / name).is_file() for name in PLOTS)
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
    long = ["train.max_steps=60", "train.valid_every=5", "train.valid_max_sentences=5"]
    straight = sweep(tmp_path / "a", corpus_dir, *long, cells="gru")
    assert straight.returncode == 0, straight.stderr[-3000:]
    (reference,) = [p for p in (tmp_path / "a" / "sweep").iterdir() if (p / "done.json").is_file()]

    job = sweep(tmp_path / "b", corpus_dir, *long, cells="gru", wait=False)
    meta = tmp_path / "b" / "sweep" / reference.name / "last" / "meta.json"
    deadline = time.monotonic() + 300
    while not meta.is_file() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    job.send_signal(signal.SIGINT)
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 130, stderr[-3000:]
    run = meta.parent.parent
    stopped_at = json.loads(meta.read_text())["step"]
    assert 5 <= stopped_at < 60 and not (run / "done.json").exists()
    assert f"interrupted at step {stopped_at}; checkpoint saved" in stderr

    again = sweep(tmp_path / "b", corpus_dir, *long, cells="gru")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"at step {stopped_at} (epoch" in again.stdout + again.stderr  # resumed there
    assert json.loads((run / "done.json").read_text())["steps"] == 60
    mine, theirs = weights(run), weights(reference)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)

    finished_at = (run / "done.json").stat().st_mtime_ns
    third = sweep(tmp_path / "b", corpus_dir, *long, cells="gru")
    assert third.returncode == 0 and "finished before" in third.stdout + third.stderr
    assert (run / "done.json").stat().st_mtime_ns == finished_at


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


def test_auto_resume_refuses_a_run_made_with_other_settings(corpus_dir, tmp_path):
    """The same run directory reached with another corpus (NMT_DATA_DIR is not in the name)
    is an error, not a finished run silently skipped."""
    first = sweep(tmp_path, corpus_dir, "train.max_steps=2", cells="gru", name_root=corpus_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    other = tmp_path / "other"
    shutil.copytree(corpus_dir, other)
    result = sweep(tmp_path, corpus_dir, "train.max_steps=2", cells="gru", name_root=other)
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
    result = subprocess.run(
        [str(BIN / "nmt-train"), f"run_dir={tmp_path / 'run'}", "train.resume=maybe"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: train.resume='maybe': expected true, false or auto"


# --------------------------------------------------------------------------------------------
# nmt-ablate: a preset with an ablation block (tuning, arms, report), on a tiny config


def ablate(tmp: Path, corpus_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        "experiment=ablation_converged",
        f"hydra.sweep.dir={tmp / 'sweep'}",
        f"data.root={corpus_dir}",
        f"cache_dir={tmp / 'cache'}",
        "data.test_splits=[test_2016_flickr]",
        "final_eval=[test_2016_flickr]",
        "tokenizer.vocab_size=600",
        "model.emb_dim=16",
        "model.enc_hidden=16",
        "model.dec_hidden=32",
        "batch.max_tokens=800",
        "train.valid_every=2",
        "train.max_epochs=1",
        "ablation.cells=[gru,tanh]",
        "~ablation.seeds.bahdanau",
        "ablation.seeds.none=[1,2]",
        "ablation.tune.lrs=[0.001,0.003]",
        "ablation.tune.max_steps=2",
        "ablation.jobs=1",
        *extra,
    ]
    return subprocess.run(
        [str(BIN / "nmt-ablate"), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def tiny_ablation(corpus_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablate")
    result = ablate(tmp, corpus_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "sweep", result


@pytest.mark.xdist_group("tiny_ablation")  # one worker builds the fixture
def test_ablation_tunes_every_cell_with_the_same_budget(tiny_ablation):
    sweep_dir, _ = tiny_ablation
    tuning = json.loads((sweep_dir / "tuning.json").read_text())
    assert tuning["lrs"] == [0.001, 0.003] and tuning["max_steps"] == 2
    budget = {}
    for run in sorted((sweep_dir / "tune").iterdir()):
        if not (run / "done.json").is_file():
            continue
        done = json.loads((run / "done.json").read_text())
        config = _yaml(run / "config.yaml")
        assert done["steps"] == 2 and config["seed"] == 1 and config["final_eval"] == []
        budget.setdefault(done["cell"], []).append((config["optim"]["lr"], done["steps"]))
    assert {cell: sorted(runs) for cell, runs in budget.items()} == {
        cell: [(0.001, 2), (0.003, 2)] for cell in ("gru", "tanh")
    }
    # the chosen rate is the one with the best validation BLEU of its cell
    for cell in ("gru", "tanh"):
        scored = {r["lr"]: r["valid_bleu"] for r in tuning["runs"] if r["cell"] == cell}
        best = max(scored.values())
        assert scored[tuning["chosen"][cell]["none"]] == best


def _yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path))


@pytest.mark.xdist_group("tiny_ablation")  # one worker builds the fixture
def test_ablation_runs_every_arm_with_the_tuned_rate_at_matched_size(tiny_ablation):
    sweep_dir, _ = tiny_ablation
    tuning = json.loads((sweep_dir / "tuning.json").read_text())
    runs = sorted(p for p in sweep_dir.iterdir() if (p / "done.json").is_file())
    seen = set()
    parameters = {}
    for run in runs:
        done, config = json.loads((run / "done.json").read_text()), _yaml(run / "config.yaml")
        assert done["status"] == "finished"
        assert config["optim"]["lr"] == tuning["chosen"][done["cell"]]["none"]
        seen.add((done["cell"], config["seed"]))
        parameters[done["cell"]] = done["parameters"]
        if done["cell"] == "tanh":  # resized to the GRU's count
            assert (done["enc_hidden"], done["dec_hidden"]) != (16, 32)
    assert seen == {("gru", 1), ("gru", 2), ("tanh", 1), ("tanh", 2)}
    assert abs(parameters["tanh"] - parameters["gru"]) <= 0.02 * parameters["gru"]


@pytest.mark.xdist_group("tiny_ablation")  # one worker builds the fixture
def test_ablation_report_has_seed_statistics_and_the_tuning(tiny_ablation):
    sweep_dir, _ = tiny_ablation
    text = (sweep_dir / "report" / "report.md").read_text()
    assert "Learning rates tuned on validation" in text and "| tanh | none |" in text
    results = json.loads((sweep_dir / "report" / "results.json").read_text())
    rows = {r["cell"]: r for r in results["rows"]}
    assert rows["gru"]["test_bleu"]["n"] == 2 and rows["tanh"]["test_bleu"]["n"] == 2
    versus = rows["tanh"]["versus"]
    assert versus["bleu"]["samples"] == 1000
    # The difference of the seed means, and a bootstrap p of (1 + k) / (1 + samples).
    delta = rows["tanh"]["test_bleu"]["mean"] - rows["gru"]["test_bleu"]["mean"]
    assert versus["bleu"]["delta"] == pytest.approx(delta, abs=1e-9)
    k = versus["bleu"]["p"] * 1001 - 1
    assert abs(k - round(k)) < 1e-6 and 0 <= round(k) <= 1000
    assert results["tuning"]["chosen"].keys() == {"gru", "tanh"}


@pytest.mark.xdist_group("tiny_ablation")  # one worker builds the fixture
def test_ablation_rerun_trains_nothing_and_refuses_grid_overrides(tiny_ablation, corpus_dir):
    sweep_dir, _ = tiny_ablation
    before = {p: p.stat().st_mtime for p in sweep_dir.glob("**/done.json")}
    again = ablate(sweep_dir.parent, corpus_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime for p in sweep_dir.glob("**/done.json")} == before
    refused = ablate(sweep_dir.parent, corpus_dir, "seed=5")
    assert refused.returncode == 1 and "ablation block" in refused.stderr


def test_ablate_help_and_a_bad_override_say_one_thing():
    helped = subprocess.run(
        [str(BIN / "nmt-ablate"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert helped.returncode == 0 and "nmt-ablate" in helped.stdout and "tuning" in helped.stdout
    bad = subprocess.run(
        [str(BIN / "nmt-ablate"), "experiment=ablation_converged", "model.nope=1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "nope" in bad.stderr


def fake_tuning_run(tune_dir: Path, cell: str, attention: str, lr: float, bleu, status="finished"):
    from omegaconf import OmegaConf

    run = tune_dir / f"{cell}-{attention}-{lr}"
    run.mkdir(parents=True)
    config = {"model": {"cell": cell, "attention": attention}, "optim": {"lr": lr}}
    (run / "config.yaml").write_text(OmegaConf.to_yaml(config))
    (run / "done.json").write_text(json.dumps({"status": status, "steps": 7, "bleu": bleu}))


def test_tuning_picks_the_best_rate_per_cell_and_can_serve_every_attention(tmp_path):
    from omegaconf import OmegaConf

    from nmt.errors import UserError
    from nmt.sweep import choose_rates

    tuned = {"gru": (20.0, 25.0, 24.0), "tanh": (15.0, 9.0, None), "lstm": (21.0, 22.0, 22.0)}
    for cell, scores in tuned.items():
        for lr, bleu in zip((0.0005, 0.001, 0.002), scores, strict=True):
            status = "finished" if bleu is not None else "failed"
            fake_tuning_run(tmp_path / "tune", cell, "bahdanau", lr, bleu, status)
    tune = {"lrs": [0.0005, 0.001, 0.002], "max_steps": 7, "seed": 1, "attention": "bahdanau"}
    plan = OmegaConf.create(
        {"cells": ["gru", "tanh", "lstm"], "seeds": {"bahdanau": [1, 2], "none": [1]}, "tune": tune}
    )
    tuning = choose_rates(tmp_path / "tune", plan)
    # best validation BLEU per cell; the diverged rate never wins; a tie goes to the smaller
    # rate; one rate for both attentions
    assert tuning["chosen"] == {
        "gru": {"bahdanau": 0.001, "none": 0.001},
        "tanh": {"bahdanau": 0.0005, "none": 0.0005},
        "lstm": {"bahdanau": 0.001, "none": 0.001},
    }
    assert [r["valid_bleu"] for r in tuning["runs"] if r["cell"] == "tanh"] == [15.0, 9.0, None]
    plan.tune.attention = None  # every attention tuned on its own: none was not
    with pytest.raises(UserError, match="no tuning run of gru, none"):
        choose_rates(tmp_path / "tune", plan)


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
        done = subprocess.run(
            [str(BIN / "nmt-train"), f"run_dir={run_dir}", *common, f"train.max_steps={steps}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
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
