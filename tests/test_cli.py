from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import invoke
from omegaconf import OmegaConf

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return invoke(tool, *args)  # in this process: the commands' words and files


def test_data_then_spm_into_one_run_dir(corpus_dir, tmp_path):
    common = [
        f"run_dir={tmp_path / 'run'}",
        f"data.root={corpus_dir}",
        f"cache_dir={tmp_path / 'c'}",
    ]
    common += ["data.test_splits=[test_2016_flickr]", "tokenizer.vocab_size=800"]
    first = run("nmt-data", *common)
    assert first.returncode == 0, first.stderr
    out = first.stdout + first.stderr
    assert "train: 600 pairs read, 600 kept" in out
    spm = run("nmt-spm", *common)
    assert spm.returncode == 0, spm.stderr
    out = spm.stdout + spm.stderr
    assert "(cached)" in out  # the data stage is not redone
    assert "spm joint unigram vocabulary" in out and "<unk> 0/0" in out
    data = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    assert data["sizes"]["train"] == 600 and data["sizes"]["test_2016_flickr"] == 40
    encoded = json.loads((tmp_path / "run" / "encoded" / "report.json").read_text())
    assert encoded["src_vocab_size"] == encoded["tgt_vocab_size"] == 800 and encoded["joint"]
    assert encoded["splits"]["train"]["sentences"] == 600
    assert (
        encoded["splits"]["train"]["src_unk"]
        == encoded["splits"]["train"]["src_roundtrip_errors"]
        == 0
    )
    assert "spm joint unigram vocabulary" in (tmp_path / "run" / "nmt.log").read_text()
    again = run("nmt-spm", *common)
    assert again.returncode == 0 and (again.stdout + again.stderr).count("(cached)") == 2


