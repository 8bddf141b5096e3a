"""Every command in the README runs as written, with small sizes added.

The commands are read from the README's code blocks; each must have an entry in ``CASES`` that
says what is added to it (small models, the corpus slice, temporary directories) and what it must
leave behind. A command added to the README without a case fails ``test_every_command_has_a_case``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import run_whole
from omegaconf import OmegaConf

from nmt.model.cells import spec
from nmt.scoring.evaluate import split_pairs
from nmt.scoring.metrics import score

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The pages whose commands are instructions: the README and docs/, but for the dated record of
# past runs (docs/history.md quotes commands as they were run then) and the generated results.
PAGES = [
    README,
    *(p for p in sorted((ROOT / "docs").glob("*.md")) if p.stem not in ("history", "results")),
]
STARTS = ("make ", "echo ", "python ", ".venv/bin/", "pip ")


def readme_commands() -> list[str]:
    """Shell commands of the pages' indented code blocks (continuations joined)."""
    commands, pending = [], ""
    for line in "\n".join(page.read_text() for page in PAGES).splitlines():
        if not line.startswith("    "):
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1].rstrip() + " "
            continue
        pending = ""
        text = re.sub(r"\s+#.*$", "", text) if not text.startswith("#") else ""
        if text.startswith(STARTS):
            commands.append(re.sub(r"\s+", " ", text))
    return commands


def python_snippets() -> list[str]:
    """The README's Python code blocks (lines of a block that starts with an import)."""
    blocks, current = [], []
    for line in README.read_text().splitlines() + [""]:
        if line.startswith("    ") and (current or line.strip().startswith(("from ", "import "))):
            current.append(line[4:])
        elif current:
            blocks.append("\n".join(current))
            current = []
    return blocks


# --------------------------------------------------------------------------------------------
# What each command gets added, and what it must leave


TINY = [
    "tokenizer.vocab_size=600",
    "model.emb_dim=32",
    "model.enc_hidden=32",
    "model.dec_hidden=64",
    "batch.max_tokens=800",
    "train.max_steps=2",
    "train.valid_every=2",
    "train.threads=1",
    "train.valid_max_sentences=10",
    "train.progress=false",
]
# A recipe to its 5 kept checkpoints, without its final test decoding.
RECIPE = [*TINY, "train.max_steps=10", "final_eval=[]"]
SWEEP = [*TINY, "model=gru,lstm", "model.attention=none", "seed=1"]
SWEEP_ONE = [*TINY, "model=gru", "model.attention=none", "seed=1"]
# ablation_converged's grid comes from its ablation block, cut to one cell, one seed, two rates:
# tuning, the arm and the report all run (tests/test_ablate.py checks a fuller grid in depth).
CONVERGED = [
    *TINY,
    "ablation.cells=[gru]",
    "~ablation.seeds.bahdanau",
    "ablation.seeds.none=[1]",
    "ablation.tune.lrs=[0.001,0.003]",
    "ablation.tune.max_steps=2",
    "ablation.jobs=2",
]

# ablation_gates_large cut to tiny models, one cell and one seed with attention: its search (two
# rates, no widening), the run at the chosen rate and the report.
LARGE = [
    *TINY,
    "ablation.cells=[gru]",
    "ablation.seeds.bahdanau=[1]",
    "ablation.also=[]",
    "ablation.tune.lrs=[0.001,0.003]",
    "ablation.tune.max_points=2",
    "ablation.tune.max_steps=2",
]


@dataclass
class Case:
    extra: list[str] = field(default_factory=list)  # appended to ARGS (Hydra or bench flags)
    check: Callable[[subprocess.CompletedProcess, Path], None] | None = None
    needs_run: bool = False  # runs/X is a trained run (a copy of one)
    also: tuple[str, ...] = ()  # more copies of that run: runs/<name>
    before: str = ""  # a README command run first (and its own before), same place, its additions
    run_dir: bool = True  # add run_dir=<tmp>/run unless the command names one
    sweep: bool = False  # add hydra.sweep.dir=<tmp>/sweep
    skip: str = ""  # why the suite does not run it (CI runs `make test` itself)
    stdin: str = ""  # what the command reads, when it reads stdin
    elsewhere: str = ""  # "file.py::test_name": a test that runs it with its placeholders filled
    env: dict = field(default_factory=dict)  # set for the command (over the suite's own)


def chain(command: str) -> list[str]:
    """The README commands run before ``command`` (its case's ``before``, and theirs), in order."""
    befores, before = [], CASES[command].before
    while before:
        befores.insert(0, before)
        before = CASES[before].before
    return befores


def checked_within(command: str) -> str:
    """The first case that no other runs before it and whose chain runs ``command``: ``command``
    is run and checked there, once, not again on its own; '' when no chain runs it."""
    befores = {b for c in CASES for b in chain(c)}
    return next((c for c in CASES if c not in befores and command in chain(c)), "")


def finished(steps: int = 2, pair: str = "en-de") -> Callable:
    def check(result, tmp):
        done = json.loads((tmp / "run" / "done.json").read_text())
        assert done["status"] == "finished" and done["steps"] == steps
        assert f"{done['src']}-{done['tgt']}" == pair

    return check


def check_ranks(result, tmp):
    finished()(result, tmp)
    done = json.loads((tmp / "run" / "done.json").read_text())
    assert done["world_size"] == 2 and len(done["rank_peak_rss_gib"]) == 2


