"""The ablation report: finished runs -> a Markdown table, results.json and four plots.

Runs (``runs.py``) are grouped into rows by (cell, attention, other settings); seeds become
mean ± std, and each cell is compared with the baseline cell by sacreBLEU's paired bootstrap.
The test split and search are the sweep's own (``final_eval`` and ``search`` of its runs).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import statistics
from pathlib import Path

import torch
from omegaconf import OmegaConf

from nmt import evaluate
from nmt.plots import GATE_ORDER, PLOTS, gates_by_layer, plot_report
from nmt.rundir import CONFIG_FILE, DONE_FILE, write_json, write_text
from nmt.runs import (
    ReportError,
    Run,
    analyze_run,
    find_runs,
    load_run,
    paired_pvalues,
    run_order,
)
from nmt.runs import (
    context as run_context,
)

log = logging.getLogger(__name__)

__all__ = ["PLOTS", "ReportError", "Run", "build_rows", "markdown_table", "write_report"]


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


def build_rows(runs: list[Run], pvalues: dict) -> list[dict]:
    """One row per (cell, attention): means over seeds (std where there are several)."""
    rows: dict[tuple[str, frozenset], list[Run]] = {}
    for run in sorted(runs, key=run_order):
        rows.setdefault((run.cell, run_context(run)), []).append(run)
    out = []
    for (cell, context), group in rows.items():
        ok = [r for r in group if r.finished]
        attention = group[0].attention
        # Rows that share cell and attention but not the other settings: name what differs.
        others = [c for (k, c) in rows if k == cell and c != context]
        differing = sorted({k for c in others for k, _ in context ^ c if k != "model.attention"})
        variant = ",".join(
            f"{k}={json.loads(dict(context)[k])}" for k in differing if k in dict(context)
        )
        row = {
            "cell": cell,
            "attention": attention,
            "variant": variant,
            "runs": len(group),
            "failed": len(group) - len(ok),
            "seeds": [r.seed for r in group],
            "parameters": group[0].done.get("parameters"),
        }
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
            )
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
    head = (
        "| cell | attention | parameters | train tok/s | steps | minutes to best | best valid ppl "
        "| valid BLEU | test BLEU | test chrF | p BLEU vs "
        + baseline
        + " | p chrF vs "
        + baseline
        + " |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        attention = f"{r['attention']} ({r['variant']})" if r["variant"] else r["attention"]
        if "test_bleu" not in r:
            lines.append(
                f"| {r['cell']} | {attention} | {r['parameters'] or 0:,} | "
                + " | ".join(["diverged"] + ["–"] * 9)
                + " |"
            )
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
    lines = [
        "| cell | attention | layer | " + " | ".join(GATE_ORDER) + " |",
        "|---|---|---|" + "---|" * len(GATE_ORDER),
    ]
    seen = set()
    for run in sorted(runs, key=run_order):
        if not run.analysis or (run.cell, run.attention) in seen or not run.analysis["gates"]:
            continue
        seen.add((run.cell, run.attention))
        for layer, gates in gates_by_layer(run.analysis["gates"]).items():
            cells = [f"{gates[g]:.3f}" if g in gates else "" for g in GATE_ORDER]
            lines.append(f"| {run.cell} | {run.attention} | {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _runs_setting(paths: list[Path], what: str) -> str:
    """The test split (first of ``final_eval``) or search name the runs were trained with; one
    value for all of them, or a ReportError naming the choices."""
    values = set()
    for path in paths:
        if not (path / CONFIG_FILE).is_file():
            continue  # load_run says so
        config = OmegaConf.load(path / CONFIG_FILE)
        if what == "split":
            values.add(config.final_eval[0] if config.get("final_eval") else None)
        else:
            values.add(config.search.name)
    values.discard(None)
    if len(values) != 1:
        found = ", ".join(sorted(values)) or "none"
        raise ReportError(
            f"the runs name {len(values)} test {what}s ({found}); choose one with --{what}"
        )
    return values.pop()


def _hardware(runs: list[Run]) -> str:
    described = {r.done.get("hardware") for r in runs if r.done.get("hardware")}
    if described:
        return "; ".join(sorted(described))
    return f"{platform.machine()}, {torch.get_num_threads()} threads (where the report ran)"


def _markdown(
    name: str,
    loaded: list[Run],
    rows: list[dict],
    pvalues: dict,
    split: str,
    search: str,
    baseline: str,
    samples: int,
) -> str:
    finished = [r for r in loaded if r.finished]
    signature = finished[0].test["bleu_signature"] if finished else ""
    p_signature = next(iter(pvalues.values()))["signature"] if pvalues else ""
    lang = f"{finished[0].test['src']}→{finished[0].test['tgt']}" if finished else ""
    intro = (
        f"{len(loaded)} runs ({len(loaded) - len(finished)} diverged); {lang}; test split "
        f"`{split}` translated with `{search}` from each run's best checkpoint (greedy validation "
        f"BLEU). BLEU/chrF: sacreBLEU `{signature}`. p: sacreBLEU paired bootstrap ({samples} "
        f"samples) against `{baseline}` with the same attention and seed"
        + (f" (`{p_signature}`)" if p_signature else "")
        + "; over several seeds the largest p. "
        "Train tok/s: target tokens per second of training, validation excluded."
    )
    return "\n".join(
        [
            f"# Cell ablation: {name}",
            "",
            intro,
            f"Hardware: {_hardware(loaded)}.",
            "",
            markdown_table(rows, baseline),
            "",
            "Mean gate activations on the validation set (teacher forcing), per layer:",
            "",
            gates_table(loaded),
            "",
            *[f"![{p}]({p})" for p in PLOTS],
            "",
        ]
    )


def write_report(
    sweep_dir: Path,
    out: Path | None = None,
    *,
    runs: list[Path] | None = None,
    split: str | None = None,
    search: str | None = None,
    baseline: str = "gru",
    edges: tuple[int, ...] = (10, 15, 20),
    samples: int = 1000,
    device: str = "auto",
) -> Path:
    """Write report.md, results.json and the four plots for the runs in ``sweep_dir`` (or the
    run directories ``runs``) into ``out`` (default ``sweep_dir/report``); return report.md.

    ``split`` and ``search`` default to the runs' own: the first ``final_eval`` split and the
    ``search`` group they were trained with (what their final evaluation wrote)."""
    paths = find_runs(runs if runs else [Path(sweep_dir)])
    if not paths:
        raise ReportError(f"{sweep_dir}: no finished runs (directories with {DONE_FILE})")
    split, search = split or _runs_setting(paths, "split"), search or _runs_setting(paths, "search")
    out = Path(out) if out else Path(sweep_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    loaded = sorted((load_run(p, split, search) for p in paths), key=run_order)
    for run in loaded:
        if run.finished:
            run.analysis = analyze_run(run, split, search, edges, device)
    finished = [r for r in loaded if r.finished]
    refs = evaluate.split_pairs(finished[0].path, split)[1] if finished else []
    pvalues = paired_pvalues(loaded, refs, baseline, samples) if finished else {}
    rows = build_rows(loaded, pvalues)
    plot_report(loaded, out)
    write_text(
        out / "report.md",
        _markdown(Path(sweep_dir).name, loaded, rows, pvalues, split, search, baseline, samples),
    )
    runs_json = [
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
    ]
    write_json(out / "results.json", {"rows": rows, "runs": runs_json})
    return out / "report.md"
