"""Shared fixtures: small slices of Multi30k (read from ../shared, never copied into the repo)."""

from __future__ import annotations

import contextlib
import gzip
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Each worker of the suite, and every command it starts, computes on its share of the cores
# (set before torch loads): two processes of all cores each on the same two cores ran a tiny
# training 10x slower than one thread each, their OpenMP threads spinning while they wait.
if "PYTEST_XDIST_WORKER" in os.environ:  # a worker (the controller's env is the workers' too)
    _share = len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Commands run by the tests see a user's shell, not the `make test` that started pytest: a make
# nested under another one prints "Entering directory" lines into stdout.
# make exports its command-line variables too: `make test ARGS=--durations=25` must not reach
# the `make eval ...` a test runs as its ARGS.
for _var in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "ARGS", "TEST_JOBS"):
    os.environ.pop(_var, None)

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = Path(os.environ.get("NMT_DATA_DIR", ROOT.parent / "shared" / "data" / "multi30k"))
SLICES = {"train": 600, "val": 60, "test_2016_flickr": 40, "test_2017_flickr": 30}
LANGS = ("en", "de", "fr", "cs")  # Czech has no test_2017_flickr, as in Multi30k itself


def pytest_configure(config) -> None:
    """No corpus, no suite: a green run must have trained, translated and scored for real."""
    missing = [f for f in ("train.en.gz", "val.de.gz") if not (MULTI30K / f).is_file()]
    if missing:
        raise pytest.UsageError(
            f"Multi30k not found at {MULTI30K} (no {missing[0]}); set NMT_DATA_DIR to a directory "
            "of <split>.<lang>.gz files of Multi30k Task 1"
        )