def check_cfg_job(result, tmp):
    assert "cell: gru" in result.stdout and "max_steps: 2" in result.stdout
    assert not (tmp / "run").exists()  # printed, not run


WHEEL = "test_package.py::test_a_wheel_installed_elsewhere_trains"


def check_cs(result, tmp):
    report = json.loads((tmp / "run" / "data" / "report.json").read_text())
    assert (report["src"], report["tgt"]) == ("en", "cs")
    assert report["test_splits"] == ["test_2016_flickr"]


def check_data(pair: str) -> Callable:
    def check(result, tmp):
        report = json.loads((tmp / "run" / "data" / "report.json").read_text())
        assert f"{report['src']}-{report['tgt']}" == pair

    return check


def check_bpe_spm(result, tmp):
    assert (tmp / "bpe8k" / "spm.model").is_file()
    assert (
        json.loads((tmp / "bpe8k" / "encoded" / "report.json").read_text())["model_type"] == "bpe"
    )


def check_lstm(result, tmp):
    finished()(result, tmp)
    assert json.loads((tmp / "run" / "done.json").read_text())["cell"] == "lstm"


def check_separate(result, tmp):
    finished()(result, tmp)
    assert (tmp / "run" / "spm.en.model").is_file() and (tmp / "run" / "spm.de.model").is_file()


def check_final_eval(result, tmp):
    finished()(result, tmp)
    scores = tmp / "run" / "eval" / "test_2016_flickr-best-beam5" / "scores.json"
    assert json.loads(scores.read_text())["sentences"] == 40
    # decoded with the run's own threads (train.threads=1), as it trained, not the process's
    # default (OMP_NUM_THREADS=2): two jobs of two threads each on two cores crawl
    assert ", 1 thread " in json.loads(scores.read_text())["hardware"]


def check_resumed(result, tmp):
    assert "resumed from" in result.stderr + result.stdout
    assert json.loads((tmp / "X" / "done.json").read_text())["steps"] == 4


def check_one_line(result, tmp):
    assert len(result.stdout.splitlines()) == 1 and result.stdout.strip()


def check_out_file(result, tmp):
    assert len((tmp / "out.de").read_text().splitlines()) == 2


def check_gate_figures(result, tmp):
    assert len(result.stdout.splitlines()) == 1
    values = json.loads((tmp / "figures" / "0001.json").read_text())
    assert values["text"] == "A dog runs in the park." and values["layers"]
    assert (tmp / "figures" / "0001.png").stat().st_size > 1000


def check_n_best(result, tmp):
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and all(len(line.split("\t")) == 2 for line in lines)


def check_eval(
    split: str, search: str, plots: int = 0, run: str = "X", checkpoint: str = "best"
) -> Callable:
    def check(result, tmp):
        out = tmp / run / "eval" / f"{split}-{checkpoint}-{search}"
        scores = json.loads((out / "scores.json").read_text())
        assert scores["split"] == split
        hyps = (out / "hyps.txt").read_text().split("\n")[:-1]
        refs = split_pairs(tmp / run, split)[1]
        assert scores["bleu_lt"] == pytest.approx(score(hyps, refs, lt_lang="de")["bleu_lt"])
        assert scores["chrf"] == pytest.approx(score(hyps, refs)["chrf"])
        assert f"{split}: BLEU" in result.stdout
        assert f"{split}: LT BLEU" in result.stdout and "not sacreBLEU" in result.stdout
        assert len(list((out / "attention").glob("*.png"))) == plots
        # The weights each model's scores are of: an average names every step it took the mean
        # of (the steps kept in runs/<run>/kept), an ensemble each member.
        members = 2 if checkpoint.endswith("-ensemble2") else 1
        assert [Path(m["run_dir"]).parent for m in scores["models"]] == [tmp] * members
        for model in scores["models"]:
            if checkpoint.startswith("avg-"):
                kept = {int(p.name.removeprefix("step-")) for p in (tmp / run / "kept").iterdir()}
                n = int(checkpoint.rsplit("-", 1)[1])
                assert len(set(model["steps"])) == n and set(model["steps"]) <= kept
            else:
                assert len(model["steps"]) == 1 and model["steps"][0] > 0

    return check


def check_recipe(pair: str) -> Callable:
    def check(result, tmp):
        run = tmp / f"cgru-{pair.replace('-', '')}"
        done = json.loads((run / "done.json").read_text())
        assert done["status"] == "finished" and f"{done['src']}-{done['tgt']}" == pair
        model = OmegaConf.load(run / "config.yaml").model
        assert model.conditional and model.word_dropout > 0 and model.ctx_dropout > 0
        assert len(list((run / "kept").glob("step-*"))) == 5  # keep_best=5, keep_last=5 overlap

    return check


def check_kept(result, tmp):
    assert json.loads((tmp / "Y" / "done.json").read_text())["steps"] == 10
    assert len(list((tmp / "Y" / "kept").glob("step-*"))) == 5


def check_tuned(result, tmp):
    chosen = json.loads((tmp / "X" / "search.json").read_text())
    assert chosen["split"] == "val" and len(chosen["grid"]) == 3  # beam 1: alpha 0 only
    # The highest BLEU of the grid; of equals the first tried (smaller beam, then alpha).
    top = max(row["bleu"] for row in chosen["grid"])
    first = next(row for row in chosen["grid"] if row["bleu"] == top)
    assert chosen["chosen"] == {"beam_size": first["beam_size"], "alpha": first["alpha"]}
    assert "best beam_size=" in result.stdout


