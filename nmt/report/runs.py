"""Finished runs as the report reads them: results, config, validation curves, test translations,
and per run the analyses (gate statistics, BLEU by source length) cached in ``analysis.json``.

A run is a directory with ``done.json`` (written by ``nmt-train`` when it ends), ``config.yaml``,
``metrics.csv`` and the test translations of ``eval/<split>-best-<search>/`` (written by
``final_eval``, or by ``make eval``).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from nmt.core.errors import UserError
from nmt.core.rundir import CONFIG_FILE, DONE_FILE, write_json
from nmt.core.runtime import pick_device
from nmt.data import prepare as data
from nmt.data import tokenizer
from nmt.data.batching import ordered_batches
from nmt.model.attention import KINDS
from nmt.model.cells import CELLS
from nmt.model.restore import restore
from nmt.scoring import analysis, metrics
from nmt.scoring.evaluate import split_pairs

log = logging.getLogger(__name__)

ANALYSIS_FILE = "analysis.json"
# The report's gate statistics teacher-force the validation split in batches of this many tokens.
GATE_BATCH_TOKENS = 4000


class ReportError(UserError):
    """No runs to report on, or a run lacks what the report needs; the message says which."""


@dataclass
class Run:
    """One finished training run and what the report reads from it."""

    path: Path
    done: dict
    config: dict
    metrics: list[dict] = field(default_factory=list)
    test: dict | None = None  # scores.json of the test split
    hyps: list[str] | None = None
    sources: list[str] | None = None  # the test split, in the run's own language pair
    refs: list[str] | None = None
    analysis: dict | None = None

    @property
    def cell(self) -> str:
        return self.config["model"]["cell"]

    @property
    def attention(self) -> str:
        return self.config["model"]["attention"]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def pair(self) -> str:
        data = self.config.get("data", {})
        return f"{data.get('src', '')}-{data.get('tgt', '')}"

    @property
    def finished(self) -> bool:
        return self.done.get("status") == "finished"

    @property
    def label(self) -> str:
        return f"{self.cell}+{self.attention}"


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories among ``paths``: each one itself, or its children, holding done.json."""
    found = []
    for path in paths:
        if (path / DONE_FILE).is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p.parent for p in path.glob(f"*/{DONE_FILE}")))
    return found


def _read_metrics(path: Path) -> list[dict]:
    """metrics.csv rows as floats, one per step (a resumed run may repeat a step: last wins)."""
    if not path.is_file():
        return []
    rows: dict[int, dict] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if v not in ("", None)}
            rows[int(values["step"])] = values
    return [rows[k] for k in sorted(rows)]


def load_run(path: Path, split: str, search: str) -> Run:
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ReportError(f"{config_path}: missing; is {path} a training run directory?")
    run = Run(
        path=path,
        done=json.loads((path / DONE_FILE).read_text()),
        config=OmegaConf.to_container(OmegaConf.load(config_path)),
        metrics=_read_metrics(path / "metrics.csv"),
    )
    eval_dir = path / "eval" / f"{split}-best-{search}"
    if run.finished:
        if not (eval_dir / "scores.json").is_file():
            raise ReportError(
                f"{eval_dir}: missing; translate the split first: "
                f'make eval ARGS="run_dir={path} split={split} search={search}"'
            )
        run.test = json.loads((eval_dir / "scores.json").read_text())
        run.hyps = data.read_lines(eval_dir / "hyps.txt")
        if len(run.hyps) != run.test["sentences"]:
            raise ReportError(
                f"{eval_dir / 'hyps.txt'}: {len(run.hyps)} lines but {run.test['sentences']} "
                f'sentences were scored; translate again: make eval ARGS="run_dir={path} '
                f'split={split} search={search}"'
            )
    return run


def analyze_run(run: Run, split: str, search: str, edges: tuple[int, ...], device: str) -> dict:
    """Gate statistics on the validation split and BLEU by source length on ``split``, cached
    in the run's analysis.json (recomputed when the split, search or buckets differ)."""
    place = run.path / ANALYSIS_FILE
    key = {
        "split": split,
        "search": search,
        "edges": list(edges),
        "checkpoint_step": run.done.get("best_step"),
    }
    if place.is_file():
        cached = json.loads(place.read_text())
        if cached.get("key") == key:
            return cached
    sources, refs = split_pairs(run.path, split)
    by_length = analysis.bleu_by_length(sources, run.hyps, refs, edges)
    model = restore(run.path, "best").model  # the gate statistics read the PyTorch model
    chosen = pick_device(device)
    encoded = tokenizer.load_encoded(run.path)
    valid = encoded[data.read_report(run.path / data.ARTIFACT)["valid_split"]]
    src_ids, tgt_ids = list(valid["src_ids"]), list(valid["tgt_ids"])
    batches = ordered_batches(src_ids, tgt_ids, max_tokens=GATE_BATCH_TOKENS, batch_size=None)
    gates = analysis.gate_statistics(model.to(chosen).eval(), batches, chosen)
    result = {"key": key, "bleu_by_length": by_length, "gates": gates}
    write_json(place, result)
    return result