def multi30k_lines(split: str, lang: str, n: int | None = None) -> list[str]:
    """The first n lines of a Multi30k file."""
    path = MULTI30K / f"{split}.{lang}.gz"
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as f:
        lines = [line.rstrip("\n") for line in f]
    return lines if n is None else lines[:n]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)
    return path


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A directory of <split>.<lang> files: slices of Multi30k en/de/fr/cs."""
    root = tmp_path_factory.mktemp("multi30k_slice")
    for split, n in SLICES.items():
        for lang in LANGS:
            if (MULTI30K / f"{split}.{lang}.gz").is_file():
                write_lines(root / f"{split}.{lang}", multi30k_lines(split, lang, n))
    return root


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


def tiny_model(cell: str, attention: str = "bahdanau", vocab: int = 40, **overrides):
    """A small Seq2Seq for fast tests, every option explicit."""
    from nmt.model.seq2seq import build_model

    args = dict(
        cell=cell,
        attention=attention,
        emb_dim=16,
        enc_hidden=16,
        dec_hidden=32,
        enc_layers=1,
        dec_layers=1,
        bidirectional=True,
        dropout=0.0,
        emb_dropout=0.0,
        input_feeding=True,
        tie_output=True,
        tie_src_tgt=True,
        src_vocab_size=vocab,
        tgt_vocab_size=vocab,
        joint_vocab=True,
        match_params=None,
        conditional=False,
        var_dropout=0.0,
        ctx_dropout=0.0,
        word_dropout=0.0,
        fused=False,
    )
    args.update(overrides)
    return build_model(**args)


def toy_pairs(n: int = 20, vocab: int = 40, seed: int = 0) -> tuple[list, list]:
    """Generated pairs: the target is the source reversed, shifted by one id."""
    import random

    rng = random.Random(seed)
    src = [[rng.randint(4, vocab - 2) for _ in range(rng.randint(3, 8))] for _ in range(n)]
    tgt = [[t + 1 for t in reversed(s)] for s in src]
    return src, tgt


def tiny_args(corpus_dir: Path, cache: Path) -> list[str]:
    """nmt-train settings of a tiny model on the Multi30k slice (30 steps, one validation)."""
    return [
        f"data.root={corpus_dir}",
        f"cache_dir={cache}",
        "data.test_splits=[test_2016_flickr]",
        "tokenizer.vocab_size=600",
        "model.emb_dim=32",
        "model.enc_hidden=32",
        "model.dec_hidden=64",
        "train.max_steps=30",
        "train.valid_every=30",
        "train.progress=false",
        "batch.max_tokens=800",
        "train.valid_max_sentences=20",
    ]


def train_tiny(run_dir: Path, corpus_dir: Path, cache: Path, *extra: str) -> Path:
    """Train a tiny run with nmt-train (extra overrides last, in this process: ``invoke``); fails
    the test if it fails."""
    result = invoke("nmt-train", f"run_dir={run_dir}", *tiny_args(corpus_dir, cache), *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """The stage cache of the tiny runs: their data and SentencePiece stages are built once."""
    return tmp_path_factory.mktemp("tiny_cache")


@pytest.fixture(scope="session")
def tiny_run(corpus_dir, tiny_cache, tmp_path_factory) -> Path:
    """A run directory trained for a few steps on the Multi30k slice with a tiny model."""
    return train_tiny(tmp_path_factory.mktemp("tiny_run") / "run", corpus_dir, tiny_cache)


@pytest.fixture(scope="session")
def tiny_run_b(corpus_dir, tiny_cache, tmp_path_factory) -> Path:
    """A second tiny run of the same vocabulary and pair (another seed, 12 steps), which keeps
    the weights of its three validations (steps 4, 8, 12) for averaging."""
    place = tmp_path_factory.mktemp("tiny_run_b") / "run"
    steps = ("train.max_steps=12", "train.valid_every=4", "train.keep_last=3", "seed=2")
    return train_tiny(place, corpus_dir, tiny_cache, *steps)


@pytest.fixture(scope="session")
def tiny_run_v500(corpus_dir, tiny_cache, tmp_path_factory) -> Path:
    """A tiny run of another vocabulary (500 pieces), two steps."""
    place = tmp_path_factory.mktemp("tiny_run_v500") / "run"
    steps = ("train.max_steps=2", "train.valid_every=2", "tokenizer.vocab_size=500")
    return train_tiny(place, corpus_dir, tiny_cache, *steps)


def toy_batch(n=4, seed=0):
    """A padded batch of n toy pairs."""
    from nmt.data.batching import collate

    src, tgt = toy_pairs(n, seed=seed)
    return collate(src, tgt, range(n))


# Two kernels' float32 results differ in their last bits (oneDNN, MKL and onnxruntime choose
# kernels by the CPU: AVX2, AVX-512, AMX), so a choice between two tokens whose log-probabilities
# are closer than this may go either way; a decision by more than this is the model's, not the
# kernel's. An untrained model's logits nearly tie often (28 against 18 at the first step of
# gru_cho + luong_general on an AMX machine).
TIE = 1e-3


def forced(model, src: list[int], tokens: list[int]):
    """One sentence's log-probabilities [len(tokens) + 1, V] and attention along the given
    tokens (then the end), each step fed the previous given token: the two backends compared
    on the same inputs, whatever their searches chose."""
    import torch

    from nmt.core.specials import BOS_ID, EOS_ID
    from nmt.data.batching import collate

    b = collate([src], None, [0])
    with torch.no_grad():
        return _forced(model, b, tokens, BOS_ID, EOS_ID)


def _forced(model, b, tokens, bos, eos):
    import torch

    memory = model.encode(b.src_ids, b.src_lens, b.src_mask)
    state = model.decoder.init_state(memory)
    prev, rows, attn = torch.tensor([bos]), [], []
    for token in [*tokens, eos]:
        out = model.decoder.step(prev, state, memory)
        rows.append(torch.log_softmax(out.logits.float(), dim=-1)[0])
        if out.attn is not None:
            attn.append(out.attn.float()[0])
        state, prev = out.state, torch.tensor([token])
    return torch.stack(rows), (torch.stack(attn) if attn else None)


def first_near_tie(lprobs) -> int:
    """The first step whose two best tokens are within TIE (len(lprobs) if none is)."""
    top2 = lprobs.topk(2, dim=-1).values
    close = ((top2[:, 0] - top2[:, 1]) < TIE).nonzero()
    return int(close[0]) if len(close) else len(lprobs)


def greedy_alike(model, src: list[int], mine: list[int], theirs: list[int]) -> bool:
    """Two greedy outputs of one source (token ids) by two kernels or backends: the same up to the
    first step of ``mine`` where ``model``'s two best tokens nearly tie, and wholly the same if no
    step does. Whether they are the same."""
    lprobs, _ = forced(model, src, mine)
    tie = first_near_tie(lprobs)
    assert theirs[:tie] == mine[:tie], f"outputs differ at a step decided by a margin over {TIE}"
    assert mine == theirs or tie < len(lprobs), "outputs differ, every step decided by a margin"
    return mine == theirs


def bf16():
    """The project's own switch (nmt.core.runtime.autocast), so that a switch left off fails here."""
    import torch

    from nmt.core.runtime import autocast

    return autocast(torch.device("cpu"), torch.bfloat16)