def check_tuned_recipe(result, tmp):
    assert json.loads((tmp / "cgru-ende" / "search.json").read_text())["split"] == "val"
    assert "best beam_size=" in result.stdout


def check_bootstrap(result, tmp):
    assert "vs " in result.stdout and "paired bootstrap" in result.stdout


def check_sweep(runs: int, launcher_cache: bool = False) -> Callable:
    def check(result, tmp):
        done = sorted((tmp / "sweep").glob("*/done.json"))
        assert len(done) == runs
        assert all(json.loads(p.read_text())["status"] == "finished" for p in done)
        assert (tmp / "sweep" / "report" / "report.md").is_file()
        # One vocabulary, built once even when the jobs ran at the same time on an empty cache.
        models = {(p.parent / "spm.model").read_bytes() for p in done}
        assert len(models) == 1

    return check


def check_converged(result, tmp):
    check_sweep(1)(result, tmp)  # 1 cell x 1 seed, after tuning two jobs at a time (joblib)
    tuning = json.loads((tmp / "sweep" / "tuning.json").read_text())
    assert tuning["chosen"].keys() == {"gru"} and len(tuning["runs"]) == 2
    assert (
        "Learning rates tuned on validation" in (tmp / "sweep" / "report" / "report.md").read_text()
    )


def check_large(result, tmp):
    check_sweep(1)(result, tmp)  # gru with attention, at the rate its search chose
    tuning = json.loads((tmp / "sweep" / "tuning.json").read_text())
    assert tuning["lrs"] == [0.001, 0.003] and len(tuning["runs"]) == 2
    (done,) = (tmp / "sweep").glob("*/done.json")
    config = OmegaConf.load(done.parent / "config.yaml")
    assert config.optim.lr == tuning["chosen"]["gru"]["bahdanau"]
    assert config.train.min_steps == 1500  # the preset's own, under the tiny sizes
    assert "not tuned" in (tmp / "sweep" / "report" / "report.md").read_text()  # two rates


def check_report(result, tmp):
    assert "| gru | none |" in result.stdout


def check_slurm(result, tmp):
    assert "submitit_slurm" in result.stdout and "partition: gpu" in result.stdout
    assert "timeout_min: 240" in result.stdout


