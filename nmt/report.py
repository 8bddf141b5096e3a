"""The ablation report: finished runs -> a Markdown table, results.json and four plots.

A run is a directory with ``done.json`` (written by ``nmt-train`` when it ends), ``config.yaml``,
``metrics.csv`` and the test translations of ``eval/<split>-best-<search>/`` (written by
``final_eval``, or by ``make eval``). Runs are grouped into rows by (cell, attention); seeds
become mean ± std. Per run, gate statistics and BLEU by source length are computed once and kept
in ``analysis.json`` beside the run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from nmt import analysis, data, evaluate, tokenizer
from nmt.batching import BatchSampler, collate
from nmt.cells import CELLS
from nmt.errors import UserError

log = logging.getLogger(__name__)

DONE_FILE, ANALYSIS_FILE = "done.json", "analysis.json"
PLOTS = ("curves_updates.png", "curves_seconds.png", "bleu_by_length.png", "gates.png")
ATTENTION_ORDER = ("none", "bahdanau", "luong_dot", "luong_general")
CELL_ORDER = ("tanh", "gru", "gru_cho", "lstm")
COLORS = {"tanh": "tab:red", "gru": "tab:blue", "gru_cho": "tab:cyan", "lstm": "tab:green"}
STYLES = {"none": ":", "bahdanau": "-", "luong_dot": "--", "luong_general": "-."}


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
    config_path = path / "config.yaml"
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


def _split_text(path: Path, split: str) -> tuple[list[str], list[str]]:
    corpus, report = data.load_corpus(path)
    if split not in corpus:
        raise ReportError(f"split {split!r} is not in {path / data.ARTIFACT}")
    rows = corpus[split]["translation"]
    return [r[report["src"]] for r in rows], [r[report["tgt"]] for r in rows]


def analyze_run(run: Run, split: str, search: str, edges: tuple[int, ...], device: str) -> dict:
    """Gate statistics on the validation split and BLEU by source length on ``split``, cached
    in the run's analysis.json (recomputed when the split, search or buckets differ)."""
    place = run.path / ANALYSIS_FILE
    key = {"split": split, "search": search, "edges": list(edges),
           "checkpoint_step": run.done.get("best_step")}  # fmt: skip
    if place.is_file():
        cached = json.loads(place.read_text())
        if cached.get("key") == key:
            return cached
    from nmt.translate import Translator  # the model, as translate/eval load it

    sources, refs = _split_text(run.path, split)
    by_length = analysis.bleu_by_length(sources, run.hyps, refs, edges)
    translator = Translator.from_run_dir(run.path, checkpoint="best", device=device)
    encoded = tokenizer.load_encoded(run.path)
    valid = encoded[data.read_report(run.path / data.ARTIFACT)["valid_split"]]
    src_ids, tgt_ids = list(valid["src_ids"]), list(valid["tgt_ids"])
    sampler = BatchSampler(
        src_lens=[len(s) for s in src_ids], tgt_lens=[len(t) for t in tgt_ids], max_tokens=4000,
        batch_size=None, pool_size=1, seed=0, shuffle=False,
    )  # fmt: skip
    batches = (
        collate([src_ids[i] for i in b], [tgt_ids[i] for i in b], b) for b in sampler.batches(0)
    )
    gates = analysis.gate_statistics(translator.model, batches, translator.device)
    result = {"key": key, "bleu_by_length": by_length, "gates": gates}
    tmp = place.with_name(place.name + ".part")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(place)
    return result


# --------------------------------------------------------------------------------------------
# Rows


def _order(run: Run) -> tuple:
    att = ATTENTION_ORDER.index(run.attention) if run.attention in ATTENTION_ORDER else 99
    cell = CELL_ORDER.index(run.cell) if run.cell in CELL_ORDER else len(CELLS)
    return att, cell, run.seed


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    if not values:
        return math.nan, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _minutes_to_best(run: Run) -> float | None:
    best = run.done.get("best_step")
    for row in run.metrics:
        if int(row["step"]) == best:
            return row["seconds"] / 60
    return None


# Not part of what a run is: where it ran, how it logged, which seed (seeds are a row's samples).
_INCIDENTAL = ("seed", "run_dir", "cache_dir", "device", "train.resume", "train.progress",
               "train.threads", "train.tensorboard")  # fmt: skip


def _flat(tree: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value)
    return out


def _context(run: Run) -> frozenset:
    """Everything a run was configured with except its cell (with the cell's own recipe, optim.*)
    and its seed: runs with the same context differ only in the cell."""
    flat = _flat(run.config)
    return frozenset(
        (k, v) for k, v in flat.items()
        if k not in _INCIDENTAL and k not in ("model.cell", "model.name")
        and not k.startswith("optim.")
    )  # fmt: skip