def relative_error(a, b) -> float:
    return float((a - b).norm() / b.norm())


def run_fit(run_dir, *, max_steps, resume=False, validate=None, model_fn=None, **over):
    """nmt.training.train.fit on 40 toy pairs with a tiny GRU (any argument or option overridden)."""
    import dataclasses

    import torch

    from nmt.core.runtime import seed_everything
    from nmt.data.batching import BatchSampler
    from nmt.training.optim import Schedule, build_optimizer
    from nmt.training.train import TrainOptions, fit

    seed_everything(3)
    model = (model_fn or (lambda: tiny_model("gru", dropout=0.3, emb_dropout=0.2)))()
    src, tgt = toy_pairs(40)
    sampler = BatchSampler(
        src_lens=[len(s) for s in src],
        tgt_lens=[len(t) for t in tgt],
        max_tokens=None,
        batch_size=8,
        pool_size=2,
        seed=3,
    )
    opt = build_optimizer(model, optimizer="adam", lr=3e-3, weight_decay=0.0, betas=[0.9, 0.999])
    schedule = Schedule(
        opt, schedule="plateau", warmup_steps=0, decay_factor=0.5, patience=0, min_lr=1e-5
    )
    calls = []

    def default_validate(m):
        calls.append(1)
        return {"bleu": -float(sum(p.detach().sum() for p in m.parameters()).abs())}

    args = dict(
        model=model,
        src_ids=src,
        tgt_ids=tgt,
        sampler=sampler,
        optimizer=opt,
        schedule=schedule,
        validate=validate or default_validate,
        run_dir=run_dir,
        device=torch.device("cpu"),
        clip_norm=1.0,
        label_smoothing=0.1,
        max_steps=max_steps,
        max_epochs=100,
        max_minutes=0,
        valid_every=4,
        log_every=2,
        patience=100,
        early_stop_metric="bleu",
        resume=resume,
        max_bad_steps=3,
        tensorboard=False,
        progress=False,
        keep_last=0,
        keep_best=0,
        max_lr_decays=0,
        min_steps=0,
        precision=torch.float32,
        meta={"cell": "gru"},
    )
    args.update(over)
    fields = {f.name for f in dataclasses.fields(TrainOptions)}
    options = TrainOptions(**{k: v for k, v in args.items() if k in fields})
    rest = {k: v for k, v in args.items() if k not in fields}
    return args["model"], fit(**rest, options=options)


def metrics_rows(run_dir) -> list[dict]:
    """The rows of a run's metrics.csv."""
    import csv

    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def nmt_translate(run_dir, stdin: bytes, *args: str):
    """nmt-translate run_dir=... with stdin, in this process (``invoke``): bytes out and err."""
    return invoke("nmt-translate", f"run_dir={run_dir}", *args, stdin=stdin, text=False)