def check_bench(
    cells: list[str], decode: bool, profile: bool = False, reference: bool = True
) -> Callable:
    def check(result, tmp):
        report = json.loads((tmp / "bench.json").read_text())
        assert sorted(report["train"]) == sorted(cells)
        probe = report["probe"]
        for cell in cells:
            figures = report["train"][cell]
            # The rate is the median of the timed repeats, each a real rate.
            runs = figures["train_tgt_tokens_per_s_runs"]
            assert len(runs) >= 1 and all(r > 0 for r in runs)
            assert figures["train_tgt_tokens_per_s"] == pytest.approx(
                statistics.median(runs), abs=0.1
            )
            assert f"train.{cell}.train_tgt_tokens_per_s: {figures['train_tgt_tokens_per_s']}" in (
                result.stdout
            )
            # Each figure against the machine's limit: counted FLOPs per token over the probe.
            assert figures["flop_per_tgt_token"] > 2 * figures["parameters"]  # > forward's 2/weight
            assert figures["fused"] is True  # the default loop, model.fused
            assert figures["batch_order"] == "epoch"  # as training meets them (no --longest)
            # The work beside the products: conversions counted, the products' share of a step.
            casts, weights = (
                figures[f"{k}_per_step_by_tgt_len"] for k in ("casts", "weight_casts")
            )
            assert casts.keys() == weights.keys() and casts
            assert all(casts[n] >= weights[n] >= 0 for n in casts)
            assert 0 < figures["matmul_time_share"] < 1
            assert f"train.{cell}.matmul_time_share:" in result.stdout
            # Which path trained it: the row's derivative or autograd's, and its encoder's loop.
            row = spec(cell)
            assert figures["training_path"] == row.training_path
            assert figures["encoder"] == (
                "kernel" if row.kernel else "scan" if row.scan else "stepped"
            )
            if row.scan:  # the scan timed against the stepped loop on the same batches
                scan, loop = (figures[f"encoder_{n}_ms_per_batch"] for n in ("scan", "loop"))
                assert scan > 0 and figures["encoder_scan_speedup"] == pytest.approx(
                    loop / scan, rel=0.05, abs=0.02
                )
                assert f"train.{cell}.encoder_scan_speedup:" in result.stdout
            peak = probe[f"matmul_{figures['precision']}_1024_gflops"] * 1e9
            rate = figures["train_tgt_tokens_per_s"] * figures["flop_per_tgt_token"] / peak
            assert figures["fraction_of_matmul_peak"] == pytest.approx(rate, rel=0.01)
            assert 0 < rate < 1
        assert probe["matmul_fp32_1024_gflops"] > 0
        assert "probe.matmul_bf16_1024_gflops:" in result.stdout
        if decode:  # the default model, and the reference architecture the peers are run on
            for section in ("decode", "decode_reference") if reference else ("decode",):
                figures = report[section]
                assert figures["warmed_up"] is False  # --warmup 0: no untimed pass either
                for name in ("greedy", "beam5", "forced20_greedy", "forced20_beam5"):
                    assert figures["sentences"] == 8  # --sentences
                    # A rate is the sentences over the median time, printed as recorded: the
                    # seconds to 0.01 and the rate to 0.1.
                    rate, seconds = figures[f"{name}_sentences_per_s"], figures[f"{name}_seconds"]
                    low, high = 8 / (seconds + 0.006), 8 / max(seconds - 0.006, 1e-3)
                    assert low - 0.05 <= rate <= high + 0.05
                    assert f"{section}.{name}_sentences_per_s: {rate}" in result.stdout
                for name in ("forced20_greedy", "forced20_beam5"):  # every output 20 tokens long
                    # 20 tokens a sentence, both rates rounded to 0.1: within that rounding (on a
                    # loaded machine a sentence a second is 5 % off after rounding)
                    tokens, sentences = (
                        figures[f"{name}_{k}_per_s"] for k in ("generated_tokens", "sentences")
                    )
                    low, high = (
                        (tokens - 0.05) / (sentences + 0.05),
                        (tokens + 0.05) / (sentences - 0.05),
                    )
                    assert low * 0.995 <= 20 <= high * 1.005
                for name in ("forced20_greedy", "forced20_beam5"):  # the work, and its rate
                    assert report[section][f"{name}_flop_per_sentence"] > 0
                    assert 0 < report[section][f"{name}_fraction_of_matmul_peak"] < 1
                    assert f"{section}.{name}_fraction_of_matmul_peak:" in result.stdout
                beam, greedy = (
                    report[section][f"forced20_{n}_flop_per_sentence"] for n in ("beam5", "greedy")
                )
                assert 2 * greedy < beam < 5 * greedy  # five rows a step, one encoder
            if reference:
                # named after the --set shapes: another bench's shapes train their own model
                (trained,) = (tmp / "bench").glob("decode_reference-*")
                shape = OmegaConf.load(trained / "config.yaml")
                assert shape.model.tie_output is False  # conf/experiment/reference.yaml
                assert report["decode_reference"]["precision"] in ("fp32", "bf16")
            else:
                assert "decode_reference" not in report
        else:
            assert "decode" not in report
        if profile:  # top operators of a training step, a greedy and a beam batch
            for name in (f"train.{cells[0]}", "decode.greedy", "decode.beam5"):
                assert f"{name}.outside_operators_share:" in result.stdout
                assert f"{name}.op: aten::" in result.stdout
        else:
            assert ".op: " not in result.stdout
            assert not [key for key in report.get("decode", {}) if key.endswith("_profile")]
        if not profile:
            # Data-parallel scaling: one process of all threads against a rank per thread.
            scaling = report["ddp"]
            assert scaling["ranks"]["processes"] == report["cpu_threads"]
            assert len(scaling["ranks"]["peak_rss_mib_per_process"]) == report["cpu_threads"]
            assert scaling["one_process"]["train_tgt_tokens_per_s"] > 0
            assert scaling["speedup"] > 0
            assert "ddp.speedup:" in result.stdout

    return check


def check_autograd_path(result, tmp):
    train = json.loads((tmp / "bench.json").read_text())["train"]
    assert sorted(train) == ["gru", "lstm_cifg"]
    for cell, figures in train.items():
        assert figures["training_path"] == "autograd" and figures["train_tgt_tokens_per_s"] > 0
        assert f"train.{cell}.training_path: autograd" in result.stdout
    assert spec("gru").training_path == "hand-written"  # only that run set it aside


def check_longest(result, tmp):
    report = json.loads((tmp / "bench.json").read_text())
    assert set(report) >= {"probe", "train"} and "decode" not in report
    gru = report["train"]["gru"]
    assert gru["batch_order"] == "largest first" and gru["precision"] == "bf16"
    assert gru["fused"] is True and gru["peak_rss_mib"] > 0
    assert min(gru["weight_casts_per_step_by_tgt_len"].values()) > 0  # bf16: the weights, once
    assert "train.gru.first_batch:" in result.stdout


def check_bench_matched(result, tmp):
    """--experiment ablation_gates: each cell in the preset's shape, resized to the GRU's
    parameter count (the LSTM unresized would have a third more)."""
    train = json.loads((tmp / "bench.json").read_text())["train"]
    gru, lstm = train["gru"]["parameters"], train["lstm"]["parameters"]
    assert abs(lstm - gru) / gru < 0.02
    # what the report keys a figure by beside the cell and its size: the runs' pair and attention
    assert {(f["pair"], f["attention"]) for f in train.values()} == {("en-de", "bahdanau")}
    assert (
        "--experiment ablation_gates"
        in json.loads((tmp / "bench.json").read_text())["provenance"]["command"]
    )


def check_bench_help(result, tmp):
    for flag in ("--what", "--cells", "--repeats", "--threads", "--run-dir", "--set"):
        assert flag in result.stdout


def check_results(result, tmp):
    page = (tmp / "results.md").read_text()
    assert "| X | gru + bahdanau |" in page and "| Y | gru + bahdanau |" in page
    assert set(json.loads((tmp / "results.json").read_text())["runs"]) == {"X", "Y"}


SERVE = "test_serve.py::test_translations_come_back_in_order"


