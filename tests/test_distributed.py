"""Data-parallel training under torchrun: two ranks of one thread with gloo on CPU, the real
launcher and the real nmt-train, checked against one process doing the same arithmetic."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from pytest import approx
from safetensors.torch import load_file

from nmt.core.config import Config
from nmt.core.runtime import seed_everything
from nmt.data import prepare as data
from nmt.data import tokenizer
from nmt.data.batching import collate
from nmt.model.loss import sequence_loss
from nmt.pipeline import _build
from nmt.training.distributed import SINGLE, World, shard

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def small(corpus_dir: Path, cache: Path, *extra: str, dropout: float = 0.0) -> list[str]:
    return [
        f"data.root={corpus_dir}",
        f"cache_dir={cache}",
        "data.test_splits=[test_2016_flickr]",
        "tokenizer.vocab_size=600",
        "model.emb_dim=16",
        "model.enc_hidden=16",
        "model.dec_hidden=32",
        f"model.dropout={dropout}",
        f"model.emb_dropout={dropout}",
        "batch.max_tokens=300",
        "optim=adam",
        "optim.schedule=constant",
        "train.valid_every=4",
        "train.valid_max_sentences=8",
        "train.progress=false",
        "train.tensorboard=false",
        "train.max_minutes=0",
        "train.threads=1",
        "seed=7",
        *extra,
    ]


def torchrun(run_dir: Path, args: list[str], **popen) -> subprocess.Popen:
    command = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc-per-node=2",
        str(BIN / "nmt-train"),
        f"run_dir={run_dir}",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-4000:]
    return out


def weights(run_dir: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_file(run_dir / which / "model.safetensors")


def test_shard_gives_each_rank_its_share_in_equal_counts():
    batches = [(p, [p]) for p in range(7)]
    first = list(shard(iter(batches), World(rank=0, size=3)))
    second = list(shard(iter(batches), World(rank=1, size=3)))
    # Groups (0,1,2) and (3,4,5); batch 6 has no partners and is left out by every rank.
    assert first == [(2, [0]), (5, [3])]
    assert second == [(2, [1]), (5, [4])]
    assert list(shard(iter(batches), SINGLE)) == batches
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert World.from_env(env) == World(rank=3, size=4, local_rank=1, local_size=2)
    assert World.from_env({}) is SINGLE


def test_each_rank_computes_on_its_share_of_the_cores(monkeypatch):
    import nmt.training.distributed

    monkeypatch.setattr(nmt.training.distributed, "usable_cores", lambda: 8)
    assert World(rank=1, size=4, local_rank=1, local_size=2).threads(None) == 4
    assert World(rank=0, size=2, local_rank=0, local_size=2).threads(3) == 3  # asked for
    assert World(rank=0, size=16, local_rank=0, local_size=16).threads(None) == 1


def test_two_ranks_equal_one_process_on_the_same_global_batches(corpus_dir, tmp_path):
    """After 6 updates of two ranks, the weights are those of one process whose every update
    takes both ranks' batches, the loss normalised by their tokens together. Plain SGD without
    clipping, so a gradient off by any factor moves the weights elsewhere (Adam's normalised
    step would hide it)."""
    run_dir = tmp_path / "ddp"
    steps = 6
    # fp32 on every machine: the reference below runs fp32, and bf16 autocast (precision=auto on
    # a CPU with AMX) moves the weights by more than the tolerance.
    sgd = ("optim.optimizer=sgd", "optim.lr=5", "optim.clip_norm=1000", "precision=fp32")
    out = finish(
        torchrun(run_dir, small(corpus_dir, tmp_path / "cache", *sgd, f"train.max_steps={steps}"))
    )
    done = json.loads((run_dir / "done.json").read_text())
    assert done["world_size"] == 2 and done["steps"] == steps, out[-2000:]

    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(run_dir / "config.yaml"))
    report = data.read_report(run_dir / data.ARTIFACT)
    tok = tokenizer.Tokenizer.from_dir(run_dir, cfg.data.src, cfg.data.tgt)
    train_split = tokenizer.load_encoded(run_dir)[report["train_split"]]
    torch.set_num_threads(1)
    seed_everything(cfg.seed)
    parts = _build(cfg, tok, train_split)
    model, optimizer = parts["model"], parts["optimizer"]
    src, tgt = parts["src_ids"], parts["tgt_ids"]
    order = [indices for _, indices in parts["sampler"].iterate(0)]
    assert len(order) >= 2 * steps
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for step in range(steps):
        pair = order[2 * step : 2 * step + 2]
        group = [collate([src[i] for i in b], [tgt[i] for i in b], b) for b in pair]
        tokens = sum(int(b.tgt_mask.sum()) for b in group)
        optimizer.zero_grad()
        for batch in group:
            (sequence_loss(model, batch, cfg.optim.label_smoothing).loss / tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_norm)
        optimizer.step()
    trained, expected = weights(run_dir), model.state_dict()
    moved = max(float((expected[k] - initial[k]).abs().max()) for k in trained)
    assert moved > 1e-2  # the updates are large next to the tolerance below
    for name, value in trained.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_interrupted_and_resumed_equals_uninterrupted(corpus_dir, tmp_path):
    """SIGINT to the job (as Ctrl-C sends it to every process) ends every rank with one
    checkpoint; resuming from it to step N gives the weights of a run that went to N."""
    args = small(corpus_dir, tmp_path / "cache", dropout=0.3)  # each rank its own masks
    stopped = tmp_path / "stopped"
    job = torchrun(stopped, [*args, "train.max_steps=100000"], start_new_session=True)
    meta = stopped / "last" / "meta.json"
    deadline = time.monotonic() + 240
    while not meta.is_file() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert meta.is_file(), job.communicate()[0][-3000:]
    os.killpg(job.pid, signal.SIGINT)
    out, _ = job.communicate(timeout=120)
    assert job.returncode != 0 and "interrupted at step" in out, out[-3000:]
    step = json.loads(meta.read_text())["step"]
    assert step >= 4
    state = torch.load(stopped / "last" / "train_state.pt", weights_only=True)
    assert len(state["rng_ranks"]) == 2

    target = step + 5
    finish(torchrun(stopped, [*args, f"train.max_steps={target}", "train.resume=true"]))
    straight = tmp_path / "straight"
    finish(torchrun(straight, [*args, f"train.max_steps={target}"]))
    a, b = weights(stopped), weights(straight)
    assert json.loads((straight / "done.json").read_text())["steps"] == target
    for name in b:
        assert torch.equal(a[name], b[name]), name
    # The last validation of both, from the same weights: the same teacher-forced loss to
    # rounding. Its greedy outputs are not compared: an untrained model's near-ties may be
    # decided differently by two processes' kernels (under a loaded suite chrF differed, 0.37
    # against 0.44, with every weight equal).
    last = []
    for run in (stopped, straight):
        with open(run / "metrics.csv", newline="") as f:
            last.append(list(csv.DictReader(f))[-1])
    assert last[0]["step"] == last[1]["step"]
    for key in ("loss", "ppl"):
        assert float(last[0][key]) == approx(float(last[1][key]), rel=1e-5), key


def test_a_crashed_rank_ends_the_job_and_keeps_the_checkpoint(corpus_dir, tmp_path):
    """Killing a rank ends the job non-zero with torchrun's summary, and last/ loads. Without
    attention: DDP fails at the second update if a parameter goes unused, before any
    checkpoint, so reaching one shows every parameter takes part."""
    run_dir = tmp_path / "crash"
    extra = ("model.attention=none", "train.max_steps=100000")
    args = small(corpus_dir, tmp_path / "cache", *extra)
    job = torchrun(run_dir, args, start_new_session=True)
    meta = run_dir / "last" / "meta.json"
    deadline = time.monotonic() + 240
    while not meta.is_file() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert meta.is_file(), job.communicate()[0][-3000:]
    ranks = [int(p) for p in subprocess.check_output(["pgrep", "-P", str(job.pid)]).split()]
    assert len(ranks) == 2
    os.kill(ranks[1], signal.SIGKILL)
    out, _ = job.communicate(timeout=120)
    assert job.returncode != 0
    assert "nmt-train FAILED" in out or "ChildFailedError" in out, out[-3000:]
    assert not (run_dir / "done.json").exists()
    assert weights(run_dir)  # the last checkpoint loads
    assert json.loads(meta.read_text())["step"] >= 4


def test_two_nodes_meet_at_the_master(corpus_dir, tmp_path):
    """The README's several-machine command (``make train NPROC=4 NNODES=2 MASTER=node1:29500
    ARGS="run_dir=/shared/runs/ende"``) with one process per node and both nodes here: two
    torchrun agents meet at MASTER (c10d rendezvous) and train one run as ranks 0 and 1."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "shared" / "runs" / "ende"
    args = [f"run_dir={run_dir}", *small(corpus_dir, tmp_path / "cache", "train.max_steps=4")]
    command = f"make train NPROC=1 NNODES=2 MASTER=localhost:{port} "
    command += f"ARGS={shlex.quote(shlex.join(args))}"
    env = {**os.environ, "VENV": str(BIN.parent), "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            command,
            shell=True,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    for node in nodes:
        finish(node)
    done = json.loads((run_dir / "done.json").read_text())
    assert done["world_size"] == 2 and done["steps"] == 4


def test_a_run_resumed_by_another_number_of_processes(corpus_dir, tmp_path):
    """Two ranks to step 4, one process on to 8, two ranks again to 12: each resume continues
    from last/ (the RNG states of another world size cannot continue, and say so)."""
    run_dir = tmp_path / "run"
    args = small(corpus_dir, tmp_path / "cache", dropout=0.3)
    finish(torchrun(run_dir, [*args, "train.max_steps=4"]))
    single = subprocess.run(
        [str(BIN / "nmt-train"), f"run_dir={run_dir}", *args]
        + ["train.max_steps=8", "train.resume=true"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert "resumed from" in single.stdout + single.stderr
    done = json.loads((run_dir / "done.json").read_text())
    assert done["steps"] == 8 and "world_size" not in done
    out = finish(torchrun(run_dir, [*args, "train.max_steps=12", "train.resume=true"]))
    assert "written by one process; dropout masks will not continue" in out
    done = json.loads((run_dir / "done.json").read_text())
    assert done["steps"] == 12 and done["world_size"] == 2
    assert json.loads((run_dir / "last" / "meta.json").read_text())["step"] == 12


def test_two_ranks_stop_together_at_the_time_budget(corpus_dir, tmp_path):
    """make train NPROC=2 with train.max_minutes: both ranks agree on the limit and the job ends
    (a rank left waiting in a collective would hang it until the timeout below)."""
    run_dir = tmp_path / "run"
    # Only the clock can stop it: no step limit, no validation before the end to stop early.
    budget = ("train.max_steps=0", "train.max_minutes=0.1", "train.valid_every=100000")
    args = small(corpus_dir, tmp_path / "cache", *budget)
    command = [
        "make",
        "-s",
        "-C",
        str(ROOT),
        "train",
        "NPROC=2",
        f"ARGS={shlex.join(args)} run_dir={run_dir}",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    done = json.loads((run_dir / "done.json").read_text())
    assert done["stop_reason"] == "max_minutes" and done["world_size"] == 2
    assert 6 <= done["minutes"] * 60 < 60  # stopped at its 6 s budget, not at a hang's timeout
    # The ranks stopped at the same step, the one both trained last and rank 0 saved and recorded.
    saved = json.loads((run_dir / "last" / "meta.json").read_text())["step"]
    assert saved == done["steps"] >= 1 and done["best_step"] == done["steps"]