def paired_pvalues(runs: list[Run], refs: list[str], baseline: str, samples: int) -> dict:
    """p-values of sacreBLEU's paired bootstrap, each run against the baseline cell with the same
    context (attention and all other settings) and seed: {run path: {"bleu_p", "chrf_p"}}."""
    out: dict[str, dict] = {}
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.finished:
            groups.setdefault((_context(run), run.seed), []).append(run)
    for group in groups.values():
        base = [r for r in group if r.cell == baseline]
        others = [r for r in group if r.cell != baseline]
        if not base or not others:
            continue
        systems = {str(base[0].path): base[0].hyps, **{str(r.path): r.hyps for r in others}}
        paired = evaluate.paired_bootstrap(systems, refs, samples=samples)
        for r in others:
            out[str(r.path)] = {
                "bleu_p": paired[str(r.path)]["bleu_p"],
                "chrf_p": paired[str(r.path)]["chrf_p"],
                "signature": paired["signatures"]["bleu"],
            }
    return out


def build_rows(runs: list[Run], pvalues: dict) -> list[dict]:
    """One row per (cell, attention): means over seeds (std where there are several)."""
    rows: dict[tuple[str, frozenset], list[Run]] = {}
    for run in sorted(runs, key=_order):
        rows.setdefault((run.cell, _context(run)), []).append(run)
    out = []
    for (cell, context), group in rows.items():
        ok = [r for r in group if r.finished]
        attention = group[0].attention
        # Rows that share cell and attention but not the other settings: name what differs.
        others = [c for (k, c) in rows if k == cell and c != context]
        differing = sorted({k for c in others for k, _ in context ^ c if k != "model.attention"})
        variant = ",".join(f"{k}={json.loads(dict(context)[k])}" for k in differing
                           if k in dict(context))  # fmt: skip
        row = {
            "cell": cell, "attention": attention, "variant": variant, "runs": len(group),
            "failed": len(group) - len(ok),
            "seeds": [r.seed for r in group], "parameters": group[0].done.get("parameters"),
        }  # fmt: skip
        if ok:
            ppl = [min(m["ppl"] for m in r.metrics if "ppl" in m) for r in ok if r.metrics]
            to_best = [m for r in ok if (m := _minutes_to_best(r)) is not None]
            p_bleu = [pvalues[str(r.path)]["bleu_p"] for r in ok if str(r.path) in pvalues]
            p_chrf = [pvalues[str(r.path)]["chrf_p"] for r in ok if str(r.path) in pvalues]
            row.update(
                train_tokens_per_s=statistics.fmean(r.done["train_tokens_per_s"] for r in ok),
                steps=statistics.fmean(r.done["steps"] for r in ok),
                minutes=statistics.fmean(r.done["minutes"] for r in ok),
                minutes_to_best=statistics.fmean(to_best) if to_best else None,
                best_valid_ppl=statistics.fmean(ppl) if ppl else None,
                valid_bleu=_mean_std([r.done["bleu"] for r in ok]),
                test_bleu=_mean_std([r.test["bleu"] for r in ok]),
                test_chrf=_mean_std([r.test["chrf"] for r in ok]),
                # Several seeds: the largest (least significant) p over the seed pairs.
                bleu_p=max(p_bleu) if p_bleu else None,
                chrf_p=max(p_chrf) if p_chrf else None,
            )  # fmt: skip
        out.append(row)
    return out


def _pm(value: tuple[float, float | None]) -> str:
    mean, std = value
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _p(value: float | None, baseline: bool) -> str:
    if baseline:
        return "(baseline)"
    return "–" if value is None else f"{value:.4f}"


def markdown_table(rows: list[dict], baseline: str) -> str:
    head = ("| cell | attention | parameters | train tok/s | steps | minutes to best | best valid ppl "
            "| valid BLEU | test BLEU | test chrF | p BLEU vs " + baseline + " | p chrF vs "
            + baseline + " |")  # fmt: skip
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        attention = f"{r['attention']} ({r['variant']})" if r["variant"] else r["attention"]
        if "test_bleu" not in r:
            lines.append(f"| {r['cell']} | {attention} | {r['parameters'] or 0:,} | "
                         + " | ".join(["diverged"] + ["–"] * 9) + " |")  # fmt: skip
            continue
        base = r["cell"] == baseline
        fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
        lines.append(
            f"| {r['cell']} | {attention} | {r['parameters']:,} | "
            f"{r['train_tokens_per_s']:,.0f} | {r['steps']:.0f} | {fmt(r['minutes_to_best'], '.1f')} | "
            f"{fmt(r['best_valid_ppl'], '.2f')} | {_pm(r['valid_bleu'])} | {_pm(r['test_bleu'])} | "
            f"{_pm(r['test_chrf'])} | {_p(r['bleu_p'], base)} | {_p(r['chrf_p'], base)} |"
        )
    return "\n".join(lines)