def test_bad_data_root_is_one_line(tmp_path):
    result = run("nmt-data", f"run_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'missing'}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "data directory not found; put the corpus" in lines[0]
    assert "or point data.root (or NMT_DATA_DIR) at a directory of them" in lines[0]


def test_help_lists_groups():
    result = run("nmt-data", "--help")
    assert result.returncode == 0
    assert "gru, gru_cho, gru_noreset, lstm" in result.stdout and "run_dir:" in result.stdout


def test_train_smoke_two_steps(corpus_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = [
        f"run_dir={run_dir}",
        f"data.root={corpus_dir}",
        f"cache_dir={tmp_path / 'c'}",
        "data.test_splits=[]",
        "tokenizer.vocab_size=600",
        "model.emb_dim=32",
        "model.enc_hidden=32",
        "model.dec_hidden=64",
        "train.max_steps=2",
        "train.valid_every=1",
        "train.progress=false",
        "batch.max_tokens=600",
        "train.threads=1",
        "train.log_every=1",
    ]
    result = run("nmt-train", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout + result.stderr
    assert "training stopped (max_steps) at step 2" in out
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in out
    # Each artifact read back as what it is, not only found.
    from safetensors.torch import load_file

    from nmt.model.checkpoint import load_train_state

    saved = OmegaConf.load(run_dir / "config.yaml")
    assert (saved.model.cell, saved.model.dec_hidden, saved.tokenizer.vocab_size) == (
        "gru",
        64,
        600,
    )
    done = json.loads((run_dir / "done.json").read_text())
    weights = load_file(run_dir / "best" / "model.safetensors")
    assert sum(t.numel() for t in weights.values()) == done["parameters"]
    state = load_train_state(run_dir / "last" / "train_state.pt")  # weights_only, never pickle
    assert state["progress"]["step"] == 2
    import sentencepiece as spm

    pieces = spm.SentencePieceProcessor(model_file=str(run_dir / "spm.model"))
    assert pieces.get_piece_size() == 600
    assert pieces.decode(pieces.encode("A dog runs.")) == "A dog runs."
    for name, steps in (("metrics.csv", ["1", "2"]), ("train_metrics.csv", ["1", "2"])):
        rows = (run_dir / name).read_text().split()
        assert [row.split(",")[0] for row in rows[1:]] == steps, name
    again = run("nmt-train", *args)
    assert again.returncode == 1 and "train.resume=true" in again.stderr
    resumed = run(
        "nmt-train",
        *args[:-5],
        "train.max_steps=3",
        "train.resume=true",
        "train.progress=false",
        "batch.max_tokens=600",
        "train.valid_every=1",
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "at step 2 (epoch 0" in resumed.stdout + resumed.stderr
    assert json.loads((run_dir / "last" / "meta.json").read_text())["step"] == 3
    assert OmegaConf.load(run_dir / "config.yaml").train.resume is True  # a bool, as written
    done = json.loads((run_dir / "done.json").read_text())
    assert done["steps"] == 3 and done["stop_reason"] == "max_steps"
    assert [row.split(",")[0] for row in (run_dir / "metrics.csv").read_text().split()[1:]] == [
        "1",
        "2",
        "3",
    ]


def test_done_json_records_the_run(tiny_run):

    from nmt.core.compose import read_run_config
    from nmt.core.config import group_kwargs
    from nmt.data.tokenizer import Tokenizer
    from nmt.model.seq2seq import build_model, count_parameters

    done = json.loads((tiny_run / "done.json").read_text())
    cfg = read_run_config(tiny_run / "config.yaml")
    tok = Tokenizer.from_dir(tiny_run, "en", "de")
    model_args = group_kwargs(cfg.model)
    model = build_model(
        **model_args,
        src_vocab_size=tok.src_vocab_size,
        tgt_vocab_size=tok.tgt_vocab_size,
        joint_vocab=tok.joint,
    )
    assert done["status"] == "finished" and done["steps"] == 30 and done["best_step"] == 30
    assert done["parameters"] == count_parameters(model)
    assert done["cell"] == "gru" and done["attention"] == "bahdanau"
    assert 0.1 < done["process_peak_rss_gib"] < 8
    assert done["hardware"].startswith("CPU ") and " thread" in done["hardware"]
    assert done["precision"] == "fp32"  # precision=auto trains in fp32 on every CPU
    assert done["spm_sha256"] == tok.sha256() and done["torch"]
    # Both rates are of the same target tokens: over the whole time, and without validations.
    tokens = done["tokens_per_s"] * done["minutes"] * 60
    trained = done["train_tokens_per_s"] * (done["minutes"] - done["valid_minutes"]) * 60
    assert tokens == pytest.approx(trained, rel=1e-6)
    assert 30 * 100 < tokens <= 30 * 800  # 30 batches of at most batch.max_tokens=800 (padded)
    assert 0 < done["valid_minutes"] < done["minutes"]
    assert done["bleu_signature"].startswith("nrefs:1|case:mixed")


def test_final_eval_of_a_split_the_data_lacks_fails_before_training(corpus_dir, tmp_path):
    result = run(
        "nmt-train",
        f"run_dir={tmp_path / 'run'}",
        f"data.root={corpus_dir}",
        f"cache_dir={tmp_path / 'c'}",
        "tokenizer.vocab_size=600",
        "final_eval=[test_2018_flickr]",
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: final_eval names ['test_2018_flickr']")
    assert (
        not (tmp_path / "run" / "last").exists() and not (tmp_path / "run" / "config.yaml").exists()
    )


def test_either_spelling_of_the_cell_takes_its_optimizer_preset(corpus_dir, tmp_path):
    """`make train model=tanh` (make's own variables) and `make train ARGS="model.cell=tanh"`
    train the same model with tanh's own learning rate; the output starts with the run
    directory and ends with the next commands, and a pipe gets no progress bar."""
    from conftest import tiny_args

    args = [a for a in tiny_args(corpus_dir, tmp_path / "c") if a != "train.progress=false"]
    env = {**os.environ, "VENV": str(BIN.parent)}
    rates = {}
    for spelling in ("model=tanh", "model.cell=tanh"):
        run_dir = tmp_path / spelling.replace("=", "-")
        overrides = [f"run_dir={run_dir}", *args, spelling, "train.max_steps=2"]
        if spelling == "model=tanh":  # as make's command-line variables
            command = ["make", "--no-print-directory", "train", *overrides]
        else:
            command = ["make", "--no-print-directory", "train", f"ARGS={shlex.join(overrides)}"]
        result = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert "run directory: " + str(run_dir) in result.stdout.splitlines()[0]
        last = result.stdout.splitlines()[-2:]
        assert f"next: make translate run_dir={run_dir} input=FILE" in last[0]
        assert f"next: make eval run_dir={run_dir} split=test_2016_flickr" in last[1]
        assert "step/s" not in result.stderr and "s/step" not in result.stderr  # no bar
        config = OmegaConf.load(run_dir / "config.yaml")
        assert config.model.cell == "tanh"
        rates[spelling] = config.optim.lr
        # Where the result came from: the command as make ran it and this tree's commit.
        made = json.loads((run_dir / "done.json").read_text())["provenance"]
        assert made["command"].startswith("nmt-train ") and spelling in made["command"]
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert made["commit"].removesuffix("+dirty") == head
    tanh = OmegaConf.load(ROOT / "conf" / "optim" / "tanh.yaml").lr
    assert rates == {"model=tanh": tanh, "model.cell=tanh": tanh}
    both = run("nmt-train", "model=gru", "model.cell=tanh")
    assert both.returncode == 2 and "choose the cell once, with model=tanh" in both.stderr
    unknown = run("nmt-train", "model.cell=gruu")
    assert unknown.returncode == 2 and "model.cell='gruu': expected one of gru" in unknown.stderr


def test_make_passes_overrides_as_written(tmp_path):
    """A value with spaces, a quote or a ${...} interpolation reaches Hydra as it was typed."""
    env = {**os.environ, "VENV": str(BIN.parent)}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "translate", "run_dir=runs/X", "a.b=it's ${x} y"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert shlex.split(line)[1:] == ["a.b=it's ${x} y", "run_dir=runs/X"]


def test_version():
    from nmt import __version__

    result = run("nmt-train", "--version")
    assert result.returncode == 0 and result.stdout == f"nmt {__version__}\n"


def without(module: str, main: str, *args: str) -> subprocess.CompletedProcess:
    """An nmt-* command (``main``: its function in nmt.cli) run as if ``module`` were not
    installed: an import of it fails as it does where the extra is missing."""
    code = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv = ['nmt', *sys.argv[1:]]; "
        f"from nmt.cli import {main}; {main}()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )


def test_a_missing_extra_is_one_line_that_names_it(tiny_run, corpus_dir, tmp_path):
    from conftest import tiny_args

    def refused(result, needed_by: str, extra: str) -> None:
        assert result.returncode == 1, result.stderr[-2000:]
        assert result.stderr.strip().splitlines() == [
            f"error: {needed_by} needs the [{extra}] extra, which is not installed: "
            f"pip install 'nmt-cells[{extra}]' (make install installs every extra)"
        ]

    heatmaps = without(
        "matplotlib", "eval_main", f"run_dir={tiny_run}", "split=val", "attention_plots=2"
    )
    refused(heatmaps, "attention_plots=2", "report")
    assert not (tiny_run / "eval" / "val-best-beam5").exists()
    sweep = without("scipy", "ablate_main", "experiment=ablation_quick")
    refused(sweep, "nmt-ablate (its report's plots and statistics)", "report")
    launcher = without(
        "hydra_plugins.hydra_joblib_launcher", "train_main", "-m", "hydra/launcher=joblib"
    )
    refused(launcher, "hydra/launcher=joblib", "launchers")
    # TensorBoard asked for: refused before anything is written; by default: CSV only.
    run_dir = tmp_path / "run"
    args = [f"run_dir={run_dir}", *tiny_args(corpus_dir, tmp_path / "c"), "train.max_steps=2"]
    refused(
        without("tensorboard", "train_main", *args, "train.tensorboard=true"),
        "train.tensorboard=true",
        "tb",
    )
    assert not run_dir.exists()
    quiet = without("tensorboard", "train_main", *args)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert (run_dir / "metrics.csv").is_file() and not (run_dir / "tb").exists()
    report = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['matplotlib'] = None; "
            "sys.argv = ['report.py', *sys.argv[1:]]; import runpy; "
            f"runpy.run_path({str(ROOT / 'scripts' / 'report.py')!r}, run_name='__main__')",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    refused(report, "the report (plots and statistics)", "report")


def test_stages_never_write_into_a_trained_run(tiny_run, corpus_dir, tmp_path):
    """nmt-data and nmt-spm refuse a run directory that holds a trained run, before any write:
    its spm.model, encoded/ and data/ stay those its weights were trained on."""
    import hashlib
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)

    def fingerprint() -> dict:
        files = sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != "nmt.log")
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    before = fingerprint()
    for command, args, says in (
        ("nmt-spm", ["tokenizer=bpe8k"], "nmt-spm would replace its spm.model and encoded/"),
        ("nmt-data", ["data.src=de", "data.tgt=en"], "nmt-data would replace its data/"),
    ):
        result = run(command, f"run_dir={run_dir}", f"data.root={corpus_dir}", *args)
        assert result.returncode == 1, result.stderr[-2000:]
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: run_dir={run_dir} holds a trained run; {says}"), line
    assert fingerprint() == before


def test_a_run_dir_that_cannot_be_made_is_one_line(tmp_path):
    """Hydra makes its output directory before a command's own checks: a place where no directory
    can be made (/sys: a kernel file system) is one line, not Hydra's traceback."""
    for command in ("nmt-train", "nmt-data", "nmt-spm"):
        result = run(command, "run_dir=/sys/nmt-run/x")
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: run_dir=/sys/nmt-run/x cannot be made: /sys/nmt-run: ")


def test_a_reader_that_leaves_early_is_no_traceback():
    """`nmt-translate --help | head`: the reader gone before the help is written (here `true`,
    which leaves at once) ends the command quietly, with SIGPIPE's status."""
    for tool in ("nmt-translate", "nmt-ablate"):
        result = subprocess.run(
            ["bash", "-c", f'{BIN / tool} --help | true; echo "${{PIPESTATUS[0]}}"'],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.stderr == "" and result.stdout == "141\n", result.stderr[-2000:]


def test_a_stopped_service_leaves_no_unpacked_model(tiny_run, tmp_path):
    """nmt-serve model=FILE unpacks the file into the temporary directory; SIGTERM (what a
    supervisor sends) stops the service and removes it."""
    import signal
    import socket

    bundle = tmp_path / "m.nmt"
    made = run("nmt-export", f"run_dir={tiny_run}", f"out={bundle}")
    assert made.returncode == 0, made.stderr[-2000:]
    temp = tmp_path / "tmp"
    temp.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(BIN / "nmt-serve"), f"model={bundle}", f"port={port}", "backend=torch"],
        env={**os.environ, "TMPDIR": str(temp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline().startswith("serving on")
        assert [p.name[:10] for p in temp.iterdir()] == ["nmt-model-"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert server.returncode == 128 + signal.SIGTERM, server.stderr.read()[-2000:]
    assert list(temp.iterdir()) == []


def test_make_help_is_plain_text_in_a_pipe():
    result = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and "\033" not in result.stdout
    assert "  train      train a model" in result.stdout


def test_a_compared_model_that_is_not_there_is_one_line_before_any_loads(tiny_run, tmp_path):
    missing = tmp_path / "nope"
    result = run("nmt-serve", f"run_dir={tiny_run}", f"compare=[{missing}]", "port=1")
    assert result.returncode == 1 and "loaded" not in result.stderr
    assert result.stderr.strip() == (
        f"error: compare=[{missing}]: {missing} does not exist (name a run directory, or a file "
        "or directory nmt-export wrote)"
    )


def test_a_sigterm_while_uvicorn_sets_up_logging_stops_the_service_cleanly(monkeypatch):
    """A SIGTERM that arrives while uvicorn's Config sets up logging (under logging's locks) is
    held until that is done, then stops nmt-serve with 128 + SIGTERM and its models closed; raised
    in there, it used to end the process with a traceback and status 1."""
    import signal

    import uvicorn

    from nmt import cli, loader
    from nmt.core.compose import compose

    closed, configured = [], []

    class Model:
        def close(self):
            closed.append(True)

    class Config(uvicorn.Config):
        def __init__(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)  # handled at once, in the main thread
            super().__init__(*args, **kwargs)
            configured.append(True)  # reached only when the signal waited

    monkeypatch.setattr(loader, "compared", lambda cfg: {"m": Model()})
    monkeypatch.setattr("nmt.serving.serve.create_app", lambda models, limits: object())
    monkeypatch.setattr(uvicorn, "Config", Config)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: pytest.fail("the server ran"))
    cfg = compose("serve", ["port=0"])
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stopped:
            cli.serve_task(cfg)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert stopped.value.code == 128 + signal.SIGTERM and closed == [True] and configured