def check_bundle(result, tmp):
    from nmt.serving.bundle import read_manifest

    manifest = read_manifest(tmp / "model.nmt")
    assert manifest["src"] == "en" and f"nmt-translate model={tmp / 'model.nmt'}" in result.stdout


def check_onnx_export(result, tmp):
    from nmt.serving.bundle import read_export_dir

    manifest = read_export_dir(tmp / "model-onnx")  # every listed file present, hashes checked
    assert set(manifest["graphs"]) == {"encoder", "step", "encoder.int8", "step.int8"}
    assert f"nmt-translate model={tmp / 'model-onnx'} backend=onnxruntime" in result.stdout


def check_serving_bench(result, tmp):
    report = json.loads((tmp / "bench.json").read_text())
    variants = report["backends"]["variants"]
    assert set(variants) == {"torch_fp32", "torch_bf16", "onnxruntime_fp32", "onnxruntime_int8"}
    assert variants["onnxruntime_int8"]["forced20_beam5_sentences_per_s"] > 0
    assert (
        report["serve"]["requests"] > 0 and report["serve"]["p99_ms"] >= report["serve"]["p50_ms"]
    )
    assert "serve.sentences_per_s: " in result.stdout


def check_hostile_bench(result, tmp):
    serve = json.loads((tmp / "bench.json").read_text())["serve"]
    assert serve["settings"] == "timeout_s=3 max_lines=4"  # --serve-args reached the server
    assert serve["limits"]["timeout_s"] == 3 and serve["limits"]["max_lines"] == 4
    for phase in (serve, serve["with_hostile"], serve["after_hostile"]):
        assert sum(phase["statuses"].values()) == phase["requests"] > 0
        assert set(phase["statuses"]) <= {"200", "503"} and phase["p99_ms"] >= phase["p50_ms"]
    hostile = serve["with_hostile"]
    assert hostile["hostile_requests"] >= 1 and set(hostile["hostile_statuses"]) <= {"200", "503"}
    # A hostile request past its budget is answered at it: the decoding stopped there.
    assert hostile["hostile_max_s"] < 3 + 2
    assert serve["after_hostile"]["statuses"] == {"200": serve["after_hostile"]["requests"]}


def check_lint(result, tmp):
    assert "All checks passed!" in result.stdout


BENCH = [
    "--batches",
    "1",
    "--warmup",
    "0",
    "--repeats",
    "1",
    "--decode-steps",
    "2",
    "--reference-steps",
    "2",
    "--sentences",
    "8",
    "--set",
    "batch.batch_size=16",
    "--set",
    "model.emb_dim=32",
    "--set",
    "model.enc_hidden=32",
    "--set",
    "model.dec_hidden=64",
    "--set",
    "tokenizer.vocab_size=600",
    "--set",
    "train.threads=1",
    "--set",
    "batch.max_tokens=null",
    "--ddp-steps",
    "2",
]

# Both directions of a sweep's records, with the sweep run again after the restore.
RECORDS = (
    "test_records.py::test_a_sweep_saved_without_weights_and_restored_goes_on_without_training"
)