@contextlib.contextmanager
def serving(app):
    """A uvicorn server of ``app`` on a free loopback port, in a thread: its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def ablate(tmp: Path, corpus_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """The README's `make ablate experiment=ablation_gates`, cut to two cells (gru, tanh) and
    tiny models, its settings' seeds and the search's start changed, with ``extra`` overrides."""
    args = [
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
        "train.valid_every=5",
        "train.valid_max_sentences=20",
        "train.max_epochs=1",
        "ablation.cells=[gru,tanh]",
        "~ablation.seeds.bahdanau",
        "+ablation.seeds.none=[1,2]",
        "ablation.also=[{cells:[gru,tanh],attention:none,seeds:[1],extra:['data.tgt=fr']}]",
        "ablation.tune.lrs=[0.001,0.003]",
        "ablation.tune.factor=3",
        "ablation.tune.max_points=3",
        "ablation.tune.max_steps=2",
        "ablation.tune.attention=none",
        "ablation.jobs=1",  # a setting's runs one after another in one nmt-train process
        *extra,
    ]
    venv = Path(sys.executable).parent.parent
    command = ["make", "ablate", "experiment=ablation_gates", f"ARGS={shlex.join(args)}"]
    return run_whole([*command, f"VENV={venv}"], timeout=900, cwd=ROOT)


def run_whole(
    command: list[str] | str, *, timeout: float, input: str | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """subprocess.run(capture_output=True, text=True) in a session of its own, ended whole at
    the timeout: a sweep or a training under make or a shell outlives its parent killed alone,
    and takes the cores of the tests after it."""
    with subprocess.Popen(
        command,
        stdin=subprocess.PIPE if input is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    ) as process:
        try:
            out, err = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.fixture(scope="session")  # built once per worker, however the tests interleave
def tiny_ablation(corpus_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablate")
    result = ablate(tmp, corpus_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "sweep", result


def invoke(
    tool: str, *args: str, stdin: str | bytes | None = None, text: bool = True
) -> subprocess.CompletedProcess:
    """The console script ``tool`` (an ``nmt-*`` entry point of pyproject.toml) run in this
    process as its own process would run it: the same function, ``sys.argv``, standard input,
    standard output and error captured (str, or bytes unless ``text``), the exit status. What a command may change of the
    process (environment, working directory, signal handlers, logging, torch's threads and
    random state) is put back after it. For tests of what a command does and says; tests of how a
    process starts, stops, is signalled or what it imports start a real one (subprocess)."""
    import importlib.metadata
    import io
    import logging
    import traceback

    import torch

    (entry,) = importlib.metadata.entry_points(group="console_scripts", name=tool)
    main = entry.load()
    data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
    streams = {
        name: io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
        for name in ("stdout", "stderr")
    }
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_argv, saved_env, saved_cwd = sys.argv[:], dict(os.environ), os.getcwd()
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    saved_threads, saved_rng = torch.get_num_threads(), torch.random.get_rng_state()
    loggers = [logging.root, *logging.Logger.manager.loggerDict.values()]
    saved_logging = {
        id(lg): (lg.handlers[:], lg.level, lg.disabled, lg.propagate)
        for lg in loggers
        if isinstance(lg, logging.Logger)
    }
    sys.argv = [str(Path(sys.executable).parent / tool), *args]
    sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    sys.stdout, sys.stderr = streams["stdout"], streams["stderr"]
    # A command's process loads datasets after it has set its progress bars off (the
    # environment variable it reads then); where this process loaded it before, set them off.
    bars = "datasets" in sys.modules and sys.modules["datasets"].is_progress_bar_enabled()
    if bars:
        sys.modules["datasets"].disable_progress_bars()
    status = 0
    try:
        main()
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        status = 1 if isinstance(e.code, str) else (e.code or 0)
    except Exception:  # what a process's interpreter prints before it exits with 1
        traceback.print_exc()
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        for s, handler in saved_signals.items():
            signal.signal(s, handler)
        torch.set_num_threads(saved_threads)
        if bars:
            sys.modules["datasets"].enable_progress_bars()
        torch.random.set_rng_state(saved_rng)
        for lg in [logging.root, *logging.Logger.manager.loggerDict.values()]:
            if not isinstance(lg, logging.Logger):
                continue
            if id(lg) in saved_logging:
                lg.handlers[:], lg.level, lg.disabled, lg.propagate = saved_logging[id(lg)]
            else:  # made by the command: its handlers wrote into the captured streams
                lg.handlers.clear()
    out, err = (streams[n].buffer.getvalue() for n in ("stdout", "stderr"))
    if text:
        out, err = out.decode(), err.decode()
    return subprocess.CompletedProcess([tool, *args], status, out, err)
