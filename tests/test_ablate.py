"""nmt-ablate: a preset with an ablation block (the bracketing search of each cell's learning rate,
the arms at matched size in every setting, the report)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ablate

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
CELLS_BEGIN = "<!-- cells: begin (written by scripts/report.py --readme; do not edit) -->"
CELLS_END = "<!-- cells: end -->"


@pytest.mark.xdist_group("tiny_ablation")  # one worker builds the fixture
def test_ablation_widens_every_cells_search_past_the_edge_with_the_same_budget(tiny_ablation):
    from nmt.scoring.tuning import bracket

    sweep_dir, _ = tiny_ablation
    tuning = json.loads((sweep_dir / "tuning.json").read_text())
    assert tuning["lrs"] == [0.001, 0.003] and tuning["max_steps"] == 2
    assert tuning["factor"] == 3 and tuning["max_points"] == 3
    tried = {}
    for run in sorted(p.parent for p in (sweep_dir / "tune").glob("*/done.json")):
        done = json.loads((run / "done.json").read_text())
        config = _yaml(run / "config.yaml")
        assert done["steps"] == 2 and config["seed"] == 1 and config["final_eval"] == []
        assert config["model"]["attention"] == "none"
        tried.setdefault(done["cell"], {})[config["optim"]["lr"]] = done["bleu"]
    assert tried.keys() == {"gru", "tanh"}
    for cell, scored in tried.items():
        # Two rates always leave the best at an edge: one more past it, then the budget is spent.
        first_two = {lr: scored[lr] for lr in (0.001, 0.003)}
        _, beyond = bracket(first_two, 3.0)
        assert sorted(scored) == sorted([0.001, 0.003, beyond])
        chosen, after = bracket(scored, 3.0)
        assert tuning["chosen"][cell]["none"] == chosen
        assert tuning["bracketed"][cell] == {"none": after is None}
        assert max(scored.values()) == scored[chosen]


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
        seen.add((done["cell"], config["seed"], config["data"]["tgt"]))
        parameters[done["cell"]] = done["parameters"]
        if done["cell"] == "tanh":  # resized to the GRU's count
            assert (done["enc_hidden"], done["dec_hidden"]) != (16, 32)
    # the seeds of the first setting over every cell, then the further setting (en->fr)
    assert seen == {(c, s, "de") for c in ("gru", "tanh") for s in (1, 2)} | {
        ("gru", 1, "fr"),
        ("tanh", 1, "fr"),
    }
    assert abs(parameters["tanh"] - parameters["gru"]) <= 0.02 * parameters["gru"]
    vocabularies = {(run / "spm.model").read_bytes() for run in runs}
    assert len(vocabularies) == 2  # a vocabulary a language pair


@pytest.mark.xdist_group("tiny_ablation")  # one worker builds the fixture
def test_ablation_report_has_seed_statistics_and_the_tuning(tiny_ablation):
    sweep_dir, _ = tiny_ablation
    text = (sweep_dir / "report" / "report.md").read_text()
    assert "Learning rates tuned on validation" in text and "| tanh | none |" in text
    # the search ran on en-de without attention (this test's choice); the others reuse its rates
    assert "tuned with attention none on en→de, the rate serves every attention and" in text
    results = json.loads((sweep_dir / "report" / "results.json").read_text())
    rows = {(r["cell"], r["variant"]): r for r in results["rows"]}
    assert rows["gru", "data.tgt=de"]["test_bleu"]["n"] == 2
    assert rows["tanh", "data.tgt=de"]["test_bleu"]["n"] == 2
    for tgt in ("de", "fr"):  # each pair against its own references
        variant = f"data.tgt={tgt}"
        versus = rows["tanh", variant]["versus"]
        assert versus["bleu"]["samples"] == 1000
        # The difference of the seed means (chrF too: tiny models' BLEU can be 0 on both sides),
        # and a bootstrap p of (1 + k) / (1 + samples).
        for metric in ("bleu", "chrf"):
            delta = (
                rows["tanh", variant][f"test_{metric}"]["mean"]
                - rows["gru", variant][f"test_{metric}"]["mean"]
            )
            assert versus[metric]["delta"] == pytest.approx(delta, abs=1e-9)
        assert versus["chrf"]["delta"] != 0
        k = versus["bleu"]["p"] * 1001 - 1
        assert abs(k - round(k)) < 1e-6 and 0 <= round(k) <= 1000
    assert results["tuning"]["chosen"].keys() == {"gru", "tanh"}
    # Where it came from: the sweep's commands, one per setting, and the search's as one row
    made = results["made"]
    assert [c["runs"] for c in made["runs"]["commands"]] == [4, 2]  # en-de seeds 1, 2; en-fr
    assert all(c["command"].startswith("nmt-train -m ") for c in made["runs"]["commands"])
    assert sum(c["runs"] for c in made["search"]["commands"]) == 6  # two cells, three rates
    assert made["report"]["command"].startswith("nmt-ablate ")
    assert "| search | `nmt-train -m " in text and "'optim.lr=<lr>'" in text
    assert "| runs | `nmt-train -m " in text and "Machines: CPU " in text
    assert (sweep_dir / "report" / "lr_search.png").stat().st_size > 0
    # the table of differences: conf/report.yaml's pair (gru, tanh) in each setting, b - a
    differences = results["differences"]
    assert [(d["a"], d["b"], d["pair"]) for d in differences] == [
        ("gru", "tanh", "en-de"),
        ("gru", "tanh", "en-fr"),
    ]
    for d in differences:
        variant = f"data.tgt={d['pair'][-2:]}"
        for metric in ("bleu", "chrf"):
            delta = (
                rows["tanh", variant][f"test_{metric}"]["mean"]
                - rows["gru", variant][f"test_{metric}"]["mean"]
            )
            assert d[metric]["delta"] == pytest.approx(delta, abs=1e-9)
        assert d["chrf"]["delta"] != 0 and d["seeds"] in ([2, 2], [1, 1])
        assert d["parameters"] == [
            rows["gru", variant]["parameters"],
            rows["tanh", variant]["parameters"],
        ]
    assert "| no gates at all | gru → tanh | en-de, none | 2 / 2 |" in text
    # how long it took, from the runs' logs: the search's runs and the runs, each counted
    clock = results["clock"]
    assert clock["search"]["runs"] == len(list((sweep_dir / "tune").glob("*/done.json")))
    assert clock["runs"]["finished"] == len(list(sweep_dir.glob("*/done.json")))
    assert clock["search"]["last"] <= clock["runs"]["first"]  # the runs wait for the search
    wall = clock["search"]["wall_hours"] + clock["runs"]["wall_hours"]
    assert 0 < clock["whole"]["wall_hours"] <= wall + 1e-3
    assert clock["whole"]["job_hours"] == pytest.approx(
        clock["search"]["job_hours"] + clock["runs"]["job_hours"], abs=2e-3
    )
    assert "| whole sweep | " in text


@pytest.mark.xdist_group("tiny_ablation")  # one worker builds the fixture
def test_report_takes_speeds_measured_apart_from_a_benchmark(tiny_ablation, tmp_path):
    """scripts/report.py --bench: the speed columns come from the benchmark's figure for each
    cell at the runs' size and language pair (a file per pair), minutes to best from the tokens
    each run trained to its best update at that speed; a benchmark at another size, one that
    names no pair and a setting measured twice are refused in one line."""
    sweep_dir, _ = tiny_ablation
    results = json.loads((sweep_dir / "report" / "results.json").read_text())
    size = {r["cell"]: r["parameters"] for r in results["rows"]}
    speeds = {"en-de": {"gru": 1000.0, "tanh": 4000.0}, "en-fr": {"gru": 2000.0, "tanh": 3000.0}}
    made = {"command": "scripts/bench.py --what train", "commit": "abc"}
    benches, trains = [], {}
    for pair, of_pair in speeds.items():
        trains[pair] = {
            c: {"parameters": size[c], "pair": pair, "train_tgt_tokens_per_s": v}
            for c, v in of_pair.items()
        }
        benches += ["--bench", str(tmp_path / f"bench-{pair}.json")]
        (tmp_path / f"bench-{pair}.json").write_text(
            json.dumps({"train": trains[pair], "provenance": made, "cpu": "X", "cpu_threads": 1})
        )

    def report(*extra):
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "report.py"), str(sweep_dir), *extra],
            capture_output=True,
            text=True,
            check=False,
        )

    out = tmp_path / "report"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{CELLS_BEGIN}\nwritten before\n{CELLS_END}\n\nafter\n")
    done = report(
        *benches, "--out", str(out), "--bootstrap-samples", "100", "--readme", str(readme),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    apart = json.loads((out / "results.json").read_text())
    # --readme: the block is the answer of results.json, a sentence per difference that gives
    # its figures in each setting (en-de and en-fr here)
    block = readme.read_text().split(CELLS_BEGIN)[1].split(CELLS_END)[0]
    assert readme.read_text().endswith(f"{CELLS_END}\n\nafter\n") and "written before" not in block
    assert "[the report](report/report.md)" in block
    sentences = {
        line.split("** (")[1].split("):")[0]: line for line in block.splitlines() if "** (" in line
    }
    assert sentences.keys() == {f"{d['a']} → {d['b']}" for d in apart["differences"]}
    for d in apart["differences"]:
        low, high = d["bleu"]["ci"]
        where = d["pair"].replace("-", "→")
        seeds = "1 seed" if d["seeds"] == [1, 1] else f"{max(d['seeds'])} seeds"  # as trained
        said = (
            f"{where} without attention ({seeds} a cell): "
            f"BLEU {d['bleu']['delta']:+.2f} [{low:+.2f}, {high:+.2f}]"
        )
        assert said in sentences[f"{d['a']} → {d['b']}"]
    runs = {r["path"]: r["done"] for r in apart["runs"]}
    for d in apart["differences"]:
        assert d["train_tokens_per_s"] == [speeds[d["pair"]]["gru"], speeds[d["pair"]]["tanh"]]
        for side, cell in enumerate((d["a"], d["b"])):
            mine = [
                v
                for v in runs.values()
                if v["cell"] == cell and f"{v['src']}-{v['tgt']}" == d["pair"]
            ]
            tokens = [v["tokens_per_s"] * v["minutes"] * 60 / v["steps"] for v in mine]
            to_best = [
                t * v["best_step"] / speeds[d["pair"]][cell] / 60
                for t, v in zip(tokens, mine, strict=True)
            ]
            assert d["minutes_to_best"][side] == pytest.approx(sum(to_best) / len(to_best))
            assert d["updates_to_best"][side] == pytest.approx(
                sum(v["best_step"] for v in mine) / len(mine)
            )
    text = (out / "report.md").read_text()
    assert "measured apart from the runs by `scripts/bench.py --what train` at `abc`" in text
    bench = tmp_path / "bench-en-de.json"
    trains["en-de"]["tanh"]["parameters"] += 1  # measured at another size
    bench.write_text(json.dumps({"train": trains["en-de"], "provenance": made}))
    refused = report(*benches, "--out", str(out))
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert f"no benchmark of tanh at {size['tanh']:,} parameters on en-de" in line
    twice = report(*benches, "--bench", benches[-1], "--out", str(out))
    assert twice.returncode == 1 and "is measured in an earlier file too" in twice.stderr
    del trains["en-de"]["gru"]["pair"]  # a file from before the pair was recorded
    bench.write_text(json.dumps({"train": trains["en-de"], "provenance": made}))
    unnamed = report(*benches, "--out", str(out))
    assert unnamed.returncode == 1 and "gru's figures name no language pair" in unnamed.stderr
    readme.write_text("# no block\n")
    refused = report("--out", str(out), "--readme", str(readme), "--bootstrap-samples", "100")
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert f"{readme}: no" in line and "block to write the answer into" in line


@pytest.mark.xdist_group("tiny_ablation")  # one worker builds the fixture
def test_ablation_refuses_grid_overrides(tiny_ablation, corpus_dir):
    # A rerun that trains nothing (finished runs skipped, the tuning's too): tests/test_records.py
    # runs the sweep again over its runs restored from their records, without their weights.
    sweep_dir, _ = tiny_ablation
    before = {p: p.stat().st_mtime for p in sweep_dir.glob("**/done.json")}
    refused = ablate(sweep_dir.parent, corpus_dir, "seed=5")
    # nmt-ablate's exit status 1 (an error in what it was given), as make reports it
    assert refused.returncode != 0 and "ablation block" in refused.stderr
    assert "ablate] Error 1" in refused.stderr
    assert {p: p.stat().st_mtime for p in sweep_dir.glob("**/done.json")} == before


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

    from nmt.core.errors import UserError
    from nmt.sweep import choose_rates

    # tanh's third rate failed after a validation that scored well: a failed run never wins
    tuned = {"gru": (20.0, 25.0, 24.0), "tanh": (15.0, 9.0, 99.0), "lstm": (21.0, 22.0, 22.0)}
    for cell, scores in tuned.items():
        for lr, bleu in zip((0.0005, 0.001, 0.002), scores, strict=True):
            status = "failed" if bleu == 99.0 else "finished"
            fake_tuning_run(tmp_path / "tune", cell, "bahdanau", lr, bleu, status)
    tune = {"lrs": [0.0005, 0.001, 0.002], "max_steps": 7, "seed": 1, "attention": "bahdanau"}
    tune |= {"factor": 2.0, "max_points": 0}
    from nmt.core.config import AblationConfig

    plan = OmegaConf.merge(
        OmegaConf.structured(AblationConfig),
        {
            "cells": ["gru", "tanh", "lstm"],
            "seeds": {"bahdanau": [1, 2], "none": [1]},
            "tune": tune,
        },
    )
    tuning = choose_rates(tmp_path / "tune", plan)
    # best validation BLEU per cell; the diverged rate never wins; a tie goes to the smaller
    # rate; one rate for both attentions
    assert tuning["chosen"] == {
        "gru": {"bahdanau": 0.001, "none": 0.001},
        "tanh": {"bahdanau": 0.0005, "none": 0.0005},
        "lstm": {"bahdanau": 0.001, "none": 0.001},
    }
    # only gru's best has a worse rate on each side; lstm's best ties with the top rate
    assert tuning["bracketed"] == {
        "gru": {"bahdanau": True},
        "tanh": {"bahdanau": False},
        "lstm": {"bahdanau": False},
    }
    fake_tuning_run(tmp_path / "tune", "lstm", "bahdanau", 0.004, 21.5)  # a rate beyond the edge
    assert choose_rates(tmp_path / "tune", plan)["bracketed"]["lstm"] == {"bahdanau": True}
    assert [r["valid_bleu"] for r in tuning["runs"] if r["cell"] == "tanh"] == [15.0, 9.0, None]
    plan.tune.attention = None  # every attention tuned on its own: none was not
    with pytest.raises(UserError, match="no tuning run of gru, none"):
        choose_rates(tmp_path / "tune", plan)


def test_the_large_preset_asks_the_same_question_at_the_default_size():
    from nmt.core.compose import compose

    small = compose("train", ["experiment=ablation_gates"], hydra_config=True)
    large = compose("train", ["experiment=ablation_gates_large"], hydra_config=True)
    default = compose("train", [])
    for key in ("emb_dim", "enc_hidden", "dec_hidden"):
        assert large.model[key] == default.model[key] and small.model[key] < default.model[key]
    assert large.tokenizer.vocab_size == default.tokenizer.vocab_size
    assert (
        large.ablation.cells == small.ablation.cells and large.ablation.also == small.ablation.also
    )
    assert large.ablation.seeds == small.ablation.seeds
    assert large.ablation.tune.max_points == small.ablation.tune.max_points
    assert large.hydra.sweep.dir == "runs/ablation_gates_large"


def test_the_search_stops_at_max_points_even_with_its_best_at_an_edge():
    from omegaconf import OmegaConf

    from nmt.sweep import _beyond_edges

    plan = OmegaConf.create({"tune": {"max_points": 3, "factor": 2.0}})
    key = ("gru", "none")
    ended = {(*key, lr): {"status": "finished", "bleu": bleu} for lr, bleu in ((1.0, 3), (2.0, 2))}
    points = {key: [1.0, 2.0]}
    assert _beyond_edges(plan, points, ended, busy=set()) == [(key, 0.5)]  # the best is lowest
    assert points[key] == [1.0, 2.0, 0.5]
    ended[(*key, 0.5)] = {"status": "finished", "bleu": 4}  # still at the edge, budget spent
    assert _beyond_edges(plan, points, ended, busy=set()) == []
    assert _beyond_edges(plan, {key: [1.0, 2.0]}, ended, busy={key}) == []  # one still running


# A stand-in for one tuning job (nmt-train's place in the loop under test): it works a second,
# then writes the run's config.yaml and done.json as a finished run does; validation BLEU peaks
# at lr=0.003, so the search of [0.001, 0.003] widens once past its upper edge.
FAKE_JOB = """
import json, sys, time
from pathlib import Path
sweep, cell, attention, lr = sys.argv[1:]
time.sleep(1.5)
run = Path(sweep) / f"{cell}-{lr}"
run.mkdir(parents=True)
(run / "config.yaml").write_text(
    f"model: {{cell: {cell}, attention: {attention}}}\\noptim: {{lr: {lr}}}\\n")
