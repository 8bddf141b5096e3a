"""Benchmarks: training speed per cell on the reference model, and decoding speed of a trained run.

Training reference (the classic Bahdanau setup, comparable with other toolkits): joint
SentencePiece 8k, embeddings 256, bidirectional encoder 256 per direction, decoder 512 with
Bahdanau attention and input feeding, bridge-initialised, dropout 0.3, untied embeddings, batches of
128 sentences of Multi30k en->de, Adam, fp32 (about 12.2M parameters for the GRU).

Each cell runs in its own process, so its peak RSS is its own. Each cell's figure says which path
trained it: its encoder (``kernel``: PyTorch's fused RNN op; ``scan``: the parallel scan of a
linear recurrence, timed also against its step-by-step loop on the same batches; ``stepped``) and
its fused decoder loop's derivative (``hand-written``, or ``autograd`` on the step: with
--autograd-path every cell takes that path, for what it costs). Warm-up batches are excluded and
the figure is the median over repeats. Prints ``name: value`` lines and writes JSON.

    python scripts/bench.py                       # every cell, training; decoding if a run exists
    python scripts/bench.py --cells gru --repeats 5
    python scripts/bench.py --cells gru,lstm --autograd-path   # their steps through autograd
    python scripts/bench.py --cells gru,lstm --compile-steps   # their steps through torch.compile
    python scripts/bench.py --what decode --run-dir runs/ende-default
    python scripts/bench.py --precision fp32      # auto (default): bf16 where the CPU has it
    python scripts/bench.py --what ddp            # one process of N threads vs N ranks of one

Decoding runs on two models: the newest trained run under runs/ (or --run-dir; on a fresh clone,
with none, the default model is first trained for --decode-steps updates into
runs/bench/decode_run), and the reference architecture above trained for --reference-steps
updates (runs/bench/decode_reference), the shape other toolkits are measured on.

Data-parallel scaling (``--what ddp``): the reference model trained for --ddp-steps updates by
nmt-train in one process of --threads threads, then under torchrun by --threads ranks of one
thread each (gloo on CPU); target tokens per second of training and each process's peak RSS.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nmt  # noqa: F401 - first, as in nmt's commands: it sets how torch allocates

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ["experiment=reference"]  # conf/experiment/reference.yaml


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def matmul_probe(threads: int, seconds: float = 0.5) -> dict:
    """This machine's matrix-multiply rate in GFLOP/s, fp32 and bf16, for a 1024x1024 product and
    for a decoder step's shape ([128, 512] x [512, 1536]): the limit the other figures are put
    against."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    for shape_name, (m, k, n) in {"1024": (1024, 1024, 1024), "step": (128, 512, 1536)}.items():
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            a[:8] @ b  # warm-up: a few rows (bf16 without hardware support: seconds a product)
            reps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                a @ b
                reps += 1
            elapsed = time.perf_counter() - start
            out[f"matmul_{dtype_name}_{shape_name}_gflops"] = round(
                2 * m * k * n * reps / elapsed / 1e9, 1
            )
    return out