def run_order(run: Run) -> tuple:
    att = KINDS.index(run.attention) if run.attention in KINDS else 99  # the table's order
    cell = CELLS.index(run.cell) if run.cell in CELLS else len(CELLS)  # the cell table's order
    return run.pair, att, cell, run.seed


# Not part of what a run is: where it ran, how it logged, which seed (seeds are a row's samples).
_INCIDENTAL = (
    "seed",
    "run_dir",
    "cache_dir",
    "device",
    "train.resume",
    "train.progress",
    "train.threads",
    "train.tensorboard",
)


def _flat(tree: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value)
    return out


def context(run: Run) -> frozenset:
    """Everything a run was configured with except its cell (with the cell's own recipe, optim.*)
    and its seed: runs with the same context differ only in the cell."""
    flat = _flat(run.config)
    return frozenset(
        (k, v)
        for k, v in flat.items()
        if k not in _INCIDENTAL
        and k not in ("model.cell", "model.name")
        and not k.startswith("optim.")
    )


def paired_pvalues(runs: list[Run], baseline: str, samples: int) -> dict:
    """p-values of sacreBLEU's paired bootstrap, each run against the baseline cell with the same
    context (attention and all other settings) and seed: {run path: {"bleu_p", "chrf_p"}}."""
    out: dict[str, dict] = {}
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.finished:
            groups.setdefault((context(run), run.seed), []).append(run)
    for group in groups.values():
        base = [r for r in group if r.cell == baseline]
        others = [r for r in group if r.cell != baseline]
        if not base or not others:
            continue
        systems = {str(base[0].path): base[0].hyps, **{str(r.path): r.hyps for r in others}}
        paired = metrics.paired_bootstrap(systems, base[0].refs, samples=samples)
        for r in others:
            out[str(r.path)] = {
                "bleu_p": paired[str(r.path)]["bleu_p"],
                "chrf_p": paired[str(r.path)]["chrf_p"],
                "signature": paired["signatures"]["bleu"],
            }
    return out


@dataclass(frozen=True)
class BenchSpeeds:
    """Training speeds measured apart from the runs (scripts/bench.py's train section, one
    process on an otherwise idle machine), for the report's speed columns: a sweep's runs share
    their machine with each other and with whatever else ran, so their own figures measure the
    machine's load as much as the cell. Keyed by (cell, parameters, language pair): a figure
    serves only runs of that cell at that size on that pair (en-fr's sentences are not
    en-de's)."""

    tokens_per_s: dict[tuple[str, int, str], float]
    sources: list[str]  # per file: its command, commit, CPU and threads

    def speed(self, run: Run) -> float:
        """Target tokens per second of training for ``run``'s cell at its size."""
        key = (run.cell, int(run.done.get("parameters") or 0), run.pair)
        if key not in self.tokens_per_s:
            measured = sorted(f"{p:,} on {q}" for c, p, q in self.tokens_per_s if c == run.cell)
            raise ReportError(
                f"{run.path}: no benchmark of {run.cell} at {key[1]:,} parameters on {run.pair} "
                f"({'measured at ' + ', '.join(measured) if measured else 'not measured'}); "
                f'measure it: make bench ARGS="--what train --cells {run.cell} --experiment '
                "<the sweep's preset>\" with --set for what the run changed"
            )
        return self.tokens_per_s[key]

    def minutes_to_best(self, run: Run) -> float | None:
        """Training minutes to ``run``'s best checkpoint at the benchmark's speed: the target
        tokens the run trained on up to its best update (its mean per update times that update)
        over the benchmark's tokens per second; validation excluded."""
        done = run.done
        if not done.get("steps") or done.get("best_step") is None:
            return None
        tokens = done["tokens_per_s"] * done["minutes"] * 60  # every target token it trained on
        return done["best_step"] * tokens / done["steps"] / self.speed(run) / 60


def read_bench(paths: list[Path]) -> BenchSpeeds:
    """The train sections of bench.json files (scripts/bench.py --out); a ReportError naming the
    file when one has none."""
    speeds: dict[tuple[str, int, str], float] = {}
    sources = []
    for path in paths:
        try:
            bench = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ReportError(f"{path}: not a benchmark's JSON ({e})") from e
        if not bench.get("train"):
            raise ReportError(
                f"{path}: no train section; write one with python scripts/bench.py --what train"
            )
        for cell, figures in bench["train"].items():
            if "pair" not in figures:
                raise ReportError(
                    f"{path}: {cell}'s figures name no language pair (measured before the "
                    "benchmark recorded it); measure again with python scripts/bench.py --what train"
                )
            key = (cell, int(figures["parameters"]), figures["pair"])
            if key in speeds:
                raise ReportError(
                    f"{path}: {cell} at {key[1]:,} parameters on {key[2]} is measured in an "
                    "earlier file too; give each setting once"
                )
            speeds[key] = float(figures["train_tgt_tokens_per_s"])
        made = bench.get("provenance", {})
        sources.append(
            f"`{made.get('command', '?')}` at `{str(made.get('commit', '?'))[:12]}` on "
            f"{bench.get('cpu', '?')}, {bench.get('cpu_threads', '?')} thread(s)"
        )
    return BenchSpeeds(speeds, sources)