def gates_table(runs: list[Run]) -> str:
    """Mean gate activations per run (first seed of each row) and layer."""
    lines = ["| cell | attention | layer | " + " | ".join(GATE_ORDER) + " |",
             "|---|---|---|" + "---|" * len(GATE_ORDER)]  # fmt: skip
    seen = set()
    for run in sorted(runs, key=_order):
        if not run.analysis or (run.cell, run.attention) in seen or not run.analysis["gates"]:
            continue
        seen.add((run.cell, run.attention))
        for layer, gates in _gates_by_layer(run.analysis["gates"]).items():
            cells = [f"{gates[g]:.3f}" if g in gates else "" for g in GATE_ORDER]
            lines.append(f"| {run.cell} | {run.attention} | {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


GATE_ORDER = ("update", "reset", "forget", "input", "output")


def _gates_by_layer(gates: dict[str, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key, value in gates.items():
        layer, gate = key.rsplit(".", 1)
        out.setdefault(layer, {})[gate] = value
    return out


# --------------------------------------------------------------------------------------------
# Plots


def _style(run: Run) -> dict:
    return {"color": COLORS.get(run.cell, "black"), "linestyle": STYLES.get(run.attention, "-")}


def plot_curves(runs: list[Run], x_key: str, path: Path) -> None:
    """Validation BLEU and loss against updates (x_key=step) or wall-clock minutes (seconds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    labelled = set()
    for run in sorted(runs, key=_order):
        if not run.metrics:
            continue
        xs = [m[x_key] / (60 if x_key == "seconds" else 1) for m in run.metrics]
        label = None if run.label in labelled else run.label
        labelled.add(run.label)
        for ax, metric in zip(axes, ("bleu", "loss"), strict=True):
            ax.plot(xs, [m.get(metric, math.nan) for m in run.metrics], label=label, **_style(run))
    xlabel = "updates" if x_key == "step" else "wall-clock minutes (validation included)"
    for ax, title in zip(axes, ("validation BLEU (greedy)", "validation loss (nats/token)"),
                         strict=True):  # fmt: skip
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bleu_by_length(runs: list[Run], path: Path) -> None:
    """Test BLEU per source-length bucket, one panel per attention type, a line per cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    analysed = [r for r in sorted(runs, key=_order) if r.analysis]
    kinds = sorted({r.attention for r in analysed}, key=lambda a: _order_of(a, ATTENTION_ORDER))
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(5.5 * max(len(kinds), 1), 4.2),
                             squeeze=False, sharey=True)  # fmt: skip
    labelled = set()
    for ax, kind in zip(axes[0], kinds, strict=False):
        for run in (r for r in analysed if r.attention == kind):
            buckets = run.analysis["bleu_by_length"]
            names = [f"{b['bucket']}\n({b['sentences']})" for b in buckets]
            label = None if run.label in labelled else run.cell
            labelled.add(run.label)
            ax.plot(names, [b.get("bleu", math.nan) for b in buckets], marker="o", label=label,
                    **_style(run))  # fmt: skip
        ax.set_title(f"attention: {kind}")
        ax.set_xlabel("source length in words (sentences)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("test BLEU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _order_of(value: str, order: tuple[str, ...]) -> int:
    return order.index(value) if value in order else len(order)


def plot_gates(runs: list[Run], path: Path) -> None:
    """Mean gate activations on the validation set: a panel per layer, bars per gate and run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen, seen = [], set()
    for run in sorted(runs, key=_order):
        if run.analysis and run.analysis["gates"] and run.label not in seen:
            seen.add(run.label)
            chosen.append(run)
    layers = sorted(
        {layer for r in chosen for layer in _gates_by_layer(r.analysis["gates"])},
        key=lambda name: (name.startswith("decoder"), name.replace("fwd", "0").replace("bwd", "1")),
    )  # encoder layers first, forward before backward
    fig, axes = plt.subplots(1, max(len(layers), 1), figsize=(4.8 * max(len(layers), 1), 4.5),
                             squeeze=False, sharey=True)  # fmt: skip
    width = 0.8 / len(GATE_ORDER)
    gate_colors = dict(zip(GATE_ORDER, ("tab:blue", "tab:orange", "tab:green", "tab:purple",
                                        "tab:gray"), strict=True))  # fmt: skip
    for ax, layer in zip(axes[0], layers, strict=False):
        for j, gate in enumerate(GATE_ORDER):
            values = [_gates_by_layer(r.analysis["gates"]).get(layer, {}).get(gate, math.nan)
                      for r in chosen]  # fmt: skip
            if all(math.isnan(v) for v in values):
                continue
            xs = [i + (j - len(GATE_ORDER) / 2 + 0.5) * width for i in range(len(chosen))]
            ax.bar(xs, values, width=width, label=gate, color=gate_colors[gate])
        ax.set_xticks(range(len(chosen)), [r.label for r in chosen], rotation=35, ha="right",
                      fontsize=8)  # fmt: skip
        ax.set_ylim(0, 1)
        ax.set_title(layer)
        ax.grid(alpha=0.3, axis="y")
    if not layers:
        axes[0][0].text(0.5, 0.5, "no gated cells", ha="center", va="center")
    axes[0][0].set_ylabel("mean activation (validation tokens)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("update (GRU z) and forget (LSTM f): share of the previous state kept")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------


def _hardware(runs: list[Run]) -> str:
    described = {r.done.get("hardware") for r in runs if r.done.get("hardware")}
    if described:
        return "; ".join(sorted(described))
    return f"{platform.machine()}, {torch.get_num_threads()} threads (where the report ran)"


def write_report(
    sweep_dir: Path,
    out: Path | None = None,
    *,
    runs: list[Path] | None = None,
    split: str = "test_2016_flickr",
    search: str = "beam5",
    baseline: str = "gru",
    edges: tuple[int, ...] = (10, 15, 20),
    samples: int = 1000,
    device: str = "auto",
) -> Path:
    """Write report.md, results.json and the four plots for the runs in ``sweep_dir`` (or the
    run directories ``runs``) into ``out`` (default ``sweep_dir/report``); return report.md."""
    paths = find_runs(runs if runs else [Path(sweep_dir)])
    if not paths:
        raise ReportError(f"{sweep_dir}: no finished runs (directories with {DONE_FILE})")
    out = Path(out) if out else Path(sweep_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    loaded = [load_run(p, split, search) for p in paths]
    for run in loaded:
        if run.finished:
            run.analysis = analyze_run(run, split, search, edges, device)
    finished = [r for r in loaded if r.finished]
    refs = _split_text(finished[0].path, split)[1] if finished else []
    pvalues = paired_pvalues(loaded, refs, baseline, samples) if finished else {}
    rows = build_rows(loaded, pvalues)
    plot_curves(loaded, "step", out / PLOTS[0])
    plot_curves(loaded, "seconds", out / PLOTS[1])
    plot_bleu_by_length(loaded, out / PLOTS[2])
    plot_gates(loaded, out / PLOTS[3])
    signature = finished[0].test["bleu_signature"] if finished else ""
    p_signature = next(iter(pvalues.values()))["signature"] if pvalues else ""
    lang = f"{finished[0].test['src']}→{finished[0].test['tgt']}" if finished else ""
    text = "\n".join([
        f"# Cell ablation: {Path(sweep_dir).name}",
        "",
        f"{len(loaded)} runs ({len(loaded) - len(finished)} diverged); {lang}; test split "
        f"`{split}` translated with `{search}` from each run's best checkpoint (greedy validation "
        f"BLEU). BLEU/chrF: sacreBLEU `{signature}`. p: sacreBLEU paired bootstrap ({samples} "
        f"samples) against `{baseline}` with the same attention and seed"
        + (f" (`{p_signature}`)" if p_signature else "") + "; over several seeds the largest p. "
        "Train tok/s: target tokens per second of training, validation excluded.",
        f"Hardware: {_hardware(loaded)}.",
        "",
        markdown_table(rows, baseline),
        "",
        "Mean gate activations on the validation set (teacher forcing), per layer:",
        "",
        gates_table(loaded),
        "",
        *[f"![{name}]({name})" for name in PLOTS],
        "",
    ])  # fmt: skip
    (out / "report.md").write_text(text, encoding="utf-8")
    results = {
        "rows": rows,
        "runs": [
            {
                "path": str(r.path),
                "cell": r.cell,
                "attention": r.attention,
                "seed": r.seed,
                "done": r.done,
                "test": r.test,
                "analysis": r.analysis,
                "paired": pvalues.get(str(r.path)),
            }
            for r in loaded
        ],  # fmt: skip
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return out / "report.md"