def profiled(fn, top: int = 8) -> dict:
    """Run fn() under torch.profiler: the operators with the most self time, the share of wall
    time spent outside any operator (Python, dispatch, the loop around them) and the counted
    FLOPs (matrix products)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    inside = sum(e.self_cpu_time_total for e in events) / 1e6
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return {
        "wall_s": round(wall, 4),
        "outside_operators_share": round(max(0.0, 1 - inside / wall), 3),
        "flops": int(sum(e.flops for e in events)),
        "top_operators": [
            {
                "name": e.key,
                "calls": e.count,
                "self_ms": round(e.self_cpu_time_total / 1e3, 2),
                "share": round(e.self_cpu_time_total / 1e6 / wall, 3),
            }
            for e in ranked
        ],
        "torch": torch.__version__,
    }


def print_profile(name: str, result: dict) -> None:
    print(f"{name}.outside_operators_share: {result['outside_operators_share']}")
    for op in result["top_operators"]:
        print(f"{name}.op: {op['name']} x{op['calls']} {op['self_ms']} ms ({op['share']:.1%})")


def compose(overrides: list[str]):
    from nmt.core.compose import compose as compose_config

    return compose_config("train", overrides)


def prepared_run(cfg, run_dir: Path) -> Path:
    """Data and tokenizer stages into run_dir (cached: seconds after the first time)."""
    from nmt.core.config import group_kwargs as _kwargs
    from nmt.data import prepare as data
    from nmt.data import tokenizer

    data.prepare_corpus(**_kwargs(cfg.data), cache_dir=cfg.cache_dir, out_dir=run_dir)
    tokenizer.prepare_tokenizer(**_kwargs(cfg.tokenizer), cache_dir=cfg.cache_dir, run_dir=run_dir)
    return run_dir


def bench_train_one(
    cell: str,
    precision: str,
    batches: int,
    warmup: int,
    repeats: int,
    threads: int,
    overrides: list[str],
    work_dir: Path,
    profile: bool = False,
    longest: bool = False,
    autograd_path: bool = False,
    compile_steps: bool = False,
    experiment: str = "reference",
) -> dict:
    """Train-step throughput of one cell (run inside its own process) in ``experiment``'s shape
    (conf/experiment/), ``overrides`` on top; with ``profile``, the top operators of one more
    step; with ``longest``, on the epoch's largest batches (largest_first)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from nmt.core.config import group_kwargs as _kwargs
    from nmt.core.runtime import pick_device
    from nmt.data.batching import BatchSampler, collate
    from nmt.data.tokenizer import Tokenizer, load_encoded
    from nmt.model.loss import sequence_loss
    from nmt.model.seq2seq import build_model, count_parameters
    from nmt.training.optim import build_optimizer

    pick_device("cpu", threads)  # threads, and the allocator setting training uses
    import dataclasses

    from nmt.core.runtime import OperatorCounter, autocast, pick_precision
    from nmt.model import cells

    if autograd_path:  # the row's hand-written derivative set aside: autograd on its step
        cells.SPECS[cell] = dataclasses.replace(cells.SPECS[cell], derivative=None)
    if compile_steps:  # the fused loop's per-step bodies through Inductor (its C++ backend: gcc)
        eager = cells.SPECS[cell]
        cells.SPECS[cell] = dataclasses.replace(
            eager,
            step=torch.compile(eager.step, dynamic=True),
            derivative=eager.derivative and torch.compile(eager.derivative, dynamic=True),
        )
    row = cells.spec(cell)

    cfg = compose([f"experiment={experiment}", f"model={cell}", *overrides])
    device = torch.device("cpu")
    dtype = pick_precision(precision, device, training=True)
    run_dir = prepared_run(cfg, work_dir / "data")
    tok = Tokenizer.from_dir(run_dir, cfg.data.src, cfg.data.tgt)
    train = load_encoded(run_dir)["train"]
    src, tgt = train.ragged("src_ids"), train.ragged("tgt_ids")
    tgt_lens = tgt.lengths()
    sampler = BatchSampler(
        src_lens=src.lengths(),
        tgt_lens=tgt_lens,
        max_tokens=cfg.batch.max_tokens,  # the reference's: none, 128 sentences a batch
        batch_size=cfg.batch.batch_size,
        pool_size=cfg.batch.pool_size,
        seed=1,
    )
    order = sampler.batches(0)
    if longest:
        order = largest_first(order, tgt_lens, warmup, batches * repeats)
    chosen = order[: warmup + batches * repeats]
    if len(chosen) < warmup + batches * repeats:
        raise SystemExit(
            f"bench: the training split has {len(chosen)} batches, fewer than "
            f"--warmup + --batches x --repeats = {warmup + batches * repeats}"
        )
    torch.manual_seed(1)
    model = build_model(
        **_kwargs(cfg.model),
        src_vocab_size=tok.src_vocab_size,
        tgt_vocab_size=tok.tgt_vocab_size,
        joint_vocab=tok.joint,
    ).train()
    opt = build_optimizer(model, optimizer="adam", lr=1e-3, weight_decay=0.0, betas=[0.9, 0.999])

    def step(indices) -> int:
        batch = collate([src[i] for i in indices], [tgt[i] for i in indices], indices)
        opt.zero_grad(set_to_none=True)  # before the forward pass, as nmt.training.train does
        with autocast(device, dtype):
            out = sequence_loss(model, batch, 0.1)
        (out.loss / out.n_tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return out.n_tokens

    warmup_seconds = []  # the first includes compiling, where --compile-steps
    for indices in chosen[:warmup]:
        start = time.perf_counter()
        step(indices)
        warmup_seconds.append(time.perf_counter() - start)
    rates = []
    for r in range(repeats):
        block = chosen[warmup + r * batches : warmup + (r + 1) * batches]
        start = time.perf_counter()
        tokens = sum(step(indices) for indices in block)
        rates.append(tokens / (time.perf_counter() - start))
    training_peak = peak_rss_mib()  # before the profiler, whose event buffers are not training's
    extra = chosen[warmup]  # run once more, after timing: FLOPs per token (and top operators)
    # The work is counted on autograd's loop: the fused decoder loop (model.fused) adds its weight
    # gradients with in-place products (addmm_), which the counters do not count.
    fused, model.decoder.fused = model.decoder.fused, False
    with FlopCounterMode(display=False) as counter:
        tokens = step(extra)
    model.decoder.fused = fused
    # Work beside the products: dtype conversions per step on the timed batches with the
    # shortest and the longest targets (a count that grows with the length is per time step),
    # and the share of a step's time in matrix products (each operator timed: approximate).
    timed_batches = chosen[warmup:]
    by_length = sorted(timed_batches, key=lambda b: max(tgt_lens[i] for i in b))
    casts, weight_casts = {}, {}
    for indices in (by_length[0], by_length[-1]):
        with OperatorCounter(watch=list(model.parameters())) as ops:
            step(indices)
        tgt_len = str(max(tgt_lens[i] for i in indices))
        casts[tgt_len], weight_casts[tgt_len] = ops.casts, ops.watched_casts
    with OperatorCounter(timed=True) as ops:
        step(extra)
    result = {
        "cell": cell,
        "pair": f"{cfg.data.src}-{cfg.data.tgt}",
        "attention": cfg.model.attention,
        "precision": "bf16" if dtype == torch.bfloat16 else "fp32",
        "fused": fused,
        "training_path": row.training_path if fused else "autograd (model.fused=false)",
        "step_bodies": "compiled" if compile_steps else "eager",
        "first_step_s": round(warmup_seconds[0], 3) if warmup_seconds else None,
        "encoder": "kernel" if row.kernel else ("scan" if row.scan else "stepped"),
        "flop_per_tgt_token": round(counter.get_total_flops() / tokens),
        "parameters": count_parameters(model),
        "train_tgt_tokens_per_s": round(statistics.median(rates), 1),
        "casts_per_step_by_tgt_len": casts,  # every dtype conversion of one training step
        "weight_casts_per_step_by_tgt_len": weight_casts,  # of parameters and views of them
        "matmul_time_share": round(ops.product_share, 3),
        "train_tgt_tokens_per_s_runs": [round(x, 1) for x in rates],
        "peak_rss_mib": round(training_peak, 1),
        "threads": threads,
        "batches_per_repeat": batches,
        "warmup_batches": warmup,
        "batch_order": "largest first" if longest else "epoch",
        "first_batch": [len(chosen[warmup]), max(tgt_lens[i] for i in chosen[warmup])],  # B, T
    }
    if row.scan is not None and not row.kernel:
        result.update(scan_against_loop(model, src, chosen[warmup : warmup + batches], dtype))
    if profile:  # the profiler's event bookkeeping takes seconds: only --what profile pays for it
        result["profile"] = profiled(lambda: step(extra))
    return result


def scan_against_loop(model, src, batches: list, dtype) -> dict:
    """The encoder's recurrence of a linear-recurrence cell, forward and backward, as its
    parallel scan and as its step-by-step loop on the same batches: milliseconds per batch
    (medians), in the precision training ran in."""
    import torch

    from nmt.core.runtime import autocast
    from nmt.data.batching import collate

    rnn, device = model.encoder.rnn, torch.device("cpu")
    times: dict[str, list[float]] = {"scan": [], "loop": []}
    for indices in batches:
        batch = collate([src[i] for i in indices], None, indices)
        x = model.encoder.embedding(batch.src_ids).detach().requires_grad_()
        for name, run in (("scan", rnn._scan), ("loop", rnn._loop)):
            start = time.perf_counter()
            with autocast(device, dtype):
                out, _ = run(x, batch.src_lens)
            out.float().square().sum().backward()
            times[name].append(1000 * (time.perf_counter() - start))
    scan, loop = statistics.median(times["scan"]), statistics.median(times["loop"])
    return {
        "encoder_scan_ms_per_batch": round(scan, 2),
        "encoder_loop_ms_per_batch": round(loop, 2),
        "encoder_scan_speedup": round(loop / scan, 2),
    }


def largest_first(batches: list, tgt_lens, warmup: int = 0, timed: int = 0) -> list:
    """The batches by padded target tokens (sentences x the longest), largest first: a training
    step's peak memory comes at the largest (its activations and logits grow with it). With
    ``warmup``, the ``timed`` largest come after that many of the next largest, so that they run
    with the optimizer's state in memory (Adam allocates it at the end of the first step)."""
    order = sorted(batches, key=lambda b: len(b) * max(tgt_lens[i] for i in b), reverse=True)
    return order[timed : timed + warmup] + order[:timed] + order[timed + warmup :]


def bench_decode(
    run_dir: Path,
    split: str,
    repeats: int,
    threads: int,
    precision: str,
    sentences: int = 0,
    profile: bool = False,
    warmup: bool = True,
) -> dict:
    """Decoding-loop speed of a trained run: greedy and beam 5 as they end, and both again with
    every output forced to 20 steps (``forced20_*``: equal work, the figures to set beside the
    peers'), batches of 64 sentences, each search timed after one untimed pass unless not
    ``warmup`` (and,
    with ``profile``, the top operators of a batch: the profiler's bookkeeping takes longer than
    the decoding it watches, so only ``--what profile`` pays for it)."""

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from nmt.core.runtime import autocast, pick_device
    from nmt.data.prepare import load_corpus
    from nmt.decoding.decode import decode_corpus
    from nmt.decoding.search import SearchOptions
    from nmt.translate import Translator

    pick_device("cpu", threads)
    translator = Translator.from_run_dir(
        run_dir, device="cpu", precision=precision, backend="torch", quantize="none"
    )  # PyTorch's decoding; --what backends sets the backends side by side
    corpus, report = load_corpus(run_dir)
    texts = [row[report["src"]] for row in corpus[split]["translation"]]
    texts = texts[:sentences] if sentences > 0 else texts
    src = translator.tokenizer.encode_src(texts)
    best = json.loads((Path(run_dir) / "best" / "meta.json").read_text())
    results = {
        "run_dir": str(run_dir),
        "run_best_step": best["step"],
        "split": split,
        "sentences": len(src),
        "threads": threads,
        "precision": "bf16" if translator.precision == torch.bfloat16 else "fp32",
        "parameters": sum(p.numel() for p in translator.model.parameters()),
        "warmed_up": warmup,  # each search timed after an untimed pass of it
    }

    def decode(texts, options):
        with autocast(translator.device, translator.precision):
            return decode_corpus(
                translator.model,
                texts,
                options,
                device=translator.device,
                max_sentences=64,
                max_tokens=None,
            )

    forced = {"min_len": 19, "max_len_a": 0.0, "max_len_b": 20}  # equal work for every toolkit
    for name in ("greedy", "beam5", "forced20_greedy", "forced20_beam5"):
        preset = name.removeprefix("forced20_")  # the presets of conf/search/
        options = SearchOptions.from_config(compose([f"search={preset}"]).search)
        if name.startswith("forced20_"):  # every output 20 steps, as the peers' script forces
            options = options.replace(**forced)
        warm_up = src[:64]
        if warmup:
            decode(warm_up, options)
        times, tokens = [], 0
        for _ in range(repeats):
            start = time.perf_counter()
            found = decode(src, options)
            times.append(time.perf_counter() - start)
            tokens = sum(len(h[0].tokens) + 1 for h in found)
        seconds = statistics.median(times)
        results[f"{name}_sentences_per_s"] = round(len(src) / seconds, 1)
        results[f"{name}_generated_tokens_per_s"] = round(tokens / seconds, 1)
        results[f"{name}_seconds"] = round(seconds, 2)
        if name.startswith("forced20_"):  # the same work on every machine: count it once
            with FlopCounterMode(display=False) as counted:
                decode(warm_up, options)
            results[f"{name}_flop_per_sentence"] = round(counted.get_total_flops() / len(warm_up))
        if profile and not name.startswith("forced20_"):
            results[f"{name}_profile"] = profiled(functools.partial(decode, warm_up, options))
    results["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return results


def bench_ddp(steps: int, threads: int, work_dir: Path, overrides: list[str]) -> dict:
    """One process of ``threads`` threads against ``threads`` torchrun ranks of one thread,
    each trained for ``steps`` updates by nmt-train (a rank's update takes one batch, so the
    ranks see ``threads`` times the sentences per update)."""
    bin_dir = Path(sys.executable).parent
    overrides = [o for o in overrides if not o.startswith("train.threads=")]  # set per launcher
    common = [
        *REFERENCE,
        *overrides,
        f"train.max_steps={steps}",
        f"train.valid_every={steps}",
        "train.valid_max_sentences=16",
        "train.max_minutes=0",
        "train.progress=false",
        "train.tensorboard=false",
        "final_eval=[]",
    ]
    launchers = {
        "one_process": ([str(bin_dir / "nmt-train")], [f"train.threads={threads}"]),
        "ranks": (
            [
                str(bin_dir / "torchrun"),
                "--standalone",
                f"--nproc-per-node={threads}",
                str(bin_dir / "nmt-train"),
            ],
            ["train.threads=1"],
        ),
    }
    out: dict = {"steps": steps}
    for name, (command, extra) in launchers.items():
        run_dir = work_dir / f"ddp_{name}"
        shutil.rmtree(run_dir, ignore_errors=True)
        child = subprocess.run(
            [*command, f"run_dir={run_dir}", *common, *extra],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "OMP_NUM_THREADS": "1" if name == "ranks" else str(threads)},
        )
        if child.returncode != 0:
            sys.exit(f"ddp bench ({name}) failed:\n{(child.stdout + child.stderr)[-3000:]}")
        done = json.loads((run_dir / "done.json").read_text())
        peaks = done.get("rank_peak_rss_gib", [done["process_peak_rss_gib"]])
        out[name] = {
            "processes": len(peaks),
            "threads_per_process": 1 if name == "ranks" else threads,
            "train_tgt_tokens_per_s": round(done["train_tokens_per_s"], 1),
            "peak_rss_mib_per_process": [round(p * 1024) for p in peaks],
        }
    out["speedup"] = round(
        out["ranks"]["train_tgt_tokens_per_s"] / out["one_process"]["train_tgt_tokens_per_s"], 3
    )
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine


def latest_run(runs_dir: Path) -> Path | None:
    runs = [p.parent.parent for p in runs_dir.glob("*/best/model.safetensors")]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def fallback_run(
    work_dir: Path, steps: int, overrides: list[str], name: str = "decode_run"
) -> Path:
    """A model trained for ``steps`` updates, for decoding: the default model when no trained run
    exists (a fresh clone), and the reference one; trained once, then reused
    (``train.resume=auto``). Its directory is named after the overrides too (--set shapes it), so
    a bench with other shapes trains its own model instead of finding this one in the way."""
    shaped = [o for o in overrides if o not in REFERENCE]
    if shaped:
        name += "-" + hashlib.sha256("\n".join(shaped).encode()).hexdigest()[:10]
    run_dir = work_dir / name
    print(
        f"decode: training {' '.join(overrides) or 'the default model'} for {steps} updates "
        f"into {run_dir} (once)",
        flush=True,
    )
    command = [
        str(Path(sys.executable).parent / "nmt-train"),
        f"run_dir={run_dir}",
        f"train.max_steps={steps}",
        "train.max_minutes=0",
        f"train.valid_every={steps}",
        "train.resume=auto",
        "train.progress=false",
        *overrides,
    ]
    child = subprocess.run(command, capture_output=True, text=True, check=False)
    if child.returncode != 0:
        sys.exit(f"bench: training the decoding model failed:\n{child.stderr[-3000:]}")
    return run_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--what",
        default="train,decode,ddp",
        help="train, decode, ddp (default: all three; ddp: data-parallel scaling), backends "
        "(each decoding backend's speed at equal work and BLEU on the test splits), serve (nmt-serve "
        "under concurrent clients), or profile: "
        "train and decode with the top operators of a training step and of greedy and beam decoding "
        "(torch.profiler). Always: the machine's fp32/bf16 matmul rate, and each training "
        "figure as a fraction of it",
    )
    parser.add_argument(
        "--ddp-steps", type=int, default=40, help="updates of each run of the ddp comparison"
    )
    parser.add_argument(
        "--cells", default="all", help="cells to benchmark, e.g. gru,lstm (default: every row)"
    )
    parser.add_argument(
        "--autograd-path",
        action="store_true",
        help="train every cell's fused decoder loop through autograd on its step, as a cell "
        "without a hand-written derivative does (what that path costs)",
    )
    parser.add_argument(
        "--compile-steps",
        action="store_true",
        help="compile each cell's step and derivative (the fused loop's per-step bodies) with "
        "torch.compile; first_step_s then includes the compile time",
    )
    parser.add_argument(
        "--experiment",
        default="reference",
        help="train: the shape each cell trains in, a preset of conf/experiment/ (default: "
        "reference; e.g. ablation_gates: its sizes, batches and tied embeddings, each cell "
        "resized to the GRU's parameter count as the sweep does)",
    )
    parser.add_argument("--batches", type=int, default=6, help="timed batches per repeat")
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed training batches first (decoding: one untimed pass of each search, none "
        "with 0)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: OMP_NUM_THREADS where set, else every usable core)",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="trained run for decoding (default: the newest runs/*/ with best/)",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=ROOT / "runs",
        help="where to look for the newest trained run (default: runs/)",
    )
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument(
        "--sentences", type=int, default=0, help="decode the first N sentences of --split (0: all)"
    )
    parser.add_argument(
        "--decode-steps",
        type=int,
        default=400,
        help="updates of the model trained for decoding when no run exists",
    )
    parser.add_argument(
        "--reference-steps",
        type=int,
        default=220,
        help="updates of the reference-architecture model trained for decoding (as the peer "
        "benchmark does); 0: skip decoding on it",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="auto: bf16 autocast where the CPU multiplies bf16 natively (AMX, AVX-512 BF16), "
        "else fp32",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "bench.json")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=ROOT / "runs" / "bench",
        help="where the prepared data of the training benchmark goes",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override on top of the reference model (repeatable), "
        "e.g. --set data.root=DIR --set model.dec_hidden=1024",
    )
    parser.add_argument(
        "--clients", type=int, default=8, help="serve: concurrent clients of the load benchmark"
    )
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="serve: how long the clients send requests"
    )
    parser.add_argument(
        "--hostile",
        action="store_true",
        help="serve: also the same load beside one client sending the costliest request allowed, "
        "then alone again (the normal clients' latency in each phase)",
    )
    parser.add_argument(
        "--serve-args",
        default="",
        help='serve: nmt-serve overrides, e.g. "timeout_s=10 max_lines=64" (default: its own)',
    )
    parser.add_argument(
        "--per-request", type=int, default=4, help="serve: sentences in each request"
    )
    parser.add_argument("--one-train", help=argparse.SUPPRESS)
    parser.add_argument("--one-train-profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--longest",
        action="store_true",
        help="train on the epoch's largest batches (padded target tokens), largest first: the "
        "peak RSS of the worst step (default: the epoch's first batches, as training meets them)",
    )
    args = parser.parse_args(argv)
    if args.threads is None:
        from nmt.core.runtime import cpu_threads

        args.threads = cpu_threads()
    return args