CASES: dict[str, Case] = {
    "make train": Case(TINY, finished()),
    "make train NPROC=2": Case(TINY, check_ranks),
    "make train NPROC=4 NNODES=2 MASTER=node1:29500 run_dir=/shared/runs/ende": Case(
        # Two machines: two torchrun agents on this one, meeting at localhost.
        elsewhere="test_distributed.py::test_two_nodes_meet_at_the_master"
    ),
    "make test": Case(skip="CI runs it: .ci/run is `make test`"),
    "pip install torch==2.13.0": Case(elsewhere=WHEEL),
    "pip install .": Case(elsewhere=WHEEL),
    'make train ARGS="--cfg job"': Case(TINY, check_cfg_job),
    "make train model=lstm train.max_steps=100": Case(TINY, check_lstm),
    "make spm run_dir=runs/bpe8k tokenizer=bpe8k": Case(TINY[:1], check_bpe_spm),
    "make data data.src=de data.tgt=en": Case([], check_data("de-en")),
    "make data data.src=en data.tgt=cs": Case([], check_cs),
    "make train model=lstm": Case(TINY, check_lstm),
    "make train experiment=deen": Case(TINY, finished(pair="de-en")),
    "make train train.resume=true run_dir=runs/X": Case(
        [*TINY, "train.max_steps=4"], check_resumed, needs_run=True
    ),
    "make train final_eval=[test_2016_flickr] search=beam5": Case(  # a default of 2 threads
        TINY, check_final_eval, env={"OMP_NUM_THREADS": "2"}
    ),
    "make train tokenizer=separate8k": Case(TINY, check_separate),
    "make train train.keep_last=5 run_dir=runs/Y": Case([*TINY, "train.max_steps=10"], check_kept),
    'echo "A dog runs in the park." | make translate run_dir=runs/X': Case(
        [], check_one_line, needs_run=True
    ),
    'echo "A dog runs in the park." | make translate run_dir=runs/X gates=figures': Case(
        [], check_gate_figures, needs_run=True
    ),
    "make serve run_dir=runs/X backend=torch": Case(
        elsewhere="test_page.py::test_attention_and_gates_of_a_sentence"
    ),
    "make serve run_dir=runs/gru compare=[runs/lstm] backend=torch": Case(
        elsewhere="test_screenshots.py::test_screenshots_of_two_models"
    ),
    "python scripts/screenshots.py --run-dir runs/gru --compare runs/lstm": Case(
        elsewhere="test_screenshots.py::test_screenshots_of_two_models"
    ),
    "make translate run_dir=runs/X input=in.en output=out.de search=greedy": Case(
        [], check_out_file, needs_run=True
    ),
    "make translate run_dir=runs/X search.n_best=5": Case(
        [], check_n_best, needs_run=True, stdin="A dog runs.\n"
    ),
    "make eval run_dir=runs/X split=test_2016_flickr": Case(
        [], check_eval("test_2016_flickr", "beam5"), needs_run=True
    ),
    "make eval run_dir=runs/X split=test_2017_flickr search=greedy attention_plots=5": Case(
        [], check_eval("test_2017_flickr", "greedy", plots=5), needs_run=True
    ),
    "make eval run_dir=runs/X split=test_2016_flickr hyps=[a.txt,b.txt]": Case(
        ["bootstrap_samples=100"], check_bootstrap, needs_run=True
    ),
    "make eval run_dir=runs/Y split=test_2016_flickr checkpoint=avg-last-5": Case(
        [],
        check_eval("test_2016_flickr", "beam5", run="Y", checkpoint="avg-last-5"),
        before="make train train.keep_last=5 run_dir=runs/Y",
    ),
    "make eval run_dir=runs/X split=test_2016_flickr ensemble=[runs/Y]": Case(
        [],
        check_eval("test_2016_flickr", "beam5", checkpoint="best-ensemble2"),
        needs_run=True,
        also=("Y",),
    ),
    "make tune-search run_dir=runs/X": Case(
        ["beam_sizes=[1,2]", "alphas=[0.0,1.0]", "progress=false"], check_tuned, needs_run=True
    ),
    "make eval run_dir=runs/X split=test_2017_flickr search=tuned": Case(
        [],
        check_eval("test_2017_flickr", "tuned"),
        needs_run=True,
        before="make tune-search run_dir=runs/X",
    ),
    "make train experiment=cgru_ende run_dir=runs/cgru-ende": Case(RECIPE, check_recipe("en-de")),
    "make train experiment=cgru_enfr run_dir=runs/cgru-enfr": Case(RECIPE, check_recipe("en-fr")),
    "make tune-search run_dir=runs/cgru-ende": Case(
        ["beam_sizes=[1,2]", "alphas=[0.0,1.0]", "progress=false"],
        check_tuned_recipe,
        before="make train experiment=cgru_ende run_dir=runs/cgru-ende",
    ),
    "make eval run_dir=runs/cgru-ende split=test_2016_flickr search=tuned "
    "checkpoint=avg-best-5": Case(
        [],
        check_eval("test_2016_flickr", "tuned", run="cgru-ende", checkpoint="avg-best-5"),
        before="make tune-search run_dir=runs/cgru-ende",
    ),
    "make ablate": Case(SWEEP, check_sweep(2), sweep=True, run_dir=False),
    "make ablate experiment=ablation_converged": Case(
        CONVERGED, check_converged, sweep=True, run_dir=False
    ),
    "make ablate experiment=ablation_gates": Case(  # two cells in its three settings
        elsewhere="test_ablate.py::test_ablation_runs_every_arm_with_the_tuned_rate_at_matched_size"
    ),
    "make ablate experiment=ablation_gates_large": Case(
        LARGE, check_large, sweep=True, run_dir=False
    ),
    "make ablate experiment=ablation_full": Case(
        SWEEP_ONE, check_sweep(1), sweep=True, run_dir=False
    ),
    "python scripts/report.py runs/ablation_quick": Case(
        ["--bootstrap-samples", "100"], check_report
    ),
    "make ablate experiment=ablation_full hydra/launcher=submitit_slurm "
    "hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 "
    "hydra.launcher.timeout_min=240": Case(
        # No SLURM cluster here: the command is composed to its launcher config, not submitted.
        ["--cfg", "hydra"],
        check_slurm,
        run_dir=False,
        sweep=True,
    ),
    "make ablate hydra/launcher=joblib hydra.launcher.n_jobs=2 train.threads=1": Case(
        SWEEP, check_sweep(2), sweep=True, run_dir=False
    ),
    # One cell of each path (a kernel, the stepped loop with and without a hand-written
    # derivative, the scan): every row would bench ten processes for the same checks.
    "make bench": Case(
        [*BENCH, "--cells", "gru,lstm_cifg,gru_noreset,mingru"],
        check_bench(["gru", "lstm_cifg", "gru_noreset", "mingru"], True),
        run_dir=False,
    ),
    'make bench ARGS="--help"': Case([], check_bench_help, run_dir=False),
    'make bench ARGS="--what train --experiment ablation_gates --threads 1 '
    '--out runs/bench/gates.json"': Case(
        [*BENCH, "--cells", "gru,lstm"], check_bench_matched, run_dir=False
    ),
    "python scripts/report.py runs/ablation_gates --bench runs/bench/gates.json "
    "--out docs/ablation_gates --readme README.md": Case(
        elsewhere="test_ablate.py::test_report_takes_speeds_measured_apart_from_a_benchmark"
    ),
    "python scripts/records.py save runs/ablation_gates docs/ablation_gates/records": Case(
        elsewhere=RECORDS
    ),
    "python scripts/records.py restore docs/ablation_gates/records runs/ablation_gates": Case(
        elsewhere=RECORDS
    ),
    'make bench ARGS="--what profile --cells gru"': Case(  # the reference shape: "make bench"
        [*BENCH, "--reference-steps", "0"],
        check_bench(["gru"], True, profile=True, reference=False),
        run_dir=False,
    ),
    'make bench ARGS="--what train --cells gru,lstm_cifg --autograd-path"': Case(
        BENCH, check_autograd_path, run_dir=False
    ),
    'make bench ARGS="--what train --longest"': Case(  # one cell, in bf16: the fused loop there
        [*BENCH, "--cells", "gru", "--precision", "bf16"], check_longest, run_dir=False
    ),
    "make lint": Case([], check_lint, run_dir=False),
    "make export run_dir=runs/X out=model.nmt": Case(
        [], check_bundle, needs_run=True, run_dir=False
    ),
    "make export run_dir=runs/Y out=model.nmt checkpoint=avg-last-5": Case(
        [],
        check_bundle,
        run_dir=False,
        before="make train train.keep_last=5 run_dir=runs/Y",
    ),
    'echo "A dog runs." | make translate model=model.nmt': Case(
        [],
        check_one_line,
        needs_run=True,
        run_dir=False,
        before="make export run_dir=runs/X out=model.nmt",
    ),
    "make export run_dir=runs/X format=onnx out=model-onnx": Case(
        [], check_onnx_export, needs_run=True, run_dir=False
    ),
    'echo "A dog runs." | make translate model=model-onnx backend=onnxruntime quantize=int8': Case(
        [],
        check_one_line,
        needs_run=True,
        run_dir=False,
        before="make export run_dir=runs/X format=onnx out=model-onnx",
    ),
    "make translate model=model-onnx backend=onnxruntime quantize=int8 input=in.en output=out.de": (
        Case(
            [],
            check_out_file,
            needs_run=True,
            run_dir=False,
            before="make export run_dir=runs/X format=onnx out=model-onnx",
        )
    ),
    "make eval run_dir=runs/X split=test_2016_flickr backend=onnxruntime quantize=int8": Case(
        [], check_eval("test_2016_flickr", "beam5-onnxruntime-int8"), needs_run=True
    ),
    'make bench ARGS="--what backends,serve --run-dir runs/X"': Case(
        ["--repeats", "1", "--sentences", "16", "--clients", "2", "--seconds", "2"],
        check_serving_bench,
        needs_run=True,
        run_dir=False,
    ),
    'make bench ARGS="--what serve --hostile --run-dir runs/X"': Case(
        ["--clients", "2", "--seconds", "2", "--serve-args", "'timeout_s=3 max_lines=4'"],
        check_hostile_bench,
        needs_run=True,
        run_dir=False,
    ),
    "make serve model=model.nmt": Case(elsewhere=SERVE),
    "make serve model=model.nmt port=8000": Case(elsewhere=SERVE),
    'make results RUNS="runs/X runs/Y"': Case(
        [], check_results, needs_run=True, also=("Y",), run_dir=False
    ),
    "make format": Case(run_dir=False),
}


