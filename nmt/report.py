"""The ablation report: finished runs -> a Markdown table, results.json and four plots.

Runs (``runs.py``) are grouped into rows by (cell, attention, other settings); seeds become
mean ± std, and each cell is compared with the baseline cell by sacreBLEU's paired bootstrap.
The test split and search are the sweep's own (``final_eval`` and ``search`` of its runs).
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
from pathlib import Path

import torch
from omegaconf import OmegaConf

from nmt import evaluate, stats
from nmt.plots import GATE_ORDER, PLOTS, bleu_by_length_rows, gates_by_layer, plot_report
from nmt.progress import VALIDATION_STOPS
from nmt.rundir import CONFIG_FILE, DONE_FILE, TUNING_FILE, write_json, write_text
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


def _minutes_to_best(run: Run) -> float | None:
    best = run.done.get("best_step")
    for row in run.metrics:
        if int(row["step"]) == best:
            return row["seconds"] / 60
    return None


def _groups(runs: list[Run]) -> dict[tuple[str, frozenset], list[Run]]:
    """Rows of the table: runs sharing cell and context (everything but cell, recipe and seed)."""
    rows: dict[tuple[str, frozenset], list[Run]] = {}
    for run in sorted(runs, key=run_order):
        rows.setdefault((run.cell, run_context(run)), []).append(run)
    return rows


def _variant(rows: dict, cell: str, context: frozenset) -> str:
    """What sets this row apart from the rows of the same cell and attention (other settings)."""
    others = [c for (k, c) in rows if k == cell and c != context]
    differing = sorted({k for c in others for k, _ in context ^ c if k != "model.attention"})
    return ",".join(f"{k}={json.loads(dict(context)[k])}" for k in differing if k in dict(context))


def plot_groups(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """The report's rows as the plots draw them: a label and the row's finished runs."""
    rows = _groups(runs)
    out = []
    for (cell, context), group in rows.items():
        variant = _variant(rows, cell, context)
        label = f"{group[0].label} ({variant})" if variant else group[0].label
        out.append((label, [r for r in group if r.finished]))
    return out


def length_table(groups: list[tuple[str, list[Run]]]) -> str:
    """Test BLEU per source-length bucket and row: mean over seeds [95 % t-interval]."""
    rows = bleu_by_length_rows(groups)
    if not rows:
        return ""
    head = [f"{b['bucket']} ({b['sentences']})" for b in rows[0]["buckets"]]
    lines = ["| row | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for row in rows:
        texts = []
        for b in row["buckets"]:
            s = b["bleu"]
            if s is None:
                texts.append("–")
            elif s["ci"][0] is None:
                texts.append(f"{s['mean']:.2f}")
            else:
                texts.append(f"{s['mean']:.2f} [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}]")
        lines.append(f"| {row['label']} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def seed_comparisons(runs: list[Run], refs: list[str], baseline: str, samples: int) -> dict:
    """Each row against the baseline cell's row of the same context, over all their seeds:
    {(cell, context): {"bleu": seed_bootstrap, "chrf": seed_bootstrap, "welch_bleu_p": p}}."""
    groups = _groups([r for r in runs if r.finished and r.hyps is not None])
    cached: dict[tuple[str, str], object] = {}

    def sentence_stats(metric: str, group: list[Run]) -> list:
        for r in group:
            if (metric, str(r.path)) not in cached:
                cached[metric, str(r.path)] = stats.sentence_statistics(metric, r.hyps, refs)
        return [cached[metric, str(r.path)] for r in group]

    out = {}
    for (cell, context), group in groups.items():
        base = groups.get((baseline, context))
        if cell == baseline or not base:
            continue
        out[cell, context] = {
            metric: stats.seed_bootstrap(
                metric, sentence_stats(metric, base), sentence_stats(metric, group), samples=samples
            )
            for metric in ("bleu", "chrf")
        }
        out[cell, context]["welch_bleu_p"] = stats.welch(
            [r.test["bleu"] for r in base], [r.test["bleu"] for r in group]
        )
    return out


def build_rows(runs: list[Run], comparisons: dict) -> list[dict]:
    """One row per (cell, context): mean, std and 95 % t-interval over seeds of each score, and
    the comparison with the baseline cell (``seed_comparisons``)."""
    rows = _groups(runs)
    out = []
    for (cell, context), group in rows.items():
        ok = [r for r in group if r.finished]
        attention = group[0].attention
        variant = _variant(rows, cell, context)
        row = {
            "cell": cell,
            "attention": attention,
            "variant": variant,
            "runs": len(group),
            "failed": len(group) - len(ok),
            "seeds": [r.seed for r in group],
            "parameters": group[0].done.get("parameters"),
            "hidden": {
                k: group[0].done[k] for k in ("enc_hidden", "dec_hidden") if k in group[0].done
            },
        }
        if ok:
            ppl = [min(m["ppl"] for m in r.metrics if "ppl" in m) for r in ok if r.metrics]
            to_best = [m for r in ok if (m := _minutes_to_best(r)) is not None]
            row.update(
                train_tokens_per_s=statistics.fmean(r.done["train_tokens_per_s"] for r in ok),
                steps=statistics.fmean(r.done["steps"] for r in ok),
                early_stopped=sum(r.done.get("stop_reason") in VALIDATION_STOPS for r in ok),
                minutes=statistics.fmean(r.done["minutes"] for r in ok),
                minutes_to_best=statistics.fmean(to_best) if to_best else None,
                best_valid_ppl=statistics.fmean(ppl) if ppl else None,
                valid_bleu=stats.summarize([r.done["bleu"] for r in ok]).as_dict(),
                test_bleu=stats.summarize([r.test["bleu"] for r in ok]).as_dict(),
                test_chrf=stats.summarize([r.test["chrf"] for r in ok]).as_dict(),
                versus=comparisons.get((cell, context)),
            )
        out.append(row)
    return out


def _pm(value: dict) -> str:
    return (
        f"{value['mean']:.2f}"
        if value["std"] is None
        else f"{value['mean']:.2f} ± {value['std']:.2f}"
    )


def _ci(value: dict) -> str:
    low, high = value["ci"]
    return "–" if low is None else f"[{low:.2f}, {high:.2f}]"


def _delta(versus: dict | None, baseline: bool) -> str:
    if baseline:
        return "(baseline)"
    if not versus:
        return "–"
    d = versus["bleu"]
    return f"{d['delta']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"


def _hidden(sizes: dict) -> str:
    return f"{sizes['enc_hidden']}/{sizes['dec_hidden']}" if sizes else "–"


def _p(value: float | None, baseline: bool) -> str:
    if baseline:
        return "(baseline)"
    return "–" if value is None else f"{value:.4f}"


def markdown_table(rows: list[dict], baseline: str) -> str:
    head = (
        "| cell | attention | parameters | enc/dec | train tok/s | steps | early stop "
        "| minutes to best | best valid ppl "
        "| valid BLEU | test BLEU | 95 % CI | test chrF | Δ BLEU vs "
        + baseline
        + " [95 % CI] | p BLEU | p chrF | p Welch |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        attention = f"{r['attention']} ({r['variant']})" if r["variant"] else r["attention"]
        if "test_bleu" not in r:
            lines.append(
                f"| {r['cell']} | {attention} | {r['parameters'] or 0:,} | {_hidden(r['hidden'])} | "
                + " | ".join(["diverged"] + ["–"] * 13)
                + " |"
            )
            continue
        base, versus = r["cell"] == baseline, r["versus"] or {}
        fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
        lines.append(
            f"| {r['cell']} | {attention} | {r['parameters']:,} | {_hidden(r['hidden'])} | "
            f"{r['train_tokens_per_s']:,.0f} | {r['steps']:.0f} | "
            f"{r['early_stopped']}/{r['runs'] - r['failed']} | {fmt(r['minutes_to_best'], '.1f')} | "
            f"{fmt(r['best_valid_ppl'], '.2f')} | {_pm(r['valid_bleu'])} | {_pm(r['test_bleu'])} | "
            f"{_ci(r['test_bleu'])} | {_pm(r['test_chrf'])} | {_delta(r['versus'], base)} | "
            f"{_p(versus.get('bleu', {}).get('p'), base)} | {_p(versus.get('chrf', {}).get('p'), base)} | "
            f"{_p(versus.get('welch_bleu_p'), base)} |"
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


def tuning_table(tuning: dict) -> str:
    """The learning-rate search of nmt-ablate: each rate's best validation BLEU, chosen in bold."""
    rates = tuning["lrs"]
    lines = [
        f"Learning rates tuned on validation with the same budget for every cell: {len(rates)} "
        f"rates, {tuning['max_steps']} updates each, seed {tuning['seed']}, picked by "
        f"{tuning['metric']} (bold)"
        + (
            f"; tuned with attention {tuning['attention']}, the rate serves every attention:"
            if tuning.get("attention")
            else ":"
        ),
        "",
        "| cell | attention | " + " | ".join(f"lr {r:g}" for r in rates) + " |",
        "|---|---|" + "---|" * len(rates),
    ]
    scores: dict[tuple[str, str], dict[float, str]] = {}
    for run in tuning["runs"]:
        key, bleu = (run["cell"], run["attention"]), run["valid_bleu"]
        text = "diverged" if bleu is None else f"{bleu:.2f}"
        if run["lr"] == tuning["chosen"][run["cell"]][run["attention"]]:
            text = f"**{text}**"
        scores.setdefault(key, {})[run["lr"]] = text
    for (cell, attention), by_rate in scores.items():
        lines.append(
            f"| {cell} | {attention} | " + " | ".join(by_rate.get(r, "–") for r in rates) + " |"
        )
    return "\n".join(lines)


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
    tuning: dict | None,
) -> str:
    finished = [r for r in loaded if r.finished]
    signature = finished[0].test["bleu_signature"] if finished else ""
    p_signature = next(iter(pvalues.values()))["signature"] if pvalues else ""
    lang = f"{finished[0].test['src']}→{finished[0].test['tgt']}" if finished else ""
    intro = (
        f"{len(loaded)} runs ({len(loaded) - len(finished)} diverged); {lang}; test split "
        f"`{split}` translated with `{search}` from each run's best checkpoint (greedy validation "
        f"BLEU). BLEU/chrF: sacreBLEU `{signature}`, mean ± standard deviation over seeds; "
        "95 % CI: Student-t interval of the test BLEU mean. "
        f"Δ BLEU: difference of seed means against `{baseline}` in the same setting, with the "
        f"95 % interval of a two-level paired bootstrap ({samples} samples; test sentences and "
        "seeds both resampled, Clark et al. 2011); p BLEU, p chrF: its two-sided p; p Welch: "
        "Welch's t-test on the per-seed test BLEU (two seeds a side or more). "
        "Per seed, sacreBLEU's own paired bootstrap against the same seed of the baseline is in "
        "results.json" + (f" (`{p_signature}`)" if p_signature else "") + ". "
        "enc/dec: recurrent sizes (model.match_params resizes them). "
        "Train tok/s: target tokens per second of training, validation excluded. "
        "Steps: updates, mean over seeds; early stop: the runs that validation stopped (no new "
        "best BLEU in `train.patience` validations, or the rate cut `train.max_lr_decays` times "
        "by the schedule); the others reached their step, epoch or time limit."
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
            *([tuning_table(tuning), ""] if tuning else []),
            "Test BLEU by source length in words (sentences per bucket), mean over seeds "
            "[95 % t-interval]:",
            "",
            length_table(plot_groups(loaded)),
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
    comparisons = seed_comparisons(loaded, refs, baseline, samples) if finished else {}
    rows = build_rows(loaded, comparisons)
    groups = plot_groups(loaded)
    plot_report(groups, out)
    tuning_path = Path(sweep_dir) / TUNING_FILE
    tuning = json.loads(tuning_path.read_text()) if tuning_path.is_file() else None
    write_text(
        out / "report.md",
        _markdown(
            Path(sweep_dir).name, loaded, rows, pvalues, split, search, baseline, samples, tuning
        ),
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
    write_json(out / "results.json", {"rows": rows, "runs": runs_json, "tuning": tuning})
    return out / "report.md"