def train_section(args: argparse.Namespace, probe: dict, profile: bool) -> dict:
    """Each cell trained in a process of its own (its peak RSS is its own), and as a fraction of
    the machine's matrix-product rate in the precision it trained in (the probe's 1024 product:
    a bf16 run against the bf16 rate, an fp32 one against the fp32 rate)."""
    section = {}
    from nmt.model.cells import CELLS

    for cell in CELLS if args.cells == "all" else args.cells.split(","):
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one-train",
                cell,
                "--batches",
                str(args.batches),
                "--warmup",
                str(args.warmup),
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
                "--work-dir",
                str(args.work_dir),
                "--precision",
                args.precision,
                "--experiment",
                args.experiment,
                *(["--one-train-profile"] if profile else []),
                *(["--longest"] if args.longest else []),
                *(["--autograd-path"] if args.autograd_path else []),
                *(["--compile-steps"] if args.compile_steps else []),
                *(f"--set={o}" for o in args.set),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            sys.exit(f"bench for {cell} failed:\n{child.stderr[-3000:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        section[cell] = result
        peak_flops = probe[f"matmul_{result['precision']}_1024_gflops"] * 1e9
        fraction = result["train_tgt_tokens_per_s"] * result["flop_per_tgt_token"] / peak_flops
        result["fraction_of_matmul_peak"] = float(f"{fraction:.3g}")
        for key in (
            "parameters",
            "pair",
            "attention",
            "precision",
            "fused",
            "training_path",
            "step_bodies",
            "first_step_s",
            "encoder",
            *(k for k in result if k.startswith("encoder_")),
            "batch_order",
            "first_batch",
            "train_tgt_tokens_per_s",
            "peak_rss_mib",
            "flop_per_tgt_token",
            "fraction_of_matmul_peak",
            "casts_per_step_by_tgt_len",
            "weight_casts_per_step_by_tgt_len",
            "matmul_time_share",
        ):
            print(f"train.{cell}.{key}: {result[key]}", flush=True)
        if profile:
            print_profile(f"train.{cell}", result["profile"])
    return section


def decode_sections(args: argparse.Namespace, probe: dict, profile: bool) -> dict:
    """Decoding speed of the newest trained run (or one trained here) and of the reference
    architecture; the equal-work runs also as a fraction of the matrix-product rate (the probe's
    1024 product in the precision decoded in, as training's)."""
    run_dir = args.run_dir or latest_run(args.runs_dir)
    if run_dir is None:
        run_dir = fallback_run(args.work_dir, args.decode_steps, args.set)
    models = {"decode": run_dir}
    if args.reference_steps > 0:
        models["decode_reference"] = fallback_run(
            args.work_dir, args.reference_steps, [*REFERENCE, *args.set], "decode_reference"
        )
    sections = {}
    for section, model_dir in models.items():
        result = bench_decode(
            model_dir,
            args.split,
            args.repeats,
            args.threads,
            args.precision,
            args.sentences,
            profile=profile,
            warmup=args.warmup > 0,
        )
        sections[section] = result
        peak_flops = probe[f"matmul_{result['precision']}_1024_gflops"] * 1e9
        for name in ("forced20_greedy", "forced20_beam5"):
            fraction = result[f"{name}_sentences_per_s"] * result[f"{name}_flop_per_sentence"]
            result[f"{name}_fraction_of_matmul_peak"] = float(f"{fraction / peak_flops:.3g}")
        for key, value in result.items():
            if not key.endswith("_profile"):
                print(f"{section}.{key}: {value}", flush=True)
            elif profile:
                print_profile(f"{section}.{key.removesuffix('_profile')}", value)
    return sections


def ddp_section(args: argparse.Namespace) -> dict:
    result = bench_ddp(args.ddp_steps, args.threads, args.work_dir, args.set)
    for name in ("one_process", "ranks"):
        for key, value in result[name].items():
            print(f"ddp.{name}.{key}: {value}", flush=True)
    print(f"ddp.speedup: {result['speedup']}", flush=True)
    return result


def serving_sections(args: argparse.Namespace, what: set[str]) -> dict:
    """Decoding backends side by side, and the HTTP service under load, on a trained run."""
    import bench_backends

    run_dir = args.run_dir or latest_run(args.runs_dir)
    if run_dir is None:
        run_dir = fallback_run(args.work_dir, args.decode_steps, args.set)
    sections = {"cpu_kind": bench_backends.cpu_kind()}
    if "backends" in what:
        splits = ["test_2016_flickr", "test_2017_flickr"]
        sentences = args.sentences or 500
        sections["backends"] = bench_backends.bench_backends(
            run_dir, splits, args.repeats, sentences
        )
    if "serve" in what:
        sections["serve"] = bench_backends.bench_serve(
            run_dir,
            args.split,
            args.clients,
            args.seconds,
            args.per_request,
            shlex.split(args.serve_args),  # the service's own defaults unless given
            hostile=args.hostile,
        )
    return sections


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one_train:  # child process: one cell, JSON on stdout
        settings = (args.batches, args.warmup, args.repeats, args.threads, args.set)
        result = bench_train_one(
            args.one_train,
            args.precision,
            *settings,
            args.work_dir,
            profile=args.one_train_profile,
            longest=args.longest,
            autograd_path=args.autograd_path,
            compile_steps=args.compile_steps,
            experiment=args.experiment,
        )
        print(json.dumps(result))
        return
    import torch

    what = set(args.what.split(","))
    profile = "profile" in what
    from nmt.core.provenance import provenance, record_command

    record_command(["scripts/bench.py", *(sys.argv[1:] if argv is None else argv)])
    report = {
        "provenance": provenance(),
        "torch": torch.__version__,
        "cpu_threads": args.threads,
        "machine": os.uname().machine,
        "cpu": cpu_name(),
        "probe": matmul_probe(args.threads),
    }
    for key, value in report["probe"].items():
        print(f"probe.{key}: {value}", flush=True)
    if "train" in what or profile:
        report["train"] = train_section(args, report["probe"], profile)
    if "decode" in what or profile:
        report.update(decode_sections(args, report["probe"], profile))
    if "ddp" in what:
        report["ddp"] = ddp_section(args)
    if what & {"backends", "serve"}:
        report.update(serving_sections(args, what))
    from nmt.core.rundir import write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(f"json: {args.out}")


if __name__ == "__main__":
    main()