def test_every_command_has_a_case():
    commands = set(readme_commands())
    assert commands == set(CASES), "README commands and tests/test_readme.py disagree"


# --------------------------------------------------------------------------------------------
# Running them


@pytest.fixture(scope="session")  # built once per worker, however the tests interleave
def readme_run(corpus_dir, tmp_path_factory) -> Path:
    """A tiny trained run whose data holds both test splits (for runs/X)."""
    tmp = tmp_path_factory.mktemp("readme_run")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "nmt-train"),
            f"run_dir={tmp / 'X'}",
            f"data.root={corpus_dir}",
            f"cache_dir={tmp / 'cache'}",
            *TINY,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "X"


@pytest.fixture(scope="session")
def readme_cache(tmp_path_factory) -> Path:
    """One worker's cache of prepared corpora and vocabularies, shared by its commands."""
    return tmp_path_factory.mktemp("readme_cache")


@pytest.fixture(scope="session")  # built once per worker, however the tests interleave
def ablate_sweep(corpus_dir, tmp_path_factory) -> Path:
    """`make ablate` as written (small sizes added), run once for its case and report.py's."""
    tmp = tmp_path_factory.mktemp("ablate")
    line = rewrite("make ablate", CASES["make ablate"], tmp, corpus_dir, tmp / "c")
    ran = run_whole(line, shell=True, cwd=ROOT, timeout=900)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return tmp / "sweep"