bleu = {"0.001": 5.0, "0.003": 9.0}.get(lr, 7.0)
(run / "done.json").write_text(json.dumps({"status": "finished", "bleu": bleu, "steps": 2}))
"""


def test_the_search_reads_its_directory_when_a_job_ends_not_at_every_poll(tmp_path, monkeypatch):
    """The tuning loop starts the jobs, widens past an edge and brackets with them; it reads the
    tuning directory (every ended run's config) at its start and when a job ends, never once a
    second while they run: 3 jobs of 1.5 s read it at most 4 times."""
    from omegaconf import OmegaConf

    from nmt import sweep

    def start(args):
        given = dict(a.split("=", 1) for a in args)
        keys = ("hydra.sweep.dir", "model", "model.attention", "optim.lr")
        return subprocess.Popen([sys.executable, "-c", FAKE_JOB, *(given[k] for k in keys)])

    reads = []
    real = sweep.tuning_runs
    monkeypatch.setattr(sweep, "_start_train", start)
    monkeypatch.setattr(sweep, "tuning_runs", lambda d: reads.append(d) or real(d))
    plan = OmegaConf.create(
        {
            "cells": ["gru"],
            "jobs": 1,
            "seeds": {"none": [1]},
            "also": [],
            "tune": dict(
                attention="none", lrs=[0.001, 0.003], factor=3.0, max_points=3, max_steps=2, seed=1
            ),
        }
    )
    sweep.tune(plan, [], tmp_path / "tune")
    tried = sorted(float(lr) for (_, _, lr) in real(tmp_path / "tune"))
    assert tried == pytest.approx([0.001, 0.003, 0.009])  # widened once, then bracketed
    assert 1 <= len(reads) <= 1 + len(tried), len(reads)
    assert sweep.choose_rates(tmp_path / "tune", plan)["bracketed"] == {"gru": {"none": True}}