def rewrite(command: str, case: Case, tmp: Path, corpus_dir: Path, cache: Path) -> str:
    """The command with paths moved into tmp and the case's small sizes appended."""
    command = command.replace("runs/ablation_quick", str(tmp / "sweep"))
    command = re.sub(r"(?<![\w/])runs/([\w-]+)", lambda m: str(tmp / m[1]), command)
    for name in ("in.en", "out.de", "a.txt", "b.txt", "model.nmt", "model-onnx", "figures"):
        command = re.sub(rf"(?<=[=,\[]){re.escape(name)}", str(tmp / name), command)
    if command.startswith("python "):
        return command + " " + shlex.join(case.extra)
    target = command.split()[1] if command.startswith("make ") else ""
    extra = []  # paths first: a case's extra may end with flags (--cfg hydra)
    if target in ("data", "spm", "train", "ablate"):
        extra += [f"data.root={corpus_dir}", f"cache_dir={cache}"]
        if case.run_dir and "run_dir=" not in command:
            extra.append(f"run_dir={tmp / 'run'}")
        if case.sweep:
            extra.append(f"hydra.sweep.dir={tmp / 'sweep'}")
    elif target == "results":  # the pages it writes: copies, never the repository's own
        shutil.copy(README, tmp / "README.md")
        extra += ["--json", str(tmp / "results.json"), "--page", str(tmp / "results.md")]
        extra += ["--readme", str(tmp / "README.md")]
    elif target == "bench" and case.extra:
        extra += [
            "--set",
            f"data.root={corpus_dir}",
            "--set",
            f"cache_dir={cache}",
            "--work-dir",
            str(tmp / "bench"),
            "--out",
            str(tmp / "bench.json"),
            "--runs-dir",
            str(tmp / "no-runs"),
        ]
    extra += case.extra
    if not extra:
        return command
    added = " ".join(extra)
    if 'ARGS="' in command:
        return command[:-1] + " " + added + '"'
    return f'{command} ARGS="{added}"'


def case_params() -> list:
    """The commands; the two that share the `make ablate` sweep run on one worker."""
    shared = pytest.mark.xdist_group("ablate_sweep")
    return [
        pytest.param(c, marks=shared) if c in ("make ablate", ABLATE_REPORT) else c for c in CASES
    ]


ABLATE_REPORT = "python scripts/report.py runs/ablation_quick"


@pytest.mark.parametrize("command", case_params())
def test_readme_command_runs(command, corpus_dir, readme_run, tmp_path, request):
    case = CASES[command]
    if case.skip:  # not skipped: checked to be what CI runs
        assert command in (ROOT / ".ci" / "run").read_text(), case.skip
        return
    if case.elsewhere:  # not skipped: that test exists and runs the command
        file, name = case.elsewhere.split("::")
        assert f"def {name}(" in (ROOT / "tests" / file).read_text(), case.elsewhere
        return
    if checked_within(command):  # not skipped: that case runs it and checks it with its own check
        assert case.check is not None and command in chain(checked_within(command))
        return
    if case.needs_run:
        for name in ("X", *case.also):
            shutil.copytree(readme_run, tmp_path / name)
    (tmp_path / "in.en").write_text("A dog runs.\nTwo men talk.\n")
    if "hyps=[" in command:
        from nmt.data.prepare import load_corpus

        refs = [r["de"] for r in load_corpus(tmp_path / "X")[0]["test_2016_flickr"]["translation"]]
        (tmp_path / "a.txt").write_text("".join(r + "\n" for r in refs))
        (tmp_path / "b.txt").write_text("".join(" ".join(r.split()[:3]) + "\n" for r in refs))
    if command.startswith("python scripts/report.py"):  # the sweep of `make ablate`
        shutil.copytree(request.getfixturevalue("ablate_sweep"), tmp_path / "sweep")
    if command == "make ablate":
        shutil.copytree(request.getfixturevalue("ablate_sweep"), tmp_path / "sweep")
        case.check(None, tmp_path)
        return
    if command == "make format":
        check_format_in_a_copy(tmp_path)
        return
    env = {**os.environ, "VENV": str(Path(sys.executable).parent.parent), **case.env}
    # The prepared corpora and vocabularies of one worker's commands are shared (a cache is keyed
    # by what built it); a sweep's commands get an empty one (they check the vocabulary is built
    # once by jobs that start together).
    cache = tmp_path / "c" if case.sweep else request.getfixturevalue("readme_cache")
    for before in chain(command):
        first = rewrite(before, CASES[before], tmp_path, corpus_dir, cache)
        ran = run_whole(first, shell=True, cwd=ROOT, timeout=900, env=env)
        assert ran.returncode == 0, f"{first}\n{ran.stderr[-3000:]}"
        if checked_within(before) == command:  # checked here, where it ran
            CASES[before].check(ran, tmp_path)
    line = rewrite(command, case, tmp_path, corpus_dir, cache)
    if command.startswith("python "):
        line = line.replace("python ", f"{sys.executable} ", 1)
    result = run_whole(line, shell=True, cwd=ROOT, timeout=900, env=env, input=case.stdin)
    assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
    if case.check:
        case.check(result, tmp_path)


def check_format_in_a_copy(tmp: Path) -> None:
    """`make format` rewrites files: run it on a copy, where it must change nothing."""
    copy = tmp / "repo"
    for name in ("nmt", "tests", "scripts"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, copy / name)
    venv = Path(sys.executable).parent.parent
    result = subprocess.run(
        ["make", "format", f"VENV={venv}"], cwd=copy, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("nmt", "tests", "scripts"):
        for path in (ROOT / name).rglob("*.py"):
            assert (copy / name / path.relative_to(ROOT / name)).read_text() == path.read_text()


def test_readme_python_example_runs(readme_run, tmp_path):
    (snippet,) = python_snippets()
    shutil.copytree(readme_run, tmp_path / "X")
    code = snippet.replace("runs/X", str(tmp_path / "X"))
    *body, last = code.strip().splitlines()
    namespace: dict = {}
    exec("\n".join(body), namespace)  # noqa: S102  (our own README)
    out = eval(last, namespace)  # noqa: S307
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(t, str) for t in out)
